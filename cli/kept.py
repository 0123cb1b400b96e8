"""``intake collisions`` and ``intake rejections``: the requests the ledger kept without applying them.

Both list, oldest first, what an operator must look at: a request whose channel message id was
already another request's, and an intake record that could not be applied. ``--json`` carries
each one's raw bytes (base64), the export an auditor reconciles with the intake topic.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer
from rich.table import Table

from caseledger.cli import render
from caseledger.cli.common import Session, session

JsonRaw = Annotated[bool, typer.Option("--json", help="Print JSON, with each request's raw bytes (base64).")]


def _show(s: Session, found: list[Any], *, as_json: bool, record: Callable[[Any], dict[str, Any]],
          columns: tuple[str, ...], row: Callable[[Any], Iterable[str]], none: str, summary: str) -> None:
    if as_json:
        s.echo_json([{**record(e), "raw_base64": base64.b64encode(e.raw).decode()} for e in found])
        return
    if not found:
        s.say(none, "green")
        return
    table = Table(*columns)
    for e in found:
        table.add_row(*row(e))
    s.out.print(table)
    s.say(summary.format(n=len(found)))


def intake_collisions(ctx: typer.Context, as_json: JsonRaw = False) -> None:
    """List the requests that reused a channel message id another request has (kept, not applied).

    A collision is recorded by `contact record`, the application API and the intake worker alike
    (exit code 6 for the caller). Each row names the colliding request only — its sender, where it
    came from, why it collided — never the request that holds the id. To apply one, have its
    channel send it again with a new message id (the raw bytes are in --json).

    Example: caseledger intake collisions --json > collisions.json
    """
    s = session(ctx)
    _show(
        s, list(s.ledger.collisions()), as_json=as_json,
        record=lambda e: {
            "collision_id": str(e.originator_id), "recorded_at": e.timestamp, "occurred_at": e.occurred_at,
            "channel": e.channel, "channel_message_id": e.channel_message_id, "kind": e.kind,
            "reason": e.reason, "customer_id": e.customer_id, "actor": f"{e.actor_kind}:{e.actor_id}",
            "source": e.source or None, "content_digest": e.content_digest,
        },
        columns=("recorded", "channel", "message id", "kind", "sender", "source", "collision"),
        row=lambda e: (render.fmt_time(e.timestamp, s.tz), e.channel or "", e.channel_message_id, e.kind,
                       e.customer_id, e.source or "direct", str(e.originator_id)),
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
    _show(
        s, list(s.ledger.rejections()), as_json=as_json,
        record=lambda e: {
            "rejection_id": str(e.originator_id), "recorded_at": e.timestamp, "topic": e.source_topic,
            "partition": e.source_partition, "offset": e.source_offset, "kind": e.kind, "reason": e.reason,
            "bytes": len(e.raw),
        },
        columns=("recorded", "intake record", "kind", "bytes", "reason"),
        row=lambda e: (render.fmt_time(e.timestamp, s.tz), f"{e.source_topic}/{e.source_partition}/"
                       f"{e.source_offset}", e.kind, str(len(e.raw)), e.reason),
        none="No intake record was rejected.",
        summary="{n} rejection(s): each record is kept with its reason; fix its adapter and publish it again.",
    )
