"""The channel adapter SDK: publish what happened on a channel, durably, before telling the customer.

::

    with KafkaIntakeClient(KafkaSettings.from_environ(os.environ), adapter="mail-gateway-1") as intake:
        verdict = intake.submit(ContactDraft(channel="email", channel_message_id=msg_id, ...), wait=10)
        if isinstance(verdict, Recorded):  # now, and only now, say "received", with verdict.reference
            ...

``submit`` validates the record first, with the intake worker's own validator on this process's
clock (``ledger/intake/validation.py``), and encodes it — invalid input raises ValidationError naming the
field, and nothing is published — then waits until the broker acknowledged the write. A broker that
cannot be reached, a timeout or a missing topic raises IntakeUnavailable, whatever the Kafka client:
resubmit the same draft. With ``wait=SECONDS`` it then waits for the ledger's verdict
(:mod:`caseledger.ledger.intake.verdicts`): ``Recorded`` or ``Resubmission`` (tell the customer "received",
with the reference), ``Collision`` or ``Rejected`` (its ``reason`` names the field and how to fix it); no
verdict in time raises ``VerdictTimeout``: resubmit the same draft (a resubmission is traced, never
recorded twice). ``submit_many(..., wait=)`` does the same for a batch, with the client's one reader of the
outcomes topic.

Records are keyed so that one customer's contacts (one case's reports) stay on one partition, in order,
without the identity in clear: :func:`intake_key`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import overload

from caseledger.ledger.domain.case_references import normalise_reference
from caseledger.ledger.domain.values import ContactDraft
from caseledger.ledger.errors import ConfigurationError, ValidationError
from caseledger.ledger.intake.records import IntakeCodec, IntakeMessage, kind_of
from caseledger.ledger.intake.signatures import AdapterSigner
from caseledger.ledger.intake.validation import ADAPTER_CLOCK, validate_intake
from caseledger.ledger.intake.verdicts import Verdict, VerdictTimeout, VerdictWaiter, intake_id
from caseledger.ledger.kafka.clients import DEFAULT_CLIENT, KafkaClient
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

    ``producer`` picks the Kafka client: confluent (default: librdkafka, about a third of kafka-python's
    CPU per record) or kafka-python. Either puts a record
    on the same partition (Kafka's default murmur2 of the key), so adapters on different clients
    keep a customer's contacts in order. Keys are :func:`intake_key` under the deployment's
    ``intake_key_salt`` (``CASELEDGER_INTAKE_KEY_SALT``, the same for every adapter); without one, this
    client draws its own, so its records keep their order but another adapter's land elsewhere.
    """

    def __init__(
        self, settings: KafkaSettings, *, adapter: str, timeout_s: float = 30.0, producer: str = DEFAULT_CLIENT,
        signer: AdapterSigner | None = None, consumer: str = DEFAULT_CLIENT,
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
        # The outcomes topic's reader (the adapter's partition), opened by the first wait.
        reader = KafkaClient(consumer, "consumer")
        self.verdicts = VerdictWaiter(
            lambda: reader.open_reader(settings, topic=settings.outcomes_topic, group="verdicts", fetch_wait_ms=20),
            lambda count: reader.key_hash(adapter.encode()) % count, adapter=adapter)

    @overload
    def submit(self, message: IntakeMessage, *, wait: None = None) -> Receipt: ...
    @overload
    def submit(self, message: IntakeMessage, *, wait: float) -> Verdict: ...

    def submit(self, message: IntakeMessage, *, wait: float | None = None) -> Receipt | Verdict:
        """Validate, encode and publish one record; returns when the broker acknowledged it — or, given ``wait``
        seconds, the ledger's verdict (raises :class:`VerdictTimeout` when none came: resubmit the same draft)."""
        if wait is None:
            return self.submit_many([message])[0]
        return self.submit_many([message], wait=wait)[0]

    @overload
    def submit_many(self, messages: Sequence[IntakeMessage], *, wait: None = None) -> list[Receipt]: ...
    @overload
    def submit_many(self, messages: Sequence[IntakeMessage], *, wait: float) -> list[Verdict]: ...

    def submit_many(self, messages: Sequence[IntakeMessage], *, wait: float | None = None
                    ) -> list[Receipt] | list[Verdict]:
        """Publish many records (all validated first); returns when every one is acknowledged — or, given
        ``wait`` seconds, their verdicts in the same order (:class:`VerdictTimeout` names those without one)."""
        if wait is None:
            return self._publish(messages)
        self.verdicts.start()  # before publishing: no verdict can come before the reader's start
        receipts = self._publish(messages)
        return self.verdicts_of(receipts, wait=wait)

    def verdicts_of(self, receipts: Sequence[Receipt], *, wait: float) -> list[Verdict]:
        """The verdicts of records this client published, in order, waiting up to ``wait`` seconds in all.

        Only records published after the client's first wait (or ``self.verdicts.start()``) can be awaited: the
        outcomes topic is read from where it ended then."""
        ids = [intake_id(r.topic, r.partition, r.offset) for r in receipts]
        found = self.verdicts.wait(ids, wait)
        if len(found) < len(set(ids)):
            pending = [r for r, i in zip(receipts, ids, strict=True) if i not in found]
            raise VerdictTimeout(
                f"no verdict within {wait:g} s for {len(pending)} of {len(receipts)} intake records (the intake "
                "worker or the publisher is behind or stopped): resubmit the same drafts — the ledger traces a "
                "resubmission and records nothing twice — and do not tell the customer \"received\" yet",
                pending=pending, verdicts=[found[i] for i in ids if i in found])
        return [found[i] for i in ids]

    def _publish(self, messages: Sequence[IntakeMessage]) -> list[Receipt]:
        """Validate every record (one invalid: none published), encode and publish; once every one is acknowledged."""
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
        """Flush and close the Kafka producer and the outcomes topic's reader."""
        self.producer.close()
        self.verdicts.close()

