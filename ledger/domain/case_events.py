"""What can happen to a case: its event types, and how each one changes what the case holds.

Each event's ``apply`` only evolves state (:class:`~caseledger.ledger.domain.case_parts.CaseState`);
the rules were checked by the command that triggered it (:mod:`~caseledger.ledger.domain.case`), so
replaying history never re-judges it. ``Case`` lists these classes among its attributes, where
eventsourcing and the catalog look for an aggregate's events; the name stored with each event is
its class name (``caseledger.events.<Name>``), not this module's path.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from caseledger.ledger.domain.case_parts import (
    CaseState,
    ContactState,
    Handoff,
    ItemState,
    MessageState,
    PromiseState,
    ProposalState,
    Status,
)
from caseledger.ledger.domain.events import LedgerEvent


class CaseEvent(LedgerEvent):
    """A fact about a case."""


def _bump(case: CaseState, prefix: str) -> None:
    """Count one more handle of a kind (``C``, ``Q``, ``ACK`` …): the next command numbers from it."""
    case.counters[prefix] = case.counters.get(prefix, 0) + 1


def _notice(case: CaseState, notice_id: str, channel: str | None, text: str, recorded_at: datetime) -> None:
    """A customer notice (status change, closing, withdrawal …) is one more message of the case."""
    _bump(case, "N")
    case.messages[notice_id] = MessageState(message_id=notice_id, channel=channel, text=text)
    case.recorded[notice_id] = recorded_at


# -- contacts and answers --------------------------------------------------------------------------


class ContactReceived(CaseEvent):
    contact_id: str
    channel_message_id: str
    identity: dict[str, Any]
    subject: str
    body: str
    items: list[dict[str, Any]]
    attachments: list[dict[str, Any]]
    follow_up: bool
    category: str | None
    receipt_salt: str = ""  # the salt of its receipt's content digest (sealed); "" before receipts or without a key

    def apply(self, case: CaseState) -> None:
        _bump(case, "C")
        for _ in self.items:
            _bump(case, "Q")
        item_ids = [i["item_id"] for i in self.items]
        for item in self.items:
            case.items[item["item_id"]] = ItemState(
                item_id=item["item_id"], text=item["text"], contact_id=self.contact_id
            )
        case.contacts[self.contact_id] = ContactState(
            contact_id=self.contact_id,
            channel=str(self.channel),
            channel_message_id=self.channel_message_id,
            received_at=self.occurred_at,
            subject=self.subject,
            item_ids=item_ids,
            follow_up=self.follow_up,
        )
        case.messages[self.contact_id] = MessageState(message_id=self.contact_id, channel=self.channel)
        case.recorded[self.contact_id] = self.timestamp
        if self.follow_up:
            case.follow_ups += 1
        case.last_contact_by_channel[str(self.channel)] = self.contact_id


class AcknowledgementIssued(CaseEvent):
    acknowledgement_id: str
    contact_id: str
    reference: str
    request_copy: str
    respond_by: datetime
    acknowledge_by: datetime
    text: str
    template_id: str | None  # None: issued before texts came from templates
    template_version: str | None
    locale: str | None
    time_zone: str | None
    request_copy_template: str | None  # "<id>@<version>" of the request copy's template

    def apply(self, case: CaseState) -> None:
        _bump(case, "ACK")
        contact = case.contacts[self.contact_id]
        contact.respond_by = self.respond_by
        contact.acknowledgement_id = self.acknowledgement_id
        case.messages[self.acknowledgement_id] = MessageState(
            message_id=self.acknowledgement_id,
            channel=self.channel,
            due_at=self.acknowledge_by,
            text=self.text,
        )
        case.recorded[self.acknowledgement_id] = self.timestamp


class ResponseSent(CaseEvent):
    response_id: str
    body: str
    answers: list[str]

    def apply(self, case: CaseState) -> None:
        _bump(case, "R")
        for item_id in self.answers:
            item = case.items[item_id]
            item.status = "answered"
            item.answered_by = self.response_id
        case.messages[self.response_id] = MessageState(message_id=self.response_id, channel=self.channel)
        case.response_bodies[self.response_id] = self.body  # the case page shows each item with its answer
        case.recorded[self.response_id] = self.timestamp


class ItemWaived(CaseEvent):
    item_id: str
    reason: str

    def apply(self, case: CaseState) -> None:
        item = case.items[self.item_id]
        item.status = "waived"
        item.waived_reason = self.reason


# -- promises --------------------------------------------------------------------------------------


class PromiseMade(CaseEvent):
    promise_id: str
    kind: str
    terms: str
    due_at: datetime

    def apply(self, case: CaseState) -> None:
        _bump(case, "P")
        case.promises[self.promise_id] = PromiseState(
            promise_id=self.promise_id,
            kind=self.kind,
            terms=self.terms,
            due_at=self.due_at,
            made_by=f"{self.actor_kind}:{self.actor_id}",
            channel=str(self.channel),
        )


class WrittenConfirmationIssued(CaseEvent):
    confirmation_id: str
    promise_id: str
    text: str
    template_id: str | None
    template_version: str | None
    locale: str | None
    time_zone: str | None
    deliver_by: datetime | None  # None: issued before its delivery was a deadline

    def apply(self, case: CaseState) -> None:
        _bump(case, "W")
        case.promises[self.promise_id].confirmation_id = self.confirmation_id
        case.messages[self.confirmation_id] = MessageState(
            message_id=self.confirmation_id, channel=self.channel, due_at=self.deliver_by, text=self.text
        )
        case.recorded[self.confirmation_id] = self.timestamp


class PromiseKept(CaseEvent):
    promise_id: str
    evidence: str

    def apply(self, case: CaseState) -> None:
        promise = case.promises[self.promise_id]
        promise.status = "kept"
        promise.closing_note = self.evidence


class PromiseWithdrawn(CaseEvent):
    promise_id: str
    reason: str
    notice_id: str
    notice: str
    text: str | None  # the notice as the customer received it (None before templates)
    template_id: str | None
    template_version: str | None
    locale: str | None
    time_zone: str | None

    def apply(self, case: CaseState) -> None:
        _notice(case, self.notice_id, self.channel, self.text or self.notice, self.timestamp)
        promise = case.promises[self.promise_id]
        promise.status = "withdrawn"
        promise.closing_note = self.reason


class PromiseBroken(CaseEvent):
    promise_id: str
    reason: str

    def apply(self, case: CaseState) -> None:
        promise = case.promises[self.promise_id]
        promise.status = "broken"
        promise.closing_note = self.reason


class PromiseWaived(CaseEvent):
    promise_id: str
    reason: str

    def apply(self, case: CaseState) -> None:
        promise = case.promises[self.promise_id]
        promise.status = "waived"
        promise.closing_note = self.reason


# -- status ----------------------------------------------------------------------------------------


class StatusChanged(CaseEvent):
    from_status: str
    to_status: str
    reason: str
    notice_id: str
    notice: str
    text: str | None  # the notice as the customer received it (None before templates)
    template_id: str | None
    template_version: str | None
    locale: str | None
    time_zone: str | None

    def apply(self, case: CaseState) -> None:
        _notice(case, self.notice_id, self.channel, self.text or self.notice, self.timestamp)
        case.status = self.to_status


class CaseClosed(CaseEvent):
    reason: str
    notice_id: str
    notice: str
    text: str | None  # the notice as the customer received it (None before templates)
    template_id: str | None
    template_version: str | None
    locale: str | None
    time_zone: str | None

    def apply(self, case: CaseState) -> None:
        _notice(case, self.notice_id, self.channel, self.text or self.notice, self.timestamp)
        case.status = Status.CLOSED


class CaseCancelled(CaseEvent):
    reason: str
    notice_id: str
    notice: str
    text: str | None  # the notice as the customer received it (None before templates)
    template_id: str | None
    template_version: str | None
    locale: str | None
    time_zone: str | None

    def apply(self, case: CaseState) -> None:
        _notice(case, self.notice_id, self.channel, self.text or self.notice, self.timestamp)
        case.status = Status.CANCELLED


class CaseReopened(CaseEvent):
    reason: str
    notice_id: str
    notice: str
    text: str | None  # the notice as the customer received it (None before templates)
    template_id: str | None
    template_version: str | None
    locale: str | None
    time_zone: str | None

    def apply(self, case: CaseState) -> None:
        _notice(case, self.notice_id, self.channel, self.text or self.notice, self.timestamp)
        case.status = Status.OPEN


# -- people ----------------------------------------------------------------------------------------


class CaseAssigned(CaseEvent):
    assignee: str | None
    team: str | None

    def apply(self, case: CaseState) -> None:
        case.assignee = self.assignee
        case.team = self.team


class HandedOff(CaseEvent):
    handoff_id: str
    from_assignee: str | None
    to_assignee: str | None
    to_team: str | None
    note: str
    brief: dict[str, Any]

    def apply(self, case: CaseState) -> None:
        _bump(case, "H")
        case.handoffs += 1
        case.assignee = self.to_assignee
        case.team = self.to_team
        case.last_handoff = Handoff(handoff_id=self.handoff_id, from_assignee=self.from_assignee,
                                    to_assignee=self.to_assignee, to_team=self.to_team, note=self.note,
                                    at=self.timestamp, by=self.actor_id)


class EscalatedToHuman(CaseEvent):
    bot_id: str
    waiting_since: datetime
    wait_seconds: int
    to_team: str | None
    reason: str

    def apply(self, case: CaseState) -> None:
        case.escalations.append((self.bot_id, self.waiting_since, self.wait_seconds))
        if self.to_team:
            case.team = self.to_team


# -- automation ------------------------------------------------------------------------------------


class ActionProposed(CaseEvent):
    proposal_id: str
    rule_id: str
    action: str
    params: dict[str, str]
    rationale: str

    def apply(self, case: CaseState) -> None:
        _bump(case, "X")
        case.proposals[self.proposal_id] = ProposalState(
            proposal_id=self.proposal_id,
            rule_id=self.rule_id,
            action=self.action,
            params=dict(self.params),
            rationale=self.rationale,
        )
        case.proposers[self.proposal_id] = f"{self.actor_kind}:{self.actor_id}"


class ActionApproved(CaseEvent):
    proposal_id: str
    note: str

    def apply(self, case: CaseState) -> None:
        proposal = case.proposals[self.proposal_id]
        proposal.status = "approved"
        proposal.decided_by = f"{self.actor_kind}:{self.actor_id}"


class ActionRejected(CaseEvent):
    proposal_id: str
    reason: str

    def apply(self, case: CaseState) -> None:
        proposal = case.proposals[self.proposal_id]
        proposal.status = "rejected"
        proposal.decided_by = f"{self.actor_kind}:{self.actor_id}"


class ActionExecuted(CaseEvent):
    proposal_id: str
    result: str

    def apply(self, case: CaseState) -> None:
        case.proposals[self.proposal_id].status = "executed"


# -- deadlines and messages ------------------------------------------------------------------------


class DeadlineMissed(CaseEvent):
    deadline_kind: str
    target_id: str
    due_at: datetime

    def apply(self, case: CaseState) -> None:
        case.missed.add((self.deadline_kind, self.target_id))


class MessageDelivered(CaseEvent):
    message_id: str
    delivered_at: datetime
    adapter: str  # the adapter whose intake record reported it: its verdict's key ("" otherwise)

    def apply(self, case: CaseState) -> None:
        message = case.messages[self.message_id]
        message.delivered_at = self.delivered_at
        message.failure = None


class MessageDeliveryFailed(CaseEvent):
    message_id: str
    reason: str  # a DeliveryFailure code
    failed_at: datetime

    def apply(self, case: CaseState) -> None:
        case.messages[self.message_id].failure = self.reason


class MessageRead(CaseEvent):
    message_id: str
    reader_kind: str
    reader_id: str
    read_at: datetime
    adapter: str  # the adapter whose intake record reported it: its verdict's key ("" otherwise)

    def apply(self, case: CaseState) -> None:
        case.messages[self.message_id].read_by.append(f"{self.reader_kind}:{self.reader_id}")
