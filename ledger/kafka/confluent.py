"""The Kafka ports on confluent-kafka (librdkafka: records built and parsed in C).

The default client (a dependency of caseledger), costing about a third of kafka-python's CPU
per record. The only module besides
:mod:`~caseledger.ledger.kafka.kafka_python` that imports ``confluent_kafka``; importing it
without the package raises ImportError, which :mod:`~caseledger.ledger.kafka.clients` turns
into advice. Its errors become BackendError in one place, :class:`kafka_errors`.

librdkafka's default partitioner is not Kafka's: every record is sent to the partition
kafka-python and the Java client would choose (murmur2 of the key), so a customer stays on one
partition whichever client wrote.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import confluent_kafka
from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from caseledger.ledger.errors import BackendError, IntakeUnavailable
from caseledger.ledger.kafka.kafka_python import key_hash
from caseledger.ledger.kafka.ports import (
    Build,
    Closing,
    ErrorMapping,
    Headers,
    OnAssign,
    OnLostPosition,
    OnRevoke,
    T,
    What,
    missing_topic,
    not_acknowledged,
    unreachable,
)
from caseledger.ledger.settings import MAX_RECORD_BYTES, KafkaSettings


def kafka_errors(what: What, advice: str = "", *, raises: type[BackendError] = BackendError) -> ErrorMapping:
    """``with kafka_errors(what):`` turns confluent-kafka's errors into BackendError (or ``raises``, one of its kinds)."""
    return ErrorMapping(KafkaException, what, advice, raises=raises)


def librdkafka_config(settings: KafkaSettings) -> dict[str, Any]:
    """The connection and security settings in librdkafka's (confluent-kafka's) terms."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.client_id,
        "security.protocol": settings.security_protocol,
    }
    if settings.sasl_mechanism:
        config.update({"sasl.mechanism": settings.sasl_mechanism, "sasl.username": settings.sasl_username,
                       "sasl.password": settings.sasl_password})
    for name, key in (("ssl_cafile", "ssl.ca.location"), ("ssl_certfile", "ssl.certificate.location"),
                      ("ssl_keyfile", "ssl.key.location")):
        if getattr(settings, name):
            config[key] = getattr(settings, name)
    return config


# What librdkafka says while its metadata catches up with the cluster: asked again, these pass.
_PASSING = frozenset({
    confluent_kafka.KafkaError._UNKNOWN_PARTITION, confluent_kafka.KafkaError._TRANSPORT,
    confluent_kafka.KafkaError.LEADER_NOT_AVAILABLE, confluent_kafka.KafkaError.NOT_LEADER_FOR_PARTITION,
})


def passing(error: KafkaException) -> bool:
    """Whether ``error`` is librdkafka's metadata lagging the cluster (or a retriable error): worth asking again."""
    cause = error.args[0] if error.args else None
    if not isinstance(cause, confluent_kafka.KafkaError):
        return False
    return cause.code() in _PASSING or bool(cause.retriable())


def consume_available(consumer: Any, max_records: int, timeout_s: float) -> list[Any]:
    """Up to ``max_records`` messages from a confluent-kafka consumer, returning as soon as any are there.

    ``Consumer.consume(n, timeout)`` waits until it has ``n`` messages or the timeout passed: at a
    steady trickle that adds the whole timeout to every record's latency. Take what is queued;
    only when nothing is, wait (up to ``timeout_s``) for the first message.
    """
    messages: list[Any] = consumer.consume(max_records, 0)
    if messages:
        return messages
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]


def produce_waiting(producer: Any, topic: str, **record: Any) -> None:
    """confluent-kafka's ``produce``, waiting for room while librdkafka's local queue is full."""
    while True:
        try:
            producer.produce(topic, **record)
            return
        except BufferError:
            producer.poll(0.05)  # let deliveries drain, then retry


