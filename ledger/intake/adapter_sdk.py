"""The channel adapter SDK: publish what happened on a channel, durably, before telling the customer.

::

    with KafkaIntakeClient(KafkaSettings.from_environ(os.environ), adapter="mail-gateway-1") as intake:
        receipt = intake.submit(ContactDraft(channel="email", channel_message_id=msg_id, ...))
        # the broker has it (acks=all, idempotent producer): now say "received"

``submit`` validates the record first, with the intake worker's own validator on this process's
clock (``ledger/intake/validation.py``), and encodes it — invalid input raises ValidationError naming the
field, and nothing is published — then waits until the broker acknowledged the write. A broker that
cannot be reached, a timeout or a missing topic raises IntakeUnavailable, whatever the Kafka client:
resubmit the same draft.

Records are keyed so that one customer's contacts (one case's reports) stay on one partition, in order,
without the identity in clear: :func:`intake_key`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from caseledger.ledger.domain.case_references import normalise_reference
from caseledger.ledger.domain.values import ContactDraft
from caseledger.ledger.errors import ConfigurationError, ValidationError
from caseledger.ledger.intake.records import IntakeCodec, IntakeMessage, kind_of
from caseledger.ledger.intake.signatures import AdapterSigner
from caseledger.ledger.intake.validation import ADAPTER_CLOCK, validate_intake
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


INTAKE_KEY_CONTEXT = b"caseledger intake key v1\n"


def intake_key(message: IntakeMessage, salt: bytes) -> bytes:
    """The Kafka key of an intake record: 32 hex digits of HMAC-SHA-256 under ``salt``, never the identity.

    A contact's is over ``contact`` and its identity (``email:jane@example.com``, as :class:`Identity` writes
    it), a report's over ``case`` and its case reference (``CL-…``): one customer identity's contacts, or one
    case's reports, share a partition (Kafka's murmur2 of the key, whichever client) and stay in order. The
    message is ``caseledger intake key v1`` LF, the kind, LF, the value (UTF-8); an adapter in another language
    computes the same (README, "Writing a channel adapter"). Without ``salt`` a key would be a plain hash,
    and an identity is guessable: whoever read the topic's keys could try every e-mail address.
    """
    return IntakeKeys(salt)(message)


class IntakeKeys:
    """:func:`intake_key` under one salt, its HMAC's key schedule done once (a record's key then costs ~1 µs)."""

    __slots__ = ("_prefix",)

    def __init__(self, salt: bytes) -> None:
        self._prefix = hmac.new(salt, INTAKE_KEY_CONTEXT, hashlib.sha256)

    def __call__(self, message: IntakeMessage) -> bytes:
        if isinstance(message, ContactDraft):
            named = f"contact\n{message.identity}"
        else:
            named = f"case\n{normalise_reference(message.case_reference)}"
        keyed = self._prefix.copy()
        keyed.update(named.encode())
        return keyed.hexdigest()[:32].encode()


class KafkaIntakeClient(Closing):
    """Publishes intake records with acks=all and an idempotent producer; returns once stored.

    ``producer`` picks the Kafka client: kafka-python (default) or confluent (librdkafka, pip
    install 'caseledger[confluent]'; about a third of the CPU per record). Either puts a record
    on the same partition (Kafka's default murmur2 of the key), so adapters on different clients
    keep a customer's contacts in order. Keys are :func:`intake_key` under the deployment's
    ``intake_key_salt`` (``CASELEDGER_INTAKE_KEY_SALT``, the same for every adapter); without one, this
    client draws its own, so its records keep their order but another adapter's land elsewhere.
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
        salt = settings.intake_key_salt
        self._keys = IntakeKeys(salt.encode() if salt is not None else secrets.token_bytes(32))
        # The Kafka producer inside connects on the first submit.
        self.producer: AcknowledgedProducer = kafka.open_acknowledged_producer(settings, timeout_s=timeout_s)

    def submit(self, message: IntakeMessage) -> Receipt:
        """Validate, encode and publish one record; returns when the broker acknowledged it."""
        return self.submit_many([message])[0]

    def submit_many(self, messages: list[IntakeMessage]) -> list[Receipt]:
        """Publish many records (all validated first: one invalid, none published); returns when every one is
        acknowledged."""
        now = datetime.now(UTC)
        for n, message in enumerate(messages, 1):
            try:
                validate_intake(message, now, clock=ADAPTER_CLOCK)
            except ValidationError as error:
                if len(messages) == 1:
                    raise
                raise type(error)(f"record {n} of {len(messages)}: {error}; nothing was published") from None
        encoded = [(m, self.codec.encode(m, adapter=self.adapter)) for m in messages]
        topic = self.settings.intake_topic
        headers = [self.signer.headers(data) for _, data in encoded] if self.signer is not None else None
        stored = self.producer.send_all(topic, [(self._keys(m), data) for m, data in encoded], headers)
        return [Receipt(topic=topic, partition=partition, offset=offset, kind=kind_of(m))
                for (m, _), (partition, offset) in zip(encoded, stored, strict=True)]

    def close(self) -> None:
        """Flush and close the Kafka producer."""
        self.producer.close()

