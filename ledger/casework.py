"""Working a case: responses, promises, status, assignment, hand-off, escalation, actions, delivery reports, deadlines.

:class:`Casework` is the service of :class:`~caseledger.ledger.application.CaseLedger` whose commands
act on one case (and the customer's texts): each loads the case, lets it decide, and records what it
decided in one transaction on the :class:`~caseledger.ledger.application.LedgerCore` it is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from caseledger.ledger.core import LedgerCore
from caseledger.ledger.domain.case import Case
from caseledger.ledger.domain.case_parts import LEDGER_ACTIONS
from caseledger.ledger.domain.directory import Customer
from caseledger.ledger.domain.events import Context
from caseledger.ledger.domain.texts import Audience
from caseledger.ledger.domain.values import SYSTEM, Actor, Channel
from caseledger.ledger.errors import ValidationError
from caseledger.ledger.intake.delivery_reports import Reporter
from caseledger.ledger.lookups import Lookups
from caseledger.ledger.privacy.retention_sweep import RetentionReport

__all__ = ["Casework", "TickReport"]

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class TickReport:
    """What ``tick`` recorded: missed deadlines by kind, over how many cases."""

    now: datetime  # the ledger's clock
    cases_checked: int
    missed: dict[str, int]
    retention: RetentionReport = field(default_factory=RetentionReport)  # what the retention policy erased
    retention_skipped: str | None = None  # why retention did not run in this tick
    erasure_pending: str | None = None  # what keeps destroyed keys' bytes in the database's files, if anything

    @property
    def total(self) -> int:
        return sum(self.missed.values())


class Casework:
    """The commands on one case, and the customer's texts."""

    def __init__(self, core: LedgerCore, lookups: Lookups) -> None:
        self.core = core
        self.lookups = lookups

    # -- what the customer reads ------------------------------------------------------------------------

    def set_customer_locale(
        self, who: str, *, actor: Actor, locale: str | None, time_zone: str | None
    ) -> tuple[str, Audience, bool]:
        """Record the locale and/or time zone of a customer's texts ("" returns one to the default).

        Returns (customer id, the audience their texts now have, whether anything changed).
        """
        from caseledger.ledger.domain.values import check_locale

        if locale is None and time_zone is None:
            raise ValidationError("give a locale (--locale fr_FR) and/or a time zone (--tz Europe/Paris)")
        if locale:
            locale = check_locale(locale)
            if self.core.texts.template_locale(locale) is None:
                raise ValidationError(
                    f"no customer texts are written in {locale}; use one of {', '.join(self.core.texts.locales())}, or "
                    "add templates in that language to the policy's templates folder"
                )
        with self.core.command_scope():
            customer_id = self.lookups.resolve_customer(who)
            customer = self.core.load(Customer.id_for(customer_id))
            changed = customer.set_locale(locale=locale, time_zone=time_zone, source="command",
                                          ctx=self._as_customer_of(customer_id, self.core.context(actor)))
            self.core.record(customer)
        return customer_id, self.core.audience_of(customer, None), changed

    # -- commands on one case -----------------------------------------------------------------------

    def _as_customer_of(self, customer_id: str, ctx: Context) -> Context:
        return dataclasses.replace(ctx, actor=self.lookups.acting_as(customer_id, ctx.actor))

    def _on_case(
        self,
        reference: str,
        actor: Actor,
        decide: Callable[[Case, Context], T],
        *,
        channel: Channel | str | None = None,
        occurred_at: datetime | None = None,
        causation_id: UUID | None = None,
    ) -> T:
        with self.core.command_scope():
            ctx = self.core.context(actor, channel=channel, occurred_at=occurred_at, causation_id=causation_id)
            case = self.lookups.get_case(reference)
            result = decide(case, self._as_customer_of(case.customer_id, ctx))
            self.core.record(case)
            return result

    def respond(
        self, reference: str, *, actor: Actor, body: str, answers: Sequence[str] = (), channel: str | None = None,
        occurred_at: datetime | None = None,
    ) -> str:
        """Send a response answering the given items; returns the response id (R1, R2 …)."""
        return self._on_case(
            reference, actor, lambda c, x: c.respond(ctx=x, body=body, answers=list(answers)),
            channel=channel, occurred_at=occurred_at,
        )

    def waive_item(self, reference: str, *, actor: Actor, item_id: str, reason: str) -> None:
        self._on_case(reference, actor, lambda c, x: c.waive_item(ctx=x, item_id=item_id, reason=reason))

    def make_promise(
        self, reference: str, *, actor: Actor, channel: str, kind: str, terms: str, due_at: datetime,
        confirmation_channel: str | None = None, occurred_at: datetime | None = None,
    ) -> tuple[str, str | None]:
        """Record a promise; returns (promise id, written confirmation id or None)."""
        confirm = Channel.parse(confirmation_channel) if confirmation_channel else None

        def decide(case: Case, ctx: Context) -> tuple[str, str | None]:
            written = confirm or case.written_channel()
            writer = self.core.writer_for(self.core.get_optional(Customer.id_for(case.customer_id)), written.value)
            return case.make_promise(ctx=ctx, kind=kind, terms=terms, due_at=due_at, confirmation_channel=confirm,
                                     writer=writer, deliver_by=self.core.policy.confirm_by(issued_at=ctx.recorded_at))

        return self._on_case(reference, actor, decide, channel=channel, occurred_at=occurred_at)

    def keep_promise(self, reference: str, *, actor: Actor, promise_id: str, evidence: str) -> None:
        self._on_case(reference, actor, lambda c, x: c.keep_promise(ctx=x, promise_id=promise_id, evidence=evidence))

    def withdraw_promise(self, reference: str, *, actor: Actor, promise_id: str, reason: str, notice: str) -> None:
        self._on_case(
            reference, actor,
            lambda c, x: c.withdraw_promise(ctx=x, promise_id=promise_id, reason=reason, notice=notice,
                                            writer=self.core.writer_of(c, x)),
        )

    def break_promise(self, reference: str, *, actor: Actor, promise_id: str, reason: str) -> None:
        self._on_case(reference, actor, lambda c, x: c.break_promise(ctx=x, promise_id=promise_id, reason=reason))

    def change_status(self, reference: str, *, actor: Actor, to_status: str, reason: str, notice: str) -> None:
        self._on_case(
            reference, actor, lambda c, x: c.change_status(ctx=x, to_status=to_status, reason=reason, notice=notice,
                                                           writer=self.core.writer_of(c, x))
        )

    def close_case(
        self, reference: str, *, actor: Actor, reason: str, notice: str,
        waive: dict[str, str] | None = None,
    ) -> None:
        """Close a case; ``waive`` maps item or promise ids (Q…, P…) to the reason they are waived."""
        waive = dict(waive or {})
        items = {k: v for k, v in waive.items() if k.upper().startswith("Q")}
        promises = {k: v for k, v in waive.items() if k.upper().startswith("P")}
        unknown = set(waive) - set(items) - set(promises)
        if unknown:
            raise ValidationError(
                f"can only waive items (Q…) and promises (P…), not {', '.join(sorted(unknown))}"
            )
        self._on_case(
            reference, actor,
            lambda c, x: c.close(ctx=x, reason=reason, notice=notice, waive_items=items, waive_promises=promises,
                                 writer=self.core.writer_of(c, x)),
        )

    def cancel_case(self, reference: str, *, actor: Actor, reason: str, notice: str) -> None:
        self._on_case(reference, actor,
                      lambda c, x: c.cancel(ctx=x, reason=reason, notice=notice, writer=self.core.writer_of(c, x)))

    def reopen_case(self, reference: str, *, actor: Actor, reason: str, notice: str) -> None:
        self._on_case(reference, actor,
                      lambda c, x: c.reopen(ctx=x, reason=reason, notice=notice, writer=self.core.writer_of(c, x)))

    def assign(self, reference: str, *, actor: Actor, assignee: str | None, team: str | None = None) -> None:
        self._on_case(reference, actor, lambda c, x: c.assign(ctx=x, assignee=assignee, team=team))

    def hand_off(
        self, reference: str, *, actor: Actor, to_assignee: str | None, to_team: str | None = None, note: str = ""
    ) -> dict[str, Any]:
        """Hand a case over; returns the brief the next agent receives."""
        def decide(case: Case, ctx: Context) -> dict[str, Any]:
            case.hand_off(ctx=ctx, to_assignee=to_assignee, to_team=to_team, note=note)
            return case.brief()

        return self._on_case(reference, actor, decide)

    def escalate_to_human(
        self, reference: str, *, actor: Actor, bot_id: str, waiting_since: datetime,
        to_team: str | None = None, reason: str,
    ) -> int:
        """A chatbot passes the customer to a human; returns how many seconds they waited."""
        return self._on_case(
            reference, actor,
            lambda c, x: c.escalate_to_human(
                ctx=x, bot_id=bot_id, waiting_since=waiting_since, to_team=to_team, reason=reason
            ),
            channel=Channel.CHATBOT,
        )

    def propose_action(
        self, reference: str, *, actor: Actor, rule_id: str, action: str, params: dict[str, str], rationale: str
    ) -> str:
        return self._on_case(
            reference, actor,
            lambda c, x: c.propose_action(ctx=x, rule_id=rule_id, action=action, params=params, rationale=rationale),
        )

    def approve_action(self, reference: str, *, actor: Actor, proposal_id: str, note: str = "") -> str:
        """A human approves a proposal; the ledger executes its own actions in the same transaction.

        Returns ``executed`` when the ledger carried the action out, ``approved`` when an outside
        system must now execute it and report back with ``record_action_executed``.
        """
        def decide(case: Case, ctx: Context) -> str:
            proposal = case.approve_action(ctx=ctx, proposal_id=proposal_id, note=note)
            if proposal.action not in LEDGER_ACTIONS:
                return "approved"
            p = proposal.params
            follow = Context(actor=ctx.actor, occurred_at=ctx.occurred_at, recorded_at=ctx.recorded_at,
                             causation_id=ctx.causation_id)
            writer = self.core.writer_of(case, follow)
            if proposal.action == "change_status":
                case.change_status(ctx=follow, to_status=p.get("to", ""), reason=p.get("reason", ""),
                                   notice=p.get("notice", ""), writer=writer)
            elif proposal.action == "close":
                case.close(ctx=follow, reason=p.get("reason", ""), notice=p.get("notice", ""), writer=writer)
            elif proposal.action == "cancel":
                case.cancel(ctx=follow, reason=p.get("reason", ""), notice=p.get("notice", ""), writer=writer)
            elif proposal.action == "respond":
                answers = [a for a in p.get("answers", "").split(",") if a]
                case.respond(ctx=follow, body=p.get("body", ""), answers=answers)
            case.record_action_executed(ctx=follow, proposal_id=proposal_id, result=f"{proposal.action} done")
            return "executed"

        return self._on_case(reference, actor, decide)

    def reject_action(self, reference: str, *, actor: Actor, proposal_id: str, reason: str) -> None:
        self._on_case(reference, actor, lambda c, x: c.reject_action(ctx=x, proposal_id=proposal_id, reason=reason))

    def record_action_executed(self, reference: str, *, actor: Actor, proposal_id: str, result: str) -> None:
        self._on_case(
            reference, actor, lambda c, x: c.record_action_executed(ctx=x, proposal_id=proposal_id, result=result)
        )

    def record_delivery(
        self, reference: str, *, message_id: str, delivered_at: datetime, actor: Actor = SYSTEM,
        causation_id: UUID | None = None, reporter: Reporter | None = None, adapter: str = "",
    ) -> None:
        """A message reached the customer; a ``reporter`` (adapter, principal) is checked (ledger.delivery_reports);
        ``adapter``: the one whose intake record reported it (its verdict's key)."""
        mid = message_id.upper()
        self._on_case(reference, actor, lambda c, x: c.record_delivery(
            ctx=reporter.delivery(c, mid, x) if reporter else x, message_id=mid, delivered_at=delivered_at,
            adapter=adapter), causation_id=causation_id)

    def record_delivery_failure(
        self, reference: str, *, message_id: str, reason: str, failed_at: datetime | None = None,
        actor: Actor = SYSTEM, reporter: Reporter | None = None,
    ) -> None:
        """A channel could not deliver a message (``reason``: a DeliveryFailure code); it stays undelivered."""
        mid = message_id.upper()
        self._on_case(reference, actor, lambda c, x: c.record_delivery_failure(
            ctx=reporter.delivery(c, mid, x) if reporter else x, message_id=mid, reason=reason,
            failed_at=failed_at or x.occurred_at))

    def record_read(
        self, reference: str, *, actor: Actor, message_id: str, read_at: datetime | None = None,
        causation_id: UUID | None = None, reporter: Reporter | None = None, named: Actor | None = None,
        adapter: str = "",
    ) -> None:
        """A message was read; with a ``reporter`` the reader is decided by ledger.delivery_reports, not by ``actor``;
        ``adapter``: the one whose intake record reported it (its verdict's key)."""
        mid = message_id.upper()
        self._on_case(reference, actor, lambda c, x: c.record_read(
            ctx=reporter.read(c, mid, x, named=named) if reporter else x, message_id=mid,
            read_at=read_at or x.occurred_at, adapter=adapter), causation_id=causation_id)

    # -- deadlines ----------------------------------------------------------------------------------

    def record_missed_deadlines(
        self, *, actor: Actor = SYSTEM, references: Iterable[str] | None = None, batch_size: int = 200,
    ) -> TickReport:
        """Record a DeadlineMissed for every deadline past due, once, on the ledger's clock (retention is not run).

        What it records names ``actor``. Without ``references`` every case is checked; a caller that knows
        which cases may be due (the deadlines projection) names them. The Case aggregate decides
        what is missed, so a stale list can delay a record, never double it.
        """
        ctx = self.core.context(actor)
        at = ctx.recorded_at
        missed: dict[str, int] = {}
        checked = 0
        pending: list[Case] = []
        cases: Iterable[Case] = ((self.lookups.get_case(ref) for ref in references) if references is not None
                                 else (self.core.repository.get(i) for i in self.core.case_ids()))  # type: ignore[misc]
        for case in cases:
            checked += 1
            due = case.due_deadlines(at)
            if not due:
                continue
            case.record_missed_deadlines(ctx=ctx, now=at)
            for kind, _target, _due in due:
                missed[kind] = missed.get(kind, 0) + 1
            pending.append(case)
            if len(pending) >= batch_size:
                self.core.record(*pending)
                pending = []
        if pending:
            self.core.record(*pending)
        return TickReport(now=at, cases_checked=checked, missed=missed)
