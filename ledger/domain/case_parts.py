"""What a case holds between events: its items, contacts, promises, proposals and messages.

Rebuilt from the events by their ``apply`` methods (:mod:`~caseledger.ledger.domain.case_events`),
never stored as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from caseledger.ledger.domain.values import Channel
from caseledger.ledger.errors import RuleViolation, ValidationError


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

_ACTION_PARAMS = {
    "change_status": ("to", "reason", "notice"),
    "close": ("reason", "notice"),
    "cancel": ("reason", "notice"),
    "respond": ("body",),
}


def check_ledger_action(action: str, params: dict[str, str]) -> None:
    """An action the ledger will execute must be executable once approved: check its parameters now."""
    missing = [p for p in _ACTION_PARAMS.get(action, ()) if not str(params.get(p, "")).strip()]
    if missing:
        raise ValidationError(
            f"action {action} needs the parameters {', '.join(missing)} (--param KEY=VALUE)"
        )
    if action == "change_status" and params["to"].strip().lower() not in Status.ACTIVE:
        raise ValidationError(f"change_status to {params['to']!r}: use one of {', '.join(Status.ACTIVE)}")


class Restored:
    """A part whose pickled state is restored by its own ``__setstate__``, as pickle would restore it.

    Defined on the class, it stands in the way of a pickle that would set the class's own attributes
    (BUILD applied to the class object, not to an instance: it then calls this with no instance and
    fails). A case's snapshot is read back by an unpickler that builds these parts
    (:mod:`~caseledger.ledger.case_snapshots`): authenticated bytes, and this wall behind them.
    """

    __slots__ = ()

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)


@dataclass
class ItemState(Restored):
    item_id: str
    text: str
    contact_id: str
    status: str = "open"  # open | answered | waived
    answered_by: str | None = None
    waived_reason: str | None = None


@dataclass
class ContactState(Restored):
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
class PromiseState(Restored):
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
class ProposalState(Restored):
    proposal_id: str
    rule_id: str
    action: str
    params: dict[str, str]
    rationale: str
    status: str = "proposed"  # proposed | approved | rejected | executed
    decided_by: str | None = None


@dataclass(frozen=True)
class Handoff(Restored):
    """The last handoff of a case: who passed it to whom, when, and the note they left (the brief's top)."""

    handoff_id: str
    from_assignee: str | None
    to_assignee: str | None
    to_team: str | None
    note: str
    at: datetime
    by: str


@dataclass
class MessageState(Restored):
    """An outbound message (acknowledgement, response, confirmation, notice) or an inbound contact."""

    message_id: str
    channel: str | None
    due_at: datetime | None = None
    text: str | None = None
    delivered_at: datetime | None = None
    read_by: list[str] = field(default_factory=list)
    failure: str | None = None  # the last delivery failure reported (a DeliveryFailure code), until delivered


class CaseState:
    """What a case holds, and what can be read from it without changing it.

    The attributes are set by ``Case.CaseOpened`` and evolved only by the events' ``apply``
    (:mod:`~caseledger.ledger.domain.case_events`); ``Case`` adds the commands. The attributes are
    annotated here, not on ``Case``, where eventsourcing would make the aggregate a dataclass.
    """

    reference: str
    customer_id: str
    subject: str
    category: str | None
    segment: str | None
    status: str
    opened_at: datetime
    assignee: str | None
    team: str | None
    contacts: dict[str, ContactState]
    items: dict[str, ItemState]
    promises: dict[str, PromiseState]
    proposals: dict[str, ProposalState]
    proposers: dict[str, str]  # proposal id → who proposed it (KIND:ID)
    messages: dict[str, MessageState]
    missed: set[tuple[str, str]]
    follow_ups: int
    counters: dict[str, int]
    last_contact_by_channel: dict[str, str]
    escalations: list[tuple[str, datetime, int]]
    handoffs: int
    last_handoff: Handoff | None
    response_bodies: dict[str, str]  # response id → what it said (opened; [erased] once the customer is erased)
    recorded: dict[str, datetime]
    chain_head: bytes | None

    def open_item_ids(self) -> list[str]:
        return [i.item_id for i in self.items.values() if i.status == "open"]

    def open_promise_ids(self) -> list[str]:
        return [p.promise_id for p in self.promises.values() if p.status == "open"]

    def written_channel(self) -> Channel:
        """The written channel the customer used last on this case; a letter when there is none."""
        for contact in reversed(list(self.contacts.values())):
            channel = Channel(contact.channel)
            if not channel.is_spoken:
                return channel
        return Channel.LETTER

    def brief(self) -> dict[str, Any]:
        """What the next agent must know: open items, open promises, the last contact per channel."""
        return {
            "open_items": [
                {"item_id": i.item_id, "text": i.text, "contact_id": i.contact_id}
                for i in self.items.values()
                if i.status == "open"
            ],
            "open_promises": [
                {"promise_id": p.promise_id, "terms": p.terms, "due_at": p.due_at}
                for p in self.promises.values()
                if p.status == "open"
            ],
            "last_contacts": [
                {
                    "channel": channel,
                    "contact_id": contact_id,
                    "received_at": self.contacts[contact_id].received_at,
                    "subject": self.contacts[contact_id].subject,
                }
                for channel, contact_id in sorted(self.last_contact_by_channel.items())
            ],
        }

    def due_deadlines(self, now: datetime) -> list[tuple[str, str, datetime]]:
        """Deadlines past due at ``now`` and not yet recorded as missed: (kind, target id, due at)."""
        if self.status in Status.FINAL:
            return []
        due: list[tuple[str, str, datetime]] = []
        for contact in self.contacts.values():
            ack = contact.acknowledgement_id
            if ack:
                message = self.messages[ack]
                if message.delivered_at is None and message.due_at and message.due_at < now:
                    due.append(("acknowledgement", ack, message.due_at))
            answered = all(self.items[i].status != "open" for i in contact.item_ids)
            if contact.respond_by and contact.respond_by < now and not answered:
                due.append(("response", contact.contact_id, contact.respond_by))
        for promise in self.promises.values():
            if promise.status == "open" and promise.due_at < now:
                due.append(("promise", promise.promise_id, promise.due_at))
            confirmation = self.messages.get(promise.confirmation_id or "")
            if confirmation and confirmation.due_at and confirmation.delivered_at is None and confirmation.due_at < now:
                due.append(("confirmation", confirmation.message_id, confirmation.due_at))
        return [d for d in due if (d[0], d[1]) not in self.missed]

    # -- lookups for the commands: the part asked for, or a refusal naming the ones there are --------

    def _require_active(self, what: str) -> None:
        if self.status in Status.FINAL:
            raise RuleViolation(f"case {self.reference} is {self.status}; reopen it (with a reason) to {what}")

    def _item(self, item_id: str) -> ItemState:
        item = self.items.get(item_id)
        if item is None:
            raise RuleViolation(
                f"case {self.reference} has no item {item_id}; its items are "
                + (", ".join(self.items) or "none")
            )
        return item

    def _open_promise(self, promise_id: str, verb: str) -> PromiseState:
        promise = self.promises.get(promise_id)
        if promise is None:
            raise RuleViolation(
                f"case {self.reference} has no promise {promise_id}; its promises are "
                + (", ".join(self.promises) or "none")
            )
        if promise.status != "open":
            raise RuleViolation(f"cannot {verb} promise {promise_id}: it is already {promise.status}")
        return promise

    def _message(self, message_id: str) -> MessageState:
        message = self.messages.get(message_id)
        if message is None:
            raise RuleViolation(
                f"case {self.reference} has no message {message_id}; its messages are "
                + ", ".join(self.messages), field="message_id"
            )
        return message
