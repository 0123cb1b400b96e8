"""The confluent reader's end offsets while librdkafka's metadata lags the cluster.

Finding (CI): ``bench soak`` died in its last step with "reading the end offsets of bench-events-…:
Local: Unknown partition": librdkafka answered for a partition its metadata did not hold at that
moment, and the reader gave up at once. Such an answer now is asked again, up to the reader's timeout.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from caseledger.ledger.errors import BackendError
from caseledger.ledger.kafka.confluent import ConfluentPartitionReader
from caseledger.ledger.settings import KafkaSettings


class LaggingConsumer:
    """A consumer whose first answers for each partition are ``errors``, then its watermarks."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.asked: list[int] = []

    def get_watermark_offsets(self, tp: Any, *, timeout: float, cached: bool) -> tuple[int, int]:
        self.asked.append(tp.partition)
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return (0, 10 + tp.partition)


def reader(consumer: LaggingConsumer, timeout_s: float = 5.0) -> ConfluentPartitionReader:
    opened = ConfluentPartitionReader(KafkaSettings(bootstrap_servers="127.0.0.1:9"), topic="events", group="t",
                                      timeout_s=timeout_s)
    opened._consumer = consumer
    return opened


def test_an_unknown_partition_for_a_moment_is_asked_again() -> None:
    consumer = LaggingConsumer(KafkaError._UNKNOWN_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)
    assert reader(consumer).end_offsets([0, 1]) == {0: 10, 1: 11}
    assert consumer.asked == [0, 0, 0, 1]


def test_an_error_that_does_not_pass_is_raised_at_once() -> None:
    consumer = LaggingConsumer(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(BackendError, match="reading the end offsets of events"):
        reader(consumer).end_offsets([0])
    assert consumer.asked == [0]


def test_an_unknown_partition_past_the_timeout_is_an_error() -> None:
    consumer = LaggingConsumer(*[KafkaError._UNKNOWN_PARTITION] * 1000)
    with pytest.raises(BackendError, match="Unknown partition"):
        reader(consumer, timeout_s=0.3).end_offsets([0])
    assert 2 <= len(consumer.asked) <= 10
