"""Fresh topics per test on the session's broker, and the helpers that publish, drain and read them."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.intake.adapter_sdk import intake_key
from caseledger.ledger.intake.records import IntakeCodec
from caseledger.ledger.intake.worker import KafkaIntakeWorker
from caseledger.ledger.kafka.clients import KAFKA_PYTHON, KafkaClient
from caseledger.ledger.kafka.publisher import KafkaEventPublisher
from caseledger.ledger.kafka.topics import ensure_topics
from caseledger.ledger.settings import KafkaSettings

#: The client ``verify(kafka=…)`` reads the topics with, as ``caseledger audit verify`` gives it.
AUDIT_READERS = KafkaClient(KAFKA_PYTHON, "consumer")


def fresh_topics(bootstrap: str, *, partitions: int = 3, intake_partitions: int | None = None) -> KafkaSettings:
    """New intake and events topics (created), so a test never sees another test's records."""
    suffix = uuid.uuid4().hex[:8]
    settings = KafkaSettings.resolve(
        bootstrap_servers=bootstrap, intake_topic=f"intake-{suffix}", events_topic=f"events-{suffix}",
        intake_partitions=partitions if intake_partitions is None else intake_partitions,
        events_partitions=partitions,
        intake_key_salt="the tests' deployment salt",  # as a deployment gives its adapters (README)
    )
    ensure_topics(settings)
    return settings


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaSettings:
    """Fresh topics of three partitions each on the session's broker."""
    return fresh_topics(kafka_bootstrap)


def drain(worker: KafkaIntakeWorker, until: int, timeout: float = 60) -> None:
    """Runs the intake worker in a thread until it has taken ``until`` records."""
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while worker.stats.records < until and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(30)
    assert worker.stats.records >= until, worker.stats.line()


def publish_unchecked(kafka: KafkaSettings, messages: list[Any], *, adapter: str, signer: Any = None) -> None:
    """Publish intake records as an adapter that skips the SDK's validation would (an older one, or another
    language's): encoded and signed like the SDK's, keyed with the same salt, never validated."""
    codec = IntakeCodec()
    encoded = [(m, codec.encode(m, adapter=adapter)) for m in messages]
    headers = [signer.headers(data) for _, data in encoded] if signer is not None else None
    salt = (kafka.intake_key_salt or "an adapter's own salt").encode()
    with KafkaClient(KAFKA_PYTHON, "producer").open_acknowledged_producer(kafka, timeout_s=30) as producer:
        producer.send_all(kafka.intake_topic, [(intake_key(m, salt), data) for m, data in encoded], headers)


def publish_all(
    ledger: CaseLedger, settings: KafkaSettings, timeout: float = 60, producer: str = "kafka-python"
) -> KafkaEventPublisher:
    """Runs a publisher in a thread until every event of ``ledger`` is on the events topic."""
    publisher = KafkaEventPublisher(ledger, settings, batch_size=200, producer=producer)
    stop = threading.Event()
    thread = threading.Thread(target=publisher.run, args=(stop,))
    thread.start()
    target = ledger.recorder.max_notification_id() or 0
    deadline = time.monotonic() + timeout
    try:
        while publisher.stats.position < target and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(30)
    assert publisher.stats.position == target
    return publisher


def read_topic(settings: KafkaSettings, topic: str, *, committed: bool = True) -> list[Any]:
    """Every record of ``topic`` from its beginning to its current end (committed ones by default)."""
    consumer = KafkaConsumer(
        **settings.client_options(), group_id=None, enable_auto_commit=False,
        isolation_level="read_committed" if committed else "read_uncommitted",
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()
