"""Erasing a customer: their data keys destroyed and ``CustomerErased`` recorded; what keys a customer has.

The events stay, their hashes and chains unchanged: what was personal reads ``[erased]``, because
it was sealed with keys that no longer exist (:mod:`caseledger.ledger.privacy.sealing`). A legal hold
(:mod:`caseledger.ledger.privacy.holds`) refuses an erasure; the retention policy
(:mod:`caseledger.ledger.privacy.retention_sweep`) asks for them when due.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from caseledger.ledger.core import LedgerCore
from caseledger.ledger.db_errors import translate_errors
from caseledger.ledger.domain.directory import Customer, case_id_for
from caseledger.ledger.domain.personal import ERASED
from caseledger.ledger.domain.values import SYSTEM, Actor, Channel, ContactDraft, Identity
from caseledger.ledger.errors import NotFound, RuleViolation, SchemaError, ValidationError
from caseledger.ledger.intake.records import IntakeCodec
from caseledger.ledger.lookups import Lookups
from caseledger.ledger.privacy.pseudonyms import Pseudonyms
from caseledger.ledger.privacy.sealing import UNREADABLE

__all__ = ["PENDING", "Erasure", "ErasureReport", "checked_reason", "identity_values"]

log = logging.getLogger("caseledger.ledger")

MAX_REASON = 200
_PHONE = re.compile(r"\+\d|\d(?:[ .]?\d){8,}")  # an international number, or 9 digits or more in a run
#: What an erasure says when the database could not yet drop every copy of the destroyed keys' bytes.
PENDING = ("the destroyed keys' bytes may still be in the database's files, because a reader holds an older "
           "snapshot (a long query, a backup, another process); end it, then run `caseledger tick` (or erase "
           "again) until nothing is pending")


@dataclass(frozen=True, kw_only=True)
class ErasureReport:
    """What an erasure did: the keys destroyed, or why nothing was left to do; what is still pending."""

    customer_id: str
    erased_at: datetime
    key_ids: list[str] = field(default_factory=list)
    already_erased: bool = False
    pending: str | None = None  # set while the destroyed bytes may still be in the database's files

    @property
    def erased(self) -> bool:
        """Keys were destroyed and no copy of their bytes is left in the database's files."""
        return bool(self.key_ids) and self.pending is None


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
        The report says ``erased`` only once no copy of the keys' bytes is left in the database's
        files; until then it says what is ``pending`` (see :meth:`forget_destroyed`).
        """
        report = self.destroy_keys(who, reason=reason, actor=actor)
        return dataclasses.replace(report, pending=self.forget_destroyed())

    def forget_destroyed(self) -> str | None:
        """Remove the copies of every destroyed key's bytes the database keeps; what is pending, or None.

        A reader holding an older snapshot keeps them (SQLite's WAL, PostgreSQL's dead tuples) for a
        while; ``tick`` calls this again, so a pending erasure finishes.
        """
        with translate_errors(self.core.settings.store.describe()):
            return None if self.core.data_keys.forget_destroyed() else PENDING

    def destroy_keys(self, who: str, *, reason: str, actor: Actor | None = None) -> ErasureReport:
        """:meth:`erase_customer` without removing the copies (a sweep erasing many does it once, after)."""
        reason = checked_reason(reason, "erasure")
        customer_id = self.data_subject(who)
        with self.core.command_scope():
            customer = self.core.get_optional(Customer.id_for(customer_id))
            if customer is None:
                # A sender known only from requests kept as collisions: a data subject all the same. Registered
                # now (no identity), so that the erasure is recorded like any other.
                customer = Customer.register(customer_id=customer_id, segment=None, ctx=self.core.context(
                    self.lookups.acting_as(customer_id, actor or SYSTEM)))
            checked_reason(reason, "erasure", personal=identity_values(customer))
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
                self._drop_case_snapshots(customer.cases)  # any left by an erasure that could not delete them
                self.core.forget_customers({customer.id})  # erased elsewhere: this ledger forgets too, at once
                return ErasureReport(customer_id=customer_id, erased_at=now, already_erased=True)
            if new or not live:  # not live and never erased: history from before keys; the request is recorded
                claims = [str(c.id) for i in customer.identities if (c := self.pseudonyms.find_claim(Identity.parse(i)))]
                ctx = self.core.context(self.lookups.acting_as(customer_id, actor or SYSTEM))
                customer.record_erasure(reason=reason, key_ids=new, claim_ids=claims, ctx=ctx)
                self.core.record(customer)
        # The CustomerErased event itself is sealed with nothing personal, but its customer's live key
        # may have been made again for it: look once more after recording.
        with translate_errors(self.core.settings.store.describe()):
            live = self.core.data_keys.live_keys_of(customer_id)
        if live:  # recorded; their identities and messages still open: unlink them, then destroy the keys
            self._unlink(customer_id, named=who)
        with translate_errors(self.core.settings.store.describe()):
            self.core.data_keys.destroy(live)
        self._drop_case_snapshots(customer.cases)
        self.core.forget_customers({Customer.id_for(customer_id)})  # other ledgers learn it before their next batch
        return ErasureReport(customer_id=customer_id, erased_at=now, key_ids=sorted(set(live) | set(new)))

    def _drop_case_snapshots(self, references: Iterable[str]) -> None:
        """Delete the snapshots kept of the customer's cases. Sealed under the keys just destroyed, they can no
        longer open; they go all the same, so no row of hers is left beside the events. Never the erasure's
        failure: the keys are gone already (a row left is unreadable, and the next erasure deletes it)."""
        case_ids = [case_id_for(reference) for reference in references]
        if not case_ids:
            return
        try:
            with translate_errors(self.core.settings.store.describe()):
                self.core.storage.case_snapshots().delete_snapshots(case_ids)
        except Exception as error:  # logged without the customer: the number of cases and the error type
            log.warning("the snapshots of %d erased cases were not deleted (%s); they cannot be opened",
                        len(case_ids), type(error).__name__)

    def _unlink(self, customer_id: str, *, named: str) -> None:
        """Delete the lookup secrets of the customer's identities and channel messages (docs/privacy.md).

        Read from the claims the erasure recorded and from the cases, while the keys still open them, so
        running the erasure again after a crash finishes this too; ``named``, the identity the erasure was
        asked by, too (a sender known only from kept requests has no claim). An identity another customer
        claims (an adapter gave this customer's id with it) keeps its secret: it is that customer's lookup.
        """
        self.core.data_keys.forget()
        customer = self.core.load(Customer.id_for(customer_id))
        identities: set[str] = set(customer.identities)
        if ":" in named and not named.startswith("cus-"):
            identities.add(named)
        for claim_id in customer.erased_claims:
            claim = self.core.get_optional(UUID(claim_id))
            if claim is not None and claim.customer_id == customer_id:
                identities.add(claim.identity)
        identities.update(self._senders_in_kept_requests(customer_id))
        own = []
        for text in identities:
            if text.endswith(ERASED) or text.endswith(UNREADABLE):
                continue
            try:
                identity = Identity.parse(text)
            except ValidationError:
                continue  # a customer id, not an identity
            claim = self.pseudonyms.find_claim(identity)
            if claim is None or claim.customer_id == customer_id:
                own.append(identity)
        messages = []
        for reference in customer.cases:
            case = self.lookups.get_case(reference)
            messages += [(Channel(c.channel), c.channel_message_id) for c in case.contacts.values()
                         if c.channel_message_id not in (ERASED, UNREADABLE)]
        self.pseudonyms.unlink(own, messages)

    def _senders_in_kept_requests(self, customer_id: str) -> set[str]:
        """The identities that sent the requests kept of this subject (collisions, rejections), read from their
        sealed raw records while the keys still open them: a sender known only from those has no claim."""
        codec, found = IntakeCodec(), set()
        for kept in self.lookups.kept_of(customer_id):
            if not kept.raw:
                continue
            try:
                _adapter, message = codec.decode(bytes(kept.raw))
            except (SchemaError, ValidationError):
                continue  # not a record the ledger can read (it was rejected for that): it names no identity
            if isinstance(message, ContactDraft):
                found.add(str(message.identity))
        return found

    def data_subject(self, who: str) -> str:
        """The customer id of ``who`` (a customer id or an identity): a customer's, or that of a sender the
        ledger knows only from the requests it kept of theirs (collisions, rejections), found by the keys sealing them."""
        try:
            return self.lookups.resolve_customer(who)
        except NotFound:
            try:
                subject = self.pseudonyms.customer_id_for(Identity.parse(who))
            except ValidationError:
                subject = who
            finally:
                if not self.core.in_unit_of_work:  # a read stores no lookup secret: one made here would be saved
                    self.core.data_keys.drop_unsaved_lookups()  # by the next command, for nobody
            with translate_errors(self.core.settings.store.describe()):
                if self.core.data_keys.table.by_subjects([subject]):
                    return subject
            raise

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


def identity_values(customer: Customer) -> list[str]:
    """What a reason about ``customer`` must not quote: the values of their identities still readable."""
    values = [value for i in customer.identities if (value := i.partition(":")[2]) and value != ERASED]
    return values + [v.partition("@")[0] for v in values if "@" in v]  # an address's name part names them too


def checked_reason(reason: str, what: str, *, personal: Iterable[str] = ()) -> str:
    """``reason`` on one line, given, short, and holding nothing that looks like personal data.

    Erasure and hold reasons stay in clear for ever (they are what must stay provable once the data
    is gone): a legal ground and a reference (``art. 17 request, ticket 4711``, ``litigation
    2026/118``), never an e-mail address, a phone number or one of the customer's identities
    (``personal``). ``what`` names the request in the error, which names the field, never its value.
    """
    text = " ".join((reason or "").split())
    if not text:
        raise ValidationError(f"a {what} needs a reason (--reason), e.g. \"art. 17 request of 2026-12-01, ticket 4711\"")
    if len(text) > MAX_REASON:
        raise ValidationError(f"the {what} reason is {len(text)} characters; keep it under {MAX_REASON}")
    lowered = text.lower()
    looks = ("an e-mail address or a handle" if "@" in text else "a phone number" if _PHONE.search(text)
             else "one of the customer's identities" if any(len(v) >= 3 and v.lower() in lowered for v in personal) else None)
    if looks is not None:
        raise ValidationError(
            f"field reason of the {what} holds what looks like {looks}: the reason is kept in clear after the "
            "erasure, so give the legal ground and a reference only (e.g. \"art. 17 request, ticket 4711\"), "
            "never personal data (docs/privacy.md)"
        )
    return text
