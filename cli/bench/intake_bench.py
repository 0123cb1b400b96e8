"""Benchmarks: measured in one run against a baseline measured in the same run.

``intake``: N intake records of a traffic mix (``traffic_mix.py``: new and returning customers, follow-ups,
resubmissions, delivery reports, read receipts) published on the intake topic go through the intake worker
into the store and through the publisher onto the events topic; the worst case (N new customers) runs
beside it. Reported per run: sustained end-to-end records/s and events/s, the p50/p99 latency from
publishing a contact to its ``ContactReceived`` on the events topic, the CPU each service spent per event,
and — as the baseline — the raw eventsourcing batched-write rate of the same Avro events into the same kind
of store (1000 events per transaction), with the ratio between them. ``--events N`` runs both again on the
ledger filled with N more events.

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
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from caseledger.cli.bench import environment
from caseledger.cli.bench.preflight import checked_ledger_env
from caseledger.cli.bench.traffic_mix import (
    CONTACT_CENTRE,
    WORST_CASE,
    Seed,
    TrafficMix,
    mix_records,
    seed_drafts,
)
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import Channel, ContactDraft, Identity
from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.settings import LedgerSettings

#: Known customers recorded before the clock starts at least, whatever the mix: the services start warm.
WARM_UP = 200


@dataclass
class MixRun:
    """One run of a traffic mix: the records published once the seeds were recorded, and how fast they went through."""

    mix: str
    records: int
    by_kind: dict[str, int]
    seeded: int  # known customers (an open case each) recorded before the clock started
    events_stored: int
    seconds: float
    records_per_s: float
    events_per_s: float
    contacts_per_s: float  # the records that were contacts (new, returning, follow-ups, resubmissions)
    latency_p50_ms: float
    latency_p99_ms: float
    # CPU (user + system) each kind of service spent while the clock ran, per event stored: where the time goes
    cpu_us_per_event: dict[str, float] = field(default_factory=dict)
    clock: tuple[float, float] = (0.0, 0.0)  # when the clock started and stopped (epoch s): for outside samplers

    def rows(self, title: str) -> list[tuple[str, str]]:
        return [
            (f"{title}: mix", self.mix),
            (f"{title}: records (known customers seeded before the clock)", f"{self.records} ({self.seeded})"),
            (f"{title}: events stored", f"{self.events_stored} ({self.events_stored / self.records:.1f} per record)"),
            (f"{title}: end-to-end time", f"{self.seconds:.2f} s"),
            (f"{title}: intake records/s (intake topic → store → events topic)", f"{self.records_per_s:,.0f}"),
            (f"{title}: of which contacts/s", f"{self.contacts_per_s:,.0f}"),
            (f"{title}: events/s end to end", f"{self.events_per_s:,.0f}"),
            (f"{title}: latency p50 / p99 (publish → on events topic)",
             f"{self.latency_p50_ms:,.0f} / {self.latency_p99_ms:,.0f} ms"),
            (f"{title}: CPU per event stored, by service",
             " · ".join(f"{stage} {us:,.0f} µs" for stage, us in self.cpu_us_per_event.items()) or "unknown"),
        ]


@dataclass
class IntakeBenchResult:
    contacts: int  # intake records of the mix (every kind)
    backend: str
    intake_workers: int
    producer: str
    consumer: str
    events_stored: int
    seconds: float
    contacts_per_s: float  # intake records/s of the mix
    events_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    baseline_events_per_s: float
    ratio_to_baseline: float
    checkpointer: bool = False  # a signing key was set: the publisher kept the Merkle tree and signed checkpoints
    mix: str = ""
    records_by_kind: dict[str, int] = field(default_factory=dict)
    seeded: int = 0
    cpu_us_per_event: dict[str, float] = field(default_factory=dict)
    clock: tuple[float, float] = (0.0, 0.0)
    worst_case: dict[str, Any] | None = None  # the same records, every one a new customer (MixRun)
    # --events N: the ledger filled with N more events, then the runs again ({"events", "seconds", "mix", "worst_case"})
    full_ledger: dict[str, Any] | None = None

    @classmethod
    def of(cls, run: MixRun, worst: MixRun | None, *, baseline: float, full_ledger: dict[str, Any] | None = None,
           **common: Any) -> IntakeBenchResult:
        return cls(contacts=run.records, events_stored=run.events_stored, seconds=run.seconds,
                   contacts_per_s=run.records_per_s, events_per_s=run.events_per_s,
                   latency_p50_ms=run.latency_p50_ms, latency_p99_ms=run.latency_p99_ms,
                   baseline_events_per_s=baseline, ratio_to_baseline=run.events_per_s / baseline, mix=run.mix,
                   records_by_kind=run.by_kind, seeded=run.seeded,
                   cpu_us_per_event=run.cpu_us_per_event, clock=run.clock, worst_case=asdict(worst) if worst else None,
                   full_ledger=full_ledger,
                   **common)

    def rows(self) -> list[tuple[str, str]]:
        runs = [("mix", self._run())]
        if self.worst_case:
            runs.append(("worst case", MixRun(**self.worst_case)))
        return [
            ("backend", self.backend),
            ("intake workers (processes) / their consumer / producer (publisher and adapter)",
             f"{self.intake_workers} / {self.consumer} / {self.producer}"),
            *(row for title, run in runs for row in run.rows(title)),
            ("baseline: raw eventsourcing batched writes", f"{self.baseline_events_per_s:,.0f} events/s"),
            *((f"{title}: end-to-end events/s ÷ baseline", f"{run.events_per_s / self.baseline_events_per_s:.0%}")
              for title, run in runs),
            ("publisher keeps the Merkle tree and signs checkpoints (a signing key is set)",
             "yes" if self.checkpointer else "no"),
            *self._full_rows(dict(runs)),
        ]

    def _full_rows(self, empty: dict[str, MixRun]) -> list[tuple[str, str]]:
        full = self.full_ledger
        if not full:
            return []
        rows = [("full ledger: events written before these runs (pre-encoded rows)",
                 f"{full['events']:,} in {full['seconds']:.1f} s ({full['events'] / full['seconds']:,.0f} events/s)")]
        for title in ("mix", "worst case"):
            if full.get(title.replace(" ", "_")) and title in empty:
                run = MixRun(**full[title.replace(" ", "_")])
                rows.append((f"full ledger, {title}: intake records/s (÷ the empty ledger's)",
                             f"{run.records_per_s:,.0f} ({run.records_per_s / empty[title].records_per_s:.0%})"))
        return rows

    def _run(self) -> MixRun:
        contacts = sum(n for kind, n in self.records_by_kind.items() if kind not in ("delivery", "read"))
        return MixRun(mix=self.mix, records=self.contacts, by_kind=self.records_by_kind, seeded=self.seeded,
                      events_stored=self.events_stored, seconds=self.seconds, records_per_s=self.contacts_per_s,
                      events_per_s=self.events_per_s, contacts_per_s=contacts / self.seconds,
                      latency_p50_ms=self.latency_p50_ms, latency_p99_ms=self.latency_p99_ms,
                      cpu_us_per_event=self.cpu_us_per_event, clock=self.clock)


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
    producer: str = "confluent",
    consumer: str = "confluent",
    mix: TrafficMix = CONTACT_CENTRE,
    worst_case: bool = True,
    events: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> IntakeBenchResult:
    """Run the intake benchmark on fresh topics; ``database`` must be empty (default: a temp SQLite).

    With ``worst_case`` the same number of records, every one a new customer, runs first on the empty ledger;
    then ``mix`` runs on the same ledger (its returning customers are seeded before its clock starts). The
    baseline is measured once, after both. With ``events``, the ledger is then filled with that many more events
    (whole customers' stories, written as pre-encoded rows) and both runs again: a full ledger beside the empty."""
    tmp, db, _run, settings, env = prepare_run(kafka_bootstrap=kafka_bootstrap, database=database, workers=workers,
                                               producer=producer, consumer=consumer)
    try:
        worst = None
        if worst_case and mix != WORST_CASE:
            worst = _run_mix(WORST_CASE, contacts, env=env, folder=Path(tmp.name), settings=settings,
                             workers=workers, producer=producer, consumer=consumer, progress=progress)
            settings = fresh_topics(kafka_bootstrap)
        run = _run_mix(mix, contacts, env=env, folder=Path(tmp.name), settings=settings, workers=workers,
                       producer=producer, consumer=consumer, progress=progress)
        full = None
        if events:
            full = _on_a_full_ledger(events, mix, contacts, env=env, folder=Path(tmp.name), worst_case=worst is not None,
                                     kafka_bootstrap=kafka_bootstrap, workers=workers, producer=producer,
                                     consumer=consumer, progress=progress)
        base_db = database or str(Path(tmp.name) / "baseline.sqlite")
        # As many events as the runs stored, within 2,000..20,000: a small run (a test) needs no long baseline.
        baseline = baseline_write_rate(base_db if database is None else db, min(20_000, max(2_000, 10 * contacts)),
                                       environ=env)
    finally:
        tmp.cleanup()
    return IntakeBenchResult.of(
        run, worst, baseline=baseline, full_ledger=full,
        checkpointer=bool(env.get("CASELEDGER_SIGNING_KEY_FILE") or env.get("CASELEDGER_SIGNING_KEY")),
        intake_workers=workers, producer=producer, consumer=consumer,
        backend=LedgerSettings.resolve(database=db, settings=environment(env)).store.describe().split()[0],
    )


def _on_a_full_ledger(events: int, mix: TrafficMix, records: int, *, env: dict[str, str], folder: Path,
                      worst_case: bool, kafka_bootstrap: str, workers: int, producer: str, consumer: str,
                      progress: Callable[[str, int, int], None] | None) -> dict[str, Any]:
    """Fill the ledger with ``events`` more events (``bench verify``'s stories, written as pre-encoded rows by the
    store's bulk load: ``COPY`` on PostgreSQL), then run the worst case and the mix again, each on fresh topics."""
    from caseledger.cli.bench.verify_bench import generate_ledger

    ledger = CaseLedger(LedgerSettings.resolve(database=env["CASELEDGER_DATABASE"], settings=environment(env)))
    try:
        started = time.perf_counter()
        written = generate_ledger(ledger, events, progress)
        seconds = time.perf_counter() - started
    finally:
        ledger.close()
    options: dict[str, Any] = {"env": env, "folder": folder, "workers": workers, "producer": producer,
                               "consumer": consumer, "progress": progress}
    worst = _run_mix(WORST_CASE, records, settings=fresh_topics(kafka_bootstrap), **options) if worst_case else None
    run = _run_mix(mix, records, settings=fresh_topics(kafka_bootstrap), **options)
    return {"events": written, "seconds": seconds, "mix": asdict(run), "worst_case": asdict(worst) if worst else None}


def _run_mix(mix: TrafficMix, records: int, *, env: dict[str, str], folder: Path, settings: Any, workers: int,
             producer: str, consumer: str, progress: Callable[[str, int, int], None] | None) -> MixRun:
    """Start the services on ``settings``' topics, seed the known customers the mix needs, then publish
    ``records`` records of ``mix`` and time them through to the events topic."""
    from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
    from caseledger.ledger.kafka.publisher import KafkaEventPublisher

    env = {**env, "CASELEDGER_INTAKE_TOPIC": settings.intake_topic, "CASELEDGER_EVENTS_TOPIC": settings.events_topic}
    name = "worst case" if mix == WORST_CASE else "mix"
    logs_dir = folder / name.replace(" ", "-")
    logs_dir.mkdir(exist_ok=True)
    services, logs = start_services(env, logs_dir, partitions=settings.intake_partitions,
                                    workers=workers, consumer=consumer, producer=producer, intake_batch=1000,
                                    publisher_batch=2000)
    run = settings.intake_topic.rsplit("-", 1)[-1]
    ledger = CaseLedger(LedgerSettings.resolve(database=env["CASELEDGER_DATABASE"], settings=environment(env)))
    try:
        publisher = KafkaEventPublisher(ledger, settings)
        through = _Through(ledger, publisher, settings, services, logs)
        with KafkaIntakeClient(settings, adapter="bench", producer=producer) as client:
            # Seeds warm the services up too (every run, the worst case's included): the clock starts warm.
            seeds = seed_drafts(run, max(min(WARM_UP, records), mix.seeds_needed(records)))
            for i in range(0, len(seeds), 1000):
                client.submit_many(list(seeds[i : i + 1000]))
            through.wait(len(seeds), lambda done: progress and progress(f"{name}: seeding", done, len(seeds)))
            known = [Seed(draft.identity, ledger.find_by_message(draft.channel, draft.channel_message_id).reference)
                     for draft in seeds]
            published = mix_records(mix, records, run, known)
            stored_before = ledger.recorder.max_notification_id() or 0
            sent_at: dict[str, float] = {}
            cpu_before = _cpu_seconds(services)
            start = time.time()
            for i in range(0, records, 1000):
                chunk = published[i : i + 1000]
                now = time.time()
                client.submit_many(list(chunk))
                sent_at.update((d.channel_message_id, now) for d in chunk if isinstance(d, ContactDraft))
                if progress:
                    progress(f"{name}: published", min(i + 1000, records), records)
            through.wait(records, lambda done: progress and progress(f"{name}: through", done, records))
            end = time.time()
            cpu = [after - before for before, after in zip(cpu_before, _cpu_seconds(services), strict=True)]
        events_stored = (ledger.recorder.max_notification_id() or 0) - stored_before
    finally:
        ledger.close()
        stop_services(services)
    # After the run (so that it takes no CPU from the measured services): when did each contact
    # reach the events topic? Its ContactReceived record's timestamp is the publisher's send time,
    # a few milliseconds before the transaction holding it commits.
    probe = CaseLedger(LedgerSettings.resolve(database=env["CASELEDGER_DATABASE"], settings=environment(env)))
    try:
        # The topic carries channel message ids sealed (docs/privacy.md): the bench opens them with the ledger's keys.
        arrivals = _contacts_on_topic(settings)
        opened = probe.reveal(list(arrivals))
        latencies = sorted((arrivals[token] - sent_at[message_id]) * 1000 for token, message_id in
                           zip(arrivals, opened, strict=True) if message_id in sent_at)
        if len(latencies) < len(sent_at):
            raise RuntimeError(f"only {len(latencies)} of {len(sent_at)} contacts were found on the events topic")
        # A mix measured on refusals would be void: every record must have been applied (or traced, if resubmitted).
        refused = [r for r in probe.rejections() if r.source_topic == settings.intake_topic]
        if refused:
            raise RuntimeError(f"{len(refused)} intake records were rejected (the first: {refused[0].kind}, "
                               f"{(refused[0].public_reason or {}).get('code', '?')}); the run is void")
    finally:
        probe.close()
    seconds = end - start
    by_kind = mix.counts(records)
    contacts = sum(n for kind, n in by_kind.items() if kind not in ("delivery", "read"))
    per_event = 1e6 / max(1, events_stored)
    cpu_us = {"intake workers": sum(cpu[:-1]) * per_event, "publisher": cpu[-1] * per_event} if all(
        c >= 0 for c in cpu) else {}
    return MixRun(mix=mix.describe(), records=records, by_kind=by_kind, seeded=len(seeds), cpu_us_per_event=cpu_us,
                  clock=(start, end),
                  events_stored=events_stored, seconds=seconds, records_per_s=records / seconds,
                  events_per_s=events_stored / seconds, contacts_per_s=contacts / seconds,
                  latency_p50_ms=statistics.median(latencies) if latencies else 0.0,
                  latency_p99_ms=latencies[max(0, int(len(latencies) * 0.99) - 1)] if latencies else 0.0)


class _Through:
    """Waits until every record published on the intake topic went through: the workers' tracking positions
    reached the topic's end and the events topic holds the store's last position (polled every 0.1 s)."""

    def __init__(self, ledger: CaseLedger, publisher: Any, settings: Any, services: list[subprocess.Popen[bytes]],
                 logs: list[Path]) -> None:
        self.ledger, self.publisher, self.settings, self.services, self.logs = ledger, publisher, settings, services, logs

    def tails(self) -> str:
        return "\n".join(f"--- {log.name}\n" + log.read_text(errors="replace")[-1500:] for log in self.logs)

    def wait(self, records: int, progress: Callable[[int], object]) -> None:
        from caseledger.ledger.intake.worker import tracking_name

        intake_end = _end_offsets(self.settings, self.settings.intake_topic)
        first = {p: self.ledger.recorder.max_tracking_id(tracking_name(self.settings.intake_topic, p)) or 0
                 for p in intake_end}
        # A fresh events topic is published from the log's start: a full ledger's backlog first (before the clock).
        backlog = (self.ledger.recorder.max_notification_id() or 0) - max(0, self.publisher.last_published_position())
        deadline = time.time() + max(120, records / 100, backlog / 500)
        applied, last_position = 0, -1
        while time.time() < deadline:
            if any(s.poll() is not None for s in self.services):
                raise RuntimeError("a benchmarked service died:\n" + self.tails())
            positions = {p: self.ledger.recorder.max_tracking_id(tracking_name(self.settings.intake_topic, p)) or 0
                         for p in intake_end}
            applied = sum(min(positions[p], intake_end[p]) - first[p] for p in intake_end)
            if all(positions[p] >= intake_end[p] for p in intake_end):
                stored = self.ledger.recorder.max_notification_id() or 0
                last_position = self.publisher.last_published_position()
                if last_position >= stored:
                    return
            progress(min(applied, records))
            time.sleep(0.1)
        raise RuntimeError(f"only {applied} of {records} intake records were applied and position {last_position} "
                           "published in time\n" + self.tails())


def _cpu_seconds(services: list[subprocess.Popen[bytes]]) -> list[float]:
    """User + system CPU seconds each service has used so far (Linux's /proc; -1 where it cannot be read)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    used = []
    for service in services:
        try:
            fields = Path(f"/proc/{service.pid}/stat").read_text().rsplit(")", 1)[1].split()
            used.append((int(fields[11]) + int(fields[12])) / tick)  # utime, stime: fields 14 and 15 of stat
        except (OSError, IndexError, ValueError):
            used.append(-1.0)
    return used


def fresh_topics(kafka_bootstrap: str) -> Any:
    """Kafka settings naming a new intake and events topic for one run (made on the broker)."""
    from caseledger.ledger.kafka.topics import ensure_topics
    from caseledger.ledger.settings import KafkaSettings

    run = uuid.uuid4().hex[:8]
    settings = KafkaSettings.resolve(settings=environment().kafka, bootstrap_servers=kafka_bootstrap,
                                     intake_topic=f"bench-intake-{run}", events_topic=f"bench-events-{run}")
    ensure_topics(settings)
    return settings


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
