"""``caseledger message …``: delivery reports (delivered, failed) and read receipts of messages."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from caseledger.cli.common import session
from caseledger.cli.options import Ref, parse_instant

message_app = typer.Typer(no_args_is_help=True, help="Delivery and read receipts of messages.")

MessageId = Annotated[str, typer.Argument(metavar="MESSAGE", help="A message id: ACK1, R1, W1, N1 (C1 for read).")]
At = Annotated[
    datetime | None,
    typer.Option("--at", parser=parse_instant, metavar="ISO-8601", help="When it happened (default now)."),
]


@message_app.command("delivered")
def message_delivered(ctx: typer.Context, reference: Ref, message: MessageId, at: At = None) -> None:
    """Record that a channel delivered one of our messages to the customer.

    Example:

    ```
    $ caseledger --as system:mailer message delivered CL-7K2QD-M3XPA ACK1 --at 2026-11-23T10:01Z
    ```
    """
    s = session(ctx)
    s.ledger.record_delivery(reference, actor=s.actor, message_id=message, delivered_at=at or s.instant())
    s.say(f"Message {message.upper()} delivered.", "green")


@message_app.command("failed")
def message_failed(
    ctx: typer.Context, reference: Ref, message: MessageId,
    reason: Annotated[str, typer.Option("--reason", help="bounced, invalid_address, rejected, opted_out, "
                                        "unreachable, expired or other.")],
    at: At = None,
) -> None:
    """Record that a channel could not deliver one of our messages: it stays undelivered, its deadline runs on.

    Example:

    ```
    $ caseledger --as system:mailer message failed CL-7K2QD-M3XPA ACK1 --reason bounced
    ```
    """
    s = session(ctx)
    s.ledger.record_delivery_failure(reference, actor=s.actor, message_id=message, reason=reason, failed_at=at)
    s.say(f"Message {message.upper()} not delivered ({reason.strip().lower()}).", "yellow")


@message_app.command("read")
def message_read(ctx: typer.Context, reference: Ref, message: MessageId, at: At = None) -> None:
    """Record that the customer read our message, or an agent read the customer's contact.

    Examples:

    ```
    $ caseledger --as customer:jane message read CL-7K2QD-M3XPA R1
    $ caseledger --as agent:alice message read CL-7K2QD-M3XPA C2
    ```
    """
    s = session(ctx)
    s.ledger.record_read(reference, actor=s.actor, message_id=message, read_at=at)
    s.say(f"Message {message.upper()} read by {s.actor}.", "green")
