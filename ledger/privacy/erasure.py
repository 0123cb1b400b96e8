"""Erasing a customer: their data keys destroyed and ``CustomerErased`` recorded; what keys a customer has.

The events stay, their hashes and chains unchanged: what was personal reads ``[erased]``, because
it was sealed with keys that no longer exist (:mod:`caseledger.ledger.privacy.sealing`). A legal hold
(:mod:`caseledger.ledger.privacy.holds`) refuses an erasure; the retention policy
(:mod:`caseledger.ledger.privacy.retention_sweep`) asks for them when due.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from caseledger.ledger.core import LedgerCore
from caseledger.ledger.db_errors import translate_errors
from caseledger.ledger.domain.directory import Customer
from caseledger.ledger.domain.values import SYSTEM, Actor, Identity
from caseledger.ledger.errors import RuleViolation, ValidationError
from caseledger.ledger.lookups import Lookups
from caseledger.ledger.privacy.pseudonyms import Pseudonyms

__all__ = ["Erasure", "ErasureReport", "checked_reason"]

MAX_REASON = 500


@dataclass(frozen=True, kw_only=True)
class ErasureReport:
    """What an erasure did: the keys destroyed, or why nothing was left to do."""

    customer_id: str
    erased_at: datetime
    key_ids: list[str] = field(default_factory=list)
    already_erased: bool = False

    @property
    def erased(self) -> bool:
        return bool(self.key_ids)


class Erasure:
    """Destroying a customer's keys on request, once recorded; never under a legal hold."""

    def __init__(self, core: LedgerCore, lookups: Lookups, pseudonyms: Pseudonyms) -> None:
        self.core = core
        self.lookups = lookups
        self.pseudonyms = pseudonyms

    def erase_customer(self, who: str, *, reason: str, actor: Actor | None = None) -> ErasureReport:
        """Erase a customer's personal data: destroy their data keys and record ``CustomerErased``.

        Refused while a legal hold is in force. Erasing a customer with no live key left is a no-op
        (``already_erased``). The event is recorded before the keys are destroyed: a crash between
        the two leaves the keys to the next erasure (or ``tick``), never data erased without record.
        """
        reason = checked_reason(reason, "erasure")
        customer_id = self.lookups.resolve_customer(who)
        with self.core.command_scope():
            customer = self.core.load(Customer.id_for(customer_id))
            if customer.hold is not None:
                raise RuleViolation(
                    f"customer {customer_id} is under a legal hold ({customer.hold}); their data cannot be erased "
                    "until it is released with `caseledger customer release`"
                )
            with translate_errors(self.core.settings.store.describe()):
                live = self.core.data_keys.live_keys_of(customer_id)
            now = self.core.clock()
            recorded = set(customer.erased_keys)
            new = [k for k in live if k not in recorded]
            if not live and recorded:
                self.core.forget_customers({customer.id})  # erased elsewhere: this ledger forgets too, at once
                return ErasureReport(customer_id=customer_id, erased_at=now, already_erased=True)
            if new or not live:  # not live and never erased: history from before keys; the request is recorded
                claims = [str(c.id) for i in customer.identities if (c := self.pseudonyms.find_claim(Identity.parse(i)))]
                ctx = self.core.context(actor or SYSTEM)
                customer.record_erasure(reason=reason, key_ids=new, claim_ids=claims, ctx=ctx)
                self.core.record(customer)
        # The CustomerErased event itself is sealed with nothing personal, but its customer's live key
        # may have been made again for it: look once more after recording.
        with translate_errors(self.core.settings.store.describe()):
            live = self.core.data_keys.live_keys_of(customer_id)
            self.core.data_keys.destroy(live)
        self.core.forget_customers({Customer.id_for(customer_id)})  # other ledgers learn it before their next batch
        return ErasureReport(customer_id=customer_id, erased_at=now, key_ids=sorted(set(live) | set(new)))

    def customer_privacy(self, who: str) -> dict[str, Any]:
        """A customer's keys and hold, as ``customer show`` prints them (never key material)."""
        customer_id = self.lookups.resolve_customer(who)
        customer = self.core.load(Customer.id_for(customer_id))
        with translate_errors(self.core.settings.store.describe()):
            rows = self.core.data_keys.table.by_subjects([customer_id])
        return {
            "customer_id": customer_id,
            "legal_hold": customer.hold,
            "keys": [{"key_id": r.key_id, "created_at": r.created_at, "destroyed_at": r.destroyed_at} for r in rows],
            "erased_key_ids": list(customer.erased_keys),
        }

    def erased_customers(self) -> Iterator[str]:
        """Customer ids with at least one destroyed key."""
        for row in self.core.data_keys.table.destroyed():
            if not row.subject.startswith("ledger:"):
                yield row.subject


def checked_reason(reason: str, what: str) -> str:
    """``reason`` on one line, if given and not too long; ``what`` names the request in the error."""
    text = " ".join((reason or "").split())
    if not text:
        raise ValidationError(f"a {what} needs a reason (--reason), e.g. \"art. 17 request of 2026-12-01, ticket 4711\"")
    if len(text) > MAX_REASON:
        raise ValidationError(f"the {what} reason is {len(text)} characters; keep it under {MAX_REASON}")
    return text
