"""``caseledger projections list | status | run | rebuild | query``: the read models and their runner."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from caseledger.cli import render
from caseledger.cli.common import Session, local_only, plain_console, session, stop_on_signals
from caseledger.cli.options import ConsumerOpt, EventBatchOpt, Json, KafkaOpt, ViewsOpt, parse_partitions
from caseledger.ledger.errors import BackendError, ConfigurationError

if TYPE_CHECKING:
    from caseledger.projections.runner import ProjectionStatus
    from caseledger.projections.sources import EventSource
    from caseledger.projections.views import ViewStore

log = logging.getLogger("caseledger.projections")

projections_app = typer.Typer(
    no_args_is_help=True,
    help="Read models built from the events (case state, timeline, deadlines, metrics): list, status, run, rebuild.",
)

NOT_THROUGH_API = "it reads and writes the projections' views database directly"

SourceOpt = Annotated[
    str | None,
    typer.Option(
        "--source", metavar="store|kafka",
        help="Read the store's notification log or the Kafka events topic (default: what the projection "
        "already follows; else kafka when Kafka is configured, else store).",
    ),
]
Names = Annotated[
    list[str] | None,
    typer.Argument(metavar="[NAME]...", help="Built-in names (case_state, timeline, deadlines, channel_metrics), "
                   "installed plugins' names or module:Class; default all."),
]
RunNames = Annotated[
    list[str] | None,
    typer.Argument(metavar="[NAME]...", help="Built-in names (case_state, timeline, deadlines, channel_metrics), "
                   "installed plugins' names or module:Class; default what CASELEDGER_PROJECTIONS selects: "
                   "`all` (the default: the built-ins and every installed plugin) or names separated by commas."),
]


def _source(s: Session, store: ViewStore, projections: list[Any], source: str | None, kafka: str | None,
            consumer: str, *, shared: bool = False, partitions: list[int] | None = None) -> tuple[str, EventSource]:
    """The source kind ``--source`` names (or the projections follow) and that source, opened."""
    from caseledger.projections.catchup import KAFKA, SOURCE_KINDS, choose_source, open_source

    kind = choose_source(store, projections, source, None if source else s.kafka_if_configured(kafka))
    if kind not in SOURCE_KINDS:
        raise typer.BadParameter(f"{kind!r}: use store or kafka", param_hint="'--source'")
    return kind, open_source(kind, ledger=s.open_ledger, kafka=s.kafka(kafka) if kind == KAFKA else None,
                             consumer=consumer, shared=shared, partitions=partitions)


@projections_app.command("list")
@local_only(NOT_THROUGH_API)
def projections_list(ctx: typer.Context, views: ViewsOpt = None, as_json: Json = False) -> None:
    """List the built-in projections, the installed plugins and every projection the views database knows.

    A plugin that cannot be loaded is listed with what is wrong; the others are unaffected.

    Example:

    ```
    $ caseledger projections list
    ```
    """
    from caseledger.projections.registry import installed_projections
    from caseledger.projections.runner import read_status

    s = session(ctx)
    with s.views(views) as store:
        states = read_status(store)
    following = {st.projection: st.source for st in states if st.slot == "live"}
    rows: list[dict[str, Any]] = []
    for installed in installed_projections():
        projection = installed.projection
        rows.append({
            "name": installed.name, "origin": installed.origin, "class": installed.target,
            "description": projection.description() if projection else "",
            "tables": [t.name for t in projection.tables] if projection else [],
            "events": sorted(projection.handlers()) if projection else [],
            "follows": following.pop(installed.name, None), "problem": installed.problem,
        })
    for name, source in following.items():  # run as module:Class, not installed
        rows.append({"name": name, "origin": "module:Class", "class": None,
                     "description": "not installed: run as module:Class; package it as a plugin to list its "
                     "tables (docs/projections.md)", "tables": [], "events": [], "follows": source, "problem": None})
    if as_json:
        s.echo_json(rows)
        return
    table = Table("projection", "from", "tables", "follows", "what it holds", title="Projections",
                  title_justify="left")
    for row in rows:
        what = Text(row["problem"], style="red") if row["problem"] else Text(row["description"])
        table.add_row(row["name"], row["origin"], ", ".join(row["tables"]), row["follows"] or "-", what)
    s.out.print(table)


def _lag(s: Session, status: ProjectionStatus, kafka: str | None) -> int | None:
    from caseledger.projections.catchup import KAFKA, STORE, open_source

    try:
        kind = KAFKA if status.source.startswith("kafka:") else STORE
        source = open_source(kind, ledger=s.open_ledger, kafka=s.kafka(kafka) if kind == KAFKA else None)
        if status.source.startswith("kafka:") and status.source != source.name:
            return None
        try:
            return source.lag(status.positions)
        finally:
            source.close()
    except Exception as error:  # status must still show what it knows when a source is unreachable
        log.debug("no lag for %s: %s", status.projection, error)
        return None


@projections_app.command("status")
@local_only(NOT_THROUGH_API)
def projections_status(
    ctx: typer.Context, names: Names = None, views: ViewsOpt = None, kafka: KafkaOpt = None, as_json: Json = False
) -> None:
    """Where each projection is: source, position (in the store's order), lag, code version.

    Examples:

    ```
    $ caseledger projections status
    $ caseledger projections status case_state --kafka localhost:29092 --json
    ```
    """
    from caseledger.projections.registry import load_projection
    from caseledger.projections.runner import read_status

    s = session(ctx)
    wanted = {load_projection(n).name if ":" in n else n for n in names or ()}
    with s.views(views) as store:
        states = [st for st in read_status(store) if not wanted or st.projection in wanted]
    rows: list[dict[str, Any]] = []
    for st in states:
        try:
            code_version: int | None = load_projection(st.projection).version
        except ConfigurationError:
            code_version = None
        rows.append({
            "projection": st.projection, "slot": st.slot, "source": st.source, "tables_version": st.version,
            "code_version": code_version, "position": st.store_position, "positions": st.positions,
            "lag": _lag(s, st, kafka), "updated_at": st.updated_at,
        })
    if as_json:
        s.echo_json(rows)
        return
    if not rows:
        s.say("No projection has run yet; start them with `caseledger projections run`.")
        return
    table = Table("projection", "slot", "source", "position", "lag", "version", "updated",
                  title="Projection status", title_justify="left")
    for row in rows:
        version = str(row["tables_version"])
        if row["code_version"] is not None and row["code_version"] != row["tables_version"]:
            version += f" (code {row['code_version']}: rebuild)"
        table.add_row(row["projection"], row["slot"], row["source"], str(row["position"]),
                      "?" if row["lag"] is None else str(row["lag"]), version,
                      render.fmt_time(row["updated_at"], s.tz, seconds=True))
    s.out.print(table)


@projections_app.command("run")
@local_only(NOT_THROUGH_API)
def projections_run(
    ctx: typer.Context,
    names: RunNames = None,
    source: SourceOpt = None,
    once: Annotated[bool, typer.Option("--once", help="Stop when caught up instead of following new events.")] = False,
    batch_size: EventBatchOpt = 1000,
    views: ViewsOpt = None,
    kafka: KafkaOpt = None,
    consumer: ConsumerOpt = "confluent",
    partitions: Annotated[
        str | None,
        typer.Option("--partitions", help="Kafka only: these partitions of the events topic, e.g. 0,2,4, a fixed "
                     "share outside the consumer group (nobody takes them over if this runner dies). Default: the "
                     "share the group gives (all of them to a runner alone)."),
    ] = None,
) -> None:
    """Keep projections up to date; stop with SIGTERM or Ctrl-C (the current batch completes).

    Each batch and the new positions are one transaction, so the runner can be killed at any
    moment and restarted: nothing is applied twice or missed. Runners of the same projections
    following the events topic share its partitions through Kafka's consumer group: when one
    dies, the others take its partitions over, from the positions the views recorded.

    Examples:

    ```
    $ caseledger projections run
    $ caseledger projections run case_state timeline --source kafka --kafka localhost:29092
    $ caseledger projections run fcr --once
    $ caseledger projections run my_module:FirstContactResolution --once
    ```
    """
    from caseledger.ledger.runtime.gc_pacing import NO_PACING, GcPacer
    from caseledger.projections.registry import load_projections, selected_projections
    from caseledger.projections.runner import ProjectionRunner

    s = session(ctx)
    err = plain_console(stderr=True)
    if not once:  # a follower is a long-running service: it logs what the group hands it, as the others do
        from caseledger.cli.backbone_commands import setup_logging

        setup_logging()
    if names:
        projections = load_projections(names)
    else:
        projections, problems = selected_projections(s.settings.projections)
        for problem in problems:
            err.print(Text(f"{problem}; left out (`caseledger projections list` shows every installed plugin)",
                           style="red"))
    with s.views(views) as store:
        _kind, src = _source(s, store, projections, source, kafka, consumer, shared=not once,
                             partitions=parse_partitions(partitions))
        try:
            runner = ProjectionRunner(projections, store, src, batch_size=batch_size)
            last = [time.monotonic()]

            def report(_batch: Any) -> None:
                if time.monotonic() - last[0] >= 5:
                    last[0] = time.monotonic()
                    err.print(runner.stats.line())

            with stop_on_signals() as stop, GcPacer() as pacer:  # the process's pacer: this thread runs the loop
                err.print(f"running {', '.join(p.name for p in projections)} from {src.name} into "
                          f"{store.describe()}" + ("" if once else "; SIGTERM or Ctrl-C stops"))
                stats = runner.run(stop, until_caught_up=once, on_batch=report, pacer=NO_PACING if once else pacer)
            err.print(f"stopped: {stats.line()}")
        finally:
            src.close()


class _Rate(TextColumn):
    """Events per second of a task, from the ``rate`` field the caller keeps up to date."""

    def __init__(self) -> None:
        super().__init__("{task.fields[rate]}")


@projections_app.command("rebuild")
@local_only(NOT_THROUGH_API)
def projections_rebuild(
    ctx: typer.Context,
    names: Annotated[
        list[str], typer.Argument(metavar="NAME...", help="Built-in or installed plugins' names, or module:Class; "
                                  "rebuilt in one pass.")
    ],
    source: SourceOpt = None,
    batch_size: EventBatchOpt = 5000,
    restart: Annotated[
        bool, typer.Option("--restart", help="Start over instead of resuming an interrupted rebuild.")
    ] = False,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=64,
                          help="Processes sharing the topic's partitions (Kafka only; projections keyed by case "
                          "or customer, as the built-ins are).")
    ] = 1,
    views: ViewsOpt = None,
    kafka: KafkaOpt = None,
    consumer: ConsumerOpt = "confluent",
) -> None:
    """Replay a projection from the beginning into fresh tables; swap them in when caught up.

    Readers keep the current tables until the swap, one transaction; a running `projections run`
    picks the new tables up. Interrupted (Ctrl-C), the rebuild resumes where it stopped next time.

    Examples:

    ```
    $ caseledger projections rebuild case_state
    $ caseledger projections rebuild case_state timeline deadlines channel_metrics
    $ caseledger projections rebuild channel_metrics --source kafka --kafka localhost:29092
    ```
    """
    from caseledger.projections.registry import load_projections
    from caseledger.projections.runner import rebuild

    s = session(ctx)
    projections = load_projections(names)
    label = ", ".join(p.name for p in projections)
    console = plain_console()
    with s.views(views) as store:
        kind, src = _source(s, store, projections, source, kafka, consumer)
        started = time.monotonic()
        try:
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                          TimeRemainingColumn(), console=console, transient=False) as bar, stop_on_signals() as stop:
                task = bar.add_task(f"rebuilding {label} from {src.name}", total=None, rate="")

                def on_start(total: int) -> None:
                    bar.update(task, total=max(total, 1))

                def on_batch(batch: Any) -> None:
                    bar.advance(task, batch.records)
                    done = bar.tasks[0].completed
                    rate = done / max(time.monotonic() - started, 1e-9)
                    total = bar.tasks[0].total or 0
                    bar.update(task, total=max(total, done), rate=f"{rate:,.0f} events/s")

                if workers > 1 and kind == "kafka":
                    from caseledger.projections.parallel import rebuild_in_parallel
                    from caseledger.projections.runner import BatchReport

                    result = rebuild_in_parallel(
                        names, store.url, src.settings, workers=workers,  # type: ignore[attr-defined]
                        batch_size=batch_size, restart=restart, stop=stop, on_start=on_start, consumer=consumer,
                        on_progress=lambda n, _rss: on_batch(BatchReport(records=n, applied=0, seconds=0.0)),
                    )
                else:
                    result = rebuild(projections, store, src, batch_size=batch_size, restart=restart, stop=stop,
                                     on_start=on_start, on_batch=on_batch)
        finally:
            src.close()
    if not result.swapped:
        console.print(Text(f"Interrupted after {result.records} events; run the same command to resume.",
                           style="yellow"))
        raise typer.Exit(1)
    console.print(Text(
        f"Rebuilt {label}: {result.records} events in {result.seconds:.1f} s "
        f"({result.rate:,.0f} events/s); the new tables are live.", style="green"))


@projections_app.command("query")
@local_only(NOT_THROUGH_API)
def projections_query(
    ctx: typer.Context,
    sql: Annotated[str, typer.Argument(metavar="SQL", help="A read-only SQL query on the views database.")],
    views: ViewsOpt = None,
    as_json: Json = False,
) -> None:
    """Run a read-only SQL query on the views database and print the rows (nothing is ever written).

    Customers' texts the views keep sealed are opened on the way out (``[erased]`` once erased).

    Example:

    ```
    $ caseledger projections query "SELECT channel, SUM(contacts) AS contacts FROM channel_metrics GROUP BY channel"
    ```
    """
    from caseledger.projections.queries import revealed

    s = session(ctx)
    with s.views(views) as store:
        try:
            rows = revealed(store.fetch(sql), ledger=s.open_ledger)
        except BackendError as error:
            raise BackendError(
                f"{error} (list the projections' tables with `caseledger projections list`; a projection's "
                "tables exist once it ran: `caseledger projections run NAME --once`)"
            ) from None
    if as_json:
        s.echo_json(rows)
        return
    if not rows:
        s.say("(no rows)")
        return
    table = Table(*rows[0].keys())
    for row in rows:
        table.add_row(*(Text("" if v is None else str(v)) for v in row.values()))
    s.out.print(table)
