"""Directory aggregates: how a case is found by channel message, customer or identity.

Each is a name-based aggregate (its id is a UUID5 of what it indexes; for an identity claim and a
channel message, of a keyed hash of it, see ``caseledger.ledger.privacy.pseudonyms``), created in
the same transaction as the case events it points to. Two concurrent writers of the same channel
message therefore collide on the store's unique (id, version) key: one wins, the other is
told the message is already recorded. That is what makes intake idempotent on
(channel, channel message id) without a separate lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from caseledger.ledger.domain.events import Context, LedgerEvent, envelope
from caseledger.ledger.domain.personal import unless_erased
from caseledger.ledger.domain.texts import check_time_zone
from caseledger.ledger.domain.values import Channel, Identity, check_locale

_NAMESPACE = uuid5(NAMESPACE_URL, "https://caseledger.invalid/ids")


@lru_cache(maxsize=1 << 16)
def name_id(name: str) -> UUID:
    """The name-based id of a directory entry or case (cached: one contact asks several times)."""
    return uuid5(_NAMESPACE, name)


def case_id_for(reference: str) -> UUID:
    """A case's id is derived from its reference, so a reference finds its case directly."""
    return name_id(f"case:{reference.strip().upper()}")


class ChannelMessage(Aggregate):
    """A message a channel delivered to us, identified by the channel's own message id."""

    if TYPE_CHECKING:  # set by MessageRegistered.apply
        case_id: UUID
        customer_id: str
        reference: str
        contact_id: str
        acknowledgement_id: str
        channel: str | None
        channel_message_id: str
        content_digest: str
        resubmissions: int
        chain_head: bytes | None

    class MessageRegistered(LedgerEvent, Aggregate.Created):
        case_id: UUID
        channel_message_id: str
        reference: str
        contact_id: str
        acknowledgement_id: str
        content_digest: str  # what makes a resubmission the same request ("" before it was kept)
        intake_signature: str | None  # ADAPTER:BASE64(signature) of the signed intake record, if it was signed
        signed_record: bytes  # the bytes that signature covers (sealed: personal data), b"" when unsigned
        source: str  # the intake record topic/partition/offset; "" when recorded directly
        adapter: str  # the adapter that sent that record (the outcomes topic's key); "" when recorded directly

        def apply(self, message: ChannelMessage) -> None:
            message.case_id = self.case_id
            message.customer_id = self.customer_id
            message.reference = self.reference
            message.contact_id = self.contact_id
            message.acknowledgement_id = self.acknowledgement_id
            message.channel = self.channel
            message.channel_message_id = self.channel_message_id
            message.content_digest = self.content_digest
            message.resubmissions = 0
            message.chain_head = None

    class ResubmissionTraced(LedgerEvent):
        case_id: UUID
        source: str
        # What the original request was recorded as: its verdict needs nothing but this event.
        reference: str
        contact_id: str
        acknowledgement_id: str
        adapter: str

        def apply(self, message: ChannelMessage) -> None:
            message.resubmissions += 1

    def trace_resubmission(self, *, source: str, ctx: Context, adapter: str = "") -> None:
        """The same channel message arrived again: nothing is recorded twice, but the arrival is."""
        self.trigger_event(
            ChannelMessage.ResubmissionTraced,
            case_id=self.case_id,
            source=source,
            reference=self.reference,
            contact_id=self.contact_id,
            acknowledgement_id=self.acknowledgement_id,
            adapter=adapter,
            **envelope(ctx, customer_id=self.customer_id, channel=Channel(self.channel) if self.channel else None),
        )

    @staticmethod
    def id_for(channel: Channel, channel_message_id: str) -> UUID:
        """The name-based id registrations had before they were keyed (intake's ``message_id_for`` names new ones)."""
        return name_id(f"message:{channel.value}:{channel_message_id}")

    @classmethod
    def register(
        cls,
        *,
        channel: Channel,
        channel_message_id: str,
        case_id: UUID,
        reference: str,
        contact_id: str,
        acknowledgement_id: str,
        content_digest: str,
        customer_id: str,
        ctx: Context,
        intake_signature: str | None = None,
        signed_record: bytes = b"",
        message_id: UUID | None = None,
        source: IntakeSource | None = None,
        adapter: str = "",
    ) -> ChannelMessage:
        """A new registration, under ``message_id`` (keyed, see ``Pseudonyms``; name-based when not given)."""
        return cls._create(
            cls.MessageRegistered,
            id=message_id or cls.id_for(channel, channel_message_id),
            case_id=case_id,
            channel_message_id=channel_message_id,
            reference=reference,
            contact_id=contact_id,
            acknowledgement_id=acknowledgement_id,
            content_digest=content_digest,
            intake_signature=intake_signature,
            signed_record=signed_record,
            source=str(source) if source is not None else "",
            adapter=adapter,
            **envelope(ctx, customer_id=customer_id, channel=channel),
        )


