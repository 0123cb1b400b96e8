"""The channel adapter SDK: publish what happened on a channel, durably, before telling the customer.

::

    with KafkaIntakeClient(KafkaSettings.resolve(), adapter="mail-gateway-1") as intake:
        receipt = intake.submit(ContactDraft(channel="email", channel_message_id=msg_id, ...))
        # the broker has it (acks=all, idempotent producer): now say "received"

``submit`` validates and encodes the record first — invalid input is refused before anything
is published, with a precise message — then waits until the broker acknowledged the write.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

from caseledger.ledger.domain.values import ContactDraft
from caseledger.ledger.errors import BackendError
from caseledger.ledger.intake import IntakeCodec, IntakeMessage, kind_of
from caseledger.ledger.kafka.settings import (
    CONFLUENT,
    KAFKA_PYTHON,
    ConfluentPartitioner,
    KafkaSettings,
    check_client,
    import_confluent,
    librdkafka_config,
    produce_waiting,
)

MAX_REQUEST_BYTES = 4_194_304


@dataclass(frozen=True)
class Receipt:
    """Where the broker durably stored an intake record."""

    topic: str
    partition: int
    offset: int
    kind: str


def intake_key(message: IntakeMessage) -> bytes:
    """Records of one customer identity (contacts) or one case (reports) stay in order on one partition."""
    if isinstance(message, ContactDraft):
        return str(message.identity).encode()
    return message.case_reference.strip().upper().encode()


class KafkaIntakeClient:
    """Publishes intake records with acks=all and an idempotent producer; returns once stored.

    ``producer`` picks the Kafka client: kafka-python (default) or confluent (librdkafka, pip
    install 'caseledger[confluent]'; about a third of the CPU per record). Either puts a record
    on the same partition (Kafka's default murmur2 of the key), so adapters on different clients
    keep a customer's contacts in order.
    """

    def __init__(
        self, settings: KafkaSettings, *, adapter: str, timeout_s: float = 30.0, producer: str = KAFKA_PYTHON
    ) -> None:
        self.settings = settings
        self.adapter = adapter
        self.timeout_s = timeout_s
        self.client = check_client(producer, "producer")
        self.codec = IntakeCodec()
        self._producer: Any = None

    @property
    def producer(self) -> Any:
        if self._producer is None:
            if self.client == CONFLUENT:
                self._producer = _ConfluentIntakeProducer(self.settings, self.timeout_s)
                return self._producer
            from kafka import KafkaProducer
            from kafka.errors import KafkaError

            try:
                self._producer = KafkaProducer(
                    **self.settings.client_options(),
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=2,
                    max_request_size=MAX_REQUEST_BYTES,
                )
            except KafkaError as error:
                raise BackendError(f"cannot reach Kafka at {self.settings.bootstrap_servers}: {error}") from error
        return self._producer

    def submit(self, message: IntakeMessage) -> Receipt:
        """Validate, encode and publish one record; returns when the broker acknowledged it."""
        return self.submit_many([message])[0]

    def submit_many(self, messages: list[IntakeMessage]) -> list[Receipt]:
        """Publish many records (all validated first); returns when every one is acknowledged."""
        encoded = [(m, self.codec.encode(m, adapter=self.adapter)) for m in messages]
        topic = self.settings.intake_topic
        if self.client == CONFLUENT:
            stored = self.producer.send_all(topic, [(intake_key(m), data) for m, data in encoded])
            return [Receipt(topic=topic, partition=partition, offset=offset, kind=kind_of(m))
                    for (m, _), (partition, offset) in zip(encoded, stored, strict=True)]
        from kafka.errors import KafkaError

        futures = [
            (kind_of(m), self.producer.send(topic, key=intake_key(m), value=data))
            for m, data in encoded
        ]
        receipts = []
        try:
            for kind, future in futures:
                meta = future.get(timeout=self.timeout_s)
                receipts.append(Receipt(topic=meta.topic, partition=meta.partition, offset=meta.offset, kind=kind))
        except KafkaError as error:
            raise _not_acknowledged(error) from error
        return receipts

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(timeout=self.timeout_s)
            self._producer.close(timeout=self.timeout_s)
            self._producer = None

    def __enter__(self) -> KafkaIntakeClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _not_acknowledged(error: Exception) -> BackendError:
    return BackendError(
        f"Kafka did not acknowledge the intake record ({error}); it may not be stored — "
        "resubmit it (the ledger recognises the same channel message id)"
    )


class _ConfluentIntakeProducer:
    """The SDK's producer on confluent-kafka (librdkafka): acks=all, idempotent, murmur2 partitions."""

    def __init__(self, settings: KafkaSettings, timeout_s: float) -> None:
        confluent_kafka = import_confluent("producer")
        self._error: type[Exception] = confluent_kafka.KafkaException
        self.timeout_s = timeout_s
        config = librdkafka_config(settings)
        config.update({
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "message.max.bytes": MAX_REQUEST_BYTES,
            "message.timeout.ms": max(1, round(timeout_s * 1000)),
        })
        self._producer = confluent_kafka.Producer(config)
        self._partitioner = ConfluentPartitioner(self._producer, settings, timeout_s)

    def send_all(self, topic: str, records: list[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
        """Produce every (key, value); returns (partition, offset) of each once all are acknowledged."""
        outcomes: list[Any] = [None] * len(records)

        def delivered(index: int) -> Any:
            def report(error: Any, message: Any) -> None:
                outcomes[index] = error if error is not None else (message.partition(), message.offset())
            return report

        for index, (key, value) in enumerate(records):
            partition = self._partitioner.partition(topic, key)
            try:
                produce_waiting(self._producer, topic, value=value, key=key, partition=partition,
                                on_delivery=delivered(index))
            except self._error as error:
                raise _not_acknowledged(error) from error
        left = self._producer.flush(self.timeout_s)
        if left:
            raise _not_acknowledged(TimeoutError(f"{left} record(s) unacknowledged after {self.timeout_s:g} s"))
        for outcome in outcomes:
            if not isinstance(outcome, tuple):
                raise _not_acknowledged(self._error(outcome))
        return outcomes

    def flush(self, timeout: float) -> None:
        self._producer.flush(timeout)

    def close(self, timeout: float) -> None:
        """Nothing left: the client flushed just before, and librdkafka frees the producer with it."""