class ConfluentPartitioner:
    """Kafka's default partition of a key (murmur2, as kafka-python and the Java client pick it)
    for records a confluent-kafka producer sends; each topic's partition count is asked once."""

    def __init__(self, producer: Any, settings: KafkaSettings, timeout_s: float, *,
                 raises: type[BackendError] = BackendError) -> None:
        self._producer = producer
        self._timeout_s = timeout_s
        self._counts: dict[str, int] = {}
        self._raises = raises
        what = (unreachable(settings.bootstrap_servers) if raises is not BackendError
                else f"cannot reach Kafka at {settings.bootstrap_servers}")
        self._reaching = kafka_errors(what, raises=raises)

    def partition(self, topic: str, key: bytes) -> int:
        count = self._counts.get(topic)
        if count is None:
            count = self._counts[topic] = self._count(topic)
        return key_hash(key) % count

    def _count(self, topic: str) -> int:
        with self._reaching:
            found = self._producer.list_topics(topic, self._timeout_s).topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise missing_topic(topic, found.error if found is not None else None, raises=self._raises)
        return len(found.partitions)


PREFETCH_KBYTES = 16_384
"""Records a reader fetches ahead of its caller, at most (KiB, all its partitions): librdkafka's default is 64 MiB."""


class ConfluentPartitionReader(Closing):
    """The reader port on a confluent-kafka ``Consumer``: assigned partitions, or a member of the group.

    librdkafka wants a group id; it is joined only by ``subscribe`` (cooperative-sticky: a rebalance
    moves only the partitions that change hands) and never committed to: positions live beside
    what the records produced, and each partition the group hands over is sought to the position
    the caller gives.
    """

    def __init__(
        self, settings: KafkaSettings, *, topic: str, group: str, fetch_wait_ms: int = 100,
        partition_fetch_bytes: int | None = None, on_lost_position: OnLostPosition = "error", advice: str = "",
        timeout_s: float = 30.0,
    ) -> None:
        self.topic = topic
        self._timeout_s = timeout_s
        self._config = librdkafka_config(settings)
        self._config.update({
            "group.id": f"caseledger-{group}-{topic}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            # "error": a position the topic no longer has is an error, never a skip
            "auto.offset.reset": on_lost_position,
            "fetch.wait.max.ms": fetch_wait_ms,
            # librdkafka's default, 64 MiB, is prefetched while a backlog lasts: bound it (a batch is 2-20 MiB)
            "queued.max.messages.kbytes": PREFETCH_KBYTES,
        })
        if partition_fetch_bytes is not None:
            self._config["max.partition.fetch.bytes"] = partition_fetch_bytes
        self._opening = kafka_errors(f"cannot read {topic} on {settings.bootstrap_servers}")
        self._reading = kafka_errors(f"reading {topic}", advice)
        self._consumer: Any = None
        self._started: dict[int, int] = {}
        # Partitions assigned again whose first record since is not fetched yet: librdkafka may
        # still report their position from before (it resets it when the new fetch starts).
        self._reassigned: set[int] = set()

    def _client(self) -> Any:
        if self._consumer is None:
            with self._opening:
                self._consumer = confluent_kafka.Consumer(self._config)
        return self._consumer

    def partitions(self) -> list[int]:
        consumer = self._client()
        with self._opening:
            found = consumer.list_topics(self.topic, timeout=self._timeout_s).topics.get(self.topic)
        if found is None or found.error is not None or not found.partitions:
            return []
        return sorted(found.partitions)

    def assign(self, positions: Mapping[int, int]) -> None:
        consumer = self._client()
        self._reassigned = set(positions) & set(self._started)
        self._started = dict(positions)
        with self._reading:
            consumer.assign([TopicPartition(self.topic, p, offset or OFFSET_BEGINNING) for p, offset in positions.items()])

    def subscribe(self, on_assign: OnAssign, on_revoke: OnRevoke, *, session_timeout_ms: int) -> None:
        self.close()  # the group's settings are the consumer's: a new one
        self._config.update({
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(100, session_timeout_ms // 3),
        })
        consumer = self._client()
        topic = self.topic

        def assigned(consumer: Any, partitions: list[Any]) -> None:
            numbers = [tp.partition for tp in partitions if tp.topic == topic]
            positions = on_assign(numbers) if numbers else {}
            self._started.update({p: positions[p] for p in numbers})
            self._reassigned.update(numbers)  # no position of its own until a first record is fetched
            consumer.incremental_assign([TopicPartition(topic, p, positions[p] or OFFSET_BEGINNING) for p in numbers])

        def revoked(consumer: Any, partitions: list[Any]) -> None:
            numbers = [tp.partition for tp in partitions if tp.topic == topic]
            for partition in numbers:
                self._started.pop(partition, None)
                self._reassigned.discard(partition)
            if numbers:
                on_revoke(numbers)
            # confluent-kafka unassigns them once this returns (incremental_unassign)

        with self._opening:
            consumer.subscribe([topic], on_assign=assigned, on_revoke=revoked, on_lost=revoked)

    def assigned(self) -> set[int]:
        return set(self._started)

    def fetch(self, max_records: int, timeout_s: float, build: Build[T]) -> list[T]:
        consumer = self._client()
        with self._reading:
            messages = consume_available(consumer, max_records, timeout_s)
        if self._reassigned:
            self._reassigned.difference_update(message.partition() for message in messages)
        records: list[T] = []
        for message in messages:
            problem = message.error()
            if problem is not None:
                if problem.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                    continue
                kafka_errors(f"reading {self.topic}/{message.partition()}", self._reading.advice).fail(problem)
            records.append(build(message.partition(), message.offset(), message.key(), message.value(),
                                 message.headers(), message.timestamp()[1]))
        return records

    def _watermarks(self, partitions: Iterable[int], what: str) -> dict[int, tuple[int, int]]:
        consumer = self._client()
        deadline = time.monotonic() + self._timeout_s
        found: dict[int, tuple[int, int]] = {}
        with kafka_errors(what):
            for p in partitions:
                while True:
                    try:
                        found[p] = consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                                  timeout=self._timeout_s, cached=False)
                        break
                    except KafkaException as error:
                        # librdkafka's metadata may lack the partition or its leader for a moment (a refresh
                        # under way): "Local: Unknown partition". Asked again until the reader's timeout.
                        if not passing(error) or time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
        return found

    def end_offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        # read_committed: the high end is the last stable offset, as kafka-python's end_offsets gives it.
        return {p: high for p, (_, high) in self._watermarks(partitions, f"reading the end offsets of {self.topic}").items()}

    def beginning_offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        return {p: low for p, (low, _) in self._watermarks(partitions, f"reading {self.topic}").items()}

    def offsets_for_time(self, partitions: Iterable[int], timestamp_ms: int) -> dict[int, int | None]:
        consumer = self._client()
        with self._reading:
            found = consumer.offsets_for_times([TopicPartition(self.topic, p, timestamp_ms) for p in partitions],
                                               timeout=self._timeout_s)
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in found}

    def positions(self) -> dict[int, int]:
        consumer = self._client()
        with self._reading:
            found = consumer.position([TopicPartition(self.topic, p) for p in self._started])
        # Before its first record a partition has no position yet (negative): it is where it started.
        return {tp.partition: self._started[tp.partition] if tp.partition in self._reassigned
                else max(tp.offset, self._started[tp.partition]) for tp in found}

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
            self._started = {}
            self._reassigned = set()


