"""Projection commands: ``projections list | status | run | rebuild``, ``overdue``, ``metrics``.

Also the read side the case commands use: ``case show``, ``history`` and ``tick`` read the case
state, timeline and deadlines projections. A projection that follows the store (the embedded
default) is first caught up from it, so a command sees what was just recorded; one that follows
the Kafka events topic is read as it is.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from caseledger.cli import render
from caseledger.cli.app import Json, Session, Zone, app, plain_console, session
from caseledger.cli.bench import bench_app
from caseledger.cli.streaming import ConsumerOpt, KafkaOpt, ProducerOpt, stop_on_signals
from caseledger.ledger.errors import BackendError, ConfigurationError, NotFound

if TYPE_CHECKING:
    from caseledger.projections.base import Projection
    from caseledger.projections.runner import ProjectionStatus
    from caseledger.projections.sources import EventSource
    from caseledger.projections.views import ViewStore

log = logging.getLogger("caseledger.projections")

projections_app = typer.Typer(
    no_args_is_help=True,
    help="Read models built from the events (case state, timeline, deadlines, metrics): list, status, run, rebuild.",
)
PANEL = "Projections"
app.add_typer(projections_app, name="projections", rich_help_panel=PANEL)

ViewsOpt = Annotated[
    str | None,
    typer.Option(
        "--views", envvar="CASELEDGER_VIEWS", metavar="PATH|URL",
        help="Database holding the read models: SQLite file or postgresql:// URL (default: the ledger's database).",
    ),
]
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
    typer.Argument(metavar="[NAME]...", help="Built-in names (case_state, timeline, deadlines, channel_metrics) "
                   "or module:Class; default every built-in."),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, max=100_000, help="Events per transaction.")]


# -- plumbing ------------------------------------------------------------------------------------------


def views_url(s: Session, views: str | None = None) -> str:
    """The views database: ``--views``, CASELEDGER_VIEWS, else the ledger's own database."""
    from caseledger.ledger.settings import LedgerSettings

    chosen = views or os.environ.get("CASELEDGER_VIEWS")
    if chosen:
        return chosen
    return LedgerSettings.resolve(database=s.database).store.database


@contextmanager
def open_session_views(s: Session, views: str | None = None) -> Iterator[ViewStore]:
    from caseledger.projections.views import open_views

    store = open_views(views_url(s, views))
    try:
        yield store
    finally:
        store.close()


def make_source(s: Session, kind: str, kafka: str | None, consumer: str = "kafka-python") -> EventSource:
    """The store's notification log, or the Kafka events topic."""
    from caseledger.projections.sources import StoreEventSource, kafka_source

    if kind == "store":
        return StoreEventSource(s.ledger)
    if kind == "kafka":
        from caseledger.ledger.kafka.settings import KafkaSettings

        return kafka_source(KafkaSettings.resolve(bootstrap_servers=kafka), consumer=consumer)
    raise typer.BadParameter(f"{kind!r}: use store or kafka", param_hint="'--source'")


def choose_source(views: ViewStore, projections: list[Projection], source: str | None, kafka: str | None) -> str:
    """The source kind to run ``projections`` from (see ``--source``)."""
    from caseledger.ledger.kafka.settings import KafkaSettings
    from caseledger.projections.runner import LIVE, read_status

    if source:
        return source.strip().lower()
    following = {st.source.split(":")[0] for p in projections for st in read_status(views, p.name, LIVE)}
    if len(following) > 1:
        raise ConfigurationError(
            "these projections follow different sources; run them separately or give --source"
        )
    if following:
        return following.pop()
    return "kafka" if KafkaSettings.from_env_if_configured(kafka) else "store"


def caught_up(s: Session, views: ViewStore, projection: Projection) -> None:
    """Catch a projection up from the store, unless it follows the events topic."""
    from caseledger.projections.runner import LIVE, ProjectionRunner, read_status
    from caseledger.projections.sources import STORE

    states = read_status(views, projection.name, LIVE)
    if states and states[0].source != STORE:
        return
    runner = ProjectionRunner([projection], views, make_source(s, "store", None), batch_size=2000, idle_s=0)
    runner.run(until_caught_up=True)


