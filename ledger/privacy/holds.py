"""Legal holds: a customer's data kept whatever is asked (a legal obligation or claim), until released."""

from __future__ import annotations

from caseledger.ledger.core import LedgerCore
from caseledger.ledger.domain.directory import Customer
from caseledger.ledger.domain.values import SYSTEM, Actor
from caseledger.ledger.errors import RuleViolation
from caseledger.ledger.lookups import Lookups
from caseledger.ledger.privacy.erasure import checked_reason, identity_values

__all__ = ["LegalHolds"]


class LegalHolds:
    """Placing and releasing a customer's legal hold (an erasure is refused while one is in force)."""

    def __init__(self, core: LedgerCore, lookups: Lookups) -> None:
        self.core = core
        self.lookups = lookups

    def place_legal_hold(self, who: str, *, reason: str, actor: Actor | None = None) -> None:
        """Keep a customer's data whatever is asked (a legal obligation or claim) until released."""
        reason = checked_reason(reason, "legal hold")
        customer_id = self.lookups.resolve_customer(who)
        with self.core.command_scope():
            customer = self.core.load(Customer.id_for(customer_id))
            checked_reason(reason, "legal hold", personal=identity_values(customer))
            if customer.hold is not None:
                raise RuleViolation(f"customer {customer_id} is already under a legal hold ({customer.hold})")
            customer.place_hold(reason=reason, ctx=self.core.context(self.lookups.acting_as(customer_id, actor or SYSTEM)))
            self.core.record(customer)

    def release_legal_hold(self, who: str, *, reason: str, actor: Actor | None = None) -> None:
        reason = checked_reason(reason, "release")
        customer_id = self.lookups.resolve_customer(who)
        with self.core.command_scope():
            customer = self.core.load(Customer.id_for(customer_id))
            checked_reason(reason, "release", personal=identity_values(customer))
            if customer.hold is None:
                raise RuleViolation(f"customer {customer_id} is under no legal hold; nothing to release")
            customer.release_hold(reason=reason, ctx=self.core.context(self.lookups.acting_as(customer_id, actor or SYSTEM)))
            self.core.record(customer)
