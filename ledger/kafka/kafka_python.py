"""The Kafka ports on kafka-python (pure Python; by option, the default is confluent-kafka).

The only module besides :mod:`~caseledger.ledger.kafka.confluent` that imports ``kafka``. Its
errors become :class:`~caseledger.ledger.errors.BackendError` in one place, :class:`kafka_errors`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.partitioner.abc import Partitioner
from kafka.partitioner.default import murmur2

from caseledger.ledger.errors import BackendError, IntakeUnavailable
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
    not_acknowledged,
    unreachable,
)
from caseledger.ledger.settings import MAX_RECORD_BYTES, KafkaSettings

# kafka-python's DEBUG lines print whole records (a producer's requests, a consumer's fetches): intake records
# hold customers' identities and words in clear, and no log line may carry personal data (docs/privacy.md). Its
# logger is held at INFO unless someone set it: whoever sets "kafka" to DEBUG logs what the records hold.
if logging.getLogger("kafka").level == logging.NOTSET:
    logging.getLogger("kafka").setLevel(logging.INFO)

log = logging.getLogger("caseledger.kafka")


def kafka_errors(what: What, advice: str = "", *, raises: type[BackendError] = BackendError) -> ErrorMapping:
    """``with kafka_errors(what):`` turns kafka-python's errors into BackendError (or ``raises``, one of its kinds)."""
    return ErrorMapping(KafkaError, what, advice, raises=raises)


KEY_HASH_CACHE = 4_096
"""Record keys whose hash is kept. A customer's events come together (a contact's 5-8 events, one key), so a
few thousand keys catch the repeats; the 65,536 kept before took 14 MB, filled one new customer at a time
for the soak's first ten minutes at 150 contacts/s (docs/benchmarks.md)."""


@lru_cache(maxsize=KEY_HASH_CACHE)
def key_hash(key: bytes) -> int:
    """Kafka's default partitioner hash of a record key (murmur2, positive), cached per key (the last
    :data:`KEY_HASH_CACHE`)."""
    return murmur2(key) & 0x7FFFFFFF  # type: ignore[no-any-return]


class KeyPartitioner(Partitioner):  # type: ignore[misc]
    """Kafka's default key partitioner (murmur2, as the Java client), with the hash cached per key.

    kafka-python hashes every key in pure Python; the publisher sends every event of a customer
    with the same key, so the cache saves most of that work. The partition chosen is the same.
    """

    def partition(self, topic: str, key: Any, serialized_key: bytes | None, value: Any,
                  serialized_value: Any, cluster: Any) -> int:
        if topic not in cluster.topics():
            raise ValueError(f"Topic {topic} not found in ClusterMetadata")
        if serialized_key is None:
            raise ValueError("every event record has a key (the customer id)")
        partitions = sorted(cluster.partitions_for_topic(topic))
        return partitions[key_hash(serialized_key) % len(partitions)]  # type: ignore[no-any-return]


def key_partitioner() -> KeyPartitioner:
    """The partitioner the transactional writer uses (same partitions as Kafka's default)."""
    return KeyPartitioner()


CLOSE_TIMEOUT_MS = 10_000  # a member leaving its group, or a stuck one, never holds its service's stop longer


def rejoin_after_s(session_timeout_ms: int) -> float:
    """How long a kafka-python member may wait for its group's assignment before it is taken for stuck."""
    return 2 * session_timeout_ms / 1000 + 10