# -- projections list | status | run | rebuild -----------------------------------------------------------


@projections_app.command("list")
def projections_list(ctx: typer.Context, views: ViewsOpt = None, as_json: Json = False) -> None:
    """List the built-in projections and every projection the views database knows.

    Example:

    ```
    $ caseledger projections list
    ```
    """
    from caseledger.projections.registry import BUILT_INS, load_projection
    from caseledger.projections.runner import read_status

    s = session(ctx)
    with open_session_views(s, views) as store:
        states = read_status(store)
    following = {st.projection: st.source for st in states if st.slot == "live"}
    rows: list[dict[str, Any]] = []
    for name in dict.fromkeys([*BUILT_INS, *following]):
        try:
            projection = load_projection(name)
        except ConfigurationError:
            rows.append({"name": name, "description": "(analyst projection; run it as module:Class)",
                         "tables": [], "events": [], "follows": following.get(name)})
            continue
        rows.append({
            "name": name, "description": projection.description(), "tables": [t.name for t in projection.tables],
            "events": sorted(projection.handlers()), "follows": following.get(name),
        })
    if as_json:
        s.echo_json(rows)
        return
    table = Table("projection", "tables", "follows", "what it holds", title="Projections", title_justify="left")
    for row in rows:
        table.add_row(row["name"], ", ".join(row["tables"]), row["follows"] or "-", Text(row["description"]))
    s.out.print(table)


def _lag(s: Session, status: ProjectionStatus, kafka: str | None) -> int | None:
    try:
        source = make_source(s, "kafka" if status.source.startswith("kafka:") else "store", kafka)
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
    with open_session_views(s, views) as store:
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
def projections_run(
    ctx: typer.Context,
    names: Names = None,
    source: SourceOpt = None,
    once: Annotated[bool, typer.Option("--once", help="Stop when caught up instead of following new events.")] = False,
    batch_size: BatchOpt = 1000,
    views: ViewsOpt = None,
    kafka: KafkaOpt = None,
    consumer: ConsumerOpt = "kafka-python",
) -> None:
    """Keep projections up to date; stop with SIGTERM or Ctrl-C (the current batch completes).

    Each batch and the new positions are one transaction, so the runner can be killed at any
    moment and restarted: nothing is applied twice or missed.

    Examples:

    ```
    $ caseledger projections run
    $ caseledger projections run case_state timeline --source kafka --kafka localhost:29092
    $ caseledger projections run my_module:FirstContactResolution --once
    ```
    """
    from caseledger.projections.registry import load_projections
    from caseledger.projections.runner import ProjectionRunner

    s = session(ctx)
    err = plain_console(stderr=True)
    projections = load_projections(names)
    with open_session_views(s, views) as store:
        kind = choose_source(store, projections, source, kafka)
        src = make_source(s, kind, kafka, consumer)
        try:
            runner = ProjectionRunner(projections, store, src, batch_size=batch_size)
            last = [time.monotonic()]

            def report(_batch: Any) -> None:
                if time.monotonic() - last[0] >= 5:
                    last[0] = time.monotonic()
                    err.print(runner.stats.line())

            with stop_on_signals() as stop:
                err.print(f"running {', '.join(p.name for p in projections)} from {src.name} into "
                          f"{store.describe()}" + ("" if once else "; SIGTERM or Ctrl-C stops"))
                stats = runner.run(stop, until_caught_up=once, on_batch=report)
            err.print(f"stopped: {stats.line()}")
        finally:
            src.close()


class _Rate(TextColumn):
    """Events per second of a task, from the ``rate`` field the caller keeps up to date."""

    def __init__(self) -> None:
        super().__init__("{task.fields[rate]}")


