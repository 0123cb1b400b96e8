"""Contact intake: how a contact becomes events — recorded once, a resubmission recognised, a collision kept.

``ContactIntake`` is the service of :class:`~caseledger.ledger.application.CaseLedger` that records
what customers send, on the :class:`~caseledger.ledger.core.LedgerCore` it is given; it names
customers through :class:`~caseledger.ledger.privacy.pseudonyms.Pseudonyms` and finds the case a
contact names through :class:`~caseledger.ledger.lookups.Lookups`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
import time
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn
from uuid import NAMESPACE_URL, UUID, uuid5

from caseledger.ledger.core import LedgerCore
from caseledger.ledger.db_errors import translate_errors
from caseledger.ledger.domain.case import Case
from caseledger.ledger.domain.case_references import new_reference, normalise_reference
from caseledger.ledger.domain.catalog import name_of_topic
from caseledger.ledger.domain.directory import (
    ChannelMessage,
    Customer,
    IdentityClaim,
    IntakeRejection,
    IntakeSource,
    MessageCollision,
    case_id_for,
)
from caseledger.ledger.domain.values import (
    KEYED_CONTENT_DIGEST_VERSION,
    SYSTEM,
    Actor,
    ActorKind,
    ContactDraft,
    Identity,
    content_digest,
)
from caseledger.ledger.errors import (
    ConflictError,
    MessageIdCollision,
    NotFound,
    RuleViolation,
    ValidationError,
)
from caseledger.ledger.lookups import Lookups
from caseledger.ledger.privacy.pseudonyms import Pseudonyms
from caseledger.ledger.transparency.contact_receipts import salt_of

if TYPE_CHECKING:
    from caseledger.ledger.intake.records import IntakeCodec
    from caseledger.ledger.transparency.contact_receipts import ReceiptIssuer

_CORRELATION_NS = uuid5(NAMESPACE_URL, "https://caseledger.invalid/correlation")
MAX_CONTACT_ATTEMPTS = 12
_RECEIPT = re.compile(r"CLR1\.[A-Za-z0-9_-]+")  # a receipt in an acknowledgement's text


def _correlation(draft: ContactDraft, message_id: UUID) -> UUID:
    """Every event that follows from one channel message shares this id: its registration's (keyed) id.

    Registrations of earlier releases had name-based ids and their events a correlation id anyone
    computes from the channel message id; their resubmissions keep it.
    """
    if message_id == ChannelMessage.id_for(draft.channel, draft.channel_message_id):
        return uuid5(_CORRELATION_NS, f"{draft.channel.value}:{draft.channel_message_id}")
    return message_id


def _as_customer(actor: Actor | None, customer_id: str) -> Actor:
    """The actor of a customer's own request: named by their customer id (a pseudonym), never by the
    identity a channel or a caller gave; how it was authenticated and who relayed it are kept."""
    if actor is None:
        return Actor(kind=ActorKind.CUSTOMER, id=customer_id)
    if actor.kind == ActorKind.CUSTOMER and actor.id != customer_id:
        return dataclasses.replace(actor, id=customer_id)
    return actor


@dataclass(frozen=True, kw_only=True)
class ContactOutcome:
    """What an adapter tells the customer once a contact is recorded (or recognised again)."""

    reference: str
    case_id: UUID
    customer_id: str
    contact_id: str
    acknowledgement_id: str
    acknowledgement: str
    respond_by: datetime
    duplicate: bool
    opened_case: bool
    receipt: str | None = None  # the contact's signed receipt (CLR1.…); None when the ledger has no signing key


class _IssuedReceipts:
    """The ledger's receipt issuer for one command, remembering what it signed (the outcome carries it)."""

    def __init__(self, issuer: ReceiptIssuer) -> None:
        self.issuer = issuer
        self.issued: dict[str, str] = {}

    def new_salt(self) -> str:
        return self.issuer.new_salt()

    def receipt(self, case: Case, contact_id: str) -> str:
        text = self.issuer.receipt(case, contact_id)
        self.issued[contact_id] = text
        return text


