"""Where projections read events from: the store's notification log, or the Kafka events topic.

Both give :class:`SourceRecord` s carrying the event's type name and its stored Avro bytes, so
the runner decodes them the same way and handlers receive the same domain event either way.
A source is read from positions the runner keeps beside the views, one per *part*: the store
has one part (position = the last applied notification id), the topic has one per partition
(position = the next offset to read). A topic source may be *shared*: runners of the same
projections then split its partitions through Kafka's consumer group, which only says who reads
what — each partition handed over is read from the position the views recorded.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from caseledger.ledger.domain.catalog import name_of_topic
from caseledger.ledger.errors import BackendError, ConfigurationError
from caseledger.ledger.kafka.clients import CONFLUENT, DEFAULT_CLIENT, KafkaClient
from caseledger.ledger.kafka.events_record import TYPE_PREFIX

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.kafka.ports import Build, PartitionReader
    from caseledger.ledger.settings import KafkaSettings

STORE = "store"


@dataclass(slots=True)
class SourceRecord:
    """One event as read from a source."""

    part: int
    next_position: int  # the part's position once this record is applied
    store_position: int  # the event's place in the store's total order (its notification id)
    event_type: str
    data: bytes


class EventSource(ABC):
    """A totally ordered (per part) stream of stored events."""

    name: str

    @abstractmethod
    def start(self, positions: Mapping[int, int]) -> None:
        """Read from these positions on (missing parts: from the beginning)."""

    @abstractmethod
    def fetch(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        """The next records, waiting at most ``timeout_s`` when there are none yet."""

    @abstractmethod
    def end_positions(self) -> dict[int, int]:
        """Each part's position once everything recorded so far is read."""

    def consumed_positions(self) -> dict[int, int]:
        """Parts' positions after the records fetched so far (past transaction markers on Kafka)."""
        return {}

    shared = False
    """Whether runners share this source's parts through a group (then ``share``, not ``start``, begins reading)."""

    def share(self, on_assign: Callable[[list[int]], Mapping[int, int]], on_revoke: Callable[[list[int]], None]) -> None:
        """Join the source's group: ``on_assign(parts)`` gives where to read each part handed over, ``on_revoke(parts)``
        hears of parts handed to another runner (both called inside ``fetch``)."""
        raise ConfigurationError(f"{self.name} is not shared by runners")

    def close(self) -> None:  # noqa: B027  (most sources hold nothing to release)
        """Release connections."""

    def lag(self, positions: Mapping[int, int]) -> int:
        """How many records are left to read after ``positions``."""
        return sum(max(0, end - positions.get(part, 0)) for part, end in self.end_positions().items())