@projections_app.command("rebuild")
def projections_rebuild(
    ctx: typer.Context,
    names: Annotated[
        list[str], typer.Argument(metavar="NAME...", help="Built-in names or module:Class; rebuilt in one pass.")
    ],
    source: SourceOpt = None,
    batch_size: BatchOpt = 5000,
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
    consumer: ConsumerOpt = "kafka-python",
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
    with open_session_views(s, views) as store:
        kind = choose_source(store, projections, source, kafka)
        src = make_source(s, kind, kafka, consumer)
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
def projections_query(
    ctx: typer.Context,
    sql: Annotated[str, typer.Argument(metavar="SQL", help="A read-only SQL query on the views database.")],
    views: ViewsOpt = None,
    as_json: Json = False,
) -> None:
    """Run a read-only SQL query on the views database and print the rows (nothing is ever written).

    Example:

    ```
    $ caseledger projections query "SELECT channel, SUM(contacts) AS contacts FROM channel_metrics GROUP BY channel"
    ```
    """
    s = session(ctx)
    with open_session_views(s, views) as store:
        try:
            rows = store.fetch(sql)
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


# -- reading projections -------------------------------------------------------------------------------


def read_case(s: Session, reference: str) -> Any:
    """The case state row of a reference, as a :class:`projections.case_state.CaseView`."""
    from caseledger.ledger.application import normalise_reference
    from caseledger.projections.case_state import CaseState, CaseView

    ref = normalise_reference(reference)
    projection = CaseState()
    with open_session_views(s) as store:
        caught_up(s, store, projection)
        rows = store.select(projection.tables[0], where="reference = ?", params=(ref,))
    if not rows:
        raise NotFound(f"no case with reference {ref}; find a customer's cases with `caseledger cases CUSTOMER`")
    return CaseView(rows[0])


def read_history(s: Session, who: str) -> list[dict[str, Any]]:
    """A customer's timeline rows, in the store's order (positions), as the exports list them."""
    from caseledger.projections.timeline import CustomerTimeline

    customer_id = s.ledger.resolve_customer(who)
    projection = CustomerTimeline()
    with open_session_views(s) as store:
        caught_up(s, store, projection)
        return store.select(projection.tables[0], where="customer_id = ?", params=(customer_id,),
                            order_by="position")  # the store's order, as the exports


def history_record(row: dict[str, Any]) -> dict[str, Any]:
    """A timeline row as ``history --json`` prints it."""
    return render.plain({
        "type": row["event_type"], "case_reference": row["case_reference"], "actor": row["actor"],
        "recorded_at": row["recorded_at"], "occurred_at": row["occurred_at"], "channel": row["channel"],
        "customer_id": row["customer_id"], "what": row["line"], "event_id": row["event_id"],
        "aggregate_id": row["aggregate_id"], "aggregate_version": row["aggregate_version"],
        "previous_hash": row["previous_hash"], "position": row["position"],
    })


def render_timeline(s: Session, rows: list[dict[str, Any]], *, customer: str, tz: tzinfo) -> None:
    """A customer's timeline as a table, oldest first (times inside lines are UTC)."""
    table = Table(title=f"History of {customer} ({len(rows)} events)", title_justify="left")
    table.add_column("recorded at", no_wrap=True)
    table.add_column("case", no_wrap=True)
    table.add_column("event")
    table.add_column("channel")
    table.add_column("actor")
    table.add_column("what happened", ratio=1)
    for row in rows:
        table.add_row(render.fmt_time(row["recorded_at"], tz, seconds=True), row["case_reference"] or "",
                      row["event_type"], row["channel"] or "", row["actor"], Text(row["line"]))
    s.out.print(table)


def tick_from_deadlines(s: Session, now: datetime) -> Any:
    """Record every deadline the deadlines projection finds past due and not yet recorded."""
    from caseledger.ledger.application import TickReport
    from caseledger.projections.deadlines import Deadlines, deadline_counts, overdue, record_missed_deadlines

    projection = Deadlines()
    with open_session_views(s) as store:
        caught_up(s, store, projection)
        due = overdue(store, now, unrecorded_only=True)
        checked = deadline_counts(store)["cases"]
    references = list(dict.fromkeys(row["reference"] for row in due))
    missed = record_missed_deadlines(s.ledger, references, now)
    return TickReport(now=now, cases_checked=checked, missed=missed)


@app.command("overdue", rich_help_panel=PANEL)
def overdue_command(
    ctx: typer.Context,
    kind: Annotated[
        str | None, typer.Option("--kind", metavar="KIND", help="Only acknowledgement, response or promise.")
    ] = None,
    views: ViewsOpt = None,
    as_json: Json = False,
    zone: Zone = None,
) -> None:
    """Deadlines past due and still pending: acknowledgements, responses and promises.

    "recorded" says whether `caseledger tick` has recorded the miss already. `--now` (before the
    command) looks at another moment.

    Examples:

    ```
    $ caseledger overdue
    $ caseledger --now 2026-12-01T00:00Z overdue --kind promise --json
    ```
    """
    from caseledger.projections.deadlines import Deadlines, overdue

    s = session(ctx)
    now = s.instant()
    projection = Deadlines()
    with open_session_views(s, views) as store:
        caught_up(s, store, projection)
        rows = overdue(store, now)
    if kind:
        rows = [r for r in rows if r["kind"] == kind.strip().lower()]
    if as_json:
        s.echo_json([{**r, "overdue_seconds": int((now - r["due_at"]).total_seconds()), "recorded": bool(r["missed"])}
                     for r in rows])
        return
    if not rows:
        s.say(f"Nothing overdue as of {render.fmt_time(now, zone or s.tz)}.", "green")
        return
    table = Table("case", "deadline", "target", "channel", "due", "late by", "recorded", "customer",
                  title=f"{len(rows)} overdue deadline(s) as of {render.fmt_time(now, zone or s.tz)}",
                  title_justify="left")
    for r in rows:
        table.add_row(r["reference"], r["kind"], r["target_id"], r["channel"] or "-",
                      render.fmt_time(r["due_at"], zone or s.tz),
                      render.duration(int((now - r["due_at"]).total_seconds())),
                      "yes" if r["missed"] else "no", Text(r["customer_id"]))
    s.out.print(table)


def _seconds(value: float | None) -> str:
    return "-" if value is None else render.duration(round(value))


@app.command("metrics", rich_help_panel=PANEL)
def metrics_command(
    ctx: typer.Context,
    by: Annotated[
        str, typer.Option("--by", metavar="channel|segment|both", help="Group per channel, per segment, or both.")
    ] = "channel",
    views: ViewsOpt = None,
    as_json: Json = False,
) -> None:
    """Service per channel and segment: time to acknowledge and to first response, promises kept,
    chatbot-to-human wait, follow-ups per case.

    Examples:

    ```
    $ caseledger metrics
    $ caseledger metrics --by both --json
    ```
    """
    from caseledger.projections.channel_metrics import ChannelMetrics, summary

    groups = {"channel": ("channel",), "segment": ("segment",), "both": ("channel", "segment")}.get(by.strip())
    if groups is None:
        raise typer.BadParameter(f"{by!r}: use channel, segment or both", param_hint="'--by'")
    s = session(ctx)
    projection = ChannelMetrics()
    with open_session_views(s, views) as store:
        caught_up(s, store, projection)
        rows = summary(store, by=groups)
    if as_json:
        s.echo_json(rows)
        return
    if not rows:
        s.say("No contact recorded yet.")
        return
    table = Table(*groups, "contacts", "cases", "ack (avg)", "1st response (avg)", "promises kept",
                  "chatbot wait (avg)", "follow-ups/case", "missed",
                  title="Channel metrics", title_justify="left")
    for r in rows:
        ratio = "-" if r["promises_kept_ratio"] is None else f"{r['promises_kept_ratio']:.0%} of " + str(
            r["promises_kept"] + r["promises_broken"] + r["promises_withdrawn"])
        table.add_row(
            *(r[g] for g in groups), str(r["contacts"]), str(r["cases_opened"]), _seconds(r["ack_avg_s"]),
            _seconds(r["first_response_avg_s"]), ratio, _seconds(r["escalation_wait_avg_s"]),
            "-" if r["follow_ups_per_case"] is None else f"{r['follow_ups_per_case']:.2f}",
            str(r["deadlines_missed"]),
        )
    s.out.print(table)


# -- benchmarks ----------------------------------------------------------------------------------------


@bench_app.command("rebuild")
def bench_rebuild_command(
    kafka: KafkaOpt = None,
    events: Annotated[int, typer.Option("--events", "-n", min=1000, help="Events in the generated ledger.")] = 200_000,
    postgres: Annotated[
        str | None,
        typer.Option("--postgres", metavar="URL", envvar="CASELEDGER_BENCH_POSTGRES",
                     help="PostgreSQL URL of an empty database for the views (default: a temporary pgserver)."),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Rebuild processes.")] = 2,
    consumer: ConsumerOpt = "kafka-python",
    batch_size: BatchOpt = 5000,
    output: Annotated[str, typer.Option("--output", help="Directory for the JSON result.")] = "bench-results",
) -> None:
    """Events/s rebuilding every built-in projection from the Kafka topic into PostgreSQL.

    Generates a ledger of N events, publishes it to a fresh events topic, then rebuilds the
    four built-ins from the topic into PostgreSQL; the baseline, measured in the same run, is
    the raw Avro decode rate of the same events (compiled readers; fastavro's rate is shown
    too). Memory (peak RSS) is reported too.

    Example: caseledger bench rebuild --kafka localhost:29092 --events 1000000
    """
    from caseledger.ledger.bench.intake import write_result
    from caseledger.ledger.bench.rebuild import bench_rebuild

    if not kafka:
        raise ConfigurationError("bench rebuild needs Kafka: pass --kafka HOST:PORT or set CASELEDGER_KAFKA_BOOTSTRAP")
    console = plain_console()
    result = bench_rebuild(kafka_bootstrap=kafka, events=events, postgres_url=postgres, workers=workers,
                           consumer=consumer, batch_size=batch_size,
                           say=lambda text: console.print(Text(text, style="dim")))
    table = Table("measure", "value", title="caseledger bench rebuild")
    for measure, value in result.report():
        table.add_row(measure, value)
    console.print(table)
    console.print(f"written to {write_result('rebuild', result, output)}")


@bench_app.command("lag")
def bench_lag_command(
    kafka: KafkaOpt = None,
    rate: Annotated[int, typer.Option("--rate", min=1, help="Contacts published per second.")] = 1000,
    seconds: Annotated[float, typer.Option("--seconds", min=1, help="How long to publish.")] = 20.0,
    database: Annotated[
        str | None,
        typer.Option("--database", help="An EMPTY ledger database (SQLite path or postgresql:// URL); "
                     "default a temporary SQLite file."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Intake worker processes, sharing the intake partitions.")
    ] = 1,
    consumer: ConsumerOpt = "kafka-python",
    producer: ProducerOpt = "kafka-python",
    output: Annotated[str, typer.Option("--output", help="Directory for the JSON result.")] = "bench-results",
) -> None:
    """Latency from publishing a contact on the intake topic to seeing it in case state.

    Publishes contacts at a steady rate; the intake worker(s) and the publisher run as child
    processes, the case state projection follows the events topic here (--consumer is the Kafka
    client of the intake workers and of the projection, --producer the publisher's).
    Reports p50/p99/max latency.

    Example: caseledger bench lag --kafka localhost:29092 --rate 1000 --seconds 30
    """
    from caseledger.ledger.bench.intake import write_result
    from caseledger.ledger.bench.rebuild import bench_lag

    if not kafka:
        raise ConfigurationError("bench lag needs Kafka: pass --kafka HOST:PORT or set CASELEDGER_KAFKA_BOOTSTRAP")
    console = plain_console()
    result = bench_lag(kafka_bootstrap=kafka, rate=rate, seconds=seconds, database=database,
                       workers=workers, consumer=consumer, producer=producer, say=lambda text: console.print(Text(text, style="dim")))
    table = Table("measure", "value", title="caseledger bench lag")
    for measure, value in result.report():
        table.add_row(measure, value)
    console.print(table)
    console.print(f"written to {write_result('lag', result, output)}")
