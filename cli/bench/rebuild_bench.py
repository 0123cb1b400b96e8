"""Projection benchmarks, each against a baseline measured in the same run.

``rebuild``: a generated ledger of N events (realistic case stories: contacts, follow-ups,
acknowledgements delivered, responses, promises kept or broken, chatbot escalations, handoffs,
closings) is published to a fresh events topic; then every built-in projection is rebuilt
from the topic into PostgreSQL in one pass. Baseline: the raw Avro decode rate of the same events
(the codec's compiled readers, the fastest decode the ledger has; fastavro's own rate is shown
too). Memory: resident set size sampled after every batch.

``lag``: contacts are published on the intake topic at a steady rate while the intake worker
and the publisher run as child processes and the case state projection follows the events
topic here; the latency of a contact is from just before it is published to the commit of the
batch that put it into case state.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

from caseledger.cli.bench import environment
from caseledger.cli.bench.intake_bench import start_services, stop_services
from caseledger.cli.bench.peer_case_state import PeerResult, measure_peer, require_quixstreams
from caseledger.cli.bench.preflight import checked_ledger_env
from caseledger.cli.bench.texts_writer import bench_writer
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.case import Case
from caseledger.ledger.domain.directory import ChannelMessage, Customer, IdentityClaim, case_id_for
from caseledger.ledger.domain.events import Context
from caseledger.ledger.domain.values import SYSTEM, Actor, ActorKind, Channel, ContactDraft, Identity
from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.kafka.clients import DEFAULT_CLIENT, check_client
from caseledger.ledger.kafka.topics import ensure_topics
from caseledger.ledger.runtime.gc_pacing import GcPacer
from caseledger.ledger.settings import KafkaSettings, LedgerSettings
from caseledger.projections.parallel import rebuild_in_parallel, resident_mb
from caseledger.projections.registry import load_projections
from caseledger.projections.runner import BatchReport, ProjectionRunner, rebuild
from caseledger.projections.sources import kafka_source
from caseledger.projections.view_stores import open_views

Say = Callable[[str], None]
CHANNELS = (Channel.EMAIL, Channel.CHAT, Channel.WEB_FORM, Channel.PHONE, Channel.SMS, Channel.CHATBOT, Channel.APP)
SEGMENTS = ("retail", "premium", "business", None)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# -- a generated ledger ---------------------------------------------------------------------------------


def _story(n: int, rng: random.Random, at: datetime) -> list[Any]:
    """One customer's case from first contact to closing, built with the domain's own commands.

    Each step is recorded at the time it happens (the story's own clock), in order, as a ledger would.
    """
    channel = CHANNELS[n % len(CHANNELS)]
    segment = SEGMENTS[n % len(SEGMENTS)]
    identity = Identity(kind="email", value=f"c{n}@bench.example")
    customer_id = str(identity)
    ctx = Context(actor=Actor(kind=ActorKind.CUSTOMER, id=customer_id), occurred_at=at, channel=channel,
                  correlation_id=uuid.uuid4())
    claim = IdentityClaim.claim(identity, claim_id=IdentityClaim.id_for(identity), customer_id=customer_id, ctx=ctx)
    customer = Customer.register(customer_id=customer_id, segment=segment, ctx=ctx)
    customer.link_identity(identity, ctx=ctx)
    reference = f"CL-B{n // 100_000:04d}-{n % 100_000:05d}"
    case = Case.open(case_id=case_id_for(reference), reference=reference, customer_id=customer_id,
                     subject="Parcel not delivered", category=None, segment=segment, ctx=ctx)
    customer.link_case(case_id=case.id, reference=reference, ctx=ctx)
    aggregates: list[Any] = [case, customer, claim]

    def contact(k: int, when: datetime, follow_up: bool) -> None:
        draft = ContactDraft(channel=channel, channel_message_id=f"b{n}-{k}", identity=identity,
                             items=tuple(f"question {q} about order {n}" for q in range(1 + rng.randrange(3))),
                             subject="Parcel", body="I ordered on Monday and nothing has arrived yet. " * 3,
                             follow_up=follow_up)
        here = Context(actor=ctx.actor, occurred_at=when, channel=channel, correlation_id=uuid.uuid4())
        contact_id, ack_id = case.receive_contact(draft, ctx=here, respond_by=when + timedelta(days=2),
                                                  acknowledge_by=when + timedelta(hours=1), writer=bench_writer())
        aggregates.append(ChannelMessage.register(
            channel=channel, channel_message_id=draft.channel_message_id, case_id=case.id, reference=reference,
            contact_id=contact_id, acknowledgement_id=ack_id, content_digest=draft.content_digest(),
            customer_id=customer_id, ctx=here))
        delivered = when + timedelta(seconds=rng.randrange(5, 600))  # reported when it happens
        case.record_delivery(ctx=Context(actor=SYSTEM, occurred_at=delivered), message_id=ack_id,
                             delivered_at=delivered)

    contact(0, at, follow_up=False)
    agent = Actor(kind=ActorKind.AGENT, id=f"agent{n % 40}")
    later = at + timedelta(minutes=10 + rng.randrange(5, 600))  # after the acknowledgement's delivery
    if channel is Channel.CHATBOT:
        case.escalate_to_human(ctx=Context(actor=Actor(kind=ActorKind.AUTOMATION, id="bot"), occurred_at=later,
                                           channel=Channel.CHATBOT),
                               bot_id="helpbot", waiting_since=at, to_team="humans", reason="asked for a human")
    work = Context(actor=agent, occurred_at=later, channel=channel)
    case.assign(ctx=work, assignee=agent.id, team=f"team{n % 5}")
    if rng.random() < 0.3:
        contact(1, later + timedelta(minutes=30), follow_up=True)
        work = Context(actor=agent, occurred_at=later + timedelta(minutes=41), channel=channel)  # after it
    first = case.open_item_ids()
    case.respond(ctx=work, body="Here is where your parcel is.", answers=first[:1])
    if rng.random() < 0.3:
        promise_id, _ = case.make_promise(ctx=Context(actor=agent, occurred_at=work.occurred_at, channel=Channel.PHONE),
                                          kind="callback", terms="call back with the tracking number",
                                          due_at=work.occurred_at + timedelta(days=1), writer=bench_writer())
        if rng.random() < 0.8:
            case.keep_promise(ctx=work, promise_id=promise_id, evidence="call log")
        else:
            case.break_promise(ctx=work, promise_id=promise_id, reason="nobody called")
    if rng.random() < 0.2:
        case.hand_off(ctx=work, to_assignee=f"agent{(n + 1) % 40}", to_team=None, note="customer prefers email")
    rest = case.open_item_ids()
    if rest:
        case.respond(ctx=work, body="And the rest of your questions.", answers=rest)
    if rng.random() < 0.85:
        case.close(ctx=work, reason="answered", notice="Your case is closed.", writer=bench_writer())
    return aggregates


def generate_ledger(database: str, events: int, *, say: Say | None = None, seed: int = 7) -> int:
    """Fill an empty ledger with about ``events`` events of case stories; returns how many.

    Stories overlap in time but are written one whole story after another, so ``audit verify``
    warns ``recorded-out-of-order`` on such a ledger (a warning, never an error)."""
    ledger = CaseLedger(LedgerSettings.resolve(database=database, settings=environment()))
    try:
        if (ledger.recorder.max_notification_id() or 0) > 0:
            raise ConfigurationError(f"{ledger.settings.store.describe()} is not empty; generate into an empty one")
        rng = random.Random(seed)
        start = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
        total, n, pending = 0, 0, []
        next_report = 0.0
        while total < events:
            aggregates = _story(n, rng, start + timedelta(seconds=37 * n))
            total += sum(len(a._pending_events) for a in aggregates)
            ledger.chain(*aggregates)
            pending.extend(aggregates)
            n += 1
            if len(pending) >= 600:
                ledger.save(*pending)
                pending = []
                if say and time.monotonic() > next_report:
                    next_report = time.monotonic() + 5
                    say(f"generated {total:,} events")
        if pending:
            ledger.save(*pending)
        return ledger.recorder.max_notification_id() or 0
    finally:
        ledger.close()


def publish_ledger(database: str, settings: KafkaSettings, *, say: Say | None = None) -> float:
    """Publish a whole ledger to the events topic with the real publisher; returns the seconds it took."""
    from caseledger.ledger.kafka.publisher import KafkaEventPublisher

    ledger = CaseLedger(LedgerSettings.resolve(database=database, settings=environment()))
    stop = threading.Event()
    thread: threading.Thread | None = None
    try:
        target = ledger.recorder.max_notification_id() or 0
        publisher = KafkaEventPublisher(ledger, settings, batch_size=5000)
        thread = threading.Thread(target=publisher.run, args=(stop,), daemon=True)
        started = time.monotonic()
        thread.start()
        next_report = started + 5
        while publisher.stats.position < target and thread.is_alive():
            time.sleep(0.05)
            if say and time.monotonic() > next_report:
                next_report = time.monotonic() + 5
                say(f"published {publisher.stats.position:,} of {target:,} events")
        if publisher.stats.position < target:
            raise RuntimeError(f"the publisher stopped at position {publisher.stats.position} of {target}")
        return time.monotonic() - started
    finally:
        stop.set()
        if thread is not None:
            # Let the publisher finish its batch and close its producer before the store goes: a
            # thread still inside the database driver or librdkafka at interpreter exit can abort it.
            thread.join(60)
        ledger.close()


# -- bench rebuild ---------------------------------------------------------------------------------------


@dataclass
class RebuildBenchResult:
    events: int
    partitions: int
    views: str
    generate_seconds: float
    publish_seconds: float
    rebuild_seconds: float
    rebuild_events_per_s: float
    baseline_decode_per_s: float
    fastavro_decode_per_s: float
    domain_decode_per_s: float
    ratio_to_baseline: float
    rss_mb_at_10pct: float
    rss_mb_peak: float
    rows: dict[str, int]
    peer: PeerResult | None = None

    def report(self) -> list[tuple[str, str]]:
        """(measure, value) lines for the table the command prints."""
        return [
            ("events (generated ledger, on the topic)", f"{self.events:,} in {self.partitions} partitions"),
            ("views", self.views),
            ("generate / publish", f"{self.generate_seconds:.1f} s / {self.publish_seconds:.1f} s"),
            ("rebuild of the 4 built-ins (topic → PostgreSQL, swap included)", f"{self.rebuild_seconds:.1f} s"),
            ("rebuild events/s", f"{self.rebuild_events_per_s:,.0f}"),
            ("baseline: raw Avro decode (compiled readers), events/s", f"{self.baseline_decode_per_s:,.0f}"),
            ("the same decode with fastavro alone, events/s", f"{self.fastavro_decode_per_s:,.0f}"),
            ("Avro decode into domain events, events/s", f"{self.domain_decode_per_s:,.0f}"),
            ("rebuild ÷ baseline", f"{self.ratio_to_baseline:.0%}"),
            ("memory of a rebuild process (RSS) at 10% / peak",
             f"{self.rss_mb_at_10pct:,.0f} MB / {self.rss_mb_peak:,.0f} MB"),
            ("rows written", ", ".join(f"{t} {n:,}" for t, n in self.rows.items())),
            *(self.peer.report() if self.peer is not None else []),
        ]


def decode_baseline(database: str, sample: int = 200_000) -> tuple[float, float, float]:
    """Rates over up to ``sample`` stored events: (raw Avro decode, the same with fastavro alone,
    decode into domain events).

    The raw decode is the codec's ``decode_record`` (compiled readers, see ledger.avrocompiled):
    the fastest Avro decode the ledger has, so that fastavro's slower pace does not flatter the ratio.
    """
    from fastavro import schemaless_reader

    from caseledger.ledger.avro.codec import HEADER_SIZE
    from caseledger.ledger.domain.catalog import name_of_topic

    ledger = CaseLedger(LedgerSettings.resolve(database=database, settings=environment()))
    try:
        records = [(name_of_topic(n.topic), bytes(n.state))
                   for n in ledger.recorder.select_notifications(start=1, limit=sample)]
        codec = ledger.codec
        started = time.perf_counter()
        for name, data in records:
            codec.decode_record(name, data)
        raw = len(records) / (time.perf_counter() - started)
        schemas = {name: codec.schema(name).parsed for name in {name for name, _ in records}}
        started = time.perf_counter()
        for name, data in records:
            schemaless_reader(BytesIO(data[HEADER_SIZE:]), schemas[name], None)
        fastavro_only = len(records) / (time.perf_counter() - started)
        started = time.perf_counter()
        for name, data in records:
            codec.decode(name, data)
        domain = len(records) / (time.perf_counter() - started)
        return raw, fastavro_only, domain
    finally:
        ledger.close()


def _temporary_postgres(directory: Path) -> tuple[str, Any]:
    try:
        import pgserver
    except ImportError:
        raise ConfigurationError(
            "bench rebuild needs PostgreSQL: pass --postgres postgresql://… (an empty database) or install "
            "pgserver (pip install 'caseledger[test]')"
        ) from None
    server = pgserver.get_server(directory, cleanup_mode="stop")
    return server.get_uri(), server


def bench_rebuild(
    *, kafka_bootstrap: str, events: int = 200_000, postgres_url: str | None = None, say: Say | None = None,
    partitions: int = 6, workers: int = 2, consumer: str = DEFAULT_CLIENT, batch_size: int = 5000, peer: bool = True,
) -> RebuildBenchResult:
    """Generate, publish, then rebuild every built-in from the topic into PostgreSQL."""
    import psycopg

    say = say or (lambda _text: None)
    if peer:
        require_quixstreams()
    tmp = tempfile.TemporaryDirectory(prefix="caseledger-bench-rebuild-")
    server = None
    try:
        if postgres_url is None:
            admin_url, server = _temporary_postgres(Path(tmp.name) / "pg")
            name = f"bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            base, _, query = admin_url.partition("?")
            postgres_url = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
        database = str(Path(tmp.name) / "ledger.sqlite")
        run = uuid.uuid4().hex[:8]
        settings = KafkaSettings.resolve(settings=environment().kafka, bootstrap_servers=kafka_bootstrap, intake_topic=f"bench-ri-{run}",
                                         events_topic=f"bench-re-{run}", events_partitions=partitions)
        ensure_topics(settings)

        started = time.monotonic()
        total = generate_ledger(database, events, say=say)
        generated = time.monotonic() - started
        say(f"generated {total:,} events in {generated:.1f} s; publishing to {settings.events_topic}")
        published = publish_ledger(database, settings, say=say)
        say("measuring the baseline (raw Avro decode)")
        baseline, fastavro_only, domain = decode_baseline(database)

        projections = load_projections(None)
        samples: list[tuple[int, float]] = []
        done = [0]

        def on_batch(batch: Any, memory: float | None = None) -> None:
            done[0] += batch.records
            samples.append((done[0], memory if memory is not None else resident_mb()))

        say(f"rebuilding {', '.join(p.name for p in projections)} from the topic into PostgreSQL "
            f"({workers} process{'es' if workers > 1 else ''})")
        with open_views(postgres_url) as views:
            if workers > 1:
                result = rebuild_in_parallel([p.name for p in projections], postgres_url, settings, workers=workers,
                                             batch_size=batch_size, consumer=consumer,
                                             on_progress=lambda n, rss: on_batch(
                                                 BatchReport(records=n, applied=0, seconds=0.0), rss))
            else:
                source = kafka_source(settings, consumer=consumer)
                try:
                    result = rebuild(projections, views, source, batch_size=batch_size, on_batch=on_batch)
                finally:
                    source.close()
            rows = {t.name: int(views.fetch(f"SELECT COUNT(*) AS n FROM {t.name}")[0]["n"])
                    for p in projections for t in p.tables}
        compared = measure_peer(settings, postgres_url, records=total, consumer=consumer, batch_size=batch_size,
                                state_dir=Path(tmp.name) / "peer-state", say=say) if peer else None
        rate = result.records / result.seconds
        at_10 = next((rss for n, rss in samples if n >= total // 10), samples[0][1] if samples else 0.0)
        peak = max(rss for _n, rss in samples) if samples else 0.0
        return RebuildBenchResult(
            events=total, partitions=partitions, views=f"PostgreSQL, {workers} rebuild process(es) reading with {consumer}", generate_seconds=generated,
            publish_seconds=published, rebuild_seconds=result.seconds, rebuild_events_per_s=rate,
            baseline_decode_per_s=baseline, fastavro_decode_per_s=fastavro_only, domain_decode_per_s=domain, ratio_to_baseline=rate / baseline,
            rss_mb_at_10pct=at_10, rss_mb_peak=peak, rows=rows, peer=compared,
        )
    finally:
        if server is not None:
            server.cleanup()
        tmp.cleanup()


# -- bench lag -------------------------------------------------------------------------------------------


@dataclass
class LagBenchResult:
    rate: int
    seconds: float
    contacts: int
    seen: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    achieved_rate: float
    recorded_to_visible_p50_ms: float
    recorded_to_visible_p99_ms: float
    projection_batch_p50_ms: float
    projection_batch_p99_ms: float
    intake_workers: int = 1
    consumer: str = DEFAULT_CLIENT
    producer: str = DEFAULT_CLIENT
    # Each second of publishing: [second, contacts, p50 ms, p99 ms, of which recorded → visible p99 ms].
    # Shows whether the tail is spread out or a few stalls, and whether the run degrades with time.
    per_second: list[list[float]] = field(default_factory=list)

    def report(self) -> list[tuple[str, str]]:
        """(measure, value) lines for the table the command prints."""
        worst = max(self.per_second, key=lambda row: row[3], default=None)
        return [
            ("intake workers / consumer (workers and projection) / producer (publisher and adapter)",
             f"{self.intake_workers} / {self.consumer} / {self.producer}"),
            ("contacts published (steady rate)", f"{self.contacts:,} at {self.achieved_rate:,.0f}/s "
                                                 f"(target {self.rate:,}/s) over {self.seconds:.0f} s"),
            ("seen in case state", f"{self.seen:,}"),
            ("latency p50 (intake topic → case state)", f"{self.p50_ms:,.0f} ms"),
            ("latency p90", f"{self.p90_ms:,.0f} ms"),
            ("latency p99", f"{self.p99_ms:,.0f} ms"),
            ("latency max", f"{self.max_ms:,.0f} ms"),
            ("of which recorded in the ledger → visible (publisher, topic, projection) p50 / p99",
             f"{self.recorded_to_visible_p50_ms:,.0f} ms / {self.recorded_to_visible_p99_ms:,.0f} ms"),
            ("the projection's own apply + commit per batch p50 / p99",
             f"{self.projection_batch_p50_ms:,.1f} ms / {self.projection_batch_p99_ms:,.1f} ms"),
            ("worst second: p99 (its second of publishing); every second in the JSON file",
             f"{worst[3]:,.0f} ms (second {worst[0]:.0f})" if worst else "–"),
        ]


def bench_lag(
    *, kafka_bootstrap: str, rate: int = 1000, seconds: float = 20.0, database: str | None = None,
    workers: int = 1, consumer: str = "confluent", producer: str = "confluent", say: Say | None = None,
) -> LagBenchResult:
    """Publish contacts at ``rate``/s for ``seconds``; measure publish → visible in case state."""
    from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
    from caseledger.projections.case_state import CaseState

    say = say or (lambda _text: None)
    tmp = tempfile.TemporaryDirectory(prefix="caseledger-bench-lag-")
    db = database or str(Path(tmp.name) / "ledger.sqlite")
    run = uuid.uuid4().hex[:8]
    settings = KafkaSettings.resolve(settings=environment().kafka, bootstrap_servers=kafka_bootstrap, intake_topic=f"bench-li-{run}",
                                     events_topic=f"bench-le-{run}")
    if not 1 <= workers <= settings.intake_partitions:
        raise ConfigurationError(
            f"--workers {workers}: give 1 to {settings.intake_partitions}, the intake topic's partitions"
        )
    check_client(producer, "producer")
    check_client(consumer, "consumer")
    ledger_env = checked_ledger_env(os.environ, Path(tmp.name), database=db, bench="bench lag")
    ensure_topics(settings)
    env = {**ledger_env, "CASELEDGER_DATABASE": db, "CASELEDGER_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "CASELEDGER_INTAKE_TOPIC": settings.intake_topic, "CASELEDGER_EVENTS_TOPIC": settings.events_topic}
    services, logs = start_services(env, Path(tmp.name), partitions=settings.intake_partitions, workers=workers,
                                    consumer=consumer, producer=producer, intake_batch=500, publisher_batch=1000)
    stop = threading.Event()
    seen: dict[str, float] = {}
    recorded: dict[str, float] = {}  # when the ledger recorded each contact
    batch_ms: list[float] = []  # the projection's own time per batch: apply and commit
    failures: list[BaseException] = []
    views = open_views(str(Path(tmp.name) / "views.sqlite"))
    source = kafka_source(settings, consumer=consumer, fetch_wait_ms=10)

    def follow() -> None:
        try:
            runner = ProjectionRunner([CaseState()], views, source, batch_size=2000, idle_s=0.05, keep_events=True)

            def committed(batch: Any) -> None:
                now = time.time()
                batch_ms.append(batch.seconds * 1000)
                for event in batch.events:
                    if type(event).__name__ == "ContactReceived":
                        seen.setdefault(event.channel_message_id, now)
                        recorded.setdefault(event.channel_message_id, event.timestamp.timestamp())

            with GcPacer() as pacer:  # this process's pacer: the follower is its one service, and owns it
                runner.run(stop, on_batch=committed, pacer=pacer)
        except BaseException as error:  # the measuring thread must report, not vanish
            failures.append(error)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    sent: dict[str, float] = {}
    # Events carry channel message ids sealed (docs/privacy.md): the follower keeps them as it saw them, and
    # this thread opens them with the ledger's keys only while it waits (the warm-up, the tail).
    opener = _SealedIds(db, env)
    try:
        contacts = int(rate * seconds)
        with KafkaIntakeClient(settings, adapter="bench-lag", producer=producer) as client:
            # Warm up before the clock starts: one contact on every intake partition, each seen in
            # case state, so that steady-state latency does not include the services' start.
            warm: set[str] = set()
            covered: set[int] = set()
            k = 0
            while covered != set(range(settings.intake_partitions)) and k < 500:
                k += 1
                draft = _lag_draft(run, -k)
                covered.add(client.submit(draft).partition)
                warm.add(draft.channel_message_id)
            ready = time.monotonic() + 120
            while not warm <= opener.opened(seen) and time.monotonic() < ready and not failures:
                if any(s.poll() is not None for s in services):
                    raise RuntimeError("a benchmarked service died:\n" + "\n".join(
                        log.read_text(errors="replace")[-1500:] for log in logs))
                time.sleep(0.05)
            if not warm <= opener.opened(seen):
                raise RuntimeError("the services did not start within 120 s: no warm-up contact reached case state")
        say("services warm; publishing at a steady rate")
        # The steady publisher is a process of its own, like a channel adapter: in this one it
        # would share the interpreter with the projection it measures and fall behind its rate.
        sent_file = Path(tmp.name) / "sent.json"
        steady = subprocess.Popen(
            [sys.executable, "-c", "from caseledger.cli.bench.rebuild_bench import steady_publisher_main; steady_publisher_main()",
             run, str(rate), str(contacts), str(sent_file), producer], env=env)
        while steady.poll() is None and not failures:
            if any(s.poll() is not None for s in services):
                steady.kill()
                raise RuntimeError("a benchmarked service died:\n" + "\n".join(
                    log.read_text(errors="replace")[-1500:] for log in logs))
            time.sleep(0.1)
        if steady.wait() != 0:
            raise RuntimeError(f"the steady publisher failed (exit {steady.returncode})")
        published = json.loads(sent_file.read_text())
        sent.update(published["sent"])
        published_for = published["seconds"]
        deadline = time.monotonic() + 60
        while not set(sent) <= opener.opened(seen) and time.monotonic() < deadline and not failures:
            if any(s.poll() is not None for s in services):
                raise RuntimeError("a benchmarked service died:\n" + "\n".join(
                    log.read_text(errors="replace")[-1500:] for log in logs))
            time.sleep(0.1)
        if failures:
            raise failures[0]
    finally:
        stop.set()
        follower.join(30)
        stop_services(services)
        source.close()
        views.close()
        seen, recorded = opener.by_message_id(seen), opener.by_message_id(recorded)
        opener.close()
        tmp.cleanup()
    latencies = [(seen[m] - at) * 1000 for m, at in sent.items() if m in seen]
    downstream = [(seen[m] - recorded[m]) * 1000 for m in sent if m in seen]
    start = min(sent.values(), default=0.0)
    seconds_of: dict[int, list[tuple[float, float]]] = {}
    for m, at in sent.items():
        if m in seen:
            seconds_of.setdefault(int(at - start), []).append(((seen[m] - at) * 1000, (seen[m] - recorded[m]) * 1000))
    per_second = [[second, len(rows), round(statistics.median(r[0] for r in rows), 1),
                   round(percentile([r[0] for r in rows], 0.99), 1), round(percentile([r[1] for r in rows], 0.99), 1)]
                  for second, rows in sorted(seconds_of.items())]
    if not latencies:
        raise RuntimeError("no contact reached case state; check the Kafka broker and the topics")
    return LagBenchResult(
        rate=rate, seconds=published_for, contacts=len(sent), seen=len(latencies),
        p50_ms=statistics.median(latencies), p90_ms=percentile(latencies, 0.90), p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies), achieved_rate=len(sent) / published_for,
        recorded_to_visible_p50_ms=statistics.median(downstream),
        recorded_to_visible_p99_ms=percentile(downstream, 0.99),
        projection_batch_p50_ms=statistics.median(batch_ms), projection_batch_p99_ms=percentile(batch_ms, 0.99),
        intake_workers=workers, consumer=consumer, producer=producer, per_second=per_second,
    )


class _SealedIds:
    """Channel message ids as the events topic carries them (sealed), opened with the bench ledger's keys."""

    def __init__(self, database: str, environ: dict[str, str]) -> None:
        self.database = database
        self.environ = environ
        self.ids: dict[str, str] = {}  # sealed → opened
        self._ledger: Any = None

    def opened(self, sealed: dict[str, float]) -> set[str]:
        new = [t for t in list(sealed) if t not in self.ids]
        if new:
            if self._ledger is None:
                self._ledger = CaseLedger(LedgerSettings.resolve(database=self.database, settings=environment(self.environ)))
            self.ids.update(zip(new, self._ledger.reveal(new), strict=True))
        return set(self.ids.values())

    def by_message_id(self, sealed: dict[str, float]) -> dict[str, float]:
        self.opened(sealed)
        return {self.ids[t]: at for t, at in sealed.items()}

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()


def steady_publisher_main() -> None:
    """Child process of ``bench lag``: publish contacts at a steady rate, then write their send times.

    Arguments: run, rate, contacts, output file, producer client, and optionally the customers' mix:
    ``5000`` (``bench lag``: 5,000 customers in turn) or ``returning`` (``bench soak``: three contacts in
    four from a new customer, the fourth from an earlier one; no customer piles up cases as time goes on).
    Kafka settings from the environment.
    """
    from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient

    run, rate, contacts, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    producer = sys.argv[5]
    returning = sys.argv[6:7] == ["returning"]
    tick = max(0.01, 1 / rate)  # below 100/s, one contact per tick: a tick of 10 ms would send 100/s
    per_tick = max(1, round(rate * tick))
    sent: dict[str, float] = {}
    with KafkaIntakeClient(KafkaSettings.resolve(settings=environment().kafka), adapter="bench-lag", producer=producer) as client:
        client.submit(_lag_draft(run, -10_000))  # connected before the clock starts
        started = time.monotonic()
        n = 0
        while n < contacts:
            pause = started + (n / per_tick) * tick - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            chunk = [_lag_draft(run, i, customer=(i if i % 4 else i // 4) if returning else None)
                     for i in range(n, min(n + per_tick, contacts))]
            at = time.time()
            client.submit_many(chunk)  # type: ignore[arg-type]
            sent.update((draft.channel_message_id, at) for draft in chunk)
            n += len(chunk)
        seconds = time.monotonic() - started
    out.write_text(json.dumps({"sent": sent, "seconds": seconds}))


def _lag_draft(run: str, i: int, *, customer: int | None = None) -> ContactDraft:
    who = i % 5000 if customer is None else customer
    return ContactDraft(channel=CHANNELS[i % 5], channel_message_id=f"{run}-{i}",
                        identity=Identity(kind="email", value=f"lag{who}@bench.example"),
                        items=(f"Question {i}: where is my parcel?",), subject="Parcel",
                        body="I ordered on Monday and nothing has arrived yet.", occurred_at=datetime.now(UTC))
