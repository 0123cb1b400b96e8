"""The intake worker: applies every record of the intake topic to the ledger, exactly once.

Positions are not kept in a consumer group but in the ledger's own store, as tracking records
(``intake/<topic>/<partition>`` → next offset), written in the same transaction as the events the
records produced. A crash at any point therefore either loses the whole batch (it is read
again) or keeps it with its position (it is never applied twice).

Workers share the topic through Kafka's consumer group (cooperative rebalancing on confluent-kafka,
eager on kafka-python): when one dies, the group hands its partitions to the others once its
session times out. The group only says who reads what: a partition handed to a worker is read
from the position the ledger recorded, and a batch is saved only if that position has not moved
since (another worker that owned the partition meanwhile), so an offset is never applied twice
whoever believed they owned it. ``partitions`` instead assigns a fixed share (no group).

Each record ends as ledger events or, when it cannot be applied, as an ``IntakeRejected`` event
carrying its source, reason and raw bytes — never skipped silently.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import Tracking

from caseledger.ledger.application import CaseLedger, normalise_reference
from caseledger.ledger.domain.directory import (
    Customer,
    IntakeSource,
    case_id_for,
)
from caseledger.ledger.domain.permissions import Authentication
from caseledger.ledger.domain.values import SYSTEM, Actor, ActorKind, ContactDraft, Identity
from caseledger.ledger.errors import (
    BackendError,
    ConfigurationError,
    ConflictError,
    MessageIdCollision,
    NotFound,
    PermissionDenied,
    RuleViolation,
    SchemaError,
    ValidationError,
)
from caseledger.ledger.intake.delivery_reports import Reporter
from caseledger.ledger.intake.records import DeliveryReport, IntakeCodec, ReadReceipt, kind_of
from caseledger.ledger.intake.signatures import ADAPTER_HEADER, SIGNATURE_HEADER, SignatureCheck, b64, header
from caseledger.ledger.intake.validation import validate_intake
from caseledger.ledger.intake.verdicts import public_reason
from caseledger.ledger.kafka.clients import DEFAULT_CLIENT, KafkaClient
from caseledger.ledger.kafka.ports import Build, PartitionReader
from caseledger.ledger.runtime.gc_pacing import NO_PACING, Pacing
from caseledger.ledger.settings import KafkaSettings

log = logging.getLogger("caseledger.intake")
REFUSALS = (ValidationError, RuleViolation, NotFound, SchemaError, PermissionDenied)
AGGREGATE_CACHE = 20_000  # aggregates kept between batches: ~27 MiB measured for customers, claims, 1-contact cases


@dataclass
class IntakeStats:
    """What the worker did so far."""

    records: int = 0
    contacts: int = 0
    duplicates: int = 0
    collisions: int = 0
    reports: int = 0
    rejected: int = 0
    batches: int = 0
    conflicts: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        rate = self.records / max(time.monotonic() - self.started, 1e-9)
        return (
            f"{self.records} records ({rate:.0f}/s): {self.contacts} contacts, {self.duplicates} resubmissions, "
            f"{self.collisions} collisions, {self.reports} reports, {self.rejected} rejected; {self.batches} batches"
        )


def tracking_name(topic: str, partition: int) -> str:
    return f"intake/{topic}/{partition}"


@dataclass(frozen=True)
class IntakeRecord:
    """One record of the intake topic, whichever client read it."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: object = None  # the adapter's signature travels in headers (ledger.signing)


def intake_records(topic: str) -> Build[IntakeRecord]:
    """How a reader of the intake topic builds the worker's records."""

    def intake_record(partition: int, offset: int, key: bytes | None, value: bytes | None, headers: object,
                      timestamp: int) -> IntakeRecord:
        return IntakeRecord(topic, partition, offset, value, headers)

    return intake_record


def by_partition(records: list[IntakeRecord]) -> dict[int, list[IntakeRecord]]:
    """Records of one fetch grouped by partition, each partition's in offset order."""
    polled: dict[int, list[IntakeRecord]] = {}
    for record in records:
        polled.setdefault(record.partition, []).append(record)
    return polled