class ConfluentTransactionalWriter(Closing):
    """The transactional writer port on a confluent-kafka ``Producer``, same records as kafka-python's.

    kafka-python builds every record and its six headers in Python (~35 µs an event); librdkafka
    does it in C. Same ``transactional.id``: either client's writer fences the other's.
    """

    def __init__(self, settings: KafkaSettings, *, transactional_id: str) -> None:
        self._settings = settings
        self._config = librdkafka_config(settings)
        self._config.update({
            "transactional.id": transactional_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.max.bytes": MAX_RECORD_BYTES,
        })
        self._producer: Any = None
        self._partitioner: ConfluentPartitioner | None = None
        self._sending = kafka_errors("Kafka producer, send")

    def _client(self) -> Any:
        if self._producer is None:
            self._producer = confluent_kafka.Producer(self._config)
            self._partitioner = ConfluentPartitioner(self._producer, self._settings, 30)
        return self._producer

    def init_transactions(self) -> None:
        producer = self._client()
        with kafka_errors("Kafka producer, init_transactions"):
            producer.init_transactions(60)

    def begin_transaction(self) -> None:
        producer = self._client()
        with kafka_errors("Kafka producer, begin_transaction"):
            producer.begin_transaction()

    def send(self, topic: str, *, key: bytes, value: bytes, headers: Headers) -> None:
        assert self._partitioner is not None, "begin_transaction first"
        partition = self._partitioner.partition(topic, key)
        with self._sending:
            produce_waiting(self._producer, topic, value=value, key=key, headers=headers, partition=partition)

    def commit_transaction(self) -> None:
        with kafka_errors("Kafka producer, commit_transaction"):
            self._producer.commit_transaction(60)

    def abort_transaction(self) -> None:
        with kafka_errors("Kafka producer, abort_transaction"):
            self._producer.abort_transaction(60)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None  # librdkafka frees the producer with its last reference


