"""Kafka backbone commands: ``topics create``, ``publish``, ``intake run | collisions``, ``publisher run``, ``run``.

The services themselves run in :mod:`ledger.services`; this module parses their options, sets
up logging and signals (the process's business), and turns a failed service into exit code 1.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from caseledger.cli.common import (
    Session,
    environment,
    local_only,
    plain_console,
    session,
    setup_logging,
    stop_on_signals,
)
from caseledger.cli.options import (
    AggregateCacheOpt,
    ConsumerOpt,
    KafkaOpt,
    ProducerOpt,
    RecordBatchOpt,
    parse_partitions,
)
from caseledger.ledger.errors import ValidationError
from caseledger.ledger.intake.worker import AGGREGATE_CACHE
from caseledger.ledger.kafka.publisher import TRANSACTION_INTERVAL_S

TRANSACTION_INTERVAL_MS = round(TRANSACTION_INTERVAL_S * 1000)
TransactionIntervalOpt = Annotated[
    int,
    typer.Option("--transaction-interval-ms", min=0, max=10_000, help="While events trickle in, the publisher "
                 "begins at most one Kafka transaction per interval: each commit costs the broker milliseconds "
                 "of CPU whatever its size. Lower: less latency, more broker load."),
]

MemoryTraceOpt = Annotated[
    Path | None,
    typer.Option("--memory-trace", envvar="CASELEDGER_MEMORY_TRACE", metavar="FILE", dir_okay=False,
                 help="Debug a growing memory: append a report to FILE every --memory-trace-every seconds: resident "
                 "memory, Python's objects, what glibc's allocator holds, in use and free (README, Memory)."),
]
MemoryTraceSitesOpt = Annotated[
    bool, typer.Option("--memory-trace-sites", envvar="CASELEDGER_MEMORY_TRACE_SITES",
                       help="With --memory-trace: also trace the Python heap (tracemalloc: several times the CPU "
                       "per allocation) and report the allocation sites that grew most."),
]
MemoryTraceEveryOpt = Annotated[
    float, typer.Option("--memory-trace-every", envvar="CASELEDGER_MEMORY_TRACE_EVERY", min=1.0, max=86_400.0,
                        help="Seconds between two memory reports of --memory-trace."),
]

NOT_THROUGH_API = "it talks to the Kafka broker (and the ledger's database) directly, not to the ledger service"

if TYPE_CHECKING:
    from caseledger.cli.service_plan import ServicePlan
    from caseledger.ledger.runtime.supervisor import ServiceBuilder
    from caseledger.ledger.settings import KafkaSettings

topics_app = typer.Typer(no_args_is_help=True, help="The intake and events topics on Kafka.")
intake_app = typer.Typer(no_args_is_help=True, help="The intake worker: intake topic → ledger.")
publisher_app = typer.Typer(no_args_is_help=True, help="The publisher: ledger → events topic.")


def kafka_settings(bootstrap: str | None) -> KafkaSettings:
    """``--kafka`` (or CASELEDGER_KAFKA_BOOTSTRAP) and the CASELEDGER_KAFKA_* settings."""
    from caseledger.ledger.settings import KafkaSettings

    return KafkaSettings.resolve(bootstrap_servers=bootstrap, settings=environment().kafka)


# -- topics and publishing -----------------------------------------------------------------------------


@topics_app.command("create")
@local_only(NOT_THROUGH_API)
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
    plain_console().print(table)


SignaturesOpt = Annotated[
    bool | None,
    typer.Option("--require-signatures/--allow-unsigned", help="Reject intake records not signed by a registered "
                 "adapter key. Default: required as soon as one adapter is registered (caseledger adapters add)."),
]


@local_only(NOT_THROUGH_API)
def publish(
    source: Annotated[
        str, typer.Argument(metavar="FILE", help="JSON file with one record, an array, or JSON lines; - for stdin.")
    ] = "-",
    kafka: KafkaOpt = None,
    adapter: Annotated[str, typer.Option("--adapter", help="Name of the publishing adapter.")] = "shell",
    producer: ProducerOpt = "confluent",
    signing_key: Annotated[str | None, typer.Option(
        "--signing-key", envvar="CASELEDGER_ADAPTER_KEY", metavar="FILE",
        help="The adapter's Ed25519 private key (PEM, from `caseledger adapters add`): sign every record. A "
        "ledger with registered adapters rejects unsigned records.")] = None,
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
    from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
    from caseledger.ledger.intake.records import contact_from_json

    records = list(_read_json_records(source))
    messages = []
    for n, record in enumerate(records, 1):
        try:
            messages.append(contact_from_json(record))
        except ValidationError as error:
            raise ValidationError(f"record {n}: {error}; nothing was published") from None
    if not messages:
        raise ValidationError("no records to publish")
    from caseledger.ledger.intake.signatures import AdapterSigner

    signer = AdapterSigner.from_file(adapter, signing_key) if signing_key else None
    with KafkaIntakeClient(kafka_settings(kafka), adapter=adapter, producer=producer, signer=signer) as client:
        receipts = client.submit_many(messages)
    for receipt in receipts:
        typer.echo(f"stored {receipt.kind} at {receipt.topic}/{receipt.partition}@{receipt.offset}")


def _read_json_records(source: str) -> Iterator[Any]:
    """The records of FILE (or stdin): one JSON value, an array of them, or JSON lines."""
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


# -- the intake worker and the publisher ---------------------------------------------------------------


@intake_app.command("run")
@local_only(NOT_THROUGH_API)
def intake_run(
    ctx: typer.Context,
    kafka: KafkaOpt = None,
    batch_size: RecordBatchOpt = 500,
    partitions: Annotated[
        str | None,
        typer.Option("--partitions", help="Only these intake partitions, e.g. 0,2,4: a fixed share, outside the "
                     "consumer group (nobody takes them over if this worker dies). Default: the share the group gives."),
    ] = None,
    session_timeout_ms: Annotated[
        int | None, typer.Option("--session-timeout-ms", min=1000, max=300_000, envvar="CASELEDGER_KAFKA_SESSION_TIMEOUT_MS",
                                 help="How long the consumer group waits for a silent worker (killed, hung) before "
                                 "handing its partitions to the others (default 10000). The broker bounds it "
                                 "(group.min/max.session.timeout.ms)."),
    ] = None,
    consumer: ConsumerOpt = "confluent",
    aggregate_cache: AggregateCacheOpt = AGGREGATE_CACHE,
    signatures: SignaturesOpt = None,
) -> None:
    """Apply every intake record to the ledger, exactly once; stop with SIGTERM or Ctrl-C.

    Positions are kept in the ledger's database with the events, so the worker can be killed at
    any moment and restarted. Invalid records are recorded as rejections with their reason.
    Several workers share the intake topic through Kafka's consumer group: when one dies, the
    others take its partitions over within --session-timeout-ms, from the positions the ledger
    recorded (each record still applied once). --partitions gives a worker a fixed share instead.
    """
    from caseledger.ledger.intake.worker import KafkaIntakeWorker
    from caseledger.ledger.kafka.clients import check_client
    from caseledger.ledger.runtime.supervisor import serve

    chosen = parse_partitions(partitions)
    check_client(consumer, "consumer")  # before connecting to anything
    setup_logging()
    with stop_on_signals() as stop:  # from the start: a SIGTERM while connecting also stops cleanly
        serve(session(ctx).new_ledger, "intake", lambda ledger: KafkaIntakeWorker(
            ledger(), kafka_settings(kafka), batch_size=batch_size, partitions=chosen, consumer=consumer,
            aggregate_cache=aggregate_cache, require_signatures=signatures, session_timeout_ms=session_timeout_ms), stop)


@publisher_app.command("run")
@local_only(NOT_THROUGH_API)
def publisher_run(
    ctx: typer.Context,
    kafka: KafkaOpt = None,
    batch_size: RecordBatchOpt = 1000,
    producer: ProducerOpt = "confluent",
    transaction_interval_ms: TransactionIntervalOpt = TRANSACTION_INTERVAL_MS,
) -> None:
    """Publish every recorded event to the events topic, in order, exactly once; stop with SIGTERM.

    Resumes from the last position found on the topic itself (transactional batches), so it can
    be killed at any moment and restarted without gaps or duplicates, with either producer.
    """
    from caseledger.ledger.kafka.clients import check_client
    from caseledger.ledger.kafka.publisher import KafkaEventPublisher
    from caseledger.ledger.runtime.supervisor import serve
    from caseledger.ledger.transparency.checkpoint_key import load_signer

    settings = kafka_settings(kafka)
    check_client(producer, "producer")  # before connecting to anything
    setup_logging()
    with stop_on_signals() as stop:  # from the start: a SIGTERM while connecting also stops cleanly
        signer = load_signer(environment().transparency)  # with a signing key, the publisher keeps the Merkle tree and signs checkpoints
        serve(session(ctx).new_ledger, "publisher", lambda ledger: KafkaEventPublisher(
            ledger(), settings, batch_size=batch_size, producer=producer,
            transaction_interval_s=transaction_interval_ms / 1000, signer=signer), stop)


# -- everything in one process -----------------------------------------------------------------------


def projection_groups(s: Session, log: logging.Logger) -> dict[str, list[str]]:
    """The projections CASELEDGER_PROJECTIONS selects (default all installed), grouped as services of ``caseledger
    run`` (service name → the names that load them): the built-ins together, each plugin on its own (its own source
    and positions: one that is new, or follows another source, never holds the built-ins back). A plugin ``all``
    cannot load is logged and left out."""
    from caseledger.projections.registry import BUILT_INS, command_name, selected_projections

    chosen, problems = selected_projections(s.settings.projections)
    for problem in problems:
        log.error("%s; left out (`caseledger projections list` shows every installed plugin)", problem)
    groups = {"projections": [command_name(p) for p in chosen if p.name in BUILT_INS]}
    groups.update({f"projections.{p.name}": [command_name(p)] for p in chosen if p.name not in BUILT_INS})
    return {name: group for name, group in groups.items() if group}


def projection_services(s: Session, kafka: str | None, consumer: str,
                        log: logging.Logger) -> dict[str, ServiceBuilder]:
    """The projection services of ``caseledger run`` (:func:`projection_groups`), each given its own ledger opener."""
    from caseledger.cli.service_plan import ServicePlan

    plan = ServicePlan(database=s.database, policy=s.policy, kafka=kafka, consumer=consumer, producer="confluent",
                       aggregate_cache=AGGREGATE_CACHE, signatures=None,
                       transaction_interval_ms=TRANSACTION_INTERVAL_MS, projection_groups=projection_groups(s, log))
    return {name: build for name, build in plan.builders(s, None).items() if name in plan.projection_groups}


ProcessesOpt = Annotated[
    bool, typer.Option("--processes/--one-process", envvar="CASELEDGER_RUN_PROCESSES",
                       help="Run each service (intake, publisher, the projections, each plugin's) in a child process "
                       "of its own, to use more than one core: a Python process runs about one core of work "
                       "(one GIL). The parent supervises them: one that dies stops the others and `run` exits 1 "
                       "naming it; none outlives the parent. Default: one process, the services as threads.")
]


@local_only(NOT_THROUGH_API)
def run_all(
    ctx: typer.Context,
    kafka: KafkaOpt = None,
    projections: Annotated[
        bool, typer.Option("--projections/--no-projections",
                           help="Also keep the projections CASELEDGER_PROJECTIONS names up to date: `all` (the "
                           "default: the built-ins and every installed plugin) or names separated by commas.")
    ] = True,
    processes: ProcessesOpt = False,
    consumer: ConsumerOpt = "confluent",
    producer: ProducerOpt = "confluent",
    aggregate_cache: AggregateCacheOpt = AGGREGATE_CACHE,
    signatures: SignaturesOpt = None,
    transaction_interval_ms: TransactionIntervalOpt = TRANSACTION_INTERVAL_MS,
    memory_trace: MemoryTraceOpt = None,
    memory_trace_every: MemoryTraceEveryOpt = 60.0,
    memory_trace_sites: MemoryTraceSitesOpt = False,
) -> None:
    """Run the intake worker, the publisher and the projections (--processes: one process each).

    Stops cleanly on SIGTERM or Ctrl-C: each service finishes its current batch. If one service fails
    (with --processes: its process dies, even by SIGKILL), the others are stopped too and the command
    exits 1 naming it, so a supervisor restarts the whole.
    """
    from caseledger.cli.service_plan import ServicePlan
    from caseledger.ledger.kafka.clients import check_client
    from caseledger.ledger.kafka.topics import ensure_topics
    from caseledger.ledger.runtime.supervisor import run_services
    from caseledger.ledger.transparency.checkpoint_key import load_signer

    setup_logging()
    log = logging.getLogger("caseledger")
    check_client(consumer, "consumer")
    check_client(producer, "producer")
    settings = kafka_settings(kafka)
    ensure_topics(settings)
    s = session(ctx)
    signer = load_signer(environment().transparency)  # with a signing key, the publisher keeps the Merkle tree and signs checkpoints
    if signer is None:
        log.warning("no checkpoint signing key (CASELEDGER_SIGNING_KEY_FILE): no checkpoints are signed; "
                    "make one with `caseledger keys init`")
    plan = ServicePlan(
        database=s.database, policy=s.policy, kafka=kafka, consumer=consumer, producer=producer,
        aggregate_cache=aggregate_cache, signatures=signatures, transaction_interval_ms=transaction_interval_ms,
        projection_groups=projection_groups(s, log) if projections else {},
        memory_trace=str(memory_trace) if memory_trace is not None else None,
        memory_trace_every=memory_trace_every, memory_trace_sites=memory_trace_sites)

    def started() -> None:
        running = list(plan.projection_groups)
        log.info("running intake worker, publisher%s%s on %s%s; SIGTERM or Ctrl-C stops",
                 ", checkpoints" if signer is not None else "", f" and {', '.join(running)}" if running else "",
                 settings.bootstrap_servers, ", one process each" if processes else "")

    if processes:
        _run_processes(plan, started, log)
        return
    with stop_on_signals() as stop, plan.memory_traced():
        outcome = run_services(s.new_ledger, plan.builders(s, signer), stop, on_started=started)
    log.info("stopped: intake %s; publisher %s", outcome.stats["intake"].line(), outcome.stats["publisher"].line())
    if not outcome.ok:
        raise typer.Exit(1)


def _run_processes(plan: ServicePlan, started: Callable[[], None], log: logging.Logger) -> None:
    """``run --processes``: one child process per service, supervised here (each traced to FILE.<service>)."""
    from caseledger.ledger.runtime.child_processes import run_children

    with stop_on_signals() as stop:
        outcome = run_children({name: plan.child(name) for name in plan.names}, stop, on_started=started)
    if not outcome.ok:
        log.error("stopped: %s", outcome.line())
        raise typer.Exit(1)
    log.info("stopped: every service finished its batch")
