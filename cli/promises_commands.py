"""``caseledger promise …``: promises made to a customer, and what became of them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from caseledger.cli import render
from caseledger.cli.common import session
from caseledger.cli.options import CHANNELS, Notice, Reason, Ref, parse_instant

promise_app = typer.Typer(no_args_is_help=True, help="Promises made to a customer: make, keep, withdraw, break.")

PromiseId = Annotated[str, typer.Argument(metavar="PROMISE", help="The promise id, e.g. P1.")]


@promise_app.command("make")
def promise_make(
    ctx: typer.Context,
    reference: Ref,
    channel: Annotated[str, typer.Option("--channel", "-c", metavar="CHANNEL", help=f"Made on: {CHANNELS}.")],
    kind: Annotated[str, typer.Option("--kind", "-k", metavar="KIND", help="callback, refund, credit, repair …")],
    terms: Annotated[str, typer.Option("--terms", "-t", metavar="TEXT", help="What exactly was promised.")],
    due: Annotated[
        datetime, typer.Option("--due", parser=parse_instant, metavar="ISO-8601", help="When it is due, with zone.")
    ],
    confirm_on: Annotated[
        str | None,
        typer.Option(
            "--confirm-on", metavar="CHANNEL",
            help="Written channel for the confirmation of a spoken promise (default: the customer's last written one).",
        ),
    ] = None,
) -> None:
    """Record a promise; one made on the phone or in a branch also gets a written confirmation.

    Example:

    ```
    $ caseledger promise make CL-7K2QD-M3XPA --channel phone --kind callback --terms "call back with the refund date" --due 2026-11-24T10:00+01:00
    ```
    """
    s = session(ctx)
    promise_id, confirmation_id = s.ledger.make_promise(
        reference, actor=s.actor, channel=channel, kind=kind, terms=terms, due_at=due,
        confirmation_channel=confirm_on,
    )
    s.say(f"Promise {promise_id} recorded, due {render.fmt_time(due, s.tz)}.", "green")
    if confirmation_id:
        s.say(f"Written confirmation {confirmation_id} issued to the customer.")


@promise_app.command("keep")
def promise_keep(
    ctx: typer.Context,
    reference: Ref,
    promise: PromiseId,
    evidence: Annotated[
        str, typer.Option("--evidence", "-e", metavar="TEXT", help="What shows it was kept (transfer id, call log …).")
    ],
) -> None:
    """Record that a promise was kept.

    Example:

    ```
    $ caseledger promise keep CL-7K2QD-M3XPA P1 --evidence "refund transfer TRX-99102"
    ```
    """
    s = session(ctx)
    s.ledger.keep_promise(reference, actor=s.actor, promise_id=promise.strip().upper(), evidence=evidence)
    s.say(f"Promise {promise.strip().upper()} kept.", "green")


@promise_app.command("withdraw")
def promise_withdraw(ctx: typer.Context, reference: Ref, promise: PromiseId, reason: Reason, notice: Notice) -> None:
    """Withdraw a promise; the customer is told why.

    Example:

    ```
    $ caseledger promise withdraw CL-7K2QD-M3XPA P1 --reason "offer ended" --notice "We cannot offer the credit after all, because …"
    ```
    """
    s = session(ctx)
    pid = promise.strip().upper()
    s.ledger.withdraw_promise(reference, actor=s.actor, promise_id=pid, reason=reason, notice=notice)
    s.say(f"Promise {pid} withdrawn; the customer is notified.", "green")


@promise_app.command("break")
def promise_break(ctx: typer.Context, reference: Ref, promise: PromiseId, reason: Reason) -> None:
    """Record that a promise was not kept.

    Example:

    ```
    $ caseledger promise break CL-7K2QD-M3XPA P1 --reason "nobody called back"
    ```
    """
    s = session(ctx)
    pid = promise.strip().upper()
    s.ledger.break_promise(reference, actor=s.actor, promise_id=pid, reason=reason)
    s.say(f"Promise {pid} recorded as broken.", "yellow")
