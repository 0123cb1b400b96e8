"""The publisher's cached key partitioner picks exactly the partition Kafka's default one does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner

from caseledger.ledger.kafka.kafka_python import key_partitioner
from tests.support.examples import examples


class Cluster:
    def __init__(self, partitions: int) -> None:
        self._partitions = set(range(partitions))

    def topics(self) -> set[str]:
        return {"events"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self._partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self._partitions


@settings(max_examples=examples(300))
@given(key=st.binary(min_size=1, max_size=64), partitions=st.integers(1, 64))
def test_same_partition_as_the_default_partitioner(key: bytes, partitions: int) -> None:
    cluster = Cluster(partitions)
    ours = key_partitioner().partition("events", key, key, None, None, cluster)
    assert ours == DefaultPartitioner().partition("events", key, key, None, None, cluster)
    assert ours == key_partitioner().partition("events", key, key, None, None, cluster)  # cached: same again


def test_refuses_a_record_without_key_or_an_unknown_topic() -> None:
    import pytest

    with pytest.raises(ValueError, match="key"):
        key_partitioner().partition("events", None, None, None, None, Cluster(3))
    with pytest.raises(ValueError, match="not found"):
        key_partitioner().partition("other", b"k", b"k", None, None, Cluster(3))


class QueueConsumer:
    """confluent-kafka's consume/poll contract over a local queue (what librdkafka has fetched)."""

    def __init__(self, queued: list[str], arriving: list[str]) -> None:
        self.queued, self.arriving, self.waits = list(queued), list(arriving), []

    def consume(self, n: int, timeout: float) -> list[str]:
        if timeout and len(self.queued) < n:
            raise AssertionError("a blocking consume would wait for a full batch")
        taken, self.queued = self.queued[:n], self.queued[n:]
        return taken

    def poll(self, timeout: float) -> str | None:
        self.waits.append(timeout)
        if not self.arriving:
            return None
        self.queued += self.arriving[1:]
        first, self.arriving = self.arriving[0], []
        return first


def test_consume_available_takes_what_is_queued_without_waiting_for_a_full_batch() -> None:
    from caseledger.ledger.kafka.confluent import consume_available

    queued = QueueConsumer(["a", "b", "c"], [])
    assert consume_available(queued, 500, 0.2) == ["a", "b", "c"] and queued.waits == []
    assert consume_available(QueueConsumer(list("abcdef"), []), 4, 0.2) == list("abcd")
    idle = QueueConsumer([], ["x", "y"])
    assert consume_available(idle, 500, 0.2) == ["x", "y"] and idle.waits == [0.2]  # waits for the first only
    assert consume_available(QueueConsumer([], []), 500, 0.2) == []
    assert consume_available(QueueConsumer([], ["x", "y"]), 1, 0.2) == ["x"]
