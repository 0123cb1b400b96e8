"""Benchmarks: measured in one run against a baseline measured in the same run.

``intake``: N contacts published on the intake topic go through the intake worker into the
store and through the publisher onto the events topic. Reported: sustained end-to-end contacts/s
and events/s, the p50/p99 latency from publishing a contact to its ``ContactReceived`` on the
events topic, and — as the baseline — the raw eventsourcing batched-write rate of the same Avro
events into the same kind of store (1000 events per transaction), with the ratio between them.

The run ends exactly when the worker's tracking positions reach the intake topic's end and the
events topic holds the store's last position (polled every 0.1 s). Latencies are read from the
topic after the run, from each ``ContactReceived`` record's timestamp: a consumer of every event
during the run would compete for the small machine's cores with the services being measured.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from caseledger.cli.bench import environment
from caseledger.cli.bench.preflight import checked_ledger_env
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import Channel, ContactDraft, Identity
from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.settings import LedgerSettings


@dataclass
class IntakeBenchResult:
    contacts: int
    backend: str
    intake_workers: int
    producer: str
    consumer: str
    events_stored: int
    seconds: float
    contacts_per_s: float
    events_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    baseline_events_per_s: float
    ratio_to_baseline: float
    checkpointer: bool = False  # a signing key was set: the publisher kept the Merkle tree and signed checkpoints

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("backend", self.backend),
            ("intake workers (processes) / their consumer / producer (publisher and adapter)",
             f"{self.intake_workers} / {self.consumer} / {self.producer}"),
            ("contacts", f"{self.contacts}"),
            ("events stored", f"{self.events_stored} ({self.events_stored / self.contacts:.1f} per contact)"),
            ("end-to-end time", f"{self.seconds:.2f} s"),
            ("contacts/s (intake topic → store → events topic)", f"{self.contacts_per_s:,.0f}"),
            ("events/s end to end", f"{self.events_per_s:,.0f}"),
            ("latency p50 (publish → on events topic)", f"{self.latency_p50_ms:,.0f} ms"),
            ("latency p99", f"{self.latency_p99_ms:,.0f} ms"),
            ("baseline: raw eventsourcing batched writes", f"{self.baseline_events_per_s:,.0f} events/s"),
            ("end-to-end events/s ÷ baseline", f"{self.ratio_to_baseline:.0%}"),
            ("publisher keeps the Merkle tree and signs checkpoints (a signing key is set)",
             "yes" if self.checkpointer else "no"),
        ]


def _drafts(n: int, run: str) -> list[ContactDraft]:
    # 1 customer in 4 writes again: realistic mix of new and known customers.
    return [
        ContactDraft(
            channel=Channel(("email", "chat", "web_form", "sms", "app")[i % 5]),
            channel_message_id=f"{run}-{i}",
            identity=Identity(kind="email", value=f"c{i % max(1, n * 3 // 4)}@bench.example"),
            items=(f"Question {i}: where is my parcel?",),
            subject="Parcel",
            body="I ordered on Monday and nothing has arrived yet. " * 4,
            occurred_at=datetime.now(UTC),
        )
        for i in range(n)
    ]


def baseline_write_rate(database: str, events: int = 20_000, environ: dict[str, str] | None = None) -> float:
    """Raw eventsourcing rate: Avro-encoded events saved 1000 per transaction, no rules, no Kafka."""
    app = CaseLedger(LedgerSettings.resolve(database=database, settings=environment(environ)))
    try:
        drafts = _drafts(events // 4, f"base-{uuid.uuid4().hex[:6]}")
        from caseledger.ledger.domain.case import Case
        from caseledger.ledger.domain.directory import case_id_for
        from caseledger.ledger.domain.events import Context
        from caseledger.ledger.domain.values import Actor, ActorKind

        ctx = Context(actor=Actor(kind=ActorKind.CUSTOMER, id="bench"))
        cases = []
        for n, draft in enumerate(drafts):
            ref = f"CL-BASE{n:05d}-{uuid.uuid4().hex[:5].upper()}"
            case = Case.open(case_id=case_id_for(ref), reference=ref, customer_id=str(draft.identity),
                             subject=draft.subject, category=None, segment=None, ctx=ctx)
            case.receive_contact(draft, ctx=ctx, respond_by=ctx.occurred_at, acknowledge_by=ctx.occurred_at,
                                 writer=app.writer_for(None, draft.channel.value))
            case.respond(ctx=ctx, body="answer", answers=["Q1"])
            app.chain(case)  # encode (Avro) once, as the ledger does
            cases.append(case)
        total = sum(len(c._pending_events) for c in cases)
        per_txn = max(1, 1000 // 4)
        start = time.perf_counter()
        for i in range(0, len(cases), per_txn):
            app.save(*cases[i : i + per_txn])
        return total / (time.perf_counter() - start)
    finally:
        app.close()


def bench_intake(
    *,
    kafka_bootstrap: str,
    contacts: int = 20_000,
    database: str | None = None,
    workers: int = 1,
    producer: str = "kafka-python",
    consumer: str = "kafka-python",
    progress: Callable[[str, int, int], None] | None = None,
) -> IntakeBenchResult:
    """Run the intake benchmark on fresh topics; ``database`` must be empty (default: a temp SQLite)."""

    from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
    from caseledger.ledger.intake.worker import tracking_name
    from caseledger.ledger.kafka.publisher import KafkaEventPublisher

    tmp, db, run, settings, env = prepare_run(kafka_bootstrap=kafka_bootstrap, database=database, workers=workers,
                                              producer=producer, consumer=consumer)
    base_db = database or str(Path(tmp.name) / "baseline.sqlite")
    services, logs = start_services(env, Path(tmp.name), partitions=settings.intake_partitions, workers=workers,
                                    consumer=consumer, producer=producer, intake_batch=1000, publisher_batch=2000)

    def tails() -> str:
        return "\n".join(f"--- {log.name}\n" + log.read_text(errors="replace")[-1500:] for log in logs)

    ledger = CaseLedger(LedgerSettings.resolve(database=db, settings=environment(env)))
    try:
        drafts = _drafts(contacts, run)
        sent_at: dict[str, float] = {}
        start = time.time()
        with KafkaIntakeClient(settings, adapter="bench", producer=producer) as client:
            for i in range(0, contacts, 1000):
                chunk = drafts[i : i + 1000]
                now = time.time()
                client.submit_many(list(chunk))
                sent_at.update((d.channel_message_id, now) for d in chunk)
                if progress:
                    progress("published", min(i + 1000, contacts), contacts)
        intake_end = _end_offsets(settings, settings.intake_topic)
        publisher = KafkaEventPublisher(ledger, settings)
        deadline = time.time() + max(120, contacts / 100)
        # Done when the worker has applied every intake record (its tracking positions reached the
        # topic's end) and the events topic holds the store's last position: exact, and cheap.
        applied, last_position, end = 0, -1, None
        while time.time() < deadline:
            if any(s.poll() is not None for s in services):
                raise RuntimeError("a benchmarked service died:\n" + tails())
            positions = {p: ledger.recorder.max_tracking_id(tracking_name(settings.intake_topic, p)) or 0
                         for p in intake_end}
            applied = sum(min(positions[p], intake_end[p]) for p in intake_end)
            if applied >= sum(intake_end.values()):
                stored = ledger.recorder.max_notification_id() or 0
                last_position = publisher.last_published_position()
                if last_position >= stored:
                    end = time.time()
                    break
            if progress:
                progress("through", min(applied, contacts), contacts)
            time.sleep(0.1)
        if end is None:
            raise RuntimeError(
                f"only {applied} of {contacts} intake records were applied and position {last_position} "
                "published in time\n" + tails()
            )
    finally:
        ledger.close()
        stop_services(services)
    # After the run (so that it takes no CPU from the measured services): when did each contact
    # reach the events topic? Its ContactReceived record's timestamp is the publisher's send time,
    # a few milliseconds before the transaction holding it commits.
    probe = CaseLedger(LedgerSettings.resolve(database=db, settings=environment(env)))
    try:
        # The topic carries channel message ids sealed (docs/privacy.md): the bench opens them with the ledger's keys.
        arrivals = _contacts_on_topic(settings)
        opened = probe.reveal(list(arrivals))
        latencies = sorted((arrivals[token] - sent_at[message_id]) * 1000 for token, message_id in
                           zip(arrivals, opened, strict=True) if message_id in sent_at)
        if len(latencies) < contacts:
            raise RuntimeError(f"only {len(latencies)} of {contacts} contacts were found on the events topic")
        events_stored = probe.recorder.max_notification_id() or 0
    finally:
        probe.close()
    baseline = baseline_write_rate(base_db if database is None else db, environ=env)
    tmp.cleanup()
    seconds = end - start
    events_per_s = events_stored / seconds
    return IntakeBenchResult(
        checkpointer=bool(env.get("CASELEDGER_SIGNING_KEY_FILE") or env.get("CASELEDGER_SIGNING_KEY")),
        contacts=contacts,
        intake_workers=workers,
        producer=producer,
        consumer=consumer,
        backend=LedgerSettings.resolve(database=db, settings=environment(env)).store.describe().split()[0],
        events_stored=events_stored,
        seconds=seconds,
        contacts_per_s=contacts / seconds,
        events_per_s=events_per_s,
        latency_p50_ms=statistics.median(latencies),
        latency_p99_ms=latencies[max(0, int(len(latencies) * 0.99) - 1)],
        baseline_events_per_s=baseline,
        ratio_to_baseline=events_per_s / baseline,
    )


def prepare_run(*, kafka_bootstrap: str, database: str | None, workers: int, producer: str, consumer: str
                ) -> tuple[tempfile.TemporaryDirectory[str], str, str, Any, dict[str, str]]:
    """Fresh topics and an empty ledger for one run: (temp dir, database, run id, Kafka settings, services' env)."""
    from caseledger.ledger.kafka.clients import check_client
    from caseledger.ledger.kafka.topics import ensure_topics
    from caseledger.ledger.settings import KafkaSettings

    tmp = tempfile.TemporaryDirectory(prefix="caseledger-bench-")
    db = database or str(Path(tmp.name) / "bench.sqlite")
    run = uuid.uuid4().hex[:8]
    settings = KafkaSettings.resolve(
        settings=environment().kafka,
        bootstrap_servers=kafka_bootstrap, intake_topic=f"bench-intake-{run}", events_topic=f"bench-events-{run}"
    )
    check_client(producer, "producer")
    check_client(consumer, "consumer")
    if not 1 <= workers <= settings.intake_partitions:
        raise ConfigurationError(
            f"--workers {workers}: give 1 to {settings.intake_partitions}, the intake topic's partitions"
        )
    # The services it starts seal every contact: the key they need is made (or a broken one said) now.
    ledger_env = checked_ledger_env(os.environ, Path(tmp.name), database=db, bench="bench intake")
    ensure_topics(settings)
    # The worker and the publisher run as separate processes, as deployed: one core each.
    env = {
        **ledger_env,
        "CASELEDGER_DATABASE": db,
        "CASELEDGER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "CASELEDGER_INTAKE_TOPIC": settings.intake_topic,
        "CASELEDGER_EVENTS_TOPIC": settings.events_topic,
    }
    return tmp, db, run, settings, env


def stop_services(services: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every benchmarked service, then wait for each (killed after 30 s)."""
    for service in services:
        service.send_signal(signal.SIGTERM)
    for service in services:
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            service.kill()


def start_services(
    env: dict[str, str], logs_dir: Path, *, partitions: int, workers: int, consumer: str, producer: str,
    intake_batch: int, publisher_batch: int,
) -> tuple[list[subprocess.Popen[bytes]], list[Path]]:
    """The benchmarked services as child processes: ``workers`` intake workers sharing the intake
    partitions (as on a bigger machine), then the publisher. Returns them and their log files."""
    cli = [sys.executable, "-c", "from caseledger.cli.app import main; main()"]
    shares = [[p for p in range(partitions) if p % workers == k] for k in range(workers)]
    logs = [logs_dir / f"intake-{k}.log" for k in range(workers)] + [logs_dir / "publisher.log"]
    services = [
        subprocess.Popen([*cli, "intake", "run", "--batch-size", str(intake_batch),
                          "--partitions", ",".join(map(str, share)), "--consumer", consumer],
                         env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        for share, log in zip(shares, logs, strict=False)
    ]
    services.append(subprocess.Popen([*cli, "publisher", "run", "--batch-size", str(publisher_batch),
                                      "--producer", producer], env=env,
                                     stdout=logs[-1].open("wb"), stderr=subprocess.STDOUT))
    return services, logs


def _contacts_on_topic(settings: Any) -> dict[str, float]:
    """Channel message id (as sealed) → timestamp (s) of its ContactReceived record, for the whole events topic."""
    from caseledger.ledger.avro.codec import AvroEventCodec
    from caseledger.ledger.kafka.events_record import event_type_of
    from caseledger.ledger.kafka.ports import ReadRecord

    codec = AvroEventCodec()
    ends = _end_offsets(settings, settings.events_topic)
    found: dict[str, float] = {}
    with _reader(settings, settings.events_topic) as reader:
        reader.assign(dict.fromkeys(ends, 0))
        deadline = time.time() + 300
        while any(at < ends[p] for p, at in reader.positions().items()) and time.time() < deadline:
            for record in reader.fetch(5000, 0.5, ReadRecord):
                if event_type_of(record.headers) == "ContactReceived":
                    event = codec.decode("ContactReceived", record.value)
                    found[event.channel_message_id] = record.timestamp / 1000  # type: ignore[attr-defined]
    return found


def _end_offsets(settings: Any, topic: str) -> dict[int, int]:
    """The end offset of every partition of ``topic``."""
    with _reader(settings, topic) as reader:
        return reader.end_offsets(reader.partitions())


def _reader(settings: Any, topic: str) -> Any:
    """A kafka-python reader of ``topic`` for the bench's own bookkeeping (not measured)."""
    from caseledger.ledger.kafka.clients import KAFKA_PYTHON, KafkaClient

    return KafkaClient(KAFKA_PYTHON, "consumer").open_reader(settings, topic=topic, group="bench",
                                                           fetch_wait_ms=500, on_lost_position="earliest")


def write_result(name: str, result: Any, directory: str | Path = "bench-results") -> Path:
    """Write a benchmark result as JSON; returns the file."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    data = result.as_dict() if hasattr(result, "as_dict") else asdict(result)
    path.write_text(json.dumps({"benchmark": name, **data}, indent=2) + "\n")
    return path