class KafkaPythonPartitionReader(Closing):
    """The reader port on a ``KafkaConsumer``: assigned partitions and no group, or a member of the group.

    A group member rebalances eagerly (every member's partitions revoked, then the new shares
    assigned; kafka-python's cooperative protocol is new in 3.0 and not used here), and never commits
    to the group: each partition is sought to the position the caller gives.
    """

    def __init__(
        self, settings: KafkaSettings, *, topic: str, group: str, fetch_wait_ms: int = 100,
        partition_fetch_bytes: int | None = None, on_lost_position: OnLostPosition = "error", advice: str = "",
        timeout_s: float = 30.0,
    ) -> None:
        self.topic = topic
        # Joined only by subscribe. Not the group confluent-kafka's readers join: a group's members must share a
        # rebalance protocol, and these members use the eager one (members on both clients form two groups).
        self._group = f"caseledger-{group}-{topic}.eager"
        self._settings = settings
        self._options: dict[str, Any] = {
            "group_id": None, "enable_auto_commit": False, "isolation_level": "read_committed",
            # "none": a position the topic no longer has is an error, never a skip
            "auto_offset_reset": "none" if on_lost_position == "error" else "earliest",
            "fetch_max_wait_ms": fetch_wait_ms,
            # How long to look for a broker before saying none answers (kafka-python's own default is 30 s).
            "bootstrap_timeout_ms": int(timeout_s * 1000),
        }
        if partition_fetch_bytes is not None:
            self._options["max_partition_fetch_bytes"] = partition_fetch_bytes
        self._opening = kafka_errors(f"cannot read {topic} on {settings.bootstrap_servers}")
        self._reading = kafka_errors(f"reading {topic}", advice)
        self._consumer: Any = None
        self._tps: dict[int, Any] = {}
        self._membership: tuple[OnAssign, OnRevoke, int] | None = None  # what subscribe was given
        self._waiting_since: float | None = None  # a member waiting for the group's assignment since

    def _client(self) -> Any:
        if self._consumer is None:
            with self._opening:
                self._consumer = KafkaConsumer(**self._settings.client_options(), **self._options)
        return self._consumer

    def _tp(self, partition: int) -> Any:
        return self._tps.get(partition) or TopicPartition(self.topic, partition)

    def partitions(self) -> list[int]:
        consumer = self._client()
        with self._opening:
            found = consumer.partitions_for_topic(self.topic)
        return sorted(found) if found else []

    def assign(self, positions: Mapping[int, int]) -> None:
        consumer = self._client()
        self._tps = {p: TopicPartition(self.topic, p) for p in positions}
        with self._reading:
            consumer.assign(list(self._tps.values()))
            for partition, offset in positions.items():
                if offset:
                    consumer.seek(self._tps[partition], offset)
                else:
                    consumer.seek_to_beginning(self._tps[partition])

    def subscribe(self, on_assign: OnAssign, on_revoke: OnRevoke, *, session_timeout_ms: int) -> None:
        self._membership = (on_assign, on_revoke, session_timeout_ms)
        self._join()

    def _join(self) -> None:
        """A new consumer in the group (the group's settings are the consumer's), waiting for its first assignment."""
        on_assign, on_revoke, session_timeout_ms = self._membership  # type: ignore[misc]
        self.close()
        self._options.update({"group_id": self._group, "session_timeout_ms": session_timeout_ms,
                              "heartbeat_interval_ms": max(100, session_timeout_ms // 3)})
        consumer = self._client()
        reader, topic = self, self.topic

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Any) -> None:
                reader._waiting_since = time.monotonic()  # a rebalance began: an assignment must follow
                numbers = [tp.partition for tp in revoked if tp.topic == topic]
                for partition in numbers:
                    reader._tps.pop(partition, None)
                if numbers:
                    on_revoke(numbers)

            def on_partitions_assigned(self, assigned: Any) -> None:
                numbers = [tp.partition for tp in assigned if tp.topic == topic]
                positions = on_assign(numbers) if numbers else {}
                for partition in numbers:
                    tp = reader._tps[partition] = TopicPartition(topic, partition)
                    if positions[partition]:
                        consumer.seek(tp, positions[partition])
                    else:
                        consumer.seek_to_beginning(tp)
                reader._waiting_since = None  # even an empty share ends the rebalance

        with self._opening:
            consumer.subscribe([topic], listener=Listener())
        self._waiting_since = time.monotonic()

    def _unstick(self) -> None:
        """Join again with a new consumer if this one has waited too long for the group's answer.

        kafka-python 3.0 can leave a member in a join that never ends: CI runs saw a member lead an
        assignment, then never send or never hear its SyncGroup; its heartbeats stay off while it
        joins, the group drops it, and it never asks again. A rebalance waits for a member that
        stopped heartbeating up to its session timeout; for one still heartbeating but not
        fetching, up to the poll interval (5 minutes), but the services fetch between batches. So a
        member with no answer after twice the session timeout, plus slack, is taken for stuck and a
        new consumer joins in its place: wrong at worst for a member stalled in a batch, where it
        costs a needless rejoin, never a record (positions come from the caller).
        """
        if self._waiting_since is None or self._membership is None:
            return
        waited = time.monotonic() - self._waiting_since
        if waited < rejoin_after_s(self._membership[2]):
            return
        log.warning("the %s group's member has had no assignment for %.0f s (kafka-python); joining again with a "
                    "new consumer", self._group, waited)
        held = sorted(self._tps)  # none after an eager revocation; the caller is told all the same if any are
        if held:
            self._membership[1](held)
        self._join()

    def assigned(self) -> set[int]:
        return set(self._tps)

    def fetch(self, max_records: int, timeout_s: float, build: Build[T]) -> list[T]:
        self._unstick()
        consumer = self._client()
        with self._reading:
            polled = consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [build(r.partition, r.offset, r.key, r.value, r.headers, r.timestamp)
                for batch in polled.values() for r in batch]

    def end_offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        consumer = self._client()
        with kafka_errors(f"reading the end offsets of {self.topic}"):
            ends = consumer.end_offsets([self._tp(p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}

    def beginning_offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        consumer = self._client()
        with self._reading:
            starts = consumer.beginning_offsets([self._tp(p) for p in partitions])
        return {tp.partition: offset for tp, offset in starts.items()}

    def offsets_for_time(self, partitions: Iterable[int], timestamp_ms: int) -> dict[int, int | None]:
        consumer = self._client()
        with self._reading:
            found = consumer.offsets_for_times({self._tp(p): timestamp_ms for p in partitions})
        return {tp.partition: (hit.offset if hit is not None else None) for tp, hit in found.items()}

    def positions(self) -> dict[int, int]:
        consumer = self._client()
        with self._reading:
            return {partition: consumer.position(tp) for partition, tp in self._tps.items()}

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close(timeout_ms=CLOSE_TIMEOUT_MS)
            self._consumer = None
            self._tps = {}
            self._waiting_since = None


class KafkaPythonTransactionalWriter(Closing):
    """The transactional writer port on a ``KafkaProducer`` (murmur2 partitions, key hashes cached)."""

    def __init__(self, settings: KafkaSettings, *, transactional_id: str) -> None:
        self._settings = settings
        self._transactional_id = transactional_id
        self._producer: Any = None
        self._sending = kafka_errors("Kafka producer, send")

    def _client(self) -> Any:
        if self._producer is None:
            with kafka_errors(f"cannot reach Kafka at {self._settings.bootstrap_servers}"):
                self._producer = KafkaProducer(
                    **self._settings.client_options(),
                    transactional_id=self._transactional_id,
                    enable_idempotence=True,
                    acks="all",
                    linger_ms=5,
                    # A batch of the store's log is one transaction of up to ~1000 events: large record
                    # batches keep kafka-python's per-batch bookkeeping (its main cost) small.
                    batch_size=1_048_576,
                    max_request_size=MAX_RECORD_BYTES,
                    partitioner=key_partitioner(),
                )
        return self._producer

    def init_transactions(self) -> None:
        producer = self._client()
        with kafka_errors("Kafka producer, init_transactions"):
            producer.init_transactions()

    def begin_transaction(self) -> None:
        producer = self._client()
        with kafka_errors("Kafka producer, begin_transaction"):
            producer.begin_transaction()

    def send(self, topic: str, *, key: bytes, value: bytes, headers: Headers) -> None:
        with self._sending:
            self._producer.send(topic, key=key, value=value, headers=headers)

    def commit_transaction(self) -> None:
        with kafka_errors("Kafka producer, commit_transaction"):
            self._producer.commit_transaction()

    def abort_transaction(self) -> None:
        with kafka_errors("Kafka producer, abort_transaction"):
            self._producer.abort_transaction()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None


class KafkaPythonAcknowledgedProducer(Closing):
    """The acknowledged producer port on a ``KafkaProducer`` (acks=all, idempotent); it fails with IntakeUnavailable."""

    def __init__(self, settings: KafkaSettings, *, timeout_s: float) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._producer: Any = None
        self._acknowledging = kafka_errors(not_acknowledged, raises=IntakeUnavailable)

    def _client(self) -> Any:
        if self._producer is None:
            with kafka_errors(unreachable(self._settings.bootstrap_servers), raises=IntakeUnavailable):
                self._producer = KafkaProducer(
                    **self._settings.client_options(), acks="all", enable_idempotence=True, linger_ms=2,
                    max_request_size=MAX_RECORD_BYTES, bootstrap_timeout_ms=int(self._timeout_s * 1000),
                )
        return self._producer

    def send_all(
        self, topic: str, records: Sequence[tuple[bytes, bytes]], headers: Sequence[Headers] | None = None
    ) -> list[tuple[int, int]]:
        producer = self._client()
        with self._acknowledging:
            futures = [producer.send(topic, key=key, value=value, headers=list(headers[i]) if headers else None)
                       for i, (key, value) in enumerate(records)]
            stored = [future.get(timeout=self._timeout_s) for future in futures]
        return [(meta.partition, meta.offset) for meta in stored]

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                with self._acknowledging:  # flush raises kafka-python's KafkaTimeoutError on what stays unsent
                    producer.flush(timeout=self._timeout_s)
            finally:
                producer.close(timeout=self._timeout_s)


class KafkaPythonTopicAdmin(Closing):
    """The topic admin port on a ``KafkaAdminClient``."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._admin: Any = None
        self._administering = kafka_errors("Kafka topic administration failed")

    def _client(self) -> Any:
        if self._admin is None:
            with kafka_errors(f"cannot reach Kafka at {self._settings.bootstrap_servers}"):
                self._admin = KafkaAdminClient(**self._settings.client_options(), request_timeout_ms=30_000)
        return self._admin

    def topics(self) -> set[str]:
        admin = self._client()
        with self._administering:
            return set(admin.list_topics())

    def partition_count(self, topic: str) -> int:
        admin = self._client()
        with self._administering:
            return len(admin.describe_topics([topic])[0]["partitions"])

    def create_topic(self, topic: str, *, partitions: int, replication_factor: int, config: Mapping[str, str]) -> bool:
        admin = self._client()
        with self._administering:
            try:
                admin.create_topics(
                    {topic: {"num_partitions": partitions, "replication_factor": replication_factor,
                             "configs": dict(config)}},
                    wait_for_metadata=True,
                )
            except TopicAlreadyExistsError:
                self._await_leaders(admin, topic)
                return False
            self._await_leaders(admin, topic)
        return True

    def _await_leaders(self, admin: Any, topic: str, timeout_s: float = 30.0) -> None:
        """Return once every partition of ``topic`` has a leader. A topic just created is in the metadata before its
        partitions have leaders: a client that used it at once was answered "not leader for partition" (reading its
        end offsets), or a consumer group was given none of its partitions until its next metadata refresh."""
        deadline = time.monotonic() + timeout_s
        while True:
            described = admin.describe_topics([topic])[0]
            partitions = described.get("partitions") or []
            if described.get("error_code", 0) == 0 and partitions and all(
                    p.get("error_code", 0) == 0 and p.get("leader_id", p.get("leader", -1)) >= 0 for p in partitions):
                return
            if time.monotonic() >= deadline:
                raise BackendError(f"topic {topic} was created but its partitions have no leader after {timeout_s:.0f} s; "
                                   "check the brokers (`kafka-topics.sh --describe`) and try again")
            time.sleep(0.05)

    def topic_config(self, topic: str) -> dict[str, str]:
        admin = self._client()
        with self._administering:
            described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        return {name: str(entry["value"]) for name, entry in described["topic"][topic].items()}

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None


# The ports this client implements, by role (what clients.KafkaClient opens).
READER = KafkaPythonPartitionReader
TRANSACTIONAL_WRITER = KafkaPythonTransactionalWriter
ACKNOWLEDGED_PRODUCER = KafkaPythonAcknowledgedProducer
