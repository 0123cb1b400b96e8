"""``caseledger bench …``: benchmarks printed as a table and written to a JSON file."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from caseledger.cli.common import local_only, plain_console
from caseledger.cli.options import ConsumerOpt, EventBatchOpt, KafkaOpt, ProducerOpt
from caseledger.ledger.errors import ConfigurationError

NOT_THROUGH_API = 'a benchmark starts the ledgers, servers and clients it measures'

#: The options several benchmarks share.
OutputOpt = Annotated[str, typer.Option("--output", help="Directory for the JSON result.")]
EmptyDatabaseOpt = Annotated[str | None, typer.Option(
    "--database", help="An EMPTY ledger database (SQLite path or postgresql:// URL); default a temporary SQLite file.")]
IntakeWorkersOpt = Annotated[int, typer.Option(
    "--workers", min=1, help="Intake worker processes, sharing the intake partitions.")]
GeneratedEventsOpt = Annotated[int, typer.Option("--events", "-n", min=1000, help="Events in the generated ledger.")]

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks, each against a baseline measured in the same run.")


@bench_app.command("intake")
@local_only(NOT_THROUGH_API)
def bench_intake_command(
    kafka: KafkaOpt = None,
    contacts: Annotated[int, typer.Option("--contacts", "-n", min=100, help="Contacts to publish.")] = 20_000,
    database: EmptyDatabaseOpt = None,
    workers: IntakeWorkersOpt = 1,
    producer: ProducerOpt = "confluent",
    consumer: ConsumerOpt = "confluent",
    output: OutputOpt = "bench-results",
    mix: Annotated[str, typer.Option(
        "--mix", help="The traffic: KIND=WEIGHT,… with KIND new, returning, follow_up, resubmission, delivery, read "
                      "(or 'default': a contact centre's, 30/15/15/2/23/15; 'worst': all new customers); "
                      "docs/scaling.md says where the default comes from.")] = "default",
    worst_case: Annotated[bool, typer.Option(
        "--worst-case/--no-worst-case", help="Also run the same number of records, all new customers, first.")] = True,
    events: Annotated[int, typer.Option(
        "--events", min=0, help="Then fill the ledger with this many more events (pre-encoded rows) and run again: "
                                "a full ledger beside the empty one (10,000,000 for the issue's figure).")] = 0,
    verdicts: Annotated[bool, typer.Option(
        "--verdicts", help="Measure with the verdicts back at the adapter: contacts/s with verdicts (the SDK's "
                           "batched form), then verdict latency p50/p99 at --rate.")] = False,
    rate: Annotated[float, typer.Option("--rate", min=1, max=2000, help="--verdicts: paced contacts/s.")] = 100,
    paced_seconds: Annotated[float, typer.Option("--paced-seconds", min=1,
                                                 help="--verdicts: how long the paced run lasts.")] = 20,
) -> None:
    """End-to-end intake throughput and latency: intake topic → store → events topic.

    Publishes N intake records of a traffic mix (--mix: new and returning customers, follow-ups,
    resubmissions, delivery reports, read receipts; the known customers are recorded before the clock
    starts) on fresh topics, runs the intake worker(s) and the publisher, and measures records/s,
    events/s and publish-to-topic latency; the worst case (N new customers) runs first, on the empty
    ledger. Then it measures raw eventsourcing batched writes on the same backend as the baseline, and
    prints the ratios. A ledger without a key-encryption key gets a throw-away one for the run. With
    --verdicts: contacts/s until the adapter holds every verdict, then the verdict latency at a paced rate.

    Example: caseledger bench intake --kafka localhost:29092 --database postgresql://…/bench -n 50000
    Example: caseledger bench intake --kafka localhost:29092 -n 10000 --verdicts --rate 100
    """
    from caseledger.cli.bench.intake_bench import bench_intake
    from caseledger.cli.bench.traffic_mix import TrafficMix

    traffic = TrafficMix.parse(mix)
    if not kafka:
        raise ConfigurationError("bench intake needs Kafka: pass --kafka HOST:PORT or set CASELEDGER_KAFKA_BOOTSTRAP")
    console = plain_console()
    if verdicts:
        from caseledger.cli.bench.verdict_bench import bench_verdicts

        with stage_progress(console, "contacts {}") as progress:
            found = bench_verdicts(kafka_bootstrap=kafka, contacts=contacts, database=database, workers=workers,
                                   producer=producer, consumer=consumer, rate=rate, paced_seconds=paced_seconds,
                                   progress=progress)
        print_result(console, "intake-verdicts", found.rows(), found, output)
        return
    with stage_progress(console, "contacts {}") as progress:
        result = bench_intake(kafka_bootstrap=kafka, contacts=contacts, database=database, workers=workers,
                              producer=producer, consumer=consumer, mix=traffic, worst_case=worst_case,
                              events=events, progress=progress)
    print_result(console, "intake", result.rows(), result, output)


@bench_app.command("api")
@local_only(NOT_THROUGH_API)
def bench_api_command(
    clients: Annotated[int, typer.Option("--clients", "-c", min=1, help="Concurrent keep-alive clients.")] = 200,
    seconds: Annotated[float, typer.Option("--seconds", "-s", min=1, help="How long each scenario runs.")] = 15,
    backend: Annotated[
        list[str] | None, typer.Option("--backend", help="sqlite and/or postgresql (repeat; default both).")
    ] = None,
    postgres: Annotated[
        str | None,
        typer.Option("--postgres", metavar="URL", envvar="CASELEDGER_BENCH_POSTGRES",
                     help="PostgreSQL URL of the ledger (default: a temporary pgserver, a new database per run)."),
    ] = None,
    workers: Annotated[
        list[int] | None, typer.Option("--workers", min=1, help="Server worker processes (repeat; default 1 and 2).")
    ] = None,
    scenario: Annotated[
        list[str] | None, typer.Option("--scenario", help="read, write and/or mix (repeat; default all three).")
    ] = None,
    load_processes: Annotated[int, typer.Option("--load-processes", min=1, help="Load generator processes.")] = 2,
    output: OutputOpt = "bench-results",
) -> None:
    """HTTP load on `caseledger serve` against the bare-framework ceiling measured in the same run.

    Per backend and worker count: a bare FastAPI endpoint with a bearer check on the same uvicorn
    options (the ceiling), then GET /v1/cases/REF, POST /v1/contacts and the 80/20 mix, each as a
    share of the ceiling; no 5xx, no lost or doubled write. Targets: GET ≥ 0.50 of the ceiling,
    POST ≥ 0.25, mix p99 ≤ 500 ms, two workers ≥ 1.6× one on reads with PostgreSQL.

    Example: caseledger bench api --clients 200 --seconds 15 --backend sqlite --workers 1
    """
    from caseledger.cli.bench.service_bench import SCENARIOS, bench_api

    backends = tuple(backend or ("sqlite", "postgresql"))
    scenarios = tuple(scenario or SCENARIOS)
    if not set(backends) <= {"sqlite", "postgresql"} or not set(scenarios) <= set(SCENARIOS):
        raise ConfigurationError("--backend is sqlite or postgresql; --scenario is read, write or mix")
    console = plain_console()
    with stage_progress(console) as progress:
        result = bench_api(clients=clients, seconds=seconds, backends=backends, workers=tuple(workers or (1, 2)),
                           scenarios=scenarios, postgres_url=postgres, load_processes=load_processes,
                           progress=progress)
    print_result(console, "api", result.rows(), result, output)
    if result.server_errors or result.lost_or_doubled or result.failures:
        raise typer.Exit(1)


@bench_app.command("live")
@local_only(NOT_THROUGH_API)
def bench_live_command(
    kafka: KafkaOpt = None,
    rate: Annotated[float, typer.Option("--rate", min=1, help="Contacts published per second.")] = 100,
    seconds: Annotated[float, typer.Option("--seconds", "-s", min=1, help="How long.")] = 30,
    cases: Annotated[int, typer.Option("--cases", min=1, help="Case pages open at once.")] = 50,
    queues: Annotated[int, typer.Option("--queues", min=0, help="Queues open at once (one per agent).")] = 10,
    output: OutputOpt = "bench-results",
) -> None:
    """Live pages' latency: intake topic → ledger → the case page and every queue, p50/p99 (target p99 < 1 s).

    Example: caseledger bench live --kafka localhost:29092 --rate 100 --seconds 30 --cases 50
    """
    from caseledger.cli.bench.live_bench import bench_live

    if not kafka:
        raise ConfigurationError("bench live needs Kafka: pass --kafka HOST:PORT or set CASELEDGER_KAFKA_BOOTSTRAP")
    console = plain_console()
    with stage_progress(console) as progress:
        result = bench_live(kafka_bootstrap=kafka, rate=rate, seconds=seconds, cases=cases, queues=queues,
                            progress=progress)
    print_result(console, "live", result.rows(), result, output)
    if result.failures:
        raise typer.Exit(1)


@bench_app.command("verify")
@local_only(NOT_THROUGH_API)
def bench_verify_command(
    events: Annotated[
        int, typer.Option("--events", "-n", min=1000, help="Events in the generated ledger (≥ 1,000,000 for the target).")
    ] = 200_000,
    database: EmptyDatabaseOpt = None,
    output: OutputOpt = "bench-results",
) -> None:
    """Events/s of a full `audit verify` over a generated ledger, against raw page reads and raw SHA-256.

    Generates N events (customers with a case, contact, acknowledgement, promise, response and
    closing each; many aggregates per transaction), then times a full verify and, in the same run,
    the baseline: reading every page of the events table, and hashing every event. Memory: the
    growth of the process's resident size during the verify.

    Example: caseledger bench verify --events 1000000
    """
    from caseledger.cli.bench.verify_bench import bench_verify

    console = plain_console()
    with stage_progress(console) as progress:
        result = bench_verify(events=events, database=database, progress=progress)
    if not result.verified:
        raise ConfigurationError("the generated ledger did not verify; the benchmark is void")
    print_result(console, "verify", result.rows(), result, output)


@bench_app.command("reads")
@local_only(NOT_THROUGH_API)
def bench_reads_command(
    events: Annotated[
        int, typer.Option("--events", "-n", min=1000, help="Events in the generated ledger (issue 29: 1,000,000).")
    ] = 1_000_000,
    customer_events: Annotated[
        int, typer.Option("--customer-events", min=10, help="Events of the customer whose case and history are read.")
    ] = 1000,
    deadlines: Annotated[
        int, typer.Option("--deadlines", min=0, help="Open deadlines past due that tick records (0: no tick).")
    ] = 1_000_000,
    reads: Annotated[int, typer.Option("--reads", min=10, help="Reads timed for each percentile.")] = 200,
    database: EmptyDatabaseOpt = None,
    output: OutputOpt = "bench-results",
) -> None:
    """A full ledger's reads: `case show` and `history` p50/p99 for a customer with 1,000 events, in process;
    `tick` over open deadlines (time, peak RSS); `audit verify`'s peak RSS at a quarter of the ledger and at all of
    it (flat: it does not grow with the ledger); the store's bytes, data keys and Merkle tree at that size.

    Example: caseledger bench reads --events 1000000 --database postgresql://localhost/empty
    """
    from caseledger.cli.bench.reads_bench import bench_reads

    console = plain_console()
    with stage_progress(console) as progress:
        result = bench_reads(events=events, customer_events=customer_events, deadlines=deadlines, reads=reads,
                             database=database, progress=progress)
    if not (result.verify_small["ok"] and result.verify_full["ok"]):
        raise ConfigurationError("the generated ledger did not verify; the benchmark is void")
    print_result(console, "reads", result.rows(), result, output)


@bench_app.command("rebuild")
@local_only(NOT_THROUGH_API)
def bench_rebuild_command(
    kafka: KafkaOpt = None,
    events: GeneratedEventsOpt = 200_000,
    postgres: Annotated[
        str | None,
        typer.Option("--postgres", metavar="URL", envvar="CASELEDGER_BENCH_POSTGRES",
                     help="PostgreSQL URL of an empty database for the views (default: a temporary pgserver)."),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Rebuild processes.")] = 2,
    consumer: ConsumerOpt = "confluent",
    batch_size: EventBatchOpt = 5000,
    peer: Annotated[bool, typer.Option(
        "--peer/--no-peer", help="Also rebuild case_state alone with caseledger's runner and with a quixstreams "
        "peer (pip install 'caseledger[bench]'), compare their events/s and check their tables are identical.")] = True,
    output: OutputOpt = "bench-results",
) -> None:
    """Events/s rebuilding every built-in projection from the Kafka topic into PostgreSQL.

    Generates a ledger of N events, publishes it to a fresh events topic, then rebuilds the
    four built-ins from the topic into PostgreSQL; the baseline, measured in the same run, is
    the raw Avro decode rate of the same events (compiled readers; fastavro's rate is shown
    too). Memory (peak RSS) is reported too. Then, side by side, case_state alone by caseledger's
    runner and by the same projection written with quixstreams (docs/benchmarks.md): their
    events/s, and whether their tables are identical row by row (exit 1 when not).

    Example: caseledger bench rebuild --kafka localhost:29092 --events 1000000
    """
    from caseledger.cli.bench.rebuild_bench import bench_rebuild

    if not kafka:
        raise ConfigurationError("bench rebuild needs Kafka: pass --kafka HOST:PORT or set CASELEDGER_KAFKA_BOOTSTRAP")
    console = plain_console()
    result = bench_rebuild(kafka_bootstrap=kafka, events=events, postgres_url=postgres, workers=workers,
                           consumer=consumer, batch_size=batch_size, peer=peer,
                           say=lambda text: console.print(Text(text, style="dim")))
    print_result(console, "rebuild", result.report(), result, output)
    if result.peer is not None and not result.peer.identical:
        plain_console(stderr=True).print(f"the peer's case_state differs from caseledger's: {result.peer.differing_rows:,} "
                            "rows in one table and not the other (schemas runner and peer of the views database)")
        raise typer.Exit(1)


@bench_app.command("export")
@local_only(NOT_THROUGH_API)
def bench_export_command(
    events: GeneratedEventsOpt = 100_000,
    output: OutputOpt = "bench-results",
) -> None:
    """Events/s of `export events` (store → Parquet) over a generated SQLite ledger, against a raw decode.

    The baseline, measured in the same run: reading every page of the store and decoding every event's
    Avro (compiled readers), which the export does before building its columns.

    Example: caseledger bench export --events 100000
    """
    from caseledger.cli.bench.export_bench import bench_export

    console = plain_console()
    result = bench_export(events=events, say=lambda text: console.print(Text(text, style="dim")))
    print_result(console, "export", result.rows(), result, output)


@bench_app.command("lag")
@local_only(NOT_THROUGH_API)
def bench_lag_command(
    kafka: KafkaOpt = None,
    rate: Annotated[int, typer.Option("--rate", min=1, help="Contacts published per second.")] = 1000,
    seconds: Annotated[float, typer.Option("--seconds", min=1, help="How long to publish.")] = 20.0,
    database: EmptyDatabaseOpt = None,
    workers: IntakeWorkersOpt = 1,
    consumer: ConsumerOpt = "confluent",
    producer: ProducerOpt = "confluent",
    output: OutputOpt = "bench-results",
) -> None:
    """Latency from publishing a contact on the intake topic to seeing it in case state.

    Publishes contacts at a steady rate; the intake worker(s) and the publisher run as child
    processes, the case state projection follows the events topic here (--consumer is the Kafka
    client of the intake workers and of the projection, --producer the publisher's).
    Reports p50/p99/max latency.

    Example: caseledger bench lag --kafka localhost:29092 --rate 1000 --seconds 30
    """
    from caseledger.cli.bench.rebuild_bench import bench_lag

    if not kafka:
        raise ConfigurationError("bench lag needs Kafka: pass --kafka HOST:PORT or set CASELEDGER_KAFKA_BOOTSTRAP")
    console = plain_console()
    result = bench_lag(kafka_bootstrap=kafka, rate=rate, seconds=seconds, database=database,
                       workers=workers, consumer=consumer, producer=producer, say=lambda text: console.print(Text(text, style="dim")))
    print_result(console, "lag", result.report(), result, output)


@bench_app.command("soak")
@local_only(NOT_THROUGH_API)
def bench_soak_command(
    kafka: KafkaOpt = None,
    minutes: Annotated[float, typer.Option("--minutes", min=0.05, help="How long to soak.")] = 20.0,
    rate: Annotated[int, typer.Option("--rate", min=1, help="Contacts published per second on the intake topic.")] = 500,
    warmup: Annotated[float, typer.Option("--warmup-minutes", min=0,
                                          help="The first minutes, whose memory growth is not judged.")] = 2.0,
    read_rate: Annotated[float, typer.Option("--read-rate", min=0.1,
                                             help="Reads per second over HTTP (case show, history).")] = 10.0,
    sample_seconds: Annotated[float, typer.Option("--sample-seconds", min=0.5,
                                                  help="Seconds between two samples of memory.")] = 10.0,
    max_growth: Annotated[float, typer.Option("--max-growth", min=0,
                                              help="Memory growth after the warm-up that fails, in %.")] = 5.0,
    database: EmptyDatabaseOpt = None,
    consumer: ConsumerOpt = "confluent",
    producer: ProducerOpt = "confluent",
    output: OutputOpt = "bench-results",
    memory_trace: Annotated[
        Path | None,
        typer.Option("--memory-trace", metavar="FILE", dir_okay=False,
                     help="`caseledger run --memory-trace FILE`: what its memory is made of, every minute (with "
                     "--processes: each service's process to FILE.<service>)."),
    ] = None,
    processes: Annotated[
        bool, typer.Option("--processes/--one-process", help="Soak `caseledger run --processes` (the default: one "
                           "process per service, more than one core) or the one-process form.")
    ] = True,
) -> None:
    """Minutes of `caseledger run` at a steady intake rate while `serve` answers reads: memory and errors.

    `run` runs with --processes (one process per service) unless --one-process. The resident memory of
    every process (run, each of its services' processes, serve) is sampled every
    --sample-seconds; exits 1 when one grew by --max-growth (5 %) or more after the warm-up, died, a read answered
    anything but 200, a contact was refused, or the contacts still queued stopped being recorded. The rate
    reached is reported (docs/benchmarks.md).

    Example: caseledger bench soak --kafka localhost:29092 --minutes 20 --rate 500
    """
    from caseledger.cli.bench.soak_bench import bench_soak

    if not kafka:
        raise ConfigurationError("bench soak needs Kafka: pass --kafka HOST:PORT or set CASELEDGER_KAFKA_BOOTSTRAP")
    if warmup >= minutes:
        raise ConfigurationError(f"--warmup-minutes {warmup:g} leaves nothing to judge of a {minutes:g}-minute "
                                 "soak: give fewer warm-up minutes or more minutes")
    console = plain_console()
    result = bench_soak(kafka_bootstrap=kafka, minutes=minutes, rate=rate, warmup_minutes=warmup,
                        read_rate=read_rate, sample_seconds=sample_seconds, max_growth=max_growth / 100,
                        database=database, consumer=consumer, memory_trace=memory_trace, processes=processes,
                        producer=producer, say=lambda text: console.print(Text(text, style="dim")))
    print_result(console, "soak", result.report(), result, output)
    if not result.ok:
        plain_console(stderr=True).print("bench soak failed: " + "; ".join(result.errors))
        raise typer.Exit(1)


@bench_app.command("proofs")
@local_only(NOT_THROUGH_API)
def bench_proofs_command(
    leaves: Annotated[int, typer.Option("--leaves", "-n", min=2000, help="Leaves in the tree (1,000,000 for the note).")]
    = 1_000_000,
    customer_events: Annotated[int, typer.Option("--customer-events", min=1, help="Events of the customer proved.")]
    = 1000,
    database: EmptyDatabaseOpt = None,
    output: OutputOpt = "bench-results",
) -> None:
    """Transparency log at scale: a customer's inclusion proofs in a 1M-leaf tree, a consistency proof 1M apart.

    Example: caseledger bench proofs --leaves 1000000 --customer-events 1000
    """
    from caseledger.cli.bench.proofs_bench import bench_proofs

    console = plain_console()
    with stage_progress(console) as progress:
        result = bench_proofs(leaves=leaves, customer_events=customer_events, database=database, progress=progress)
    print_result(console, "proofs", result.rows(), result, output)


@bench_app.command("cli")
@local_only(NOT_THROUGH_API)
def bench_cli_command(
    runs: Annotated[int, typer.Option("--runs", "-n", min=3, max=1000, help="Runs of each command.")] = 20,
    contacts: Annotated[int, typer.Option("--contacts", min=1, max=10_000,
                                          help="Contacts (one case each) in the generated SQLite ledger.")] = 20,
    output: OutputOpt = "bench-results",
) -> None:
    """How fast the command line answers, process start included: `caseledger --help` and `case show`.

    Runs `python -c pass` (the interpreter's start, the baseline), `caseledger --help` and
    `caseledger case show REF` on a small generated SQLite ledger, N times each, interleaved, and
    prints each one's minimum and median (wall and CPU) and its ratio to the baseline. Targets, on an
    idle machine: --help ≤ 250 ms, case show ≤ 400 ms.

    Example: caseledger bench cli --runs 30
    """
    from caseledger.cli.bench.cli_bench import bench_cli

    console = plain_console()
    with stage_progress(console) as progress:
        result = bench_cli(runs=runs, contacts=contacts, progress=progress)
    print_result(console, "cli", result.rows(), result, output)


@contextmanager
def stage_progress(console: Console, label: str = "{}") -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar per stage of a benchmark; yields the ``progress(stage, done, total)`` callback."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(label.format(stage), total=total)
            bar.update(tasks[stage], completed=done)

        yield progress


def print_result(console: Console, name: str, rows: Iterable[tuple[str, str]], result: Any, output: str) -> None:
    """The benchmark's table, and the JSON file it is written to."""
    from caseledger.cli.bench.intake_bench import write_result

    table = Table("measure", "value", title=f"caseledger bench {name}")
    for measure, value in rows:
        table.add_row(measure, value)
    console.print(table)
    console.print(f"written to {write_result(name, result, output)}")
