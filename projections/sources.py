"""Where projections read events from: the store's notification log, or the Kafka events topic.

Both give :class:`SourceRecord` s carrying the event's type name and its stored Avro bytes, so
the runner decodes them the same way and handlers receive the same domain event either way.
A source is read from positions the runner keeps beside the views, one per *part*: the store
has one part (position = the last applied notification id), the topic has one per partition
(position = the next offset to read). No consumer group is involved.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from caseledger.ledger.domain.catalog import name_of_topic
from caseledger.ledger.errors import BackendError, ConfigurationError
from caseledger.ledger.kafka.settings import (
    CONFLUENT,
    KAFKA_PYTHON,
    check_client,
    consume_available,
    import_confluent,
    librdkafka_assigned_consumer_config,
)

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.kafka.settings import KafkaSettings

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

    def start(self, positions: Mapping[int, int]) -> None:
        self._after = positions.get(0, 0)

    def fetch(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                notifications = self.ledger.recorder.select_notifications(start=self._after + 1, limit=max_records)
            except Exception as error:  # eventsourcing raises its own persistence errors
                raise BackendError(f"{self.ledger.settings.store.describe()}: {error}") from error
            if notifications or time.monotonic() >= deadline:
                break
            time.sleep(min(self.idle_poll_s, max(0.0, deadline - time.monotonic())))
        records = [
            SourceRecord(0, n.id, n.id, name_of_topic(n.topic), bytes(n.state)) for n in notifications
        ]
        if records:
            self._after = records[-1].next_position
        return records

    def end_positions(self) -> dict[int, int]:
        return {0: self.ledger.recorder.max_notification_id() or 0}

    def consumed_positions(self) -> dict[int, int]:
        return {0: self._after}


def source_record(topic: str, partition: int, offset: int, headers: Any, value: bytes) -> SourceRecord:
    """A record of the events topic as a source record, from its ``event_type`` and ``position`` headers."""
    event_type = position = None
    for key, header_value in headers or ():
        if key == "event_type":
            event_type = header_value.decode()
        elif key == "position":
            position = int(header_value)
    if event_type is None or position is None:
        raise BackendError(
            f"{topic}/{partition}@{offset} has no event_type or position header: "
            "only the caseledger publisher may write to the events topic"
        )
    return SourceRecord(partition, offset + 1, position, event_type, value)


class KafkaEventSource(EventSource):
    """The events topic: every partition assigned, read committed, positions kept by the runner."""

    def __init__(
        self, settings: KafkaSettings, *, fetch_wait_ms: int = 20, partitions: list[int] | None = None
    ) -> None:
        self.settings = settings
        self.topic = settings.events_topic
        self.name = f"kafka:{self.topic}"
        self.fetch_wait_ms = fetch_wait_ms
        self.only = set(partitions) if partitions is not None else None  # a parallel rebuild's share
        self._consumer: Any = None
        self._tps: dict[int, Any] = {}

    def _open(self) -> Any:
        if self._consumer is None:
            from kafka import KafkaConsumer, TopicPartition
            from kafka.errors import KafkaError

            try:
                consumer = KafkaConsumer(
                    **self.settings.client_options(),
                    group_id=None,
                    enable_auto_commit=False,
                    isolation_level="read_committed",
                    auto_offset_reset="none",  # a position the topic no longer has is an error, never a skip
                    fetch_max_wait_ms=self.fetch_wait_ms,
                    max_partition_fetch_bytes=8 * 1024 * 1024,
                )
                partitions = consumer.partitions_for_topic(self.topic)
            except KafkaError as error:
                raise BackendError(f"cannot read {self.topic} on {self.settings.bootstrap_servers}: {error}") from error
            if not partitions:
                consumer.close()
                raise ConfigurationError(
                    f"events topic {self.topic} does not exist on {self.settings.bootstrap_servers}; "
                    "create it with `caseledger topics create` and run the publisher"
                )
            self._tps = {p: TopicPartition(self.topic, p) for p in sorted(partitions)
                         if self.only is None or p in self.only}
            consumer.assign(list(self._tps.values()))
            self._consumer = consumer
        return self._consumer

    @property
    def partitions(self) -> list[int]:
        self._open()
        return list(self._tps)

    def start(self, positions: Mapping[int, int]) -> None:
        consumer = self._open()
        for part, tp in self._tps.items():
            offset = positions.get(part, 0)
            if offset:
                consumer.seek(tp, offset)
            else:
                consumer.seek_to_beginning(tp)

    def fetch(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        from kafka.errors import KafkaError

        consumer = self._open()
        try:
            polled = consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as error:
            raise BackendError(f"reading {self.topic}: {error}; the projection's position may be gone from the "
                               "topic — rebuild it") from error
        return [
            source_record(self.topic, tp.partition, record.offset, record.headers, record.value)
            for tp, batch in polled.items()
            for record in batch
        ]

    def end_positions(self) -> dict[int, int]:
        consumer = self._open()
        ends = consumer.end_offsets(list(self._tps.values()))
        return {tp.partition: offset for tp, offset in ends.items()}

    def consumed_positions(self) -> dict[int, int]:
        consumer = self._open()
        return {part: consumer.position(tp) for part, tp in self._tps.items()}

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class ConfluentKafkaEventSource(KafkaEventSource):
    """The events topic read with confluent-kafka (librdkafka): same records, same positions.

    An optional consumer (``pip install 'caseledger[confluent]'``): kafka-python parses every
    record and its headers in Python, which caps a rebuild at about 40k records/s per process;
    librdkafka does it in C. The source keeps the name ``kafka:<topic>``, so a projection built
    with one consumer is followed or resumed with the other.
    """

    def _open(self) -> Any:
        if self._consumer is None:
            confluent_kafka = import_confluent("consumer")
            try:
                consumer = confluent_kafka.Consumer(self._config())
                topic = consumer.list_topics(self.topic, timeout=30).topics.get(self.topic)
            except confluent_kafka.KafkaException as error:
                raise BackendError(f"cannot read {self.topic} on {self.settings.bootstrap_servers}: {error}") from error
            if topic is None or topic.error is not None or not topic.partitions:
                consumer.close()
                raise ConfigurationError(
                    f"events topic {self.topic} does not exist on {self.settings.bootstrap_servers}; "
                    "create it with `caseledger topics create` and run the publisher"
                )
            self._tps = {p: confluent_kafka.TopicPartition(self.topic, p) for p in sorted(topic.partitions)
                         if self.only is None or p in self.only}
            self._started: dict[int, int] = {}
            self._consumer = consumer
        return self._consumer

    def _config(self) -> dict[str, Any]:
        config = librdkafka_assigned_consumer_config(self.settings, f"caseledger-projections-{self.topic}")
        config.update({
            "isolation.level": "read_committed",
            "auto.offset.reset": "error",  # a position the topic no longer has is an error, never a skip
            "fetch.wait.max.ms": self.fetch_wait_ms,
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
        })
        return config

    def start(self, positions: Mapping[int, int]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        consumer = self._open()
        self._started = {part: positions.get(part, 0) for part in self._tps}
        consumer.assign([TopicPartition(self.topic, part, offset or OFFSET_BEGINNING)
                         for part, offset in self._started.items()])

    def fetch(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        from confluent_kafka import KafkaException

        consumer = self._open()
        try:
            messages = consume_available(consumer, max_records, timeout_s)
        except KafkaException as error:
            raise BackendError(f"reading {self.topic}: {error}") from error
        records = []
        for message in messages:
            problem = message.error()
            if problem is not None:
                raise BackendError(f"reading {self.topic}/{message.partition()}: {problem}; the projection's "
                                   "position may be gone from the topic — rebuild it")
            records.append(source_record(self.topic, message.partition(), message.offset(), message.headers(),
                                         message.value()))
        return records

    def end_positions(self) -> dict[int, int]:
        from confluent_kafka import KafkaException

        consumer = self._open()
        try:
            # read_committed: the end is the last stable offset, as kafka-python's end_offsets gives it.
            return {part: consumer.get_watermark_offsets(tp, timeout=30, cached=False)[1]
                    for part, tp in self._tps.items()}
        except KafkaException as error:
            raise BackendError(f"reading the end offsets of {self.topic}: {error}") from error

    def consumed_positions(self) -> dict[int, int]:
        consumer = self._open()
        # Before its first record a partition has no position yet (negative): it is where it started.
        return {tp.partition: max(tp.offset, self._started.get(tp.partition, 0))
                for tp in consumer.position(list(self._tps.values()))}


def kafka_source(settings: KafkaSettings, *, consumer: str = KAFKA_PYTHON, **options: Any) -> KafkaEventSource:
    """The events topic as a source, read with ``consumer`` (kafka-python by default, or confluent)."""
    check_client(consumer, "consumer")
    cls = ConfluentKafkaEventSource if consumer == CONFLUENT else KafkaEventSource
    return cls(settings, **options)