class StoreEventSource(EventSource):
    """The ledger store's notification log (the embedded default)."""

    name = STORE

    def __init__(self, ledger: CaseLedger, *, idle_poll_s: float = 0.02) -> None:
        self.ledger = ledger
        self.idle_poll_s = idle_poll_s
        self._after = 0
        self._names: dict[str, str] = {}  # topic → event type

    def start(self, positions: Mapping[int, int]) -> None:
        self._after = positions.get(0, 0)

    def fetch(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                # The log's rows as plain tuples (the audit's read): no UUID, no Notification made per row — a
                # catch-up over millions of events spent a fifth of its time on them.
                with self.ledger.storage.audit_snapshot() as log:
                    rows = next(iter(log.pages(self._after, 1 << 62, max_records)), [])
            except Exception as error:  # the drivers raise their own errors
                raise BackendError(f"{self.ledger.settings.store.describe()}: {error}") from error
            if rows or time.monotonic() >= deadline:
                break
            time.sleep(min(self.idle_poll_s, max(0.0, deadline - time.monotonic())))
        names = self._names
        records = []
        for position, _aggregate, _version, topic, state in rows:
            name = names.get(topic)
            if name is None:
                name = names[topic] = name_of_topic(topic)
            records.append(SourceRecord(0, position, position, name, bytes(state)))
        if records:
            self._after = records[-1].next_position
        return records

    def end_positions(self) -> dict[int, int]:
        return {0: self.ledger.recorder.max_notification_id() or 0}

    def consumed_positions(self) -> dict[int, int]:
        return {0: self._after}


def source_records(topic: str) -> Build[SourceRecord]:
    """How a reader of the events topic builds source records, from their CloudEvents ``ce_type`` and
    ``ce_sequence`` headers (or ``event_type`` and ``position`` on records of earlier releases)."""
    prefix = len(TYPE_PREFIX)

    def source_record(partition: int, offset: int, key: bytes | None, value: bytes | None, headers: Any,
                      timestamp: int) -> SourceRecord:
        event_type = position = None
        for name, header_value in headers or ():
            if name == "ce_sequence" or name == "position":
                position = int(header_value)
            elif name == "ce_type":
                event_type = header_value.decode()[prefix:]
            elif name == "event_type":
                event_type = header_value.decode()
            else:
                continue
            if event_type is not None and position is not None:
                break  # the publisher puts both first
        if event_type is None or position is None:
            raise BackendError(
                f"{topic}/{partition}@{offset} has no ce_type or ce_sequence header: "
                "only the caseledger publisher may write to the events topic"
            )
        return SourceRecord(partition, offset + 1, position, event_type, value or b"")

    return source_record


class KafkaEventSource(EventSource):
    """The events topic: every partition assigned, read committed, positions kept by the runner.

    ``consumer`` picks the Kafka client: confluent (default: librdkafka parses records in C) or
    kafka-python, which parses every record and its headers in Python (about 40k records/s per process).
    The source keeps the name ``kafka:<topic>`` either way, so a projection built with one
    client is followed or resumed with the other.
    """

    def __init__(
        self, settings: KafkaSettings, *, fetch_wait_ms: int = 20, partitions: list[int] | None = None,
        consumer: str = DEFAULT_CLIENT, shared: bool = False,
    ) -> None:
        self._kafka = KafkaClient(consumer, "consumer")
        self.settings = settings
        self.topic = settings.events_topic
        self.name = f"kafka:{self.topic}"
        self.fetch_wait_ms = fetch_wait_ms
        self.only = set(partitions) if partitions is not None else None  # a parallel rebuild's share
        # A runner following the topic shares it with the other runners of its projections (a consumer group):
        # when one dies, the others take its partitions over. A fixed share (``partitions``) is never shared.
        self.shared = shared and partitions is None
        self._reader: PartitionReader | None = None
        self._parts: list[int] = []
        self._build = source_records(self.topic)

    def _open(self) -> PartitionReader:
        if self._reader is None:
            reader = self._kafka.open_reader(
                self.settings, topic=self.topic, group="projections", fetch_wait_ms=self.fetch_wait_ms,
                partition_fetch_bytes=8 * 1024 * 1024, on_lost_position="error",
                advice="the projection's position may be gone from the topic — rebuild it",
            )
            found = reader.partitions()
            if not found:
                reader.close()
                raise ConfigurationError(
                    f"events topic {self.topic} does not exist on {self.settings.bootstrap_servers}; "
                    "create it with `caseledger topics create` and run the publisher"
                )
            self._parts = [p for p in found if self.only is None or p in self.only]
            self._reader = reader
        return self._reader

    @property
    def partitions(self) -> list[int]:
        self._open()
        return list(self._parts)

    def start(self, positions: Mapping[int, int]) -> None:
        self._open().assign({part: positions.get(part, 0) for part in self._parts})

    def share(self, on_assign: Callable[[list[int]], Mapping[int, int]], on_revoke: Callable[[list[int]], None]) -> None:
        self.close()  # a runner that reloads joins again, with its positions as the views hold them
        self._open().subscribe(on_assign, on_revoke, session_timeout_ms=self.settings.session_timeout_ms)

    def fetch(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        reader = self._open()
        records = reader.fetch(max_records, timeout_s, self._build)
        if self.shared and records:  # records fetched before their partition was revoked are another runner's now
            owned = reader.assigned()
            records = [r for r in records if r.part in owned]
        return records

    def end_positions(self) -> dict[int, int]:
        return self._open().end_offsets(self._parts)

    def consumed_positions(self) -> dict[int, int]:
        return self._open().positions()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class ConfluentKafkaEventSource(KafkaEventSource):
    """The events topic read with confluent-kafka (librdkafka): same records, same positions."""

    def __init__(self, settings: KafkaSettings, *, fetch_wait_ms: int = 20, partitions: list[int] | None = None,
                 shared: bool = False) -> None:
        super().__init__(settings, fetch_wait_ms=fetch_wait_ms, partitions=partitions, consumer=CONFLUENT, shared=shared)


def kafka_source(settings: KafkaSettings, *, consumer: str = DEFAULT_CLIENT, **options: Any) -> KafkaEventSource:
    """The events topic as a source, read with ``consumer`` (confluent by default, or kafka-python)."""
    return KafkaEventSource(settings, consumer=consumer, **options)
