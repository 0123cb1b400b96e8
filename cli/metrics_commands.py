"""``caseledger metrics``: service per channel and segment, from the channel metrics projection."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from caseledger.cli import render
from caseledger.cli.common import Session, session
from caseledger.cli.options import Json, ViewsOpt

GROUPS = {"channel": ("channel",), "segment": ("segment",), "both": ("channel", "segment")}
"""What ``--by`` accepts, and the columns each groups by."""


def _seconds(value: float | None) -> str:
    return "-" if value is None else render.duration(round(value))


def _spread(r: dict[str, Any], measure: str) -> str:
    """``p50 / p90 / p99`` of a measure, or ``-`` when nothing was measured."""
    if r[f"{measure}_p50_s"] is None:
        return "-"
    return " / ".join(_seconds(r[f"{measure}_p{p}_s"]) for p in (50, 90, 99))


def metrics(
    ctx: typer.Context,
    by: Annotated[
        str, typer.Option("--by", metavar="channel|segment|both", help="Group per channel, per segment, or both.")
    ] = "channel",
    month: Annotated[bool, typer.Option("--month", help="One row per month too (response and resolution "
                                        "times: a duration counts in the month its clock started).")] = False,
    zone: Annotated[str, typer.Option("--zone", metavar="ZONE", help="The IANA zone months are counted in, e.g. "
                                      "Europe/Paris.")] = "UTC",
    views: ViewsOpt = None,
    as_json: Json = False,
) -> None:
    """Service per channel and segment: time to acknowledge, to first response and to resolution
    (mean, p50, p90, p99), promises kept, chatbot-to-human wait, follow-ups per case.

    Percentiles are exact, by the nearest-rank method, over every kept duration.

    Examples:

    ```
    $ caseledger metrics
    $ caseledger metrics --by both --json
    $ caseledger metrics --by segment --month --zone Europe/Paris
    ```
    """
    from caseledger.projections.queries import channel_summary

    groups = GROUPS.get(by.strip())
    if groups is None:
        raise typer.BadParameter(f"{by!r}: use channel, segment or both", param_hint="'--by'")
    s = session(ctx)
    if s.api:
        rows = s.service.metrics_rows(by.strip(), month=month, zone=zone)
    else:
        with s.views(views) as store:
            rows = channel_summary(store, by=groups, ledger=s.open_ledger, month=month, zone=zone)
    if as_json:
        s.echo_json(rows)
        return
    if not rows:
        s.say("No contact recorded yet." if not month else "No response or resolution measured yet.")
        return
    if month:
        _monthly(s, rows, groups)
        return
    table = Table(*groups, "contacts", "cases", "ack (avg)", "1st response (avg)", "1st response p50/p90/p99",
                  "resolution p50/p90/p99", "promises kept", "chatbot wait (avg)", "follow-ups/case", "missed",
                  title="Channel metrics", title_justify="left")
    for r in rows:
        ratio = "-" if r["promises_kept_ratio"] is None else f"{r['promises_kept_ratio']:.0%} of " + str(
            r["promises_kept"] + r["promises_broken"] + r["promises_withdrawn"])
        table.add_row(
            *(r[g] for g in groups), str(r["contacts"]), str(r["cases_opened"]), _seconds(r["ack_avg_s"]),
            _seconds(r["first_response_avg_s"]), _spread(r, "first_response"), _spread(r, "resolution"), ratio,
            _seconds(r["escalation_wait_avg_s"]),
            "-" if r["follow_ups_per_case"] is None else f"{r['follow_ups_per_case']:.2f}",
            str(r["deadlines_missed"]),
        )
    s.out.print(table)


def _monthly(s: Session, rows: list[dict[str, Any]], groups: tuple[str, ...]) -> None:
    table = Table(*groups, "month", "1st responses", "1st response (avg)", "1st response p50/p90/p99",
                  "resolved", "resolution (avg)", "resolution p50/p90/p99",
                  title=f"Channel metrics per month (months in {rows[0]['zone']})", title_justify="left")
    for r in rows:
        table.add_row(
            *(r[g] for g in groups), r["month"], str(r["first_responses"]), _seconds(r["first_response_avg_s"]),
            _spread(r, "first_response"), str(r["resolutions"]), _seconds(r["resolution_avg_s"]),
            _spread(r, "resolution"),
        )
    s.out.print(table)
