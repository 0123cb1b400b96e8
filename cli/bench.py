"""``caseledger bench …``: benchmarks printed as a table and written to a JSON file."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.app import app, plain_console
from cli.streaming import KafkaOpt
from ledger.errors import ConfigurationError

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
    output: Annotated[str, typer.Option("--output", help="Directory for the JSON result.")] = "bench-results",
) -> None:
    """End-to-end intake throughput and latency: intake topic → store → events topic.

    Publishes N contacts on fresh topics, runs the intake worker and the publisher, and measures
    contacts/s, events/s and publish-to-topic latency; then measures raw eventsourcing batched
    writes on the same backend as the baseline, and prints the ratio.

    Example: caseledger bench intake --kafka localhost:29092 --database postgresql://…/bench -n 50000
    """
    from ledger.bench import bench_intake, write_result

    if not kafka:
        raise ConfigurationError("bench intake needs Kafka: pass --kafka HOST:PORT or set CASELEDGER_KAFKA_BOOTSTRAP")
    console = plain_console()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"contacts {stage}", total=total)
            bar.update(tasks[stage], completed=done)

        result = bench_intake(kafka_bootstrap=kafka, contacts=contacts, database=database, progress=progress)
    table = Table("measure", "value", title="caseledger bench intake")
    for name, value in result.rows():
        table.add_row(name, value)
    console.print(table)
    path = write_result("intake", result, output)
    console.print(f"written to {path}")
