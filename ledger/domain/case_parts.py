"""What a case holds between events: its items, contacts, promises, proposals and messages.

Rebuilt from the events by ``Case``'s ``apply`` methods, never stored as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


class Status:
    """Case statuses. ``closed`` and ``cancelled`` are final until a reopen."""

    OPEN = "open"
    IN_PROGRESS = "in_progress"
    WAITING_ON_CUSTOMER = "waiting_on_customer"
    ON_HOLD = "on_hold"
    CLOSED = "closed"
    CANCELLED = "cancelled"

    ACTIVE = (OPEN, IN_PROGRESS, WAITING_ON_CUSTOMER, ON_HOLD)
    FINAL = (CLOSED, CANCELLED)
    ALL = ACTIVE + FINAL


# Actions a rule may propose that the ledger itself executes once a human approved them; any
# other action kind (e.g. "lower_card_limit") is executed by an outside system, which then
# reports it with ``record_action_executed``.
LEDGER_ACTIONS = ("change_status", "close", "cancel", "respond")
DEADLINE_KINDS = ("acknowledgement", "response", "promise", "confirmation")


@dataclass
class ItemState:
    item_id: str
    text: str
    contact_id: str
    status: str = "open"  # open | answered | waived
    answered_by: str | None = None
    waived_reason: str | None = None


@dataclass
class ContactState:
    contact_id: str
    channel: str
    channel_message_id: str
    received_at: datetime
    subject: str
    item_ids: list[str]
    follow_up: bool
    respond_by: datetime | None = None
    acknowledgement_id: str | None = None


@dataclass
class PromiseState:
    promise_id: str
    kind: str
    terms: str
    due_at: datetime
    made_by: str
    channel: str
    status: str = "open"  # open | kept | withdrawn | broken | waived
    confirmation_id: str | None = None
    closing_note: str | None = None


@dataclass
class ProposalState:
    proposal_id: str
    rule_id: str
    action: str
    params: dict[str, str]
    rationale: str
    status: str = "proposed"  # proposed | approved | rejected | executed
    decided_by: str | None = None


@dataclass
class MessageState:
    """An outbound message (acknowledgement, response, confirmation, notice) or an inbound contact."""

    message_id: str
    channel: str | None
    due_at: datetime | None = None
    text: str | None = None
    delivered_at: datetime | None = None
    read_by: list[str] = field(default_factory=list)