class KafkaIntakeWorker:
    """Consumes the intake topic and records each record's outcome in the ledger."""

    def __init__(
        self,
        ledger: CaseLedger,
        settings: KafkaSettings,
        *,
        batch_size: int = 500,
        poll_timeout_ms: int = 200,
        records_per_transaction: int = 120,
        partitions: list[int] | None = None,
        consumer: str = DEFAULT_CLIENT,
        aggregate_cache: int = AGGREGATE_CACHE,
        require_signatures: bool | None = None,
        session_timeout_ms: int | None = None,
    ) -> None:
        self._kafka = KafkaClient(consumer, "consumer")
        self.consumer = self._kafka.name
        if aggregate_cache < 0:
            raise ConfigurationError(f"aggregate cache of {aggregate_cache}: give 0 (none) or more aggregates")
        self.ledger = ledger
        # Customers, their identity claims and open cases come back with every new contact: keep
        # them between batches instead of replaying their whole history each time.
        ledger.keep_aggregates(aggregate_cache)
        # None: the partitions the consumer group gives this worker (all of them when it is alone).
        # Otherwise a fixed share: workers so started share a topic by taking disjoint partitions.
        self.partitions = sorted(set(partitions)) if partitions is not None else None
        # How long the group waits for a silent worker (killed) before handing its partitions to the others.
        self.session_timeout_ms = session_timeout_ms or settings.session_timeout_ms
        self.settings = settings
        self.batch_size = batch_size
        # A contact makes ~5–8 events. eventsourcing's PostgreSQL recorder inserts a transaction's
        # events in one psycopg pipeline, which was seen to stall for good with ~7000 events; 120
        # records (≈1000 events) per transaction is where batching already pays off fully.
        self.records_per_transaction = records_per_transaction
        self.poll_timeout_ms = poll_timeout_ms
        self.codec = IntakeCodec()
        # None: signatures are required once an adapter key is registered (ledger.signing).
        self.signatures = SignatureCheck(ledger.storage.adapter_keys(), required=require_signatures)
        # (partition, offset) → the adapter that signed it, and its signature (kept with the contact)
        self._signers: dict[tuple[int, int], tuple[str, bytes]] = {}
        # (partition, offset) → the adapter the record names (its verdict's key), as far as it could be read
        self._adapters: dict[tuple[int, int], str] = {}
        self.stats = IntakeStats()
        self._applied: dict[int, int] = {}  # partition → next offset, as last read or written

    # -- positions ------------------------------------------------------------------------------------

    def next_offset(self, partition: int) -> int:
        """The first offset of ``partition`` not yet applied (tracking stores offset + 1)."""
        return self.ledger.recorder.max_tracking_id(tracking_name(self.settings.intake_topic, partition)) or 0

    # -- running --------------------------------------------------------------------------------------

    def run(
        self, stop: threading.Event, *, on_batch: Callable[[IntakeStats], None] | None = None,
        pacer: Pacing = NO_PACING,
    ) -> IntakeStats:
        """Consume until ``stop`` is set, reporting each batch to the process's ``pacer`` (thousands of cached
        aggregates: no full collection per batch). Safe to kill at any moment."""
        opened = self._kafka.open_reader(self.settings, topic=self.settings.intake_topic, group="intake",
                                         fetch_wait_ms=self.poll_timeout_ms, on_lost_position="earliest")
        build = intake_records(self.settings.intake_topic)
        with opened as reader:
            partitions = self._wait_for_partitions(reader, stop)
            if self.partitions is not None and partitions:
                unknown = sorted(set(self.partitions) - set(partitions))
                if unknown:
                    raise BackendError(
                        f"intake topic {self.settings.intake_topic} has partitions {partitions}; "
                        f"no partition {', '.join(map(str, unknown))}"
                    )
                partitions = self.partitions
            grouped = self.partitions is None
            if grouped:
                reader.subscribe(self._assigned, self._revoked, session_timeout_ms=self.session_timeout_ms)
                log.info("intake worker consuming %s through its consumer group (%s consumer)", self.settings.intake_topic,
                         self.consumer)
            else:
                reader.assign({p: self.next_offset(p) for p in partitions})
                log.info("intake worker consuming %s partitions %s (%s consumer)", self.settings.intake_topic,
                         partitions, self.consumer)
            while not stop.is_set():
                polled = by_partition(reader.fetch(self.batch_size, self.poll_timeout_ms / 1000, build))
                if grouped:  # records fetched before a partition was revoked are its new owner's now
                    owned = reader.assigned()
                    polled = {p: records for p, records in polled.items() if p in owned}
                if sum(map(len, polled.values())) <= self.records_per_transaction:
                    self.apply_polled(polled)  # a trickle from several partitions: one transaction
                else:
                    for partition, records in polled.items():
                        for i in range(0, len(records), self.records_per_transaction):
                            self.apply_batch(partition, records[i : i + self.records_per_transaction])
                if polled:
                    if on_batch:
                        on_batch(self.stats)
                    pacer.after_batch()
        return self.stats

    def _assigned(self, partitions: list[int]) -> dict[int, int]:
        """The group gave this worker ``partitions``: each is read from where the ledger recorded it."""
        positions = {p: self.next_offset(p) for p in partitions}
        self._applied.update(positions)
        log.info("intake worker assigned %s partitions %s", self.settings.intake_topic, sorted(partitions))
        return positions

    def _revoked(self, partitions: list[int]) -> None:
        """``partitions`` went to another worker: forget their positions (read again if they come back)."""
        for partition in partitions:
            self._applied.pop(partition, None)
        log.info("intake worker gave up %s partitions %s", self.settings.intake_topic, sorted(partitions))

    def _wait_for_partitions(self, reader: PartitionReader, stop: threading.Event) -> list[int]:
        deadline = time.monotonic() + 60
        while not stop.is_set():
            partitions = reader.partitions()
            if partitions:
                return partitions
            if time.monotonic() > deadline:
                raise BackendError(
                    f"intake topic {self.settings.intake_topic} does not exist; create it with "
                    "`caseledger topics create`"
                )
            time.sleep(0.5)
        return []

    # -- applying -------------------------------------------------------------------------------------

    def apply_batch(self, partition: int, records: list[Any]) -> None:
        """Apply consecutive records of one partition in one transaction, with their position."""
        self.apply_polled({partition: records})

    def apply_polled(self, polled: dict[int, list[Any]]) -> None:
        """Apply what one poll brought, in one transaction with each partition's new position.

        Records of each partition are consecutive. A worker reading several partitions at a
        steady trickle gets a few records from each per poll; one transaction for all of them
        instead of one per partition saves ~1 ms of CPU per transaction.
        """
        topic = self.settings.intake_topic
        fresh: dict[int, list[Any]] = {}
        expect: dict[str, int] = {}  # each partition's position as this batch starts from it
        for partition, records in polled.items():
            if not records:
                continue
            # A redelivery after a crash or a rebalance: drop what is already applied. The position
            # is read from the store once, then followed here (a stale one only costs a conflict).
            first = self._applied.get(partition)
            if first is None:
                first = self._applied[partition] = self.next_offset(partition)
            records = [r for r in records if r.offset >= first]
            if records:
                fresh[partition] = records
                expect[tracking_name(topic, partition)] = first
        if not fresh:
            return
        trackings = [Tracking(application_name=tracking_name(topic, partition), notification_id=records[-1].offset + 1)
                     for partition, records in fresh.items()]
        everything = [record for records in fresh.values() for record in records]
        before = dataclasses.replace(self.stats)
        try:
            decoded = [self._decode(record) for record in everything]
            # Saved only if no other worker moved these partitions meanwhile (a rebalance, a worker
            # the group took for dead): an offset is never applied twice, whoever believes they own it.
            with self.ledger.unit_of_work(trackings, expect=expect):
                wanted, reported = self._lookups(decoded)
                self.ledger.prefetch(wanted, sealed=reported)
                for record, message in zip(everything, decoded, strict=True):
                    self._apply(record, message)
            self.stats.batches += 1
            self.stats.records += len(everything)
            for partition, records in fresh.items():
                self._applied[partition] = records[-1].offset + 1
        except ConflictError:
            # An agent changed a case of this batch meanwhile (or another worker applied it):
            # apply the records one by one, each with its own position.
            for partition in fresh:
                self._applied.pop(partition, None)
            self.stats = before
            self.stats.conflicts += 1
            for partition, records in fresh.items():
                for record in records:
                    self._apply_alone(partition, record)

    def _decode(self, record: Any) -> Any:
        """The record's message, or the refusal to record for it (decoded once per batch)."""
        raw: bytes = record.value or b""
        where = (record.partition, record.offset)
        named = header(getattr(record, "headers", None), ADAPTER_HEADER)
        if named is not None:  # an undecodable record's verdict still reaches the adapter that signed it
            self._adapters[where] = named.decode("utf-8", "replace")
        try:
            if not raw:
                raise ValidationError("empty intake record (no value)")
            adapter, message = self.codec.decode(raw)
            self._adapters[where] = adapter
            channel = message.channel.value if isinstance(message, ContactDraft) else None
            signer = self.signatures.signer(raw, getattr(record, "headers", None), adapter_field=adapter,
                                            channel=channel)
            if signer is not None:
                signature = header(getattr(record, "headers", None), SIGNATURE_HEADER) or b""
                self._signers[where] = (signer, signature)
            return message
        except REFUSALS as refusal:
            return refusal

    def _lookups(self, decoded: list[Any]) -> tuple[set[Any], set[Any]]:
        """The aggregates the records of a batch will load (directory entries and referenced cases), and those of
        them only reported on: a delivery report or read receipt reads none of its case's texts, so its case is
        replayed with them sealed (no data key read, nothing decrypted: two thirds of a report's cost)."""
        ids: set[Any] = set()
        reported: set[Any] = set()
        drafts = [m for m in decoded if isinstance(m, ContactDraft)]
        if drafts:  # every draft's lookup secrets in one query, then its aggregates with the others'
            self.ledger.pseudonyms.prefetch([d.identity for d in drafts], [(d.channel, d.channel_message_id) for d in drafts],
                                            make=True)
        subjects = []
        for message in decoded:
            if isinstance(message, ContactDraft):
                ids.update(self.ledger.intake.contact_lookups(message))
                subjects.append(message.customer_id or self.ledger.pseudonyms.customer_id_for(message.identity))
            elif isinstance(message, DeliveryReport | ReadReceipt):
                reported.add(case_id_for(normalise_reference(message.case_reference)))
        ids.update(self._readers_lookups(decoded))
        if subjects:  # the data keys their events are sealed with, in one query (not one per contact)
            self.ledger.data_keys.prefetch(subjects)
        return ids | reported, reported - ids

    def _readers_lookups(self, decoded: list[Any]) -> set[Any]:
        """What naming the batch's read receipts' readers will load (:meth:`_customer_named`): their identities'
        secrets in one query, and the customers and claims they may name — not one round trip per receipt."""
        readers = {m.reader.id for m in decoded if isinstance(m, ReadReceipt) and m.reader.kind is ActorKind.CUSTOMER}
        identities = []
        for reader in readers:
            with contextlib.suppress(ValidationError):  # else a customer id: loaded below
                identities.append(Identity.parse(reader))
        if identities:
            self.ledger.pseudonyms.prefetch(identities)
        return {Customer.id_for(reader) for reader in readers} | {
            claim for identity in identities for claim in self.ledger.pseudonyms.claim_ids_for(identity)}

    def _apply_alone(self, partition: int, record: Any) -> None:
        name = tracking_name(self.settings.intake_topic, partition)
        for attempt in range(20):
            position = self.next_offset(partition)
            if position > record.offset:
                return  # applied meanwhile by another worker
            before = dataclasses.replace(self.stats)
            try:
                with self.ledger.unit_of_work(Tracking(application_name=name, notification_id=record.offset + 1),
                                              expect={name: position}):
                    self._apply(record, self._decode(record))
                self.stats.records += 1
                self.stats.batches += 1
                return
            except ConflictError:
                self.stats = before
                time.sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))
        raise ConflictError(f"intake record {name}@{record.offset} kept conflicting; the worker will retry it")

    def _apply(self, record: Any, message: Any) -> None:
        source = IntakeSource(record.topic, record.partition, record.offset)
        raw: bytes = record.value or b""
        kind = "unknown"
        signed = self._signers.pop((record.partition, record.offset), None)
        signer = signed[0] if signed is not None else None
        adapter = self._adapters.pop((record.partition, record.offset), "")
        try:
            if isinstance(message, Exception):
                raise message
            kind = kind_of(message)
            # What the SDK checked before publishing, checked again (an adapter may not use the SDK); here, so
            # that a refused contact's rejection is sealed for its sender, whom an erasure reaches.
            validate_intake(message, self.ledger.clock())
            if isinstance(message, ContactDraft):
                actor = None
                if signer is not None:  # the customer acted; the adapter relayed it, proven by its signature
                    actor = Actor(kind=ActorKind.CUSTOMER, id=message.customer_id or str(message.identity),
                                  authentication=Authentication.ADAPTER_SIGNATURE.value, principal=signer)
                try:
                    outcome = self.ledger.record_contact(
                        message, source=source, raw=raw, actor=actor,
                        signature=f"{signed[0]}:{b64(signed[1])}" if signed is not None else None, adapter=adapter,
                    )
                except MessageIdCollision as collision:
                    # Recorded by the ledger as this offset's outcome; nothing else to do.
                    # Only where it is: its message id and request are personal data (intake collisions shows them).
                    log.warning("intake record %s collided: kept as collision %s", source, collision.collision_id)
                    self.stats.collisions += 1
                    return
                if outcome.duplicate:
                    self.stats.duplicates += 1
                else:
                    self.stats.contacts += 1
            elif isinstance(message, DeliveryReport):
                with self.ledger.texts_left_sealed(case_id_for(normalise_reference(message.case_reference))):
                    self.ledger.record_delivery(
                        message.case_reference, message_id=message.message_id, delivered_at=message.delivered_at,
                        reporter=self._reporter(signer), causation_id=source.event_id, adapter=adapter,
                    )
                self.stats.reports += 1
            elif isinstance(message, ReadReceipt):
                # The customer read it: the case names them; the record's reader is only checked.
                named = self._customer_named(message.reader)
                with self.ledger.texts_left_sealed(case_id_for(normalise_reference(message.case_reference))):
                    self.ledger.record_read(
                        message.case_reference, actor=SYSTEM, message_id=message.message_id, read_at=message.read_at,
                        reporter=self._reporter(signer), named=named, causation_id=source.event_id, adapter=adapter,
                    )
                self.stats.reports += 1
        except REFUSALS as refusal:
            reason = f"{type(refusal).__name__}: {refusal}"
            # The reason may quote the record (an e-mail address): kept sealed in the event, never logged.
            log.warning("rejected intake record %s (%s; `caseledger intake rejections` shows why)", source,
                        type(refusal).__name__)
            sender = message.identity if isinstance(message, ContactDraft) else None
            public = public_reason(refusal)
            self.ledger.reject_intake(source, reason=reason, raw=raw, kind=kind, sender=sender, adapter=adapter,
                                      public_reason={"code": public.code, "field": public.field, "fix": public.fix})
            self.stats.rejected += 1

    def _reporter(self, signer: str | None) -> Reporter:
        """Who reports a delivery or read: the signing adapter, for its channels; unsigned: any channel."""
        if signer is None:
            return Reporter(actor=SYSTEM, adapter=True)
        actor = Actor(kind=ActorKind.SYSTEM, id=signer, authentication=Authentication.ADAPTER_SIGNATURE.value)
        return Reporter(actor=actor, adapter=True, channels=self.signatures.channels(signer))

    def _customer_named(self, reader: Actor) -> Actor:
        """A read receipt's reader with a customer's identity (email:…) resolved to their customer id."""
        if reader.kind is not ActorKind.CUSTOMER:
            return reader
        try:
            return Actor(kind=ActorKind.CUSTOMER, id=self.ledger.resolve_customer(reader.id))
        except (NotFound, ValidationError):
            return reader  # nobody the ledger knows: it cannot be the case's customer
