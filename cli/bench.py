"""``caseledger bench …``: benchmarks printed as a table and written to a JSON file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from caseledger.cli.app import app, plain_console
from caseledger.cli.streaming import ConsumerOpt, KafkaOpt, ProducerOpt
from caseledger.ledger.errors import ConfigurationError

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks, each against a baseline measured in the same run.")
app.add_typer(bench_app, name="bench", rich_help_panel="Tooling")


@bench_app.command("intake")
def bench_intake_command(
    kafka: KafkaOpt = None,
    contacts: Annotated[int, typer.Option("--contacts", "-n", min=100, help="Contacts to publish.")] = 20_000,
    database: Annotated[
        str | None,
        typer.Option("--database", help="An EMPTY database (SQLite path or postgresql:// URL); default a temp SQLite."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Intake worker processes, sharing the intake partitions.")
    ] = 1,
    producer: ProducerOpt = "kafka-python",
    consumer: ConsumerOpt = "kafka-python",
    output: Annotated[str, typer.Option("--output", help="Directory for the JSON result.")] = "bench-results",
) -> None:
    """End-to-end intake throughput and latency: intake topic → store → events topic.

    Publishes N contacts on fresh topics, runs the intake worker and the publisher, and measures
    contacts/s, events/s and publish-to-topic latency; then measures raw eventsourcing batched
    writes on the same backend as the baseline, and prints the ratio.

    Example: caseledger bench intake --kafka localhost:29092 --database postgresql://…/bench -n 50000
    """
    from caseledger.ledger.bench.intake import bench_intake

    if not kafka:
        raise ConfigurationError("bench intake needs Kafka: pass --kafka HOST:PORT or set CASELEDGER_KAFKA_BOOTSTRAP")
    console = plain_console()
    with stage_progress(console, "contacts {}") as progress:
        result = bench_intake(kafka_bootstrap=kafka, contacts=contacts, database=database, workers=workers, producer=producer, consumer=consumer,
                              progress=progress)
    print_result(console, "intake", result.rows(), result, output)


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


def print_result(console: Console, name: str, rows: list[tuple[str, str]], result: Any, output: str) -> None:
    """The benchmark's table, and the JSON file it is written to."""
    from caseledger.ledger.bench.intake import write_result

    table = Table("measure", "value", title=f"caseledger bench {name}")
    for measure, value in rows:
        table.add_row(measure, value)
    console.print(table)
    console.print(f"written to {write_result(name, result, output)}")
