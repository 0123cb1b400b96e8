"""``caseledger respond`` and ``item waive``: answering the questions of a case, or waiving them."""

from __future__ import annotations

from typing import Annotated

import typer

from caseledger.cli.common import session
from caseledger.cli.options import CHANNELS, Reason, Ref, parse_ids

item_app = typer.Typer(no_args_is_help=True, help="Items: the questions a customer asked.")


def respond(
    ctx: typer.Context,
    reference: Ref,
    body: Annotated[str, typer.Option("--body", "-b", metavar="TEXT", help="The text the customer receives.")],
    answers: Annotated[
        str,
        typer.Option("--answers", metavar="Q1,Q2", help="Items this response answers; none for a holding reply."),
    ] = "",
    channel: Annotated[
        str | None, typer.Option("--channel", "-c", metavar="CHANNEL", help=f"Sent on: {CHANNELS}.")
    ] = None,
) -> None:
    """Send a response to the customer, answering some of the case's items.

    Examples:

    ```
    $ caseledger respond CL-7K2QD-M3XPA --body "Your card is unblocked." --answers Q1,Q2 --channel email
    $ caseledger respond CL-7K2QD-M3XPA --body "We are checking with the bank, news by Friday."
    ```
    """
    s = session(ctx)
    answered = parse_ids(answers)
    response_id = s.ledger.respond(reference, actor=s.actor, body=body, answers=answered, channel=channel)
    what = f"answering {', '.join(answered)}" if answered else "answering no item (holding reply)"
    s.say(f"Response {response_id} recorded, {what}.", "green")


@item_app.command("waive")
def item_waive(
    ctx: typer.Context,
    reference: Ref,
    item: Annotated[str, typer.Argument(metavar="ITEM", help="The item id, e.g. Q2.")],
    reason: Reason,
) -> None:
    """Mark an item as not to be answered, with the reason.

    Example:

    ```
    $ caseledger item waive CL-7K2QD-M3XPA Q2 --reason "customer withdrew the question on the phone"
    ```
    """
    s = session(ctx)
    s.ledger.waive_item(reference, actor=s.actor, item_id=item.strip().upper(), reason=reason)
    s.say(f"Item {item.strip().upper()} waived.", "green")
