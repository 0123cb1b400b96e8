"""Which Kafka client plays each role: the one place that checks a client's name and opens its ports.

``confluent`` (confluent-kafka, librdkafka: a required dependency) is the default of every service,
the SDK and the benchmarks: it costs about a third of kafka-python's CPU per record. ``kafka-python``
stays supported by option. Both read and write the same records on the same partitions, so services
on different clients share topics, positions and transactional ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from caseledger.ledger.errors import ConfigurationError

if TYPE_CHECKING:
    from caseledger.ledger.kafka.ports import (
        AcknowledgedProducer,
        OnLostPosition,
        PartitionReader,
        TopicAdmin,
        TransactionalWriter,
    )
    from caseledger.ledger.settings import KafkaSettings

KAFKA_PYTHON, CONFLUENT = "kafka-python", "confluent"
KAFKA_CLIENTS = (KAFKA_PYTHON, CONFLUENT)
DEFAULT_CLIENT = CONFLUENT


@dataclass(frozen=True)
class KafkaClient:
    """A Kafka client the ledger can use as ``role`` (consumer or producer), by name; opens its ports."""

    name: str
    role: str

    def __post_init__(self) -> None:
        if self.name not in KAFKA_CLIENTS:
            raise ConfigurationError(f"Kafka {self.role} {self.name!r}: use one of {', '.join(KAFKA_CLIENTS)}")

    def __str__(self) -> str:
        return self.name

    def module(self) -> ModuleType:
        """The module implementing the ports on this client (imported on first use).

        Each names its implementations ``READER``, ``TRANSACTIONAL_WRITER`` and ``ACKNOWLEDGED_PRODUCER``.
        """
        if self.name == CONFLUENT:
            try:
                from caseledger.ledger.kafka import confluent
            except ImportError as error:
                if not (error.name or "").startswith("confluent_kafka"):
                    raise
                raise ConfigurationError(
                    f"the confluent {self.role} needs confluent-kafka (a dependency of caseledger: reinstall "
                    f"it, pip install caseledger), or choose kafka-python as {self.role}"
                ) from None
            return confluent
        from caseledger.ledger.kafka import kafka_python

        return kafka_python

    def open_reader(
        self, settings: KafkaSettings, *, topic: str, group: str, fetch_wait_ms: int = 100,
        partition_fetch_bytes: int | None = None, on_lost_position: OnLostPosition = "error", advice: str = "",
        timeout_s: float = 30.0,
    ) -> PartitionReader:
        """A reader of ``topic``'s assigned partitions; ``group`` names the reader's role (never joined).

        ``advice`` ends every read error's message: what the reader's owner should do about it.
        """
        reader: PartitionReader = self.module().READER(
            settings, topic=topic, group=group, fetch_wait_ms=fetch_wait_ms, partition_fetch_bytes=partition_fetch_bytes,
            on_lost_position=on_lost_position, advice=advice, timeout_s=timeout_s,
        )
        return reader

    def key_hash(self, key: bytes) -> int:
        """Kafka's default partitioner hash of ``key`` (murmur2, as the Java client): the same on either client."""
        from caseledger.ledger.kafka.kafka_python import key_hash

        return key_hash(key)

    def open_transactional_writer(self, settings: KafkaSettings, *, transactional_id: str) -> TransactionalWriter:
        """A transactional producer with this ``transactional_id`` (it fences earlier ones on init)."""
        writer: TransactionalWriter = self.module().TRANSACTIONAL_WRITER(settings, transactional_id=transactional_id)
        return writer

    def open_acknowledged_producer(self, settings: KafkaSettings, *, timeout_s: float) -> AcknowledgedProducer:
        """An idempotent acks=all producer whose sends return once acknowledged (or fail after ``timeout_s``)."""
        producer: AcknowledgedProducer = self.module().ACKNOWLEDGED_PRODUCER(settings, timeout_s=timeout_s)
        return producer


def check_client(name: str, role: str) -> str:
    """``name`` if it names a Kafka client the ledger can use as ``role`` (consumer or producer)."""
    return KafkaClient(name, role).name


def open_topic_admin(settings: KafkaSettings) -> TopicAdmin:
    """The topic admin (kafka-python's admin client: the CLI creates topics with it whatever the services use)."""
    from caseledger.ledger.kafka.kafka_python import KafkaPythonTopicAdmin

    return KafkaPythonTopicAdmin(settings)
