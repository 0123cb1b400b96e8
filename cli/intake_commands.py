"""``intake collisions`` and ``intake rejections``: the requests the ledger kept without applying them.

Both list, oldest first, what an operator must look at: a request whose channel message id was
already another request's, and an intake record that could not be applied. ``--json`` carries
each one's raw bytes (base64), the export an auditor reconciles with the intake topic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from caseledger.cli import render
from caseledger.cli.common import Session, session

JsonRaw = Annotated[bool, typer.Option("--json", help="Print JSON, with each request's raw bytes (base64).")]


def _show(s: Session, found: list[dict[str, Any]], *, as_json: bool, columns: tuple[str, ...],
          row: Callable[[dict[str, Any]], Iterable[str]], none: str, summary: str) -> None:
    if as_json:
        s.echo_json(found)
        return
    if not found:
        s.say(none, "green")
        return
    table = Table(*columns)
    for e in found:
        table.add_row(*row(e))
    s.out.print(table)
    s.say(summary.format(n=len(found)))


def _at(record: dict[str, Any], s: Session) -> str:
    return render.fmt_time(datetime.fromisoformat(record["recorded_at"]), s.tz)


def intake_collisions(ctx: typer.Context, as_json: JsonRaw = False) -> None:
    """List the requests that reused a channel message id another request has (kept, not applied).

    A collision is recorded by `contact record`, the application API and the intake worker alike
    (exit code 6 for the caller). Each row names the colliding request only — its sender, where it
    came from, why it collided — never the request that holds the id. To apply one, have its
    channel send it again with a new message id (the raw bytes are in --json).

    Example: caseledger intake collisions --json > collisions.json
    """
    s = session(ctx)
    found = s.ledger.collision_records()
    _show(
        s, found, as_json=as_json,
        columns=("recorded", "channel", "message id", "kind", "sender", "source", "collision"),
        row=lambda e: (_at(e, s), e["channel"] or "", e["channel_message_id"], e["kind"], e["customer_id"],
                       e["source"] or "direct", e["collision_id"]),
        none="No message id collisions recorded.",
        summary="{n} collision(s): each request was kept, not applied; its channel must resend it with a new "
        "message id.",
    )


def intake_rejections(ctx: typer.Context, as_json: JsonRaw = False) -> None:
    """List the intake records the ledger could not apply: where each was read, why, and its bytes.

    Every intake offset has one outcome; a rejection is the outcome of a record that could not be
    decoded or applied (not Avro, an unknown schema, an invalid contact, an unknown case …). The
    record itself is kept (--json: base64), so nothing a channel published is lost.

    Example: caseledger intake rejections --json > rejections.json
    """
    s = session(ctx)
    found = s.ledger.rejection_records()
    _show(
        s, found, as_json=as_json,
        columns=("recorded", "intake record", "kind", "bytes", "reason"),
        row=lambda e: (_at(e, s), f"{e['topic']}/{e['partition']}/{e['offset']}", e["kind"], str(e["bytes"]),
                       e["reason"]),
        none="No intake record was rejected.",
        summary="{n} rejection(s): each record is kept with its reason; fix its adapter and publish it again.",
    )
