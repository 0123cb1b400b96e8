"""Proof that the test Kafka broker is real Apache Kafka, and survives restarts.

The fixtures ``kafka_bootstrap`` and ``kafka_broker`` come from
``tests/support/kafka_broker.py`` via ``tests/conftest.py``.  (Not via
``pytest_plugins`` here: with the conftest import as well, pytest would warn
that the module was imported before it could be registered as a plugin.)
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.serializer import DefaultSerializer
from kafka.structs import TopicPartition

from tests.support.kafka_broker import KafkaBroker, cache_is_complete

#: UTF-8 str <-> bytes.  kafka-python 3.0 deprecates plain callables as
#: (de)serializers; Serializer/Deserializer instances avoid the warning.
UTF8 = DefaultSerializer()


def _new_topic(bootstrap: str, partitions: int) -> str:
    """Create a uniquely named topic and wait until every partition has a leader."""
    name = f"test-broker-{uuid.uuid4().hex[:12]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-kafka-broker")
    try:
        admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": 1}},
            wait_for_metadata=True,
        )
        [described] = admin.describe_topics([name])
        assert described["name"] == name
        assert len(described["partitions"]) == partitions
    finally:
        admin.close()
    return name


def _producer(bootstrap: str) -> KafkaProducer:
    """An idempotent acks=all producer, the configuration the ledger relies on."""
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        key_serializer=UTF8,
        value_serializer=UTF8,
    )


def _produce(producer: KafkaProducer, topic: str, items: Iterable[tuple[str, str]]) -> None:
    """Send all (key, value) pairs and wait for every acknowledgement."""
    futures = [producer.send(topic, key=k, value=v) for k, v in items]
    producer.flush(timeout=30)
    for future in futures:
        future.get(timeout=30)


def _consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list:
    """Read every record of *topic* from the beginning with manual assignment."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        key_deserializer=UTF8,
        value_deserializer=UTF8,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(partitions)
        assert sum(end.values()) == expected, f"end offsets {end}"
        records: list = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


@pytest.mark.kafka
def test_keyed_messages_keep_per_key_order(kafka_bootstrap: str) -> None:
    topic = _new_topic(kafka_bootstrap, partitions=3)
    keys = [f"case-{i}" for i in range(10)]
    sent = [(keys[i % 10], f"{keys[i % 10]}:{i // 10}") for i in range(100)]

    producer = _producer(kafka_bootstrap)
    try:
        _produce(producer, topic, sent)
    finally:
        producer.close(timeout=10)

    records = _consume_all(kafka_bootstrap, topic, expected=100)
    assert len(records) == 100

    by_key: dict[str, list[str]] = defaultdict(list)
    partitions_of_key: dict[str, set[int]] = defaultdict(set)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_key[record.key].append(record.value)
        partitions_of_key[record.key].add(record.partition)

    assert sorted(by_key) == sorted(keys)
    for key in keys:
        # Kafka orders within a partition and the key pins the partition, so
        # each key's events come back exactly in the order they were sent.
        assert by_key[key] == [f"{key}:{n}" for n in range(10)]
        assert len(partitions_of_key[key]) == 1
    # The default partitioner really spread the keys over the 3 partitions.
    assert {r.partition for r in records} == {0, 1, 2}


@pytest.mark.kafka
def test_data_survives_broker_restart(kafka_broker: KafkaBroker | None, kafka_bootstrap: str) -> None:
    if kafka_broker is None:
        pytest.skip("running against an external broker (CASELEDGER_TEST_KAFKA): cannot restart it")
    topic = _new_topic(kafka_bootstrap, partitions=2)
    address_before = kafka_broker.bootstrap_servers

    # The producer stays open across the restart: that is the "broker bounces
    # mid-stream" situation, and it must reconnect on its own.
    producer = _producer(kafka_bootstrap)
    try:
        _produce(producer, topic, [(f"k{i % 4}", f"before-{i}") for i in range(20)])
        kafka_broker.restart()
        assert kafka_broker.bootstrap_servers == address_before
        _produce(producer, topic, [(f"k{i % 4}", f"after-{i}") for i in range(5)])
    finally:
        producer.close(timeout=10)

    values = sorted(r.value for r in _consume_all(kafka_bootstrap, topic, expected=25))
    assert values == sorted([f"before-{i}" for i in range(20)] + [f"after-{i}" for i in range(5)])


@pytest.mark.kafka
def test_data_survives_broker_crash(kafka_broker: KafkaBroker | None, kafka_bootstrap: str) -> None:
    if kafka_broker is None:
        pytest.skip("running against an external broker (CASELEDGER_TEST_KAFKA): cannot kill it")
    topic = _new_topic(kafka_bootstrap, partitions=1)
    producer = _producer(kafka_bootstrap)
    try:
        _produce(producer, topic, [("k", f"v{i}") for i in range(10)])
    finally:
        producer.close(timeout=10)

    # SIGKILL: no clean shutdown, the broker recovers its log on the next start.
    kafka_broker.kill()
    assert not kafka_broker.running
    kafka_broker.start()

    records = _consume_all(kafka_bootstrap, topic, expected=10)
    assert [r.value for r in records] == [f"v{i}" for i in range(10)]


def test_jar_cache_marker_guards_half_finished_copies(tmp_path: Path) -> None:
    version_dir = tmp_path / "kafka-x"
    libs = version_dir / "libs"
    libs.mkdir(parents=True)
    (libs / "a.jar").write_bytes(b"jar")
    # Jars present but no marker: a copy that was cut short.
    assert not cache_is_complete(version_dir)
    (version_dir / "libs.complete").write_text("a.jar\nb.jar\n")
    # Marker lists a jar that is missing: someone deleted part of the cache.
    assert not cache_is_complete(version_dir)
    (libs / "b.jar").write_bytes(b"jar")
    assert cache_is_complete(version_dir)
