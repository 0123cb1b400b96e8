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

from ledger.errors import BackendError
from ledger.intake import IntakeCodec, IntakeMessage, kind_of
from ledger.kafka import KafkaSettings
from ledger.values import ContactDraft


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
    """Publishes intake records with acks=all and an idempotent producer; returns once stored."""

    def __init__(self, settings: KafkaSettings, *, adapter: str, timeout_s: float = 30.0) -> None:
        self.settings = settings
        self.adapter = adapter
        self.timeout_s = timeout_s
        self.codec = IntakeCodec()
        self._producer: Any = None

    @property
    def producer(self) -> Any:
        if self._producer is None:
            from kafka import KafkaProducer
            from kafka.errors import KafkaError

            try:
                self._producer = KafkaProducer(
                    **self.settings.client_options(),
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=2,
                    max_request_size=4_194_304,
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
        from kafka.errors import KafkaError

        futures = [
            (kind_of(m), self.producer.send(self.settings.intake_topic, key=intake_key(m), value=data))
            for m, data in encoded
        ]
        receipts = []
        try:
            for kind, future in futures:
                meta = future.get(timeout=self.timeout_s)
                receipts.append(Receipt(topic=meta.topic, partition=meta.partition, offset=meta.offset, kind=kind))
        except KafkaError as error:
            raise BackendError(
                f"Kafka did not acknowledge the intake record ({error}); it may not be stored — "
                "resubmit it (the ledger recognises the same channel message id)"
            ) from error
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
