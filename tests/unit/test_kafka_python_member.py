"""A kafka-python group member that never hears its group's answer joins again with a new consumer.

Finding (CI, four runs): with kafka-python 3.0.12, a member led an assignment ("Elected group leader
-- performing partition assignments") and then nothing: no assignment, heartbeats off while it
joined, the group dropped it, and it never asked again. TestGroupMember waited 30 s for records,
a projection runner never got its share in 60 s, `caseledger run`'s runner gave its partitions up
80 ms after getting them and never had them back. The reader now takes a member with no answer
after twice the session timeout plus 10 s for stuck and joins with a new consumer.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import pytest
from kafka import TopicPartition

import caseledger.ledger.kafka.kafka_python as module
from caseledger.ledger.kafka.kafka_python import KafkaPythonPartitionReader, rejoin_after_s
from caseledger.ledger.settings import KafkaSettings


class FakeConsumer:
    """A KafkaConsumer whose group answers (calls the listener) only as the test says."""

    made: ClassVar[list[FakeConsumer]] = []

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.listener: Any = None
        self.closed = False
        self.seeks: list[tuple[int, int]] = []
        FakeConsumer.made.append(self)

    def assign(self, partitions: list[Any]) -> None:
        pass

    def subscribe(self, topics: list[str], *, listener: Any) -> None:
        self.listener = listener

    def poll(self, *, timeout_ms: int, max_records: int) -> dict[Any, Any]:
        return {}

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp.partition, offset))

    def seek_to_beginning(self, tp: Any) -> None:
        self.seeks.append((tp.partition, 0))

    def close(self, timeout_ms: int | None = None) -> None:
        self.closed = True


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeConsumer]:
    FakeConsumer.made = []
    monkeypatch.setattr(module, "KafkaConsumer", FakeConsumer)
    monkeypatch.setattr(module, "rejoin_after_s", lambda session_timeout_ms: 0.05)
    return FakeConsumer


def member(assigned: list[list[int]]) -> KafkaPythonPartitionReader:
    reader = KafkaPythonPartitionReader(KafkaSettings(bootstrap_servers="127.0.0.1:9"), topic="events", group="g")
    reader.subscribe(lambda parts: (assigned.append(parts), {p: 5 for p in parts})[1], lambda parts: None,
                     session_timeout_ms=6000)
    return reader


def test_a_member_that_never_hears_its_group_joins_again_with_a_new_consumer(fake: type[FakeConsumer]) -> None:
    assigned: list[list[int]] = []
    reader = member(assigned)
    reader.fetch(10, 0.0, lambda *a: a)
    assert len(fake.made) == 1  # not yet
    time.sleep(0.06)
    reader.fetch(10, 0.0, lambda *a: a)
    assert len(fake.made) == 2 and fake.made[0].closed and not fake.made[1].closed
    assert fake.made[1].options["group_id"] == fake.made[0].options["group_id"]
    fake.made[1].listener.on_partitions_assigned({TopicPartition("events", 1)})  # the new member is answered
    assert assigned == [[1]] and reader.assigned() == {1} and fake.made[1].seeks == [(1, 5)]
    time.sleep(0.06)
    reader.fetch(10, 0.0, lambda *a: a)
    assert len(fake.made) == 2  # answered: kept


def test_an_empty_share_is_an_answer_and_a_rebalance_with_no_answer_is_not(fake: type[FakeConsumer]) -> None:
    assigned: list[list[int]] = []
    reader = member(assigned)
    fake.made[0].listener.on_partitions_assigned(set())  # more members than partitions: nothing for this one
    time.sleep(0.06)
    reader.fetch(10, 0.0, lambda *a: a)
    assert len(fake.made) == 1 and assigned == []
    fake.made[0].listener.on_partitions_revoked(set())  # a rebalance began ...
    reader.fetch(10, 0.0, lambda *a: a)
    assert len(fake.made) == 1
    time.sleep(0.06)  # ... and its answer never came
    reader.fetch(10, 0.0, lambda *a: a)
    assert len(fake.made) == 2


def test_a_member_waits_past_the_session_timeout_before_it_is_taken_for_stuck() -> None:
    # A rebalance waits for its slowest member up to that member's session timeout: never cut short.
    assert rejoin_after_s(6000) == 22 and rejoin_after_s(10_000) == 30


def test_a_reader_of_assigned_partitions_is_never_rejoined(fake: type[FakeConsumer]) -> None:
    reader = KafkaPythonPartitionReader(KafkaSettings(bootstrap_servers="127.0.0.1:9"), topic="events", group="g")
    reader.assign({0: 3})
    time.sleep(0.06)
    reader.fetch(10, 0.0, lambda *a: a)
    assert len(fake.made) == 1


def test_a_member_taken_for_stuck_tells_its_caller_of_the_partitions_it_still_held(fake: type[FakeConsumer]) -> None:
    """Not seen with the eager protocol (a rebalance revokes every partition first), but the caller must never go on
    believing it holds a partition another member may now have."""
    revoked: list[list[int]] = []
    reader = KafkaPythonPartitionReader(KafkaSettings(bootstrap_servers="127.0.0.1:9"), topic="events", group="g")
    reader.subscribe(lambda parts: dict.fromkeys(parts, 0), revoked.append, session_timeout_ms=6000)
    fake.made[0].listener.on_partitions_assigned({TopicPartition("events", 2), TopicPartition("events", 0)})
    reader._waiting_since = time.monotonic() - 1  # as if a rebalance began and never ended, the partitions kept
    reader.fetch(10, 0.0, lambda *a: a)
    assert revoked == [[0, 2]] and len(fake.made) == 2 and reader.assigned() == set()
