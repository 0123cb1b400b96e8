"""``caseledger tick`` and ``overdue``: deadlines past due, recorded once or listed."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from caseledger.cli import render
from caseledger.cli.common import session
from caseledger.cli.options import Json, ViewsOpt, Zone, parse_instant


def tick(
    ctx: typer.Context,
    now: Annotated[
        datetime | None,
        typer.Option("--now", parser=parse_instant, metavar="ISO-8601",
                     help="Simulate the ledger's clock on a local file (demo, tests), as the global --now: "
                          "what it records is marked simulated-clock. Not with --api."),
    ] = None,
    as_json: Json = False,
) -> None:
    """Record every acknowledgement, response and promise deadline now past due, once; apply the retention policy.

    It runs on the ledger's clock and what it records names the actor (--as). With a `[retention]`
    table in the policy, customers whose data is due for erasure are erased (once; a legal hold
    keeps them, and is reported), and so are old months of rejected intake records. Last, it finishes
    erasures a reader kept pending (the destroyed keys' bytes still in the database's files).

    Examples:

    ```
    $ caseledger tick
    $ caseledger tick --now 2026-12-01T00:00Z
    ```
    """
    from caseledger.projections.queries import tick_missed_deadlines

    s = session(ctx)
    if now is not None:
        if s.api:
            raise typer.BadParameter("the ledger service ticks on its own clock; leave --now out with --api",
                                     param_hint="'--now'")
        s.now = now  # the simulation clock of the ledger this command opens
    if s.api:  # on the service's clock, as its principal
        report = _tick_report(s.service.tick_record())
    else:
        with s.views() as views:  # the deadlines projection says which cases to look at
            # It records: the policy and its texts are checked as it opens, before it writes anything.
            report = tick_missed_deadlines(views, ledger=lambda: s.local_ledger, actor=s.actor)
    if as_json:
        r = report.retention
        s.echo_json({"now": report.now, "cases_checked": report.cases_checked, "missed": report.missed,
                     "total": report.total, "erased": r.erased, "held": r.held,
                     "erased_rejection_months": r.rejection_months, "retention_skipped": report.retention_skipped,
                     "erasure_pending": report.erasure_pending})
        return
    s.say(f"Checked {report.cases_checked} case(s) as of {render.fmt_time(report.now, s.tz)}.")
    r = report.retention
    if r.erased:
        s.say(f"Retention: erased {len(r.erased)} customer(s): {', '.join(r.erased)}.", "yellow")
    for customer, reason in sorted(r.held.items()):
        s.say(f"Retention: {customer} is due for erasure but kept by a legal hold ({reason}).", "yellow")
    if r.rejection_months:
        s.say(f"Retention: erased the raw bytes of intake rejections of {', '.join(r.rejection_months)}.", "yellow")
    if report.erasure_pending:
        s.say(f"Erasure pending: {report.erasure_pending}.", "yellow")
    if not report.total:
        s.say("No new missed deadline.", "green")
        return
    table = Table("deadline", "missed", title=f"{report.total} missed deadline(s) recorded", title_justify="left")
    for kind, count in sorted(report.missed.items()):
        table.add_row(kind, str(count))
    s.out.print(table)



def overdue(
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
    from caseledger.projections.queries import overdue_deadlines

    s = session(ctx)
    now = s.instant()
    if s.api:  # the service's clock: each row says how late it is
        rows = [{**r, "due_at": datetime.fromisoformat(r["due_at"])} for r in s.service.overdue_rows(kind)]
    else:
        with s.views(views) as store:
            rows = [{**r, "overdue_seconds": int((now - r["due_at"]).total_seconds()), "recorded": bool(r["missed"])}
                    for r in overdue_deadlines(store, now, ledger=s.open_ledger)]
    if kind:
        rows = [r for r in rows if r["kind"] == kind.strip().lower()]
    if as_json:
        s.echo_json(rows)
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
                      render.duration(r["overdue_seconds"]),
                      "yes" if r["missed"] else "no", Text(r["customer_id"]))
    s.out.print(table)


def _tick_report(answer: dict[str, Any]) -> Any:
    """The report of a tick the service ran, shaped as the ledger's own."""
    from caseledger.ledger.application import TickReport
    from caseledger.ledger.privacy.retention_sweep import RetentionReport

    return TickReport(now=datetime.fromisoformat(answer["now"]), cases_checked=answer["cases_checked"],
                      missed=answer["missed"], retention=RetentionReport(
                          erased=answer["erased"], held=answer["held"],
                          rejection_months=answer["erased_rejection_months"]),
                      retention_skipped=answer.get("retention_skipped"), erasure_pending=answer.get("erasure_pending"))
