"""The events topic against the store: every event published once, in order, byte for byte.

Each store event in scope must be the next record of its customer's partition (murmur2 of the
key, like the publisher's producer) at its position, with the same bytes, key and headers
(``topic-bytes``, ``topic-key``, ``topic-header``); a record whose position the store lacks, or
seen twice, is ``topic-extra`` or ``topic-duplicate``; a store event absent although later
positions are published is ``topic-missing``, one after the topic's last position
``topic-unpublished`` (a warning). Records published after the store snapshot are compared with
the store read afresh (``check_beyond_snapshot``).
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from caseledger.ledger.audit.report import WARNING, AuditReport, AuditScope
from caseledger.ledger.avro.codec import HEADER_SIZE
from caseledger.ledger.errors import BackendError
from caseledger.ledger.kafka.events_record import constant_headers, last_position_in, position_of
from caseledger.ledger.kafka.ports import PartitionReader, ReadRecord

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.settings import KafkaSettings

__all__ = ["EventsTopicComparison"]


@dataclass(slots=True)
class _Record:
    position: int | None
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


class EventsTopicComparison:
    """Merges the events topic (one ordered stream per partition) with the store's positions.

    Memory stays flat: one consumer per partition, polled only when the store's positions need
    its next record, so at most one poll (``BUFFER`` records) is buffered per partition. (Pausing
    partitions of a single consumer instead can park a resumed partition's records for good in
    kafka-python 3.0.)
    """

    BUFFER = 2000
    STALL_S = 60.0

    def __init__(self, scope: AuditScope, report: AuditReport, *, head: int, first: int, last: int) -> None:
        assert scope.kafka is not None and scope.readers is not None
        self.key_hash = scope.readers.key_hash
        self.scope = scope
        self.report = report
        self.settings: KafkaSettings = scope.kafka
        self.topic = self.settings.events_topic
        self.head = head
        self.first = first
        self.last = last
        self._kafka = scope.readers
        self.consumers: dict[int, PartitionReader] = {}
        with self._reader() as admin:
            partitions = admin.partitions()
            if not partitions:
                raise BackendError(f"events topic {self.topic} does not exist on {self.settings.bootstrap_servers}")
            self.count = len(partitions)
            wanted = partitions
            if scope.customer_id is not None:
                wanted = [self.partition_of(scope.customer_id.encode())]
            self.ends = admin.end_offsets(partitions)
            starts = admin.beginning_offsets(wanted)
            if scope.since is not None:
                # Records are published after their events were recorded: none in range is older than
                # since (less the hosts' clock difference).
                at = int((scope.since - timedelta(microseconds=scope.tolerance)).timestamp() * 1000)
                for p, hit in admin.offsets_for_time(wanted, at).items():
                    starts[p] = hit if hit is not None else self.ends[p]
            self.published_head = max(
                (last_position_in(admin, p, self.ends[p], stall_s=self.STALL_S) for p in partitions), default=0)
        for p in wanted:
            consumer = self.consumers[p] = self._reader()
            consumer.assign({p: starts[p]})
        self.buffers: dict[int, deque[_Record]] = {p: deque() for p in wanted}
        self.exhausted = {p: starts[p] >= self.ends[p] for p in wanted}
        self.last_matched: dict[int, tuple[int, int]] = {}
        self.extras: dict[int, list[int]] = {}
        self.unreadable: set[int] = set()
        # Store events whose record was not next on their key's partition, by position.
        self.misplaced: dict[int, tuple[bytes, bytes, bytes, str | None, bytes | None, bytes]] = {}
        self.missing_partition: dict[int, int] = {}
        self.beyond: list[_Record] = []
        self.unpublished: list[list[int]] = []
        self.records = 0
        self.only_key = scope.customer_id.encode() if scope.customer_id is not None else None

    def _reader(self) -> PartitionReader:
        return self._kafka.open_reader(self.settings, topic=self.topic, group="audit", fetch_wait_ms=100)

    def close(self) -> None:
        for consumer in self.consumers.values():
            consumer.close()
        self.consumers = {}

    def partition_of(self, key: bytes) -> int:
        """The partition the publisher's producer chose for ``key`` (murmur2, like the Java client)."""
        return self.key_hash(key) % self.count  # type: ignore[no-any-return]

    # -- reading ----------------------------------------------------------------------------------------------

    def _peek(self, partition: int) -> _Record | None:
        buffer = self.buffers[partition]
        deadline = time.monotonic() + self.STALL_S
        while not buffer and not self.exhausted[partition]:
            self._fill(partition)
            if not buffer and time.monotonic() > deadline:
                raise BackendError(f"events topic {self.topic} partition {partition} stalled below offset "
                                   f"{self.ends[partition]}; is the broker up?")
        return buffer[0] if buffer else None

    def _fill(self, partition: int) -> None:
        consumer = self.consumers[partition]
        end = self.ends[partition]
        buffer = self.buffers[partition]
        for record in consumer.fetch(self.BUFFER, 0.2, ReadRecord):
            if record.offset >= end:
                break
            self.records += 1
            headers = dict(record.headers or ())
            buffer.append(_Record(position_of(record.headers), partition, record.offset, record.key, record.value,
                                  headers))
        if consumer.positions()[partition] >= end:
            self.exhausted[partition] = True

    # -- merging ----------------------------------------------------------------------------------------------

    def match(self, position: int, customer: bytes | None, state: bytes, digest: bytes, name: str | None,
              event_id: bytes | None, aggregate: bytes = b"") -> None:
        """The store's event at ``position``: its record must be next on its key's partition (its customer's,
        or for an event of no customer its own aggregate's)."""
        if customer is None:
            self.unreadable.add(position)  # undecodable in the store: its record is named when it comes by
            return
        key = customer or aggregate
        partition = self.partition_of(key)
        if partition not in self.buffers:
            return
        record = self._peek(partition)
        while record is not None and (record.position is None or record.position < position
                                      or (self.only_key is not None and record.key != self.only_key)):
            self.buffers[partition].popleft()
            if self._in_scope(record):
                self._extra(record)
            record = self._peek(partition)
        if record is None or record.position != position:
            self._missing(position, partition, name, event_id, key, state, digest, customer)
            return
        self.buffers[partition].popleft()
        self.last_matched[partition] = (position, record.offset)
        self._compare(record, position, key, state, digest, name, event_id, customer)

    def _compare(self, record: _Record, position: int, key: bytes, state: bytes, digest: bytes,
                 name: str | None, event_id: bytes | None, customer: bytes) -> None:
        """The record published for ``position`` against the store's event there."""
        headers = record.headers
        hash_hex = digest.hex().encode()
        cloudevents = "ce_specversion" in headers
        expected = _expected_headers(name, state, hash_hex, event_id) if cloudevents else _legacy_headers(
            name, state, hash_hex, event_id)
        # An earlier release keyed an event of no customer with the empty string.
        key_ok = record.key == key or (not cloudevents and not customer and record.key == b"")
        if record.value == state and key_ok and all(headers.get(h) == v for h, v in expected if v is not None):
            return  # the common case
        where: dict[str, Any] = {"position": position, "event_type": name,
                                 "event_id": event_id.decode() if event_id else None, "topic": self.topic,
                                 "partition": record.partition, "offset": record.offset}
        if record.value != state:
            self._bytes_differ(record, state, where)
        if not key_ok:
            whose = "the event's customer" if customer else "the key of an event of no customer (its aggregate)"
            self.report.flag("topic-key", f"keyed {_text(record.key)} but {whose} is "
                             f"{key.decode(errors='replace')}: the customer id of the store's event, or the "
                             "record's key, was altered", **where)
        for header, value in expected:
            if value is not None and headers.get(header) != value:
                self.report.flag("topic-header", f"header {header} is {_text(headers.get(header))}, expected "
                                 f"{value.decode()}", **where)

    def _bytes_differ(self, record: _Record, state: bytes, where: dict[str, Any]) -> None:
        value = record.value or b""
        at = next((i for i, (a, b) in enumerate(zip(value, state, strict=False)) if a != b), min(len(value), len(state)))
        claimed = record.headers.get("ce_eventhash", record.headers.get("event_hash"))
        own = hashlib.sha256(value).hexdigest().encode()
        forged = "" if claimed == own else " (and its event_hash header does not match its own bytes)"
        self.report.flag("topic-bytes", f"the record's bytes differ from the store's from byte {at} on "
                         f"({len(value)} vs {len(state)} bytes){forged}: the store's event or the record was "
                         "altered", **where)

    def _extra(self, record: _Record) -> None:
        where: dict[str, Any] = {"topic": self.topic, "partition": record.partition, "offset": record.offset,
                 "position": record.position}
        if record.position is None:
            self.report.flag("topic-extra", "a record without a valid position header: not published by the "
                             "ledger's publisher", **where)
            return
        last = self.last_matched.get(record.partition)
        if last is not None and record.position <= last[0]:
            self.report.flag("topic-duplicate", f"position {record.position} again after position {last[0]} "
                             f"(offset {last[1]}): published twice, out of order, or forged", **where)
            return
        if record.position in self.unreadable:
            self.report.flag("topic-bytes", "the store's event at this position no longer decodes; the topic still "
                             "holds the event as it was published", **where)
            return
        moved = self.misplaced.pop(record.position, None)
        if moved is not None:
            # The store's event now names a customer of another partition: the same event, altered
            # (its customer id, or its bytes with it) — not a deletion plus an insertion.
            self._compare(record, record.position, *moved)
            return
        self.extras.setdefault(record.position, []).append(record.offset)
        self.report.flag("topic-extra", f"on the topic but the store has no event at position {record.position} "
                         "(in scope): deleted from the store, or a forged record", **where)

    def _missing(self, position: int, partition: int, name: str | None, event_id: bytes | None,
                 key: bytes, state: bytes, digest: bytes, customer: bytes) -> None:
        if position > self.published_head:
            if self.unpublished and self.unpublished[-1][1] == position - 1:
                self.unpublished[-1][1] = position
            else:
                self.unpublished.append([position, position])
            return
        # Its record may sit on another partition (the event's customer id was altered): decided when
        # that partition's records go past, or at the end.
        self.misplaced[position] = (key, state, digest, name, event_id, customer)
        self.missing_partition[position] = partition

    def _flag_missing(self, position: int, name: str | None, event_id: bytes | None) -> None:
        where: dict[str, Any] = {"position": position, "event_type": name, "event_id": event_id.decode() if event_id else None,
                 "topic": self.topic, "partition": self.missing_partition[position]}
        self.report.flag("topic-missing", f"not on the events topic although position {self.published_head} is "
                         "published (the publisher publishes positions in order): the record was lost, or this "
                         "event was inserted into the store afterwards", **where)

    def _in_scope(self, record: _Record) -> bool:
        """Records of other customers (--customer) or before the time range are none of this audit's business."""
        if self.only_key is not None and record.key != self.only_key:
            return False
        return record.position is None or record.position >= self.first

    def extras_in(self, first: int, last: int) -> list[int]:
        return sorted(p for p in self.extras if first <= p <= last)

    def finish(self) -> None:
        """Records left after the store's last position in scope."""
        for partition in self.buffers:
            while True:
                record = self._peek(partition)
                if record is None:
                    break
                self.buffers[partition].popleft()
                if not self._in_scope(record):
                    continue
                if record.position is not None and record.position > self.last:
                    whole = not self.scope.ranged
                    if record.position > self.head and whole and len(self.beyond) < 10_000:
                        self.beyond.append(record)
                    continue
                self._extra(record)
        for position, (_key, _state, _digest, name, event_id, _customer) in sorted(self.misplaced.items()):
            self._flag_missing(position, name, event_id)
        self.misplaced.clear()
        self.close()
        self.report.topic_records = self.records
        for first, last in self.unpublished:
            span = f"position {first}" if first == last else f"positions {first}..{last}"
            self.report.flag("topic-unpublished", f"{span} not on the events topic yet (the topic holds positions "
                             f"up to {self.published_head}): the publisher is behind", severity=WARNING,
                             position=first, topic=self.topic)

    def check_beyond_snapshot(self, ledger: CaseLedger) -> None:
        """Records published after the store snapshot must still match the store (read afresh)."""
        if not self.beyond:
            return
        with ledger.storage.audit_snapshot() as store:
            for record in self.beyond:
                row = store.row_at_or_after(record.position or 0)
                where: dict[str, Any] = {"topic": self.topic, "partition": record.partition, "offset": record.offset,
                         "position": record.position}
                if row is None or row[0] != record.position:
                    self.report.flag("topic-extra", f"on the topic but the store has no event at position "
                                     f"{record.position} (its last is {store.head()}): deleted from the store's "
                                     "end, or a forged record", **where)
                elif bytes(row[4]) != record.value:
                    self.report.flag("topic-bytes", "the record's bytes differ from the store's event at its "
                                     "position (published after the audit started)", **where)


def _expected_headers(name: str | None, state: bytes, hash_hex: bytes, event_id: bytes | None
                      ) -> tuple[tuple[str, bytes | None], ...]:
    """What the publisher writes for this event (``ce_time`` and ``ce_subject`` come from the same envelope)."""
    if name is None:
        return (("ce_eventhash", hash_hex), ("ce_id", event_id))
    event_type, content_type = constant_headers(name, state[2:HEADER_SIZE])
    return ((event_type[0], event_type[1]), (content_type[0], content_type[1]), ("ce_eventhash", hash_hex),
            ("ce_id", event_id))


def _legacy_headers(name: str | None, state: bytes, hash_hex: bytes, event_id: bytes | None
                    ) -> tuple[tuple[str, bytes | None], ...]:
    """What the publisher of an earlier release wrote."""
    return (("event_type", name.encode() if name else None), ("event_hash", hash_hex),
            ("schema_fingerprint", state[2:HEADER_SIZE].hex().encode()), ("event_id", event_id))


def _text(value: bytes | None) -> str:
    return "nothing" if value is None else repr(value.decode(errors="replace"))