class ConfluentAcknowledgedProducer(Closing):
    """The acknowledged producer port on a confluent-kafka ``Producer`` (acks=all, idempotent); it fails with
    IntakeUnavailable."""

    def __init__(self, settings: KafkaSettings, *, timeout_s: float) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._config = librdkafka_config(settings)
        self._config.update({
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "message.max.bytes": MAX_RECORD_BYTES,
            "message.timeout.ms": max(1, round(timeout_s * 1000)),
        })
        self._producer: Any = None
        self._partitioner: ConfluentPartitioner | None = None
        self._acknowledging = kafka_errors(not_acknowledged, raises=IntakeUnavailable)

    def _client(self) -> tuple[Any, ConfluentPartitioner]:
        if self._producer is None or self._partitioner is None:
            with kafka_errors(unreachable(self._settings.bootstrap_servers), raises=IntakeUnavailable):
                self._producer = confluent_kafka.Producer(self._config)
            self._partitioner = ConfluentPartitioner(self._producer, self._settings, self._timeout_s,
                                                     raises=IntakeUnavailable)
        return self._producer, self._partitioner

    def send_all(
        self, topic: str, records: Sequence[tuple[bytes, bytes]], headers: Sequence[Headers] | None = None
    ) -> list[tuple[int, int]]:
        producer, partitioner = self._client()
        outcomes: list[Any] = [None] * len(records)

        def delivered(index: int) -> Any:
            def report(error: Any, message: Any) -> None:
                outcomes[index] = error if error is not None else (message.partition(), message.offset())
            return report

        with self._acknowledging:
            for index, (key, value) in enumerate(records):
                extra = {"headers": list(headers[index])} if headers else {}
                produce_waiting(producer, topic, value=value, key=key, partition=partitioner.partition(topic, key),
                                on_delivery=delivered(index), **extra)
        left = producer.flush(self._timeout_s)
        if left:
            self._acknowledging.fail(TimeoutError(f"{left} record(s) unacknowledged after {self._timeout_s:g} s"))
        for outcome in outcomes:
            if not isinstance(outcome, tuple):
                self._acknowledging.fail(KafkaException(outcome))
        return outcomes

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self._timeout_s)
            self._producer = None  # librdkafka frees the producer with its last reference


# The ports this client implements, by role (what clients.KafkaClient opens).
READER = ConfluentPartitionReader
TRANSACTIONAL_WRITER = ConfluentTransactionalWriter
ACKNOWLEDGED_PRODUCER = ConfluentAcknowledgedProducer
