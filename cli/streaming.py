"""Kafka commands: topics, publishing intake records, the intake worker, the publisher, ``run``."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from caseledger.cli.app import app, session
from caseledger.ledger.errors import ValidationError
from caseledger.ledger.kafka.intake_worker import AGGREGATE_CACHE
from caseledger.ledger.kafka.publisher import TRANSACTION_INTERVAL_S

KafkaOpt = Annotated[
    str | None,
    typer.Option(
        "--kafka", "-k", envvar="CASELEDGER_KAFKA_BOOTSTRAP", metavar="HOST:PORT",
        help="Kafka bootstrap servers (env CASELEDGER_KAFKA_BOOTSTRAP); SASL/TLS from CASELEDGER_KAFKA_* env.",
    ),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, max=100_000, help="Records per transaction.")]
ConsumerOpt = Annotated[
    str,
    typer.Option("--consumer", metavar="kafka-python|confluent", envvar="CASELEDGER_KAFKA_CONSUMER",
                 help="Kafka client reading the topic: kafka-python (default) or confluent (confluent-kafka, "
                 "librdkafka; pip install '.[confluent]'). Same positions either way."),
]
TRANSACTION_INTERVAL_MS = round(TRANSACTION_INTERVAL_S * 1000)
AggregateCacheOpt = Annotated[
    int,
    typer.Option("--aggregate-cache", min=0, max=10_000_000, help="Aggregates (customers, identity claims, "
                 "cases) the intake worker keeps in memory between batches, read again only from their last "
                 "known version; 0 turns the cache off."),
]
TransactionIntervalOpt = Annotated[
    int,
    typer.Option("--transaction-interval-ms", min=0, max=10_000, help="While events trickle in, the publisher "
                 "begins at most one Kafka transaction per interval: each commit costs the broker milliseconds "
                 "of CPU whatever its size. Lower: less latency, more broker load."),
]
ProducerOpt = Annotated[
    str,
    typer.Option("--producer", metavar="kafka-python|confluent", envvar="CASELEDGER_KAFKA_PRODUCER",
                 help="Kafka client producing records (the publisher's on the events topic; an adapter's on "
                 "the intake topic): kafka-python (default) or confluent (librdkafka, pip install '.[confluent]'; "
                 "several times less CPU per record). Same partitions either way."),
]

topics_app = typer.Typer(no_args_is_help=True, help="The intake and events topics on Kafka.")
intake_app = typer.Typer(no_args_is_help=True, help="The intake worker: intake topic → ledger.")
publisher_app = typer.Typer(no_args_is_help=True, help="The publisher: ledger → events topic.")
STREAMING = "Kafka backbone"
app.add_typer(topics_app, name="topics", rich_help_panel=STREAMING)
app.add_typer(intake_app, name="intake", rich_help_panel=STREAMING)
app.add_typer(publisher_app, name="publisher", rich_help_panel=STREAMING)


def kafka_settings(bootstrap: str | None) -> Any:
    from caseledger.ledger.kafka.settings import KafkaSettings

    return KafkaSettings.resolve(bootstrap_servers=bootstrap)


@topics_app.command("create")
def topics_create(kafka: KafkaOpt = None) -> None:
    """Create the intake and events topics with explicit configs (retention forever); idempotent.

    Example: caseledger topics create --kafka localhost:29092
    """
    from caseledger.ledger.kafka.topics import ensure_topics

    settings = kafka_settings(kafka)
    done = ensure_topics(settings)
    table = Table("topic", "state")
    for topic, state in done.items():
        table.add_row(topic, state)
    session_out().print(table)


def session_out() -> Any:
    from caseledger.cli.app import plain_console

    return plain_console()


@app.command("publish", rich_help_panel=STREAMING)
def publish(
    source: Annotated[
        str, typer.Argument(metavar="FILE", help="JSON file with one record, an array, or JSON lines; - for stdin.")
    ] = "-",
    kafka: KafkaOpt = None,
    adapter: Annotated[str, typer.Option("--adapter", help="Name of the publishing adapter.")] = "shell",
    producer: ProducerOpt = "kafka-python",
) -> None:
    """Publish intake records (JSON) on the intake topic, for shell-script channel adapters.

    Every record is validated first: if any is invalid, none is published. Returns once the broker
    acknowledged every record (acks=all, idempotent producer), so the caller may tell the customer
    "received". A record: {"kind": "contact", "channel": "email", "channel_message_id": "<id>",
    "identity": "email:jane@example.com", "items": ["Where is my refund?"], "subject": "…",
    "body": "…", "case_reference": null, "follow_up": false, "occurred_at": "2026-11-23T10:00:00Z"};
    or {"kind": "delivery", "case_reference": "CL-…", "message_id": "ACK1", "delivered_at": "…"};
    or {"kind": "read", "case_reference": "CL-…", "message_id": "R1", "reader": "customer:jane"}.

    Example: echo '{"channel":"sms","channel_message_id":"s-1","identity":"phone:+33612345678",
    "items":["Call me back"]}' | caseledger publish -
    """
    from caseledger.ledger.intake import contact_from_json
    from caseledger.ledger.kafka.intake_client import KafkaIntakeClient

    records = list(_read_json_records(source))
    messages = []
    for n, record in enumerate(records, 1):
        try:
            messages.append(contact_from_json(record))
        except ValidationError as error:
            raise ValidationError(f"record {n}: {error}; nothing was published") from None
    if not messages:
        raise ValidationError("no records to publish")
    with KafkaIntakeClient(kafka_settings(kafka), adapter=adapter, producer=producer) as client:
        receipts = client.submit_many(messages)
    for receipt in receipts:
        typer.echo(f"stored {receipt.kind} at {receipt.topic}/{receipt.partition}@{receipt.offset}")


def _read_json_records(source: str) -> Iterator[Any]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as error:
        raise ValidationError(f"cannot read {source}: {error.strerror}") from None
    text = text.strip()
    if not text:
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValidationError(f"line {n} is not JSON: {error.msg}; nothing was published") from None
        return
    if isinstance(data, list):
        yield from data
    else:
        yield data


# -- long-running services ---------------------------------------------------------------------------


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or Ctrl-C, so services finish their batch and stop cleanly."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        logging.getLogger("caseledger").info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)


def _throttled(log: logging.Logger, every_s: float = 5.0) -> Callable[[Any], None]:
    last = [0.0]

    def report(stats: Any) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            log.info("%s", stats.line())

    return report


def _new_ledger(ctx: typer.Context) -> Any:
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.settings import LedgerSettings

    s = session(ctx)
    return CaseLedger(LedgerSettings.resolve(database=s.database, policy=s.policy))


def parse_partitions(text: str | None) -> list[int] | None:
    """``"0,2,4"`` → [0, 2, 4]; a clear error for anything else."""
    if text is None:
        return None
    try:
        partitions = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        partitions = []
    if not partitions or any(p < 0 for p in partitions):
        raise ValidationError(f"--partitions {text!r}: give partition numbers separated by commas, e.g. 0,2,4")
    return partitions


@intake_app.command("run")
def intake_run(
    ctx: typer.Context,
    kafka: KafkaOpt = None,
    batch_size: BatchOpt = 500,
    partitions: Annotated[
        str | None,
        typer.Option("--partitions", help="Only these intake partitions, e.g. 0,2,4 (run several workers on "
                     "disjoint partitions to share the load); default all."),
    ] = None,
    consumer: ConsumerOpt = "kafka-python",
    aggregate_cache: AggregateCacheOpt = AGGREGATE_CACHE,
) -> None:
    """Apply every intake record to the ledger, exactly once; stop with SIGTERM or Ctrl-C.

    Positions are kept in the ledger's database with the events, so the worker can be killed at
    any moment and restarted. Invalid records are recorded as rejections with their reason.
    Several workers may share the intake topic, each with its own --partitions.
    """
    from caseledger.ledger.kafka.clients import check_client
    from caseledger.ledger.kafka.intake_worker import KafkaIntakeWorker

    chosen = parse_partitions(partitions)
    check_client(consumer, "consumer")  # before connecting to anything
    _serve(ctx, "intake", lambda ledger: KafkaIntakeWorker(
        ledger, kafka_settings(kafka), batch_size=batch_size, partitions=chosen, consumer=consumer,
        aggregate_cache=aggregate_cache))


@intake_app.command("collisions")
def intake_collisions(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (with each request's raw bytes, base64).")] = False,
) -> None:
    """List the requests that reused a channel message id another request has (kept, not applied).

    A collision is recorded by `contact record`, the application API and the intake worker alike
    (exit code 6 for the caller). Each row names the colliding request only — its sender, where it
    came from, why it collided — never the request that holds the id. To apply one, have its
    channel send it again with a new message id (the raw bytes are in --json).

    Example: caseledger intake collisions --json > collisions.json
    """
    import base64

    from caseledger.cli import render

    s = session(ctx)
    found = list(s.ledger.collisions())
    if as_json:
        s.echo_json([
            {
                "collision_id": str(e.originator_id), "recorded_at": e.timestamp, "occurred_at": e.occurred_at,
                "channel": e.channel, "channel_message_id": e.channel_message_id, "kind": e.kind,
                "reason": e.reason, "customer_id": e.customer_id, "actor": f"{e.actor_kind}:{e.actor_id}",
                "source": e.source or None, "content_digest": e.content_digest,
                "raw_base64": base64.b64encode(e.raw).decode(),
            }
            for e in found
        ])
        return
    if not found:
        s.say("No message id collisions recorded.", "green")
        return
    table = Table("recorded", "channel", "message id", "kind", "sender", "source", "collision")
    for e in found:
        table.add_row(
            render.fmt_time(e.timestamp, s.tz), e.channel or "", e.channel_message_id, e.kind, e.customer_id,
            e.source or "direct", str(e.originator_id),
        )
    s.out.print(table)
    s.say(f"{len(found)} collision(s): each request was kept, not applied; its channel must resend it with a new "
          "message id.")


@publisher_app.command("run")
def publisher_run(
    ctx: typer.Context,
    kafka: KafkaOpt = None,
    batch_size: BatchOpt = 1000,
    producer: ProducerOpt = "kafka-python",
    transaction_interval_ms: TransactionIntervalOpt = TRANSACTION_INTERVAL_MS,
) -> None:
    """Publish every recorded event to the events topic, in order, exactly once; stop with SIGTERM.

    Resumes from the last position found on the topic itself (transactional batches), so it can
    be killed at any moment and restarted without gaps or duplicates, with either producer.
    """
    from caseledger.ledger.kafka.clients import check_client
    from caseledger.ledger.kafka.publisher import KafkaEventPublisher

    settings = kafka_settings(kafka)
    check_client(producer, "producer")  # before connecting to anything
    _serve(ctx, "publisher", lambda ledger: KafkaEventPublisher(
        ledger, settings, batch_size=batch_size, producer=producer, transaction_interval_s=transaction_interval_ms / 1000))


def _serve(ctx: typer.Context, name: str, build: Callable[[Any], Any]) -> None:
    """Run one service on its own ledger connection until SIGTERM or Ctrl-C."""
    _setup_logging()
    log = logging.getLogger(f"caseledger.{name}")
    with stop_on_signals() as stop:  # from the start: a SIGTERM while connecting also stops cleanly
        ledger = _new_ledger(ctx)
        try:
            service = build(ledger)
            stats = service.run(stop, on_batch=_throttled(log))
            log.info("stopped: %s", stats.line())
        finally:
            ledger.close()


def _run_projections(
    ctx: typer.Context, kafka: str | None, stop: threading.Event, on_batch: Any, consumer: str = "kafka-python"
) -> None:
    """The built-in projections, in this thread (their database connection belongs to it)."""
    from caseledger.cli.projections_cli import choose_source, make_source, open_session_views
    from caseledger.projections.registry import load_projections
    from caseledger.projections.runner import ProjectionRunner

    s = session(ctx)
    projections = load_projections(None)
    with open_session_views(s, None) as views:
        source = make_source(s, choose_source(views, projections, None, kafka), kafka, consumer)
        try:
            runner = ProjectionRunner(projections, views, source)
            runner.run(stop, on_batch=lambda _report: on_batch(runner.stats))
        finally:
            source.close()


@app.command("run", rich_help_panel=STREAMING)
def run_all(
    ctx: typer.Context,
    kafka: KafkaOpt = None,
    projections: Annotated[
        bool, typer.Option("--projections/--no-projections", help="Also keep the built-in projections up to date.")
    ] = True,
    consumer: ConsumerOpt = "kafka-python",
    producer: ProducerOpt = "kafka-python",
    aggregate_cache: AggregateCacheOpt = AGGREGATE_CACHE,
    transaction_interval_ms: TransactionIntervalOpt = TRANSACTION_INTERVAL_MS,
) -> None:
    """Run the intake worker, the publisher and the built-in projections in one process.

    For small deployments. Stops cleanly on SIGTERM or Ctrl-C: each service finishes its current
    batch. If one service fails, the others are stopped too and the command exits non-zero, so a
    supervisor restarts it.
    """
    from caseledger.ledger.kafka.clients import check_client
    from caseledger.ledger.kafka.intake_worker import KafkaIntakeWorker
    from caseledger.ledger.kafka.publisher import KafkaEventPublisher
    from caseledger.ledger.kafka.topics import ensure_topics

    _setup_logging()
    log = logging.getLogger("caseledger")
    check_client(consumer, "consumer")
    check_client(producer, "producer")
    settings = kafka_settings(kafka)
    ensure_topics(settings)
    ledgers = [_new_ledger(ctx), _new_ledger(ctx)]
    failures: list[BaseException] = []
    try:
        worker = KafkaIntakeWorker(ledgers[0], settings, consumer=consumer, aggregate_cache=aggregate_cache)
        publisher = KafkaEventPublisher(ledgers[1], settings, producer=producer,
                                        transaction_interval_s=transaction_interval_ms / 1000)
        with stop_on_signals() as stop:

            def guarded(name: str, target: Callable[..., Any], report: Callable[[Any], None]) -> None:
                try:
                    target(stop, on_batch=report)
                except BaseException as error:  # a dead service must stop the whole process
                    log.exception("%s failed", name)
                    failures.append(error)
                    stop.set()

            threads = [
                threading.Thread(
                    target=guarded, args=("intake", worker.run, _throttled(logging.getLogger("caseledger.intake"))),
                    name="intake",
                ),
                threading.Thread(
                    target=guarded,
                    args=("publisher", publisher.run, _throttled(logging.getLogger("caseledger.publisher"))),
                    name="publisher",
                ),
            ]
            if projections:
                threads.append(
                    threading.Thread(
                        target=guarded,
                        args=(
                            "projections",
                            lambda stop_, on_batch: _run_projections(ctx, kafka, stop_, on_batch, consumer),
                            _throttled(logging.getLogger("caseledger.projections")),
                        ),
                        name="projections",
                    )
                )
            for thread in threads:
                thread.start()
            log.info(
                "running intake worker, publisher%s on %s; SIGTERM or Ctrl-C stops",
                " and projections" if projections else "", settings.bootstrap_servers,
            )
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(0.5)
        log.info("stopped: intake %s; publisher %s", worker.stats.line(), publisher.stats.line())
    finally:
        for ledger in ledgers:
            ledger.close()
    if failures:
        raise typer.Exit(1)
