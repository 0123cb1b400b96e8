"""Retention: which customers (and months of intake rejections) the policy says are due for erasure, erased once.

It runs on the ledger's clock and counts from recorded times only (see
:meth:`RetentionSweep.apply_retention`); ``tick`` runs it after the deadlines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from caseledger.ledger.core import LedgerCore
from caseledger.ledger.db_errors import translate_errors
from caseledger.ledger.domain.case_parts import Status
from caseledger.ledger.domain.catalog import name_of_topic
from caseledger.ledger.domain.directory import Customer
from caseledger.ledger.domain.personal import REJECTION_SUBJECT_PREFIX
from caseledger.ledger.domain.values import SYSTEM, Actor
from caseledger.ledger.lookups import Lookups
from caseledger.ledger.privacy.erasure import Erasure

__all__ = ["RetentionReport", "RetentionSweep"]


@dataclass(frozen=True, kw_only=True)
class RetentionReport:
    """What the retention policy erased at one tick, and whom a legal hold kept."""

    erased: list[str] = field(default_factory=list)  # customer ids
    held: dict[str, str] = field(default_factory=dict)  # customer id → the hold's reason
    rejection_months: list[str] = field(default_factory=list)  # "2026-01" …


class RetentionSweep:
    """Erasing, at each tick, whoever the policy's ``[retention]`` says is due."""

    def __init__(self, core: LedgerCore, lookups: Lookups, erasure: Erasure) -> None:
        self.core = core
        self.lookups = lookups
        self.erasure = erasure

    def apply_retention(self, *, actor: Actor = SYSTEM) -> RetentionReport:
        """Erase every customer (and month of rejections) the policy's ``[retention]`` says is due, once.

        It runs on the ledger's clock and counts from recorded times only, so no client's claim
        and no caller's "now" can make a customer due early; each erasure names ``actor``.
        Only subjects that still have a live key are looked at, so an erased customer costs nothing.
        A customer is due once every case of theirs has ended and the retention period of their
        segment has passed since the last event of their last case was recorded (or since they were
        registered, without a case); a legal hold keeps them, and the report says so. A sender known
        only from requests kept as collisions or rejections (no customer) is due once
        ``intake_rejections`` (else the default period) has passed since the last of them was recorded.
        The copies of the destroyed keys' bytes are removed after, once for all (``tick`` calls
        :meth:`~caseledger.ledger.privacy.erasure.Erasure.forget_destroyed`).
        """
        retention = self.core.policy.retention
        report = RetentionReport()
        if retention is None:
            return report
        now = self.core.clock()
        with translate_errors(self.core.settings.store.describe()):
            live = self.core.data_keys.table.live()
        subjects = sorted({r.subject for r in live})
        kept_until: dict[str, datetime] | None = None
        for subject in subjects:
            if subject.startswith(REJECTION_SUBJECT_PREFIX):
                month = subject.removeprefix(REJECTION_SUBJECT_PREFIX)
                end = _month_end(month)
                if retention.intake_rejections is not None and end is not None and (
                        retention.intake_rejections.after(end) <= now):
                    self.core.data_keys.destroy([r.key_id for r in live if r.subject == subject])
                    report.rejection_months.append(month)
                continue
            if subject.startswith("ledger:"):
                continue
            customer = self.core.get_optional(Customer.id_for(subject))
            if customer is None:
                if kept_until is None:
                    kept_until = self._last_kept_requests()
                last = kept_until.get(subject)
                period = retention.intake_rejections or retention.period_for(None)
                if last is not None and period is not None and period.after(last) <= now:
                    self.erasure.destroy_keys(
                        subject, reason=f"retention: {period} after the last request kept as a collision or rejection", actor=actor)
                    report.erased.append(subject)
                continue
            period = retention.period_for(customer.segment)
            if period is None:
                continue
            cases = [self.lookups.get_case(ref) for ref in customer.cases]
            if any(case.status in Status.ACTIVE for case in cases):
                continue
            last = self._last_recorded(cases) or customer.created_on
            if period.after(last) > now:
                continue
            if customer.hold is not None:
                report.held[subject] = customer.hold
                continue
            self.erasure.destroy_keys(subject, reason=f"retention: {period} after the last case ended ({last:%Y-%m-%d})",
                                actor=actor)
            report.erased.append(subject)
        return report

    def _last_kept_requests(self) -> dict[str, datetime]:
        """Sender's customer id → when the last request of theirs kept (a collision, a rejection) was recorded."""
        last: dict[str, datetime] = {}
        kept: list[Any] = [*self.lookups.collisions(), *self.lookups.rejections()]
        for e in kept:
            if not e.customer_id:
                continue
            last[e.customer_id] = max(e.timestamp, last.get(e.customer_id, e.timestamp))
        return last

    def _last_recorded(self, cases: list[Any]) -> datetime | None:
        """When the last event of these cases was recorded (on the ledger's clock), read in one query."""
        if not cases:
            return None
        with translate_errors(self.core.settings.store.describe()):
            stored = self.core.recorder.select_events_after([c.id for c in cases], after={c.id: c.version - 1 for c in cases})
        times = [self.core.codec.decode(name_of_topic(e.topic), bytes(e.state)).timestamp  # type: ignore[attr-defined]
                 for events in stored.values() for e in events]
        return max(times, default=None)


def _month_end(month: str) -> datetime | None:
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        return None
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
