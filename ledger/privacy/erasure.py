"""Forgetting a customer: their data keys, the erasure itself, legal holds and retention.

``CustomerPrivacy`` is the part of :class:`~caseledger.ledger.application.CaseLedger` that keeps
personal data sealed with each customer's keys (:mod:`caseledger.ledger.privacy`) and destroys
those keys on request or when the retention policy says so, unless a legal hold is in force.
The events stay, their hashes and chains unchanged: what was personal reads ``[erased]``.

It also names customers and identities without their data: a customer first known by an identity
gets a pseudonymous id (``cus-`` and 16 hex digits, a keyed hash of the identity), and an
identity's claim is found under a keyed id too, so that the store, the topics and the Kafka keys
never carry an e-mail address or a phone number in clear. Ledgers written before keep their
customer ids and claims (the lookups try the old name-based id as well); docs/privacy.md says what
that leaves in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any
from uuid import UUID

from caseledger.ledger.db_errors import translate_errors
from caseledger.ledger.domain.case_parts import Status
from caseledger.ledger.domain.catalog import name_of_topic
from caseledger.ledger.domain.directory import Customer, IdentityClaim, name_id
from caseledger.ledger.domain.personal import REJECTION_SUBJECT_PREFIX
from caseledger.ledger.domain.values import SYSTEM, Actor, Identity
from caseledger.ledger.errors import RuleViolation, ValidationError
from caseledger.ledger.privacy.data_keys import DataKeys
from caseledger.ledger.privacy.kek import KeyEncryptionKey
from caseledger.ledger.privacy.sealing import Sealer, subject_of

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from caseledger.ledger.domain.events import Context
    from caseledger.ledger.settings import LedgerSettings
    from caseledger.ledger.store_ports import LedgerRecorder, StorageProvider

PSEUDONYM_SUBJECT = "ledger:pseudonyms"
"""The key store's subject of the ledger's own key for pseudonyms (never erased)."""
NAME_BASED_CLAIMS = "ledger:name-based-claims"
"""A marker row: the ledger held events before its pseudonym key, so identity claims may have name-based ids."""
_SEALED_KEY_IDS = re.compile(rb"enc:1:([0-9a-f]{16}):")
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


@dataclass(frozen=True, kw_only=True)
class RetentionReport:
    """What the retention policy erased at one tick, and whom a legal hold kept."""

    erased: list[str] = field(default_factory=list)  # customer ids
    held: dict[str, str] = field(default_factory=dict)  # customer id → the hold's reason
    rejection_months: list[str] = field(default_factory=list)  # "2026-01" …


class CustomerPrivacy:
    """Sealing with customers' keys, erasure, legal holds (mixed into CaseLedger)."""

    if TYPE_CHECKING:
        settings: LedgerSettings
        recorder: LedgerRecorder
        clock: Any

        @property
        def storage(self) -> StorageProvider: ...

        def _get_optional(self, aggregate_id: UUID) -> Any | None: ...
        def _load(self, aggregate_id: UUID) -> Any: ...
        def record(self, *aggregates: Any) -> None: ...
        def _command(self) -> AbstractContextManager[None]: ...
        def _context(self, actor: Actor) -> Context: ...
        def resolve_customer(self, who: str) -> str: ...

    # -- keys -----------------------------------------------------------------------------------------

    @cached_property
    def data_keys(self) -> DataKeys:
        """The customers' data keys, in the key store beside the events."""
        database_file = self.storage.database_file  # None on a server: the key-encryption key must be given
        if database_file is not None and self.settings.store.database in (":memory:", ""):
            kek = KeyEncryptionKey(KeyEncryptionKey.generate(), origin="memory")
        else:
            kek = KeyEncryptionKey.resolve(self.settings.privacy, database_file=database_file)
        return DataKeys(self.storage.data_keys(), kek, clock=self.clock)

    @cached_property
    def sealer(self) -> Sealer:
        return Sealer(self.data_keys)

    def _seal_fields(self, event_type: str, customer_id: str, recorded_at: datetime, record: dict[str, Any]) -> None:
        self.sealer.seal_record(event_type, subject_of(event_type, customer_id, recorded_at), record)

    def _open_fields(self, event_type: str, state: dict[str, Any]) -> None:
        self.sealer.open_state(event_type, state)

    def reveal(self, value: Any) -> Any:
        """A view row (or any value read from views) with its sealed texts opened, or ``[erased]``."""
        try:
            return self.sealer.reveal(value)
        finally:
            self.data_keys.forget()

    def _preload_keys(self, states: Iterable[bytes]) -> None:
        """Load, in one query, every data key these stored events were sealed with."""
        wanted = {m.group(1).decode() for data in states for m in _SEALED_KEY_IDS.finditer(data)}
        if wanted:
            self.data_keys.load(wanted)

    # -- names without personal data ------------------------------------------------------------------

    @cached_property
    def _pseudonym_key(self) -> bytes:
        with translate_errors(self.settings.store.describe()):
            table = self.data_keys.table
            if not table.by_subjects([PSEUDONYM_SUBJECT]) and self.recorder.max_notification_id():
                # Written by an earlier release: its claims are under name-based ids; remember to look there.
                table.mark(NAME_BASED_CLAIMS, at=self.clock())
            return self.data_keys.ledger_secret(PSEUDONYM_SUBJECT)

    @cached_property
    def _name_based_claims(self) -> bool:
        self._pseudonym_key  # noqa: B018  (decides it, once)
        with translate_errors(self.settings.store.describe()):
            return bool(self.data_keys.table.by_subjects([NAME_BASED_CLAIMS]))

    def customer_id_for(self, identity: Identity) -> str:
        """The pseudonymous id of a new customer first known by ``identity``."""
        return self._names_of(identity)[0]

    def claim_id_for(self, identity: Identity) -> UUID:
        """The id of the identity's claim: a keyed hash, so the id alone tells nothing of the identity."""
        return self._names_of(identity)[1]

    def _names_of(self, identity: Identity) -> tuple[str, UUID]:
        key = str(identity)
        names = self._names.get(key)
        if names is None:  # one contact asks several times: two HMACs once
            secret = self._pseudonym_key
            customer = hmac.new(secret, f"customer\n{key}".encode(), hashlib.sha256).hexdigest()
            claim = hmac.new(secret, f"identity\n{key}".encode(), hashlib.sha256).hexdigest()
            if len(self._names) >= 10_000:
                self._names.clear()
            names = self._names[key] = (f"cus-{customer[:16]}", name_id(f"identity-claim:{claim}"))
        return names

    @cached_property
    def _names(self) -> dict[str, tuple[str, UUID]]:
        return {}

    def claim_ids_for(self, identity: Identity) -> list[UUID]:
        """Where the identity's claim may be: the keyed id, then (ledgers of earlier releases) the name-based id."""
        keyed = self.claim_id_for(identity)
        return [keyed, IdentityClaim.id_for(identity)] if self._name_based_claims else [keyed]

    def _find_claim(self, identity: Identity) -> Any | None:
        ids = self.claim_ids_for(identity)
        if len(ids) > 1 and getattr(self, "_uow", None) is not None:
            self.prefetch(ids)  # type: ignore[attr-defined]  # both in one query
        for claim_id in ids:
            claim = self._get_optional(claim_id)
            if claim is not None:
                return claim
        return None

    # -- erasure ------------------------------------------------------------------------------------

    def erase_customer(self, who: str, *, reason: str, actor: Actor | None = None) -> ErasureReport:
        """Erase a customer's personal data: destroy their data keys and record ``CustomerErased``.

        Refused while a legal hold is in force. Erasing a customer with no live key left is a no-op
        (``already_erased``). The event is recorded before the keys are destroyed: a crash between
        the two leaves the keys to the next erasure (or ``tick``), never data erased without record.
        """
        reason = _reason(reason, "erasure")
        customer_id = self.resolve_customer(who)
        with self._command():
            customer = self._load(Customer.id_for(customer_id))
            if customer.hold is not None:
                raise RuleViolation(
                    f"customer {customer_id} is under a legal hold ({customer.hold}); their data cannot be erased "
                    "until it is released with `caseledger customer release`"
                )
            with translate_errors(self.settings.store.describe()):
                live = self.data_keys.live_keys_of(customer_id)
            now = self.clock()
            recorded = set(customer.erased_keys)
            new = [k for k in live if k not in recorded]
            if not live and recorded:
                return ErasureReport(customer_id=customer_id, erased_at=now, already_erased=True)
            if new or not live:  # not live and never erased: history from before keys; the request is recorded
                claims = [str(c.id) for i in customer.identities if (c := self._find_claim(Identity.parse(i)))]
                ctx = self._context(actor or SYSTEM)
                customer.record_erasure(reason=reason, key_ids=new, claim_ids=claims, ctx=ctx)
                self.record(customer)
        # The CustomerErased event itself is sealed with nothing personal, but its customer's live key
        # may have been made again for it: look once more after recording.
        with translate_errors(self.settings.store.describe()):
            live = self.data_keys.live_keys_of(customer_id)
            self.data_keys.destroy(live)
        return ErasureReport(customer_id=customer_id, erased_at=now, key_ids=sorted(set(live) | set(new)))

    def place_legal_hold(self, who: str, *, reason: str, actor: Actor | None = None) -> None:
        """Keep a customer's data whatever is asked (a legal obligation or claim) until released."""
        reason = _reason(reason, "legal hold")
        customer_id = self.resolve_customer(who)
        with self._command():
            customer = self._load(Customer.id_for(customer_id))
            if customer.hold is not None:
                raise RuleViolation(f"customer {customer_id} is already under a legal hold ({customer.hold})")
            customer.place_hold(reason=reason, ctx=self._context(actor or SYSTEM))
            self.record(customer)

    def release_legal_hold(self, who: str, *, reason: str, actor: Actor | None = None) -> None:
        reason = _reason(reason, "release")
        customer_id = self.resolve_customer(who)
        with self._command():
            customer = self._load(Customer.id_for(customer_id))
            if customer.hold is None:
                raise RuleViolation(f"customer {customer_id} is under no legal hold; nothing to release")
            customer.release_hold(reason=reason, ctx=self._context(actor or SYSTEM))
            self.record(customer)

    def customer_privacy(self, who: str) -> dict[str, Any]:
        """A customer's keys and hold, as ``customer show`` prints them (never key material)."""
        customer_id = self.resolve_customer(who)
        customer = self._load(Customer.id_for(customer_id))
        with translate_errors(self.settings.store.describe()):
            rows = self.data_keys.table.by_subjects([customer_id])
        return {
            "customer_id": customer_id,
            "legal_hold": customer.hold,
            "keys": [{"key_id": r.key_id, "created_at": r.created_at, "destroyed_at": r.destroyed_at} for r in rows],
            "erased_key_ids": list(customer.erased_keys),
        }

    def rotate_kek(self, new: KeyEncryptionKey) -> int:
        """Rewrap every live data key with a new key-encryption key; how many were rewrapped."""
        with translate_errors(self.settings.store.describe()):
            return self.data_keys.rotate(new)

    def apply_retention(self, *, actor: Actor = SYSTEM) -> RetentionReport:
        """Erase every customer (and month of rejections) the policy's ``[retention]`` says is due, once.

        It runs on the ledger's clock and counts from recorded times only, so no client's claim
        and no caller's "now" can make a customer due early; each erasure names ``actor``.
        Only subjects that still have a live key are looked at, so an erased customer costs nothing.
        A customer is due once every case of theirs has ended and the retention period of their
        segment has passed since the last event of their last case was recorded (or since they were
        registered, without a case); a legal hold keeps them, and the report says so.
        """
        retention = self.policy.retention  # type: ignore[attr-defined]
        report = RetentionReport()
        if retention is None:
            return report
        now = self.clock()
        with translate_errors(self.settings.store.describe()):
            live = self.data_keys.table.live()
        subjects = sorted({r.subject for r in live})
        for subject in subjects:
            if subject.startswith(REJECTION_SUBJECT_PREFIX):
                month = subject.removeprefix(REJECTION_SUBJECT_PREFIX)
                end = _month_end(month)
                if retention.intake_rejections is not None and end is not None and (
                        retention.intake_rejections.after(end) <= now):
                    self.data_keys.destroy([r.key_id for r in live if r.subject == subject])
                    report.rejection_months.append(month)
                continue
            if subject.startswith("ledger:"):
                continue
            customer = self._get_optional(Customer.id_for(subject))
            if customer is None:
                continue
            period = retention.period_for(customer.segment)
            if period is None:
                continue
            cases = [self.get_case(ref) for ref in customer.cases]  # type: ignore[attr-defined]
            if any(case.status in Status.ACTIVE for case in cases):
                continue
            last = self._last_recorded(cases) or customer.created_on
            if period.after(last) > now:
                continue
            if customer.hold is not None:
                report.held[subject] = customer.hold
                continue
            self.erase_customer(subject, reason=f"retention: {period} after the last case ended ({last:%Y-%m-%d})",
                                actor=actor)
            report.erased.append(subject)
        return report

    def _last_recorded(self, cases: list[Any]) -> datetime | None:
        """When the last event of these cases was recorded (on the ledger's clock), read in one query."""
        if not cases:
            return None
        with translate_errors(self.settings.store.describe()):
            stored = self.recorder.select_events_after([c.id for c in cases], after={c.id: c.version - 1 for c in cases})
        times = [self.codec.decode(name_of_topic(e.topic), bytes(e.state)).timestamp  # type: ignore[attr-defined]
                 for events in stored.values() for e in events]
        return max(times, default=None)

    def erased_customers(self) -> Iterator[str]:
        """Customer ids with at least one destroyed key."""
        for row in self.data_keys.table.destroyed():
            if not row.subject.startswith("ledger:"):
                yield row.subject


def _month_end(month: str) -> datetime | None:
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        return None
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def _reason(reason: str, what: str) -> str:
    text = " ".join((reason or "").split())
    if not text:
        raise ValidationError(f"a {what} needs a reason (--reason), e.g. \"art. 17 request of 2026-12-01, ticket 4711\"")
    if len(text) > MAX_REASON:
        raise ValidationError(f"the {what} reason is {len(text)} characters; keep it under {MAX_REASON}")
    return text