class ContactIntake:
    """Recording inbound contacts: idempotent on the request, never losing one that collides."""

    def __init__(self, core: LedgerCore, pseudonyms: Pseudonyms, lookups: Lookups) -> None:
        self.core = core
        self.pseudonyms = pseudonyms
        self.lookups = lookups

    def record_contact(
        self,
        draft: ContactDraft,
        *,
        actor: Actor | None = None,
        source: IntakeSource | None = None,
        raw: bytes | None = None,
        signature: str | None = None,
        adapter: str = "",
    ) -> ContactOutcome:
        """Record an inbound contact with its acknowledgement; idempotent on the channel message id.

        A resubmission — the same (channel, channel message id) from the same customer with the same
        content digest — records nothing new. When it came through the intake topic (``source``),
        the ledger records that it was seen again, so every intake record has an outcome.

        The same id with another sender, another case or other content is not a resubmission: the
        request is recorded as a ``MessageIdCollided`` (with ``raw``, its intake record bytes; built
        from the draft when not given) and :class:`MessageIdCollision` is raised. Neither names the
        case or the customer that has the id.

        ``signature`` (``ADAPTER:BASE64``) is the adapter's signature of ``raw``, the intake record: both
        are kept with the contact's registration (the record sealed), so an auditor can show which
        adapter sent it. ``adapter`` names the adapter that sent the intake record: its outcome (the
        registration, the traced resubmission or the collision) carries it, so the publisher can key its verdict.
        """
        for attempt in range(MAX_CONTACT_ATTEMPTS):
            if attempt:
                # Jittered backoff: writers contending for one case must not retry in lockstep.
                time.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))
            try:
                with self.core.command_scope():
                    self.pseudonyms.prefetch([draft.identity], [(draft.channel, draft.channel_message_id)])
                    existing = self.pseudonyms.find_message(draft.channel, draft.channel_message_id)
                    if existing is None:
                        return self._record_new_contact(
                            draft, actor=actor, source=source,
                            signed=(signature, raw or b"") if signature is not None else None, adapter=adapter,
                        )
                    customer_id, _claim = self._sender_of(draft)
                    collision = self._collision_with(existing, draft, customer_id)
                    if collision is not None:
                        kind, reason = collision
                        self._record_collision(
                            draft, kind=kind, reason=reason, customer_id=customer_id, actor=actor,
                            source=source, raw=raw, adapter=adapter,
                        )
                    if source is not None:
                        ctx = self.core.context(
                            SYSTEM, channel=draft.channel, occurred_at=draft.occurred_at,
                            correlation_id=_correlation(draft, existing.id), causation_id=source.event_id,
                        )
                        existing.trace_resubmission(source=str(source), ctx=ctx, adapter=adapter)
                        self.core.record(existing)
                    return self._outcome_of(existing)
            except ConflictError:
                # Another writer changed the case, took the reference or recorded this very
                # message first: look again; a duplicate is answered from the stored contact.
                continue
        raise ConflictError(
            f"{draft.channel.value} message {draft.channel_message_id!r} kept conflicting with "
            f"concurrent writes after {MAX_CONTACT_ATTEMPTS} attempts; nothing was recorded, retry"
        )

    def contact_lookups(self, draft: ContactDraft) -> set[UUID]:
        """The aggregates ``record_contact`` loads for ``draft``: a batch prefetches them in one query (and the
        lookup secrets of all its drafts in one before, :meth:`Pseudonyms.prefetch`)."""
        # A secret made now names what cannot exist yet: the prefetch learns so without a query per contact.
        # (Made for a contact that turns out to be refused, it is stored with the batch all the same: it
        # names nothing, and an erasure of the identity deletes it like the others.)
        pseudonyms = self.pseudonyms
        ids = {pseudonyms.message_id_for(draft.channel, draft.channel_message_id), pseudonyms.claim_id_for(draft.identity),
               *pseudonyms.message_ids_for(draft.channel, draft.channel_message_id),
               *pseudonyms.claim_ids_for(draft.identity),
               Customer.id_for(draft.customer_id or pseudonyms.customer_id_for(draft.identity))}
        if draft.case_reference:
            ids.add(case_id_for(normalise_reference(draft.case_reference)))
        return ids

    def _sender_of(self, draft: ContactDraft) -> tuple[str, IdentityClaim | None]:
        """(the customer id a contact is recorded under, the identity's claim if it has one)."""
        claim = self.pseudonyms.find_claim(draft.identity)
        if draft.customer_id:
            return draft.customer_id, claim
        if claim is not None:
            return claim.customer_id, claim
        return self.pseudonyms.customer_id_for(draft.identity), None

    def _collision_with(
        self, message: ChannelMessage, draft: ContactDraft, customer_id: str
    ) -> tuple[str, str] | None:
        """Why ``draft`` is not a resubmission of the registered ``message`` (kind, reason), or None."""
        where = f"the {draft.channel.value} message id"  # never its value: kept in clear, and personal data
        if customer_id != message.customer_id:
            return "identity", f"{where} was first recorded for another customer"
        if (draft.case_reference is not None and normalise_reference(draft.case_reference) != message.reference
                and not self._quotes_an_erased_case(draft.case_reference, customer_id)):
            return "case", f"{where} was first recorded on another case than the one this request names"
        stored = message.content_digest
        if stored.startswith(f"{KEYED_CONTENT_DIGEST_VERSION}:"):
            digest = self.pseudonyms.content_digest_for(draft)
        else:  # registered by an earlier release: an unkeyed digest, or none (then its contact's)
            digest, stored = draft.content_digest(), stored or self._legacy_digest(message)
        if digest != stored:
            return "content", (
                f"{where} was first recorded with other content (sender identity, subject, items, body "
                "or attachments differ)"
            )
        return None

    def _legacy_digest(self, message: ChannelMessage) -> str:
        """The content digest of a registration made before digests were kept, from its contact."""
        with translate_errors(self.core.settings.store.describe()):
            stored = self.core.recorder.select_events_after([message.case_id]).get(message.case_id, [])
        for stored_event in stored:
            if name_of_topic(stored_event.topic) != "ContactReceived":
                continue
            event: Any = self.core.mapper.to_domain_event(stored_event)
            if event.contact_id == message.contact_id:
                return content_digest(
                    identity=f"{event.identity['kind']}:{event.identity['value']}",
                    subject=event.subject,
                    items=[i["text"] for i in event.items],
                    body=event.body,
                    attachment_sha256s=[a["sha256"] for a in event.attachments],
                )
        return ""  # the contact is gone (the audit reports that): nothing matches it

    def _record_collision(
        self, draft: ContactDraft, *, kind: str, reason: str, customer_id: str, actor: Actor | None,
        source: IntakeSource | None, raw: bytes | None, adapter: str = "",
    ) -> NoReturn:
        """Keep the colliding request (once) and refuse it; the error names only the request itself."""
        digest = self.pseudonyms.content_digest_for(draft)
        collision_id = MessageCollision.id_for(
            draft.channel, draft.channel_message_id, content_digest=digest, customer_id=customer_id, source=source
        )
        if self.core.get_optional(collision_id) is None:
            ctx = self.core.context(
                _as_customer(actor, customer_id),
                channel=draft.channel, occurred_at=draft.occurred_at,
                correlation_id=collision_id,  # its own: nothing links it to the other request's events
                causation_id=source.event_id if source else None,
            )
            if raw is None:
                raw = self._intake_codec.encode(draft, adapter=f"direct:{ctx.actor}", published_at=ctx.occurred_at)
            collision = MessageCollision.record(
                channel=draft.channel, channel_message_id=draft.channel_message_id, kind=kind, reason=reason,
                content_digest=digest, raw=raw, customer_id=customer_id, source=source, ctx=ctx,
                adapter=adapter if source is not None else "",
            )
            self.core.record(collision)
        raise MessageIdCollision(
            f"field channel_message_id: this {draft.channel.value} message id is already the id of a different "
            f"request, so this one was not applied; it is kept as collision {collision_id} for an operator "
            "(`caseledger intake collisions`). Send it again with a new channel message id.",
            collision_id=str(collision_id),
        )

    def _quotes_an_erased_case(self, reference: str, customer_id: str) -> bool:
        """Whether ``reference`` names an erased customer's case, not ``customer_id``'s: the first recording of such
        a request opened a new case (:meth:`_record_new_contact`), so a resubmission is not named for that."""
        try:
            case = self.lookups.get_case(reference)
        except NotFound:
            return False
        return case.customer_id != customer_id and self._erased(case.customer_id)

    def _erased(self, customer_id: str) -> bool:
        owner: Any = self.core.get_optional(Customer.id_for(customer_id))
        return owner is not None and bool(owner.erased)

    @cached_property
    def _intake_codec(self) -> IntakeCodec:
        from caseledger.ledger.intake.records import IntakeCodec

        return IntakeCodec()

    def _record_new_contact(
        self, draft: ContactDraft, *, actor: Actor | None, source: IntakeSource | None,
        signed: tuple[str, bytes] | None = None, adapter: str = "",
    ) -> ContactOutcome:
        # Every check first: nothing is triggered until the contact is known to be acceptable.
        customer_id, claim = self._sender_of(draft)
        message_id = self.pseudonyms.message_id_for(draft.channel, draft.channel_message_id)
        ctx = self.core.context(
            _as_customer(actor, customer_id),
            channel=draft.channel,
            occurred_at=draft.occurred_at,
            correlation_id=_correlation(draft, message_id),
            causation_id=source.event_id if source else None,
        )
        case: Case | None = None
        if draft.case_reference is not None:
            # Unknown and another customer's read alike to the sender (code, field, fix): no existence leaks.
            refused = {"field": "case_reference", "code": "case-reference-refused",
                       "fix": "name a case of this customer by the reference the ledger gave (CL-XXXXX-XXXXX), "
                              "or leave case_reference out to open a new case"}
            try:
                case = self.lookups.get_case(draft.case_reference)
            except NotFound as unknown:
                raise NotFound(str(unknown), **refused) from None
            if case.customer_id != customer_id and self._erased(case.customer_id):
                # An erased customer who writes again is a new customer: her old case is no one's, and joining
                # it would tie her new identity to the erased history. A new case, naming nothing of the old.
                case = None
            elif case.customer_id != customer_id:
                raise RuleViolation(
                    f"case {case.reference} belongs to another customer; record the contact without "
                    "a case reference to open a new case", **refused,
                )
        customer = self.core.get_optional(Customer.id_for(customer_id))

        new_claim = None
        if claim is None:
            new_claim = IdentityClaim.claim(
                draft.identity, claim_id=self.pseudonyms.claim_id_for(draft.identity), customer_id=customer_id, ctx=ctx
            )
        if customer is None:
            self.core.data_keys.expect_new(customer_id)
            customer = Customer.register(
                customer_id=customer_id, segment=draft.segment, identity=draft.identity, ctx=ctx
            )
        customer.link_identity(draft.identity, ctx=ctx)
        if draft.locale is not None or draft.time_zone is not None:
            customer.set_locale(locale=draft.locale, time_zone=draft.time_zone, source="intake", ctx=ctx)
        opened = case is None
        if case is None:
            reference = new_reference()
            case = Case.open(
                case_id=case_id_for(reference),
                reference=reference,
                customer_id=customer_id,
                subject=draft.subject or draft.items[0],
                category=draft.category,
                segment=draft.segment,
                ctx=ctx,
            )
            customer.link_case(case_id=case.id, reference=reference, ctx=ctx)
        # Deadlines run from when the ledger recorded the contact, never from when a client says it came.
        respond_by = self.core.policy.respond_by(
            channel=draft.channel.value, category=draft.category or case.category, received_at=ctx.recorded_at
        )
        acknowledge_by = self.core.policy.acknowledge_by(channel=draft.channel.value, received_at=ctx.recorded_at)
        issuer = self.core.receipts
        receipts = _IssuedReceipts(issuer) if issuer is not None else None
        contact_id, ack_id = case.receive_contact(
            draft, ctx=ctx, respond_by=respond_by, acknowledge_by=acknowledge_by,
            writer=self.core.writer_for(customer, draft.channel.value),
            in_writing=self.core.policy.acknowledge_spoken_in_writing, receipts=receipts,
        )
        message = ChannelMessage.register(
            message_id=message_id,
            channel=draft.channel,
            channel_message_id=draft.channel_message_id,
            case_id=case.id,
            reference=case.reference,
            contact_id=contact_id,
            acknowledgement_id=ack_id,
            content_digest=self.pseudonyms.content_digest_for(draft),
            customer_id=customer_id,
            ctx=ctx,
            intake_signature=signed[0] if signed else None,
            signed_record=signed[1] if signed else b"",
            source=source,
            adapter=adapter if source is not None else "",
        )
        self.core.record(case, message, customer, new_claim)
        return self._outcome(case, contact_id=contact_id, duplicate=False, opened=opened,
                             receipt=receipts.issued.get(contact_id) if receipts is not None else None)

    def reject_intake(self, source: IntakeSource, *, reason: str, raw: bytes, kind: str = "unknown",
                      sender: Identity | None = None, adapter: str = "",
                      public_reason: dict[str, str] | None = None) -> None:
        """Record that an intake record could not be applied: where it was, why, and its bytes.

        A record that names its ``sender`` (a contact that decoded) is kept under the sender's customer
        id, so that their key seals it and erasing them (by identity) or retention reaches it; any
        other is kept under its month's key. ``reason`` is sealed (it may quote the record);
        ``public_reason`` (code, field, fix: no value of the record) is what the ``adapter`` that sent it reads.
        """
        self.pseudonyms.settle_generation()  # a fresh ledger's first event may be a rejection
        with self.core.command_scope():
            ctx = self.core.context(SYSTEM, causation_id=source.event_id)
            customer_id = ""
            if sender is not None:
                claim = self.pseudonyms.find_claim(sender)
                customer_id = claim.customer_id if claim is not None else self.pseudonyms.customer_id_for(sender)
            rejection = IntakeRejection.reject(source, reason=reason, raw=raw, kind=kind, ctx=ctx,
                                               customer_id=customer_id, adapter=adapter, public_reason=public_reason)
            self.core.record(rejection)

    def _outcome_of(self, message: ChannelMessage) -> ContactOutcome:
        case: Case = self.core.load(message.case_id)
        ack_id = case.contacts[message.contact_id].acknowledgement_id
        found = _RECEIPT.search(case.messages[ack_id].text or "") if ack_id in case.messages else None
        receipt = found.group(0) if found else None
        if receipt is None and self.core.receipts is not None:
            try:
                receipt = self.contact_receipt(case.reference, message.contact_id)
            except NotFound:
                receipt = None
        return self._outcome(case, contact_id=message.contact_id, duplicate=True, opened=False, receipt=receipt)

    def contact_receipt(self, reference: str, contact_id: str = "C1") -> str:
        """The signed receipt of a recorded contact, signed again from its stored event (the same bytes as when it
        was recorded: Ed25519 is deterministic).

        Refused when the ledger has no signing key, when the contact has none (recorded before receipts) or when
        its customer was erased (the salt is gone: only the customer's own copy remains).
        """
        issuer = self.core.receipts
        if issuer is None:
            raise NotFound(
                "this ledger signs no receipts: it has no signing key (an operator sets CASELEDGER_SIGNING_KEY_FILE "
                "to a key made by `caseledger keys init`, docs/audit.md)")
        case = self._case_with_contact(reference, contact_id)
        with translate_errors(self.core.settings.store.describe()):
            stored = self.core.recorder.select_events_after([case.id]).get(case.id, [])
            self.core.preload_keys(bytes(e.state) for e in stored)
        try:
            for stored_event in stored:
                if name_of_topic(stored_event.topic) != "ContactReceived":
                    continue
                event: Any = self.core.mapper.to_domain_event(stored_event)
                if event.contact_id != contact_id:
                    continue
                salt = salt_of(event.receipt_salt)
                if salt is None:
                    raise NotFound(
                        f"contact {contact_id} of case {case.reference} has no receipt the ledger can sign again: it "
                        "was recorded before receipts or without a signing key, or its customer was erased (the "
                        "receipt's salt went with their data; the customer's own copy still verifies)")
                return issuer.sign(reference=case.reference, contact_id=contact_id, received_at=event.timestamp,
                                   salt=salt, event=event, event_hash=hashlib.sha256(stored_event.state).digest())
        finally:
            if not self.core.in_unit_of_work:  # a batch's keys and unsaved lookup secrets go when it is saved
                self.core.data_keys.forget()
        raise NotFound(f"contact {contact_id} of case {case.reference} is not in the store yet; retry")

    def _case_with_contact(self, reference: str, contact_id: str) -> Case:
        """The case ``reference`` names, refused (NotFound) unless it holds ``contact_id``."""
        case: Case = self.lookups.get_case(reference)
        if contact_id not in case.contacts:
            raise NotFound(f"case {case.reference} has no contact {contact_id}; its contacts: "
                           f"{', '.join(case.contacts) or 'none'}")
        return case

    def contact_receipt_proof(self, reference: str, contact_id: str = "C1",
                              tree_size: int | None = None) -> dict[str, Any]:
        """The contact's leaf index and inclusion proof against the latest signed checkpoint (or the one of
        ``tree_size``), with that checkpoint: what proves its receipt in the log offline.

        Read from the stored event's bytes, never opened: an erased customer's receipt is still proved."""
        from caseledger.ledger.transparency.receipt_proofs import inclusion_document

        if tree_size is not None and tree_size < 0:
            raise ValidationError(f"field tree_size: {tree_size} is not a tree size; give a checkpoint's size "
                                  "(0 or more), or none for the latest")
        case = self._case_with_contact(reference, contact_id)
        with translate_errors(self.core.settings.store.describe()):
            stored = self.core.recorder.select_events_after([case.id]).get(case.id, [])
            for stored_event in stored:
                name = name_of_topic(stored_event.topic)
                if name != "ContactReceived" or \
                        self.core.codec.decode_record(name, bytes(stored_event.state)).get("contact_id") != contact_id:
                    continue
                return inclusion_document(
                    self.core, reference=case.reference, contact_id=contact_id, case_id=case.id,
                    version=stored_event.originator_version, event_hash=hashlib.sha256(stored_event.state).digest(),
                    tree_size=tree_size)
        raise NotFound(f"contact {contact_id} of case {case.reference} is not in the store yet; retry")

    @staticmethod
    def _outcome(case: Case, *, contact_id: str, duplicate: bool, opened: bool,
                 receipt: str | None = None) -> ContactOutcome:
        contact = case.contacts[contact_id]
        ack_id = contact.acknowledgement_id
        assert ack_id is not None and contact.respond_by is not None
        return ContactOutcome(
            reference=case.reference,
            case_id=case.id,
            customer_id=case.customer_id,
            contact_id=contact_id,
            acknowledgement_id=ack_id,
            acknowledgement=case.messages[ack_id].text or "",
            respond_by=contact.respond_by,
            duplicate=duplicate,
            opened_case=opened,
            receipt=receipt,
        )