class MessageCollision(Aggregate):
    """A request that came with a channel message id another request already has: kept, not applied.

    A channel's message ids collide in real life (a form plugin reset, two mailboxes, a reused
    ticket number). The first request keeps the id; the colliding one is recorded here with its
    raw bytes and the reason, under its own sender's customer id, and never names the first
    request's case or customer.
    """

    if TYPE_CHECKING:  # set by MessageIdCollided.apply
        customer_id: str
        reason: str
        chain_head: bytes | None

    class MessageIdCollided(LedgerEvent, Aggregate.Created):
        source: str  # topic/partition/offset of the intake record; "" when recorded directly
        channel_message_id: str
        kind: str  # identity (another sender) | case (another case named) | content (another request)
        reason: str
        content_digest: str
        raw: bytes  # the request as an intake record (Avro), exactly as received through the topic
        adapter: str  # the adapter that sent it through the intake topic; "" when recorded directly

        def apply(self, collision: MessageCollision) -> None:
            collision.customer_id = self.customer_id
            collision.reason = self.reason
            collision.chain_head = None

    @staticmethod
    def id_for(
        channel: Channel, channel_message_id: str, *, content_digest: str, customer_id: str,
        source: IntakeSource | None,
    ) -> UUID:
        """One collision per intake record, or per distinct request recorded directly."""
        if source is not None:
            return name_id(f"collision:{source}")
        return name_id(f"collision:{channel.value}:{channel_message_id}:{customer_id}:{content_digest}")

    @classmethod
    def record(
        cls,
        *,
        channel: Channel,
        channel_message_id: str,
        kind: str,
        reason: str,
        content_digest: str,
        raw: bytes,
        customer_id: str,
        source: IntakeSource | None,
        ctx: Context,
        adapter: str = "",
    ) -> MessageCollision:
        return cls._create(
            cls.MessageIdCollided,
            id=cls.id_for(
                channel, channel_message_id, content_digest=content_digest, customer_id=customer_id, source=source
            ),
            source=str(source) if source is not None else "",
            channel_message_id=channel_message_id,
            kind=kind,
            reason=reason,
            content_digest=content_digest,
            raw=raw,
            adapter=adapter,
            **envelope(ctx, customer_id=customer_id, channel=channel),
        )


