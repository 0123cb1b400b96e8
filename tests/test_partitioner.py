"""The publisher's cached key partitioner picks exactly the partition Kafka's default one does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner

from ledger.kafka import key_partitioner


class Cluster:
    def __init__(self, partitions: int) -> None:
        self._partitions = set(range(partitions))

    def topics(self) -> set[str]:
        return {"events"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self._partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self._partitions


@settings(max_examples=300)
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
