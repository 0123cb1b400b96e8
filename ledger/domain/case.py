"""The Case aggregate: every contact, promise and status change of a customer request as events.

Rules are checked here, in the command methods, before an event is triggered. What can happen to
a case (the event types, and how each ``apply`` evolves the case) is in
:mod:`~caseledger.ledger.domain.case_events`; what a case holds and answers (``CaseState``) in
:mod:`~caseledger.ledger.domain.case_parts`. ``apply`` only evolves state, so replaying history
never re-judges it. Every event carries the same envelope (who, when,
on which channel, which contact started it, what caused it) so that an auditor can read any event
on its own.

Handles inside a case are short and human: contacts ``C1``, items (questions) ``Q1``,
acknowledgements ``ACK1``, responses ``R1``, promises ``P1``, written confirmations ``W1``,
customer notices ``N1``, proposed actions ``X1``, handoffs ``H1``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from caseledger.ledger.domain import case_events
from caseledger.ledger.domain.case_parts import CaseState, ProposalState, Status, check_ledger_action
from caseledger.ledger.domain.claimed_times import After, check_claim
from caseledger.ledger.domain.events import Context, envelope
from caseledger.ledger.domain.texts import ContactReceipts, TextKind, Writer
from caseledger.ledger.domain.values import (
    ActorKind,
    Channel,
    ContactDraft,
    DeliveryFailure,
    check_text,
    require_utc,
)
from caseledger.ledger.errors import RuleViolation, ValidationError

__all__ = ["Case"]


def _require_reason(reason: str | None, what: str) -> str:
    check_text(reason, f"the reason for {what}")
    if not reason or not reason.strip():
        raise ValidationError(f"{what} needs a reason (--reason): the customer and the auditor must know why")
    return reason.strip()


def _require_notice(notice: str | None, what: str) -> str:
    check_text(notice, f"the notice of {what}")
    if not notice or not notice.strip():
        raise ValidationError(
            f"{what} needs a customer-facing notice (--notice): the text the customer receives"
        )
    return notice.strip()


class Case(CaseState, Aggregate):
    """A customer request, from its first contact to its closing, across every channel."""

    # -- events -----------------------------------------------------------------------------------
    # What can happen to a case (case_events.py), listed here because eventsourcing and the catalog find an
    # aggregate's events among its attributes. CaseOpened stays nested: the store tells which aggregate an
    # event creates by the class its Created event is nested in (Case.CaseOpened).

    Event = case_events.CaseEvent

    class CaseOpened(case_events.CaseEvent, Aggregate.Created):
        reference: str
        subject: str
        category: str | None
        segment: str | None

        def apply(self, case: CaseState) -> None:
            case.reference = self.reference
            case.customer_id = self.customer_id
            case.subject = self.subject
            case.category = self.category
            case.segment = self.segment
            case.status = Status.OPEN
            case.opened_at = self.occurred_at
            case.assignee = None
            case.team = None
            case.contacts = {}
            case.items = {}
            case.promises = {}
            case.proposals = {}
            case.proposers = {}
            case.messages = {}
            case.missed = set()
            case.follow_ups = 0
            case.counters = {}
            case.last_contact_by_channel = {}
            case.escalations = []
            case.handoffs = 0
            case.last_handoff = None
            case.response_bodies = {}
            # When the ledger recorded each contact and issued each message, by handle (C1, ACK1, R1 …):
            # what a delivery or a read may not precede.
            case.recorded = {}
            # The hash of the last stored event: set by the store when events are loaded or
            # saved (the domain never sees encoded bytes).
            case.chain_head = None

    # contacts and answers
    ContactReceived = case_events.ContactReceived
    AcknowledgementIssued = case_events.AcknowledgementIssued
    ResponseSent = case_events.ResponseSent
    ItemWaived = case_events.ItemWaived
    # promises
    PromiseMade = case_events.PromiseMade
    WrittenConfirmationIssued = case_events.WrittenConfirmationIssued
    PromiseKept = case_events.PromiseKept
    PromiseWithdrawn = case_events.PromiseWithdrawn
    PromiseBroken = case_events.PromiseBroken
    PromiseWaived = case_events.PromiseWaived
    # status
    StatusChanged = case_events.StatusChanged
    CaseClosed = case_events.CaseClosed
    CaseCancelled = case_events.CaseCancelled
    CaseReopened = case_events.CaseReopened
    # people
    CaseAssigned = case_events.CaseAssigned
    HandedOff = case_events.HandedOff
    EscalatedToHuman = case_events.EscalatedToHuman
    # automation
    ActionProposed = case_events.ActionProposed
    ActionApproved = case_events.ActionApproved
    ActionRejected = case_events.ActionRejected
    ActionExecuted = case_events.ActionExecuted
    # deadlines and messages
    DeadlineMissed = case_events.DeadlineMissed
    MessageDelivered = case_events.MessageDelivered
    MessageDeliveryFailed = case_events.MessageDeliveryFailed
    MessageRead = case_events.MessageRead

    # -- helpers of the commands ------------------------------------------------------------------

    def _next(self, prefix: str, offset: int = 1) -> str:
        return f"{prefix}{self.counters.get(prefix, 0) + offset}"

    def _envelope(self, ctx: Context, *, customer_id: str | None = None) -> dict[str, Any]:
        return envelope(ctx, customer_id=customer_id or self.customer_id)

    def _notice_text(self, writer: Writer, kind: TextKind, ctx: Context, **facts: Any) -> dict[str, Any]:
        """The customer-facing text of a notice (the agent's words in the company's wrapper), as recorded."""
        fields = writer.record(kind, {"reference": self.reference, "issued_at": ctx.recorded_at, **facts})
        return {**fields, "time_zone": writer.audience.time_zone}

    def _notice_envelope(self, ctx: Context) -> dict[str, Any]:
        """A customer notice goes out on the command's channel, else the customer's written one."""
        return envelope(ctx, customer_id=self.customer_id, channel=ctx.channel or self.written_channel())

    # -- creation -----------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        *,
        case_id: UUID,
        reference: str,
        customer_id: str,
        subject: str,
        category: str | None,
        segment: str | None,
        ctx: Context,
    ) -> Case:
        """Open a new case; the contact that opens it is recorded right after."""
        check_text(subject, "the case's subject")
        return cls._create(
            cls.CaseOpened,
            id=case_id,
            reference=reference,
            subject=subject.strip()[:500],
            category=category,
            segment=segment,
            **envelope(ctx, customer_id=customer_id),
        )

    # -- contacts -------------------------------------------------------------------------------------

    def receive_contact(
        self,
        draft: ContactDraft,
        *,
        ctx: Context,
        respond_by: datetime,
        acknowledge_by: datetime,
        writer: Writer,
        in_writing: bool = False,
        receipts: ContactReceipts | None = None,
    ) -> tuple[str, str]:
        """Record an inbound contact and its acknowledgement; returns (contact id, acknowledgement id).

        A contact on a closed or cancelled case reopens it: the customer is still waiting. With
        ``in_writing``, a contact made by phone or at a branch is acknowledged on the customer's
        written channel, the request formalised in the text. With ``receipts``, the acknowledgement
        carries the contact's signed receipt.
        """
        if self.contacts:  # a follow-up: it cites the case, so it cannot precede it
            check_claim("occurred_at", ctx.occurred_at, now=ctx.recorded_at,
                        after=[After(self.opened_at, "its case was opened")])
        if self.status in Status.FINAL:
            reason = f"customer contacted us again on {draft.channel.value}"
            notice_id = self._next("N")
            self.trigger_event(
                Case.CaseReopened,
                reason=reason,
                notice_id=notice_id,
                notice="",
                **self._notice_text(writer, "notice_reopened", ctx, notice=None, by_contact=True,
                                    contact_channel=draft.channel.value),
                **self._notice_envelope(ctx),
            )
        contact_id = self._next("C")
        items = [
            {"item_id": self._next("Q", n + 1), "text": text} for n, text in enumerate(draft.items)
        ]
        self.trigger_event(
            Case.ContactReceived,
            contact_id=contact_id,
            channel_message_id=draft.channel_message_id,
            identity=draft.identity.as_record(),
            subject=draft.subject,
            body=draft.body,
            items=items,
            attachments=[a.as_record() for a in draft.attachments],
            follow_up=draft.follow_up,
            category=draft.category,
            receipt_salt=receipts.new_salt() if receipts is not None else "",
            **self._envelope(ctx),
        )
        receipt = receipts.receipt(self, contact_id) if receipts is not None else ""
        ack_id = self._next("ACK")
        common = {"reference": self.reference, "issued_at": ctx.recorded_at}
        copy = writer.write("request_copy", {
            **common, "subject": draft.subject, "items": [{"id": i["item_id"], "text": i["text"]} for i in items],
            "body": draft.body, "attachments": [a.filename or a.ref for a in draft.attachments],
        })
        spoken = draft.channel.is_spoken
        ack = writer.record("acknowledgement", {
            **common, "acknowledgement_id": ack_id, "contact_id": contact_id, "received_at": ctx.occurred_at,
            "channel": draft.channel.value, "spoken": spoken, "follow_up": draft.follow_up,
            "respond_by": respond_by, "request_copy": copy.text, "receipt": receipt,
        })
        self.trigger_event(
            Case.AcknowledgementIssued,
            acknowledgement_id=ack_id,
            contact_id=contact_id,
            reference=self.reference,
            request_copy=copy.text,
            respond_by=respond_by,
            acknowledge_by=acknowledge_by,
            request_copy_template=f"{copy.template_id}@{copy.template_version}",
            time_zone=writer.audience.time_zone,
            **ack,
            **envelope(ctx, customer_id=self.customer_id,
                       channel=self.written_channel() if spoken and in_writing else None),
        )
        return contact_id, ack_id

    # -- answering ------------------------------------------------------------------------------------

    def respond(self, *, ctx: Context, body: str, answers: list[str]) -> str:
        """Send a response that answers the given items (possibly none: a holding reply)."""
        self._require_human_or_customer_side(ctx, "sending a response")
        self._require_active("respond")
        check_text(body, "the response's body")
        if not body.strip():
            raise ValidationError("a response needs a body: the text the customer receives")
        if len(set(answers)) != len(answers):
            raise ValidationError(f"an item is listed twice in {answers}")
        for item_id in answers:
            item = self._item(item_id)
            if item.status != "open":
                raise RuleViolation(
                    f"item {item_id} is already {item.status}"
                    + (f" (by {item.answered_by})" if item.answered_by else "")
                    + "; answer only open items: "
                    + (", ".join(self.open_item_ids()) or "none are open")
                )
        answered = dict.fromkeys(self.items[i].contact_id for i in answers)
        self._check_claimed(ctx, *(After(self.contacts[c].received_at, f"contact {c} it answers") for c in answered))
        response_id = self._next("R")
        self.trigger_event(
            Case.ResponseSent, response_id=response_id, body=body.strip(), answers=list(answers), **self._envelope(ctx)
        )
        return response_id

    def waive_item(self, *, ctx: Context, item_id: str, reason: str) -> None:
        """Mark an item as not to be answered, with the reason why."""
        self._require_human_or_customer_side(ctx, "waiving an item")
        reason = _require_reason(reason, f"waiving item {item_id}")
        item = self._item(item_id)
        if item.status != "open":
            raise RuleViolation(f"item {item_id} is already {item.status}; only open items can be waived")
        self.trigger_event(Case.ItemWaived, item_id=item_id, reason=reason, **self._envelope(ctx))

    # -- promises -------------------------------------------------------------------------------------

    def make_promise(
        self,
        *,
        ctx: Context,
        kind: str,
        terms: str,
        due_at: datetime,
        writer: Writer,
        confirmation_channel: Channel | None = None,
        deliver_by: datetime | None = None,
    ) -> tuple[str, str | None]:
        """Record a promise; one made on a spoken channel also gets a written confirmation.

        The confirmation says what was agreed, by whom, when, the reference and how to contest it;
        ``deliver_by`` is when it must have reached the customer (``tick`` records it missed).
        """
        self._require_human_or_customer_side(ctx, "making a promise")
        self._require_active("make a promise")
        if ctx.channel is None:
            raise ValidationError("a promise must say on which channel it was made (--channel)")
        if not kind.strip():
            raise ValidationError("a promise needs a kind, e.g. callback, refund, credit, repair")
        check_text(terms, "the promise's terms")
        if not terms.strip():
            raise ValidationError("a promise needs its terms: what exactly was promised")
        self._check_claimed(ctx)
        due_at = require_utc(due_at, "due date")
        if due_at <= ctx.occurred_at:
            raise ValidationError(
                f"the promise is due {due_at.isoformat()}, which is not after it was made "
                f"({ctx.occurred_at.isoformat()})"
            )
        promise_id = self._next("P")
        self.trigger_event(
            Case.PromiseMade,
            promise_id=promise_id,
            kind=kind.strip().lower(),
            terms=terms.strip(),
            due_at=due_at,
            **self._envelope(ctx),
        )
        confirmation_id = None
        if ctx.channel.is_spoken:
            written = confirmation_channel or self.written_channel()
            confirmation_id = self._next("W")
            text = writer.record("written_confirmation", {
                "reference": self.reference, "issued_at": ctx.recorded_at, "confirmation_id": confirmation_id,
                "promise_id": promise_id, "promise_kind": kind.strip().lower(), "terms": terms.strip(),
                "agreed_at": ctx.occurred_at, "agreed_channel": ctx.channel.value, "agreed_by": ctx.actor.id,
                "due_at": due_at, "channel": written.value,
            })
            self.trigger_event(
                Case.WrittenConfirmationIssued,
                confirmation_id=confirmation_id,
                promise_id=promise_id,
                deliver_by=require_utc(deliver_by, "deliver by") if deliver_by else None,
                time_zone=writer.audience.time_zone,
                **text,
                **envelope(ctx, customer_id=self.customer_id, channel=written),
            )
        return promise_id, confirmation_id

    def keep_promise(self, *, ctx: Context, promise_id: str, evidence: str) -> None:
        """Record that a promise was kept, with the evidence."""
        check_text(evidence, f"the evidence that promise {promise_id} was kept")
        if not evidence or not evidence.strip():
            raise ValidationError(f"keeping promise {promise_id} needs evidence (--evidence): what shows it was kept")
        self._open_promise(promise_id, "keep")
        self.trigger_event(Case.PromiseKept, promise_id=promise_id, evidence=evidence.strip(), **self._envelope(ctx))

    def withdraw_promise(self, *, ctx: Context, promise_id: str, reason: str, notice: str, writer: Writer) -> None:
        """Withdraw a promise: the customer is told why."""
        self._require_human_or_customer_side(ctx, "withdrawing a promise")
        reason = _require_reason(reason, f"withdrawing promise {promise_id}")
        notice = _require_notice(notice, f"withdrawing promise {promise_id}")
        promise = self._open_promise(promise_id, "withdraw")
        self.trigger_event(
            Case.PromiseWithdrawn,
            promise_id=promise_id,
            reason=reason,
            notice_id=self._next("N"),
            notice=notice,
            **self._notice_text(writer, "notice_promise_withdrawn", ctx, notice=notice, promise_id=promise_id,
                                terms=promise.terms),
            **self._notice_envelope(ctx),
        )

    def break_promise(self, *, ctx: Context, promise_id: str, reason: str) -> None:
        """Record that a promise was not kept."""
        reason = _require_reason(reason, f"marking promise {promise_id} broken")
        self._open_promise(promise_id, "mark broken")
        self.trigger_event(Case.PromiseBroken, promise_id=promise_id, reason=reason, **self._envelope(ctx))

    # -- status -----------------------------------------------------------------------------------------

    def change_status(self, *, ctx: Context, to_status: str, reason: str, notice: str, writer: Writer) -> None:
        """Move an active case to another active status, with a reason and a customer notice."""
        self._require_human_or_customer_side(ctx, "changing a case's status")
        to_status = to_status.strip().lower()
        if to_status not in Status.ACTIVE:
            hint = {
                Status.CLOSED: "use `case close`",
                Status.CANCELLED: "use `case cancel`",
            }.get(to_status, "use one of: " + ", ".join(Status.ACTIVE))
            raise ValidationError(f"cannot change status to {to_status!r}: {hint}")
        self._require_active("change its status")
        if to_status == self.status:
            raise RuleViolation(f"case {self.reference} is already {to_status}")
        reason = _require_reason(reason, "a status change")
        notice = _require_notice(notice, "a status change")
        self.trigger_event(
            Case.StatusChanged,
            from_status=self.status,
            to_status=to_status,
            reason=reason,
            notice_id=self._next("N"),
            notice=notice,
            **self._notice_text(writer, "notice_status_changed", ctx, notice=notice, from_status=self.status,
                                to_status=to_status),
            **self._notice_envelope(ctx),
        )

    def close(
        self,
        *,
        ctx: Context,
        reason: str,
        notice: str,
        writer: Writer,
        waive_items: dict[str, str] | None = None,
        waive_promises: dict[str, str] | None = None,
    ) -> None:
        """Close the case: every item answered or waived, every promise settled or waived."""
        self._require_human_or_customer_side(ctx, "closing a case")
        self._require_active("close it")
        reason = _require_reason(reason, "closing a case")
        notice = _require_notice(notice, "closing a case")
        waive_items = dict(waive_items or {})
        waive_promises = dict(waive_promises or {})
        for target, reasons in (("item", waive_items), ("promise", waive_promises)):
            for target_id, why in reasons.items():
                _require_reason(why, f"waiving {target} {target_id}")
        for item_id in waive_items:
            if self._item(item_id).status != "open":
                raise RuleViolation(f"item {item_id} is not open; waive only open items")
        for promise_id in waive_promises:
            self._open_promise(promise_id, "waive")
        unanswered = [i for i in self.open_item_ids() if i not in waive_items]
        unsettled = [p for p in self.open_promise_ids() if p not in waive_promises]
        if unanswered or unsettled:
            parts = []
            if unanswered:
                parts.append("unanswered items " + ", ".join(unanswered))
            if unsettled:
                parts.append("open promises " + ", ".join(unsettled))
            raise RuleViolation(
                f"case {self.reference} has {' and '.join(parts)}; answer them, or waive each with a "
                "reason (--waive ID=REASON)"
            )
        for item_id, why in waive_items.items():
            self.trigger_event(Case.ItemWaived, item_id=item_id, reason=why.strip(), **self._envelope(ctx))
        for promise_id, why in waive_promises.items():
            self.trigger_event(Case.PromiseWaived, promise_id=promise_id, reason=why.strip(), **self._envelope(ctx))
        self.trigger_event(
            Case.CaseClosed, reason=reason, notice_id=self._next("N"), notice=notice,
            **self._notice_text(writer, "notice_closed", ctx, notice=notice), **self._notice_envelope(ctx),
        )

    def cancel(self, *, ctx: Context, reason: str, notice: str, writer: Writer) -> None:
        """Cancel the request; open promises must be withdrawn first, each with its own notice."""
        self._require_human_or_customer_side(ctx, "cancelling a case")
        self._require_active("cancel it")
        reason = _require_reason(reason, "a cancellation")
        notice = _require_notice(notice, "a cancellation")
        if self.open_promise_ids():
            raise RuleViolation(
                f"case {self.reference} has open promises {', '.join(self.open_promise_ids())}; "
                "withdraw each (with reason and notice) before cancelling"
            )
        self.trigger_event(
            Case.CaseCancelled, reason=reason, notice_id=self._next("N"), notice=notice,
            **self._notice_text(writer, "notice_cancelled", ctx, notice=notice), **self._notice_envelope(ctx),
        )

    def reopen(self, *, ctx: Context, reason: str, notice: str, writer: Writer) -> None:
        """Reopen a closed or cancelled case."""
        self._require_human_or_customer_side(ctx, "reopening a case")
        if self.status not in Status.FINAL:
            raise RuleViolation(f"case {self.reference} is {self.status}, not closed or cancelled")
        reason = _require_reason(reason, "reopening a case")
        notice = _require_notice(notice, "reopening a case")
        self.trigger_event(
            Case.CaseReopened, reason=reason, notice_id=self._next("N"), notice=notice,
            **self._notice_text(writer, "notice_reopened", ctx, notice=notice, by_contact=False, contact_channel=None),
            **self._notice_envelope(ctx),
        )

    # -- people -----------------------------------------------------------------------------------------

    def assign(self, *, ctx: Context, assignee: str | None, team: str | None) -> None:
        """Give the case to an agent and/or a team."""
        if not (assignee or team):
            raise ValidationError("assign needs an agent (--to) or a team (--team)")
        if assignee == self.assignee and team == self.team:
            raise RuleViolation(f"case {self.reference} is already assigned to {assignee or team}")
        self.trigger_event(Case.CaseAssigned, assignee=assignee, team=team, **self._envelope(ctx))

    def hand_off(self, *, ctx: Context, to_assignee: str | None, to_team: str | None, note: str) -> str:
        """Hand the case to someone else with a brief built from the case, so nobody starts over."""
        if not (to_assignee or to_team):
            raise ValidationError("a handoff needs an agent (--to) or a team (--team)")
        check_text(note, "the handoff's note")
        self._require_active("hand it off")
        handoff_id = self._next("H")
        self.trigger_event(
            Case.HandedOff,
            handoff_id=handoff_id,
            from_assignee=self.assignee,
            to_assignee=to_assignee,
            to_team=to_team or self.team,  # handing to a colleague keeps the team
            note=note.strip(),
            brief=self.brief(),
            **self._envelope(ctx),
        )
        return handoff_id

    def escalate_to_human(
        self, *, ctx: Context, bot_id: str, waiting_since: datetime, to_team: str | None, reason: str
    ) -> int:
        """A chatbot hands the customer to a human; records how long the customer has waited.

        The wait runs from ``waiting_since`` (claimed, so bounded) to the ledger's now.
        """
        chatbot = [c.received_at for c in self.contacts.values() if c.channel == Channel.CHATBOT.value]
        start = After(min(chatbot), "the case's first chatbot contact") if chatbot else After(
            self.opened_at, "its case was opened")
        waiting_since = check_claim("waiting_since", waiting_since, now=ctx.recorded_at, after=[start])
        reason = _require_reason(reason, "an escalation")
        wait = max(0, int((ctx.recorded_at - waiting_since).total_seconds()))
        self.trigger_event(
            Case.EscalatedToHuman,
            bot_id=bot_id,
            waiting_since=waiting_since,
            wait_seconds=wait,
            to_team=to_team,
            reason=reason,
            **envelope(ctx, customer_id=self.customer_id, channel=ctx.channel or Channel.CHATBOT),
        )
        return wait

    # -- automation --------------------------------------------------------------------------------------

    def propose_action(
        self, *, ctx: Context, rule_id: str, action: str, params: dict[str, str], rationale: str
    ) -> str:
        """An automated rule proposes an action; nothing happens to the customer until a human approves."""
        if ctx.actor.kind is not ActorKind.AUTOMATION and ctx.actor.kind is not ActorKind.AGENT:
            raise ValidationError("actions are proposed by automation rules (actor automation:RULE) or agents")
        if not rule_id.strip():
            raise ValidationError("a proposed action must name the rule that proposes it (--rule)")
        if not action.strip():
            raise ValidationError("a proposed action needs an action kind, e.g. lower_card_limit")
        for text, what in ((rationale, "the rationale"), *((v, f"parameter {k}") for k, v in params.items())):
            check_text(text, what)
        if not rationale.strip():
            raise ValidationError("a proposed action needs a rationale: why the rule fired")
        check_ledger_action(action.strip(), params)
        proposal_id = self._next("X")
        self.trigger_event(
            Case.ActionProposed,
            proposal_id=proposal_id,
            rule_id=rule_id.strip(),
            action=action.strip(),
            params={str(k): str(v) for k, v in params.items()},
            rationale=rationale.strip(),
            **self._envelope(ctx),
        )
        return proposal_id

    def approve_action(self, *, ctx: Context, proposal_id: str, note: str) -> ProposalState:
        """A human approves a proposed action; it may execute from now on."""
        check_text(note, "the approval's note")
        proposal = self._pending_proposal(proposal_id, ctx, "approve")
        self.trigger_event(Case.ActionApproved, proposal_id=proposal_id, note=note.strip(), **self._envelope(ctx))
        return proposal

    def reject_action(self, *, ctx: Context, proposal_id: str, reason: str) -> None:
        """A human rejects a proposed action; the reason is kept."""
        reason = _require_reason(reason, f"rejecting action {proposal_id}")
        self._pending_proposal(proposal_id, ctx, "reject")
        self.trigger_event(Case.ActionRejected, proposal_id=proposal_id, reason=reason, **self._envelope(ctx))

    def record_action_executed(self, *, ctx: Context, proposal_id: str, result: str) -> None:
        """The approved action was carried out (by the ledger or the outside system that owns it)."""
        check_text(result, "the action's result")
        proposal = self.proposals.get(proposal_id)
        if proposal is None:
            raise RuleViolation(f"case {self.reference} has no proposed action {proposal_id}")
        if proposal.status != "approved":
            raise RuleViolation(
                f"action {proposal_id} is {proposal.status}; only an action a human approved may execute"
            )
        self.trigger_event(
            Case.ActionExecuted, proposal_id=proposal_id, result=result.strip() or "done", **self._envelope(ctx)
        )

    # -- deadlines and messages ----------------------------------------------------------------------------

    def record_missed_deadlines(self, *, ctx: Context, now: datetime) -> int:
        """Record every deadline past due at ``now`` once; returns how many were recorded."""
        due = self.due_deadlines(require_utc(now, "now"))
        for kind, target_id, due_at in due:
            self.trigger_event(
                Case.DeadlineMissed, deadline_kind=kind, target_id=target_id, due_at=due_at, **self._envelope(ctx)
            )
        return len(due)

    def record_delivery(self, *, ctx: Context, message_id: str, delivered_at: datetime, adapter: str = "") -> None:
        """A channel confirmed an outbound message reached the customer (``adapter``: whose intake record said so)."""
        message = self._message(message_id)
        if message_id.startswith("C"):
            raise ValidationError(f"{message_id} is an inbound contact; delivery reports are for our messages",
                                  field="message_id")
        if message.delivered_at is not None:
            raise RuleViolation(f"{message_id} was already reported delivered at {message.delivered_at.isoformat()}",
                                field="message_id")
        delivered_at = check_claim("delivered_at", delivered_at, now=ctx.recorded_at,
                                   after=[After(self.recorded.get(message_id), f"{message_id} was issued")])
        self.trigger_event(
            Case.MessageDelivered,
            message_id=message_id,
            delivered_at=delivered_at,
            adapter=adapter,
            **self._envelope(ctx),
        )

    def record_delivery_failure(self, *, ctx: Context, message_id: str, reason: str, failed_at: datetime) -> None:
        """A channel could not deliver an outbound message: it stays undelivered (its deadline runs on)."""
        message = self._message(message_id)
        if message_id.startswith("C"):
            raise ValidationError(f"{message_id} is an inbound contact; delivery reports are for our messages",
                                  field="message_id")
        if message.delivered_at is not None:
            raise RuleViolation(f"{message_id} was already reported delivered at {message.delivered_at.isoformat()}",
                                field="message_id")
        code = DeliveryFailure.parse(reason)
        failed_at = check_claim("failed_at", failed_at, now=ctx.recorded_at,
                                after=[After(self.recorded.get(message_id), f"{message_id} was issued")])
        self.trigger_event(Case.MessageDeliveryFailed, message_id=message_id, reason=code.value, failed_at=failed_at,
                           **self._envelope(ctx))

    def record_read(self, *, ctx: Context, message_id: str, read_at: datetime, adapter: str = "") -> None:
        """The customer read one of our messages, or an agent read one of the customer's (``adapter``: whose intake
        record said so)."""
        self._message(message_id)
        read_at = check_claim("read_at", read_at, now=ctx.recorded_at,
                              after=[After(self.recorded.get(message_id), f"{message_id} was issued")])
        self.trigger_event(
            Case.MessageRead,
            message_id=message_id,
            reader_kind=ctx.actor.kind.value,
            reader_id=ctx.actor.id,
            read_at=read_at,
            adapter=adapter,
            **self._envelope(ctx),
        )

    # -- guards ------------------------------------------------------------------------------------------

    def _check_claimed(self, ctx: Context, *bounds: After) -> None:
        """The command's claimed ``occurred_at`` may not precede its case (nor ``bounds``)."""
        check_claim("occurred_at", ctx.occurred_at, now=ctx.recorded_at,
                    after=[After(self.opened_at, "its case was opened"), *bounds])

    @staticmethod
    def _require_human_or_customer_side(ctx: Context, what: str) -> None:
        if ctx.actor.kind is ActorKind.AUTOMATION:
            raise RuleViolation(
                f"automation ({ctx.actor}) may not act on the customer ({what}); propose the action "
                "instead (caseledger action propose) so that a human approves it"
            )

    def _pending_proposal(self, proposal_id: str, ctx: Context, verb: str) -> ProposalState:
        if not ctx.actor.is_human:
            raise RuleViolation(
                f"only a human agent may {verb} a proposed action; {ctx.actor} is not one"
            )
        proposal = self.proposals.get(proposal_id)
        if proposal is None:
            raise RuleViolation(f"case {self.reference} has no proposed action {proposal_id}")
        if proposal.status != "proposed":
            raise RuleViolation(f"action {proposal_id} is already {proposal.status}")
        if self.proposers.get(proposal_id) == f"{ActorKind.AUTOMATION.value}:{ctx.actor.id}":
            # One principal under two roles (an identity provider may grant both): still the automation itself.
            raise RuleViolation(
                f"{ctx.actor} proposed action {proposal_id} as automation:{ctx.actor.id}; another human must {verb} it"
            )
        return proposal
