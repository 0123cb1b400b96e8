"""``caseledger metrics``: service per channel and segment, from the channel metrics projection."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from caseledger.cli import render
from caseledger.cli.common import session
from caseledger.cli.options import Json, ViewsOpt

GROUPS = {"channel": ("channel",), "segment": ("segment",), "both": ("channel", "segment")}
"""What ``--by`` accepts, and the columns each groups by."""


def _seconds(value: float | None) -> str:
    return "-" if value is None else render.duration(round(value))


def metrics(
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
    from caseledger.projections.queries import channel_summary

    groups = GROUPS.get(by.strip())
    if groups is None:
        raise typer.BadParameter(f"{by!r}: use channel, segment or both", param_hint="'--by'")
    s = session(ctx)
    if s.api:
        rows = s.service.metrics_rows(by.strip())
    else:
        with s.views(views) as store:
            rows = channel_summary(store, by=groups, ledger=s.open_ledger)
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