class Customer(Aggregate):
    """A customer: the identities they were known by and their cases, in order."""

    if TYPE_CHECKING:  # set by CustomerRegistered.apply
        customer_id: str
        segment: str | None
        identities: list[str]
        cases: list[str]
        locale: str | None  # the customer's own choice for their texts (None: the policy's default)
        time_zone: str | None
        chain_head: bytes | None
        hold: str | None  # the reason of the legal hold in force, if any
        erased_keys: list[str]  # every data key an erasure destroyed
        erased_claims: list[str]  # the identity claims of erased identities (their ids)

    @property
    def erased(self) -> bool:
        """Every identity of the customer was erased (nothing personal of theirs can be opened any more)."""
        return not self.identities and bool(self.erased_keys or self.erased_claims)

    class CustomerRegistered(LedgerEvent, Aggregate.Created):
        segment: str | None
        identity: dict[str, str] | None  # the first identity; history before it has IdentityLinked

        def apply(self, customer: Customer) -> None:
            customer.customer_id = self.customer_id
            customer.segment = self.segment
            first = self.identity
            customer.identities = [f"{first['kind']}:{first['value']}"] if first else []
            customer.cases = []
            customer.locale = None
            customer.time_zone = None
            customer.chain_head = None
            customer.hold = None
            customer.erased_keys = []
            customer.erased_claims = []

    class IdentityLinked(LedgerEvent):
        identity: dict[str, str]

        def apply(self, customer: Customer) -> None:
            customer.identities.append(f"{self.identity['kind']}:{self.identity['value']}")

    class CaseLinked(LedgerEvent):
        case_id: UUID
        reference: str

        def apply(self, customer: Customer) -> None:
            customer.cases.append(self.reference)

    class CustomerErased(LedgerEvent):
        """The customer's personal data was erased: their data keys destroyed (art. 17 GDPR)."""

        reason: str  # why (a request, the retention policy): kept in clear, write no personal data in it
        key_ids: list[str]  # the data keys destroyed
        claim_ids: list[str]  # the customer's identity claims, found from now on by these ids only

        def apply(self, customer: Customer) -> None:
            customer.erased_keys.extend(self.key_ids)
            customer.erased_claims.extend(self.claim_ids)
            customer.identities = []
            # Their own choices were personal data too: a customer who writes again gets the defaults,
            # never the erased values (nor an "[erased]" marker where a zone or locale is expected).
            customer.locale = None
            customer.time_zone = None

    class LegalHoldPlaced(LedgerEvent):
        """The customer's data must be kept (a legal obligation or claim, art. 17(3)): no erasure until released."""

        reason: str

        def apply(self, customer: Customer) -> None:
            customer.hold = self.reason

    class LegalHoldReleased(LedgerEvent):
        reason: str

        def apply(self, customer: Customer) -> None:
            customer.hold = None

    class CustomerLocaleSet(LedgerEvent):
        locale: str | None  # None: back to the policy's default
        time_zone: str | None
        source: str  # "intake" (the contact said so) or "command" (an agent or the customer set it)

        def apply(self, customer: Customer) -> None:
            customer.locale = self.locale
            customer.time_zone = self.time_zone

    @staticmethod
    def id_for(customer_id: str) -> UUID:
        return name_id(f"customer:{customer_id}")

    def record_erasure(self, *, reason: str, key_ids: list[str], claim_ids: list[str], ctx: Context) -> None:
        """Record that these keys were destroyed; the caller has checked there is no hold."""
        self.trigger_event(
            Customer.CustomerErased, reason=reason, key_ids=key_ids, claim_ids=claim_ids,
            **envelope(ctx, customer_id=self.customer_id),
        )

    def place_hold(self, *, reason: str, ctx: Context) -> None:
        self.trigger_event(Customer.LegalHoldPlaced, reason=reason, **envelope(ctx, customer_id=self.customer_id))

    def release_hold(self, *, reason: str, ctx: Context) -> None:
        self.trigger_event(Customer.LegalHoldReleased, reason=reason, **envelope(ctx, customer_id=self.customer_id))

    @classmethod
    def register(
        cls, *, customer_id: str, segment: str | None, ctx: Context, identity: Identity | None = None
    ) -> Customer:
        """A new customer, known by ``identity`` from the start (one event, not two)."""
        return cls._create(
            cls.CustomerRegistered,
            id=cls.id_for(customer_id),
            segment=segment,
            identity=identity.as_record() if identity is not None else None,
            **envelope(ctx, customer_id=customer_id),
        )

    def link_identity(self, identity: Identity, *, ctx: Context) -> None:
        if str(identity) not in self.identities:
            self.trigger_event(
                Customer.IdentityLinked,
                identity=identity.as_record(),
                **envelope(ctx, customer_id=self.customer_id),
            )

    def set_locale(self, *, locale: str | None, time_zone: str | None, source: str, ctx: Context) -> bool:
        """Record the locale and time zone of the customer's texts; False when nothing changes.

        ``locale``/``time_zone`` None keep the current value; the empty string returns it to the
        policy's default.
        """
        # What was erased is no choice to keep (and never a value to record again): the default.
        current = (unless_erased(self.locale), unless_erased(self.time_zone))
        new_locale = current[0] if locale is None else (check_locale(locale) if locale else None)
        new_zone = current[1] if time_zone is None else (check_time_zone(time_zone) if time_zone else None)
        if (new_locale, new_zone) == (self.locale, self.time_zone):
            return False
        self.trigger_event(
            Customer.CustomerLocaleSet, locale=new_locale, time_zone=new_zone, source=source,
            **envelope(ctx, customer_id=self.customer_id),
        )
        return True

    def link_case(self, *, case_id: UUID, reference: str, ctx: Context) -> None:
        self.trigger_event(
            Customer.CaseLinked,
            case_id=case_id,
            reference=reference,
            **envelope(ctx, customer_id=self.customer_id),
        )


