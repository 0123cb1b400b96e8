"""The channel adapter SDK: publish what happened on a channel, durably, before telling the customer.

::

    with KafkaIntakeClient(KafkaSettings.from_environ(os.environ), adapter="mail-gateway-1") as intake:
        receipt = intake.submit(ContactDraft(channel="email", channel_message_id=msg_id, ...))
        # the broker has it (acks=all, idempotent producer): now say "received"

``submit`` validates and encodes the record first — invalid input is refused before anything
is published, with a precise message — then waits until the broker acknowledged the write.
"""

from __future__ import annotations

from dataclasses import dataclass

from caseledger.ledger.domain.values import ContactDraft
from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.intake.records import IntakeCodec, IntakeMessage, kind_of
from caseledger.ledger.intake.signatures import AdapterSigner
from caseledger.ledger.kafka.clients import KAFKA_PYTHON, KafkaClient
from caseledger.ledger.kafka.ports import AcknowledgedProducer, Closing
from caseledger.ledger.settings import KafkaSettings


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


class KafkaIntakeClient(Closing):
    """Publishes intake records with acks=all and an idempotent producer; returns once stored.

    ``producer`` picks the Kafka client: kafka-python (default) or confluent (librdkafka, pip
    install 'caseledger[confluent]'; about a third of the CPU per record). Either puts a record
    on the same partition (Kafka's default murmur2 of the key), so adapters on different clients
    keep a customer's contacts in order.
    """

    def __init__(
        self, settings: KafkaSettings, *, adapter: str, timeout_s: float = 30.0, producer: str = KAFKA_PYTHON,
        signer: AdapterSigner | None = None,
    ) -> None:
        if signer is not None and signer.adapter != adapter:
            raise ConfigurationError(f"the signing key is adapter {signer.adapter!r}'s, not {adapter!r}'s")
        self.settings = settings
        self.adapter = adapter
        self.signer = signer  # signs each record's bytes (ledger.signing); None: unsigned
        self.timeout_s = timeout_s
        kafka = KafkaClient(producer, "producer")
        self.client = kafka.name
        self.codec = IntakeCodec()
        # The Kafka producer inside connects on the first submit.
        self.producer: AcknowledgedProducer = kafka.open_acknowledged_producer(settings, timeout_s=timeout_s)

    def submit(self, message: IntakeMessage) -> Receipt:
        """Validate, encode and publish one record; returns when the broker acknowledged it."""
        return self.submit_many([message])[0]

    def submit_many(self, messages: list[IntakeMessage]) -> list[Receipt]:
        """Publish many records (all validated first); returns when every one is acknowledged."""
        encoded = [(m, self.codec.encode(m, adapter=self.adapter)) for m in messages]
        topic = self.settings.intake_topic
        headers = [self.signer.headers(data) for _, data in encoded] if self.signer is not None else None
        stored = self.producer.send_all(topic, [(intake_key(m), data) for m, data in encoded], headers)
        return [Receipt(topic=topic, partition=partition, offset=offset, kind=kind_of(m))
                for (m, _), (partition, offset) in zip(encoded, stored, strict=True)]

    def close(self) -> None:
        """Flush and close the Kafka producer."""
        self.producer.close()