class IdentityClaim(Aggregate):
    """Which customer an identity (email, phone, handle, account) belongs to."""

    if TYPE_CHECKING:  # set by IdentityClaimed.apply
        customer_id: str
        identity: str
        chain_head: bytes | None

    class IdentityClaimed(LedgerEvent, Aggregate.Created):
        identity: dict[str, str]

        def apply(self, claim: IdentityClaim) -> None:
            claim.customer_id = self.customer_id
            claim.identity = f"{self.identity['kind']}:{self.identity['value']}"
            claim.chain_head = None

    @staticmethod
    def id_for(identity: Identity) -> UUID:
        """The name-based id claims had before they were keyed (the application's ``claim_id_for``)."""
        return name_id(f"identity:{identity}")

    @classmethod
    def claim(cls, identity: Identity, *, claim_id: UUID, customer_id: str, ctx: Context) -> IdentityClaim:
        return cls._create(
            cls.IdentityClaimed,
            id=claim_id,
            identity=identity.as_record(),
            **envelope(ctx, customer_id=customer_id),
        )


@dataclass(frozen=True)
class IntakeSource:
    """Where an intake record was read: topic, partition, offset."""

    topic: str
    partition: int
    offset: int

    @property
    def event_id(self) -> UUID:
        """The causation id of every event the record led to (its accounting key)."""
        return uuid5(_NAMESPACE, f"intake:{self}")

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


class IntakeRejection(Aggregate):
    """An intake record the ledger could not apply, kept with its reason and raw bytes."""

    if TYPE_CHECKING:  # set by IntakeRejected.apply
        reason: str
        chain_head: bytes | None

    class IntakeRejected(LedgerEvent, Aggregate.Created):
        source_topic: str
        source_partition: int
        source_offset: int
        kind: str
        reason: str  # sealed: it may quote the record
        raw: bytes
        adapter: str  # the adapter that sent the record, as far as it could be read; "" when unknown
        public_reason: dict[str, str] | None  # code, field, fix: what the adapter reads (never a value)

        def apply(self, rejection: IntakeRejection) -> None:
            rejection.reason = self.reason
            rejection.chain_head = None

    @classmethod
    def reject(cls, source: IntakeSource, *, reason: str, raw: bytes, kind: str, ctx: Context,
               customer_id: str = "", adapter: str = "", public_reason: dict[str, str] | None = None
               ) -> IntakeRejection:
        """``customer_id``: the sender's, when the record names one (its bytes are then sealed under their key)."""
        return cls._create(
            cls.IntakeRejected,
            id=source.event_id,
            source_topic=source.topic,
            source_partition=source.partition,
            source_offset=source.offset,
            kind=kind,
            reason=reason,
            raw=raw,
            adapter=adapter,
            public_reason=public_reason,
            **envelope(ctx, customer_id=customer_id),
        )
