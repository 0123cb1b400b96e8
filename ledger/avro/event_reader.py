"""Decoding one event in one call, from its stored bytes or from a record of the events topic.

Every stored event, and every record value on the events topic, is Avro single-object encoding:
``C3 01``, the 8 bytes of its writer schema's fingerprint, then the body. The fingerprint alone says
which event type and which schema version wrote the bytes, so :func:`decode_event` needs nothing
else; on a topic record it also checks the type the ``ce_type`` header (or the ``event_type``
header of earlier releases) names. The record comes back resolved into the *current* schema of
its type, the envelope nested as ``record["envelope"]``: ids as ``uuid.UUID``, times as aware UTC
``datetime``, the previous hash as bytes. Sealed personal fields stay as their tokens (``enc:1:…``):
only the ledger, with the customer's data key, opens them (docs/privacy.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any, NamedTuple

from caseledger.ledger.avro.codec import HEADER_SIZE, MAGIC, AvroEventCodec
from caseledger.ledger.errors import SchemaError
from caseledger.ledger.kafka.events_record import TYPE_PREFIX

__all__ = ["DecodedEvent", "decode_event", "fingerprint_of"]


class DecodedEvent(NamedTuple):
    """One decoded event: its type's name (``ContactReceived``) and its Avro record."""

    type: str
    record: dict[str, Any]


@lru_cache(maxsize=1)
def _codec() -> AvroEventCodec:
    return AvroEventCodec()


def fingerprint_of(data: bytes) -> bytes:
    """The 8 fingerprint bytes of single-object encoded ``data``, exactly as stored (after ``C3 01``).

    Compare them as they are with ``bytes.fromhex(fastavro.schema.fingerprint(canonical_form,
    "CRC-64-AVRO"))``: fastavro already gives them in this order; do not reverse them.
    """
    if len(data) < HEADER_SIZE or data[:2] != MAGIC:
        raise SchemaError("the bytes are not Avro single-object encoded (no C3 01 marker): "
                          "pass an event's stored bytes or an events-topic record's value")
    return bytes(data[2:HEADER_SIZE])


def decode_event(event: bytes | Any, *, codec: AvroEventCodec | None = None) -> DecodedEvent:
    """The type and Avro record of one event: its stored bytes, or a record read from the events topic.

    ``event`` is the bytes (``bytes``, ``bytearray``, ``memoryview``), or a consumer's record: kafka-python's
    ``ConsumerRecord`` (``.value``, ``.headers``), confluent-kafka's ``Message`` (``.value()``,
    ``.headers()``) or anything with those. Raises :class:`SchemaError` (a ``CaseLedgerError``) on bytes no
    schema of the installed package wrote, or a record whose type header disagrees with its fingerprint.
    """
    codec = codec or _codec()
    if isinstance(event, bytes | bytearray | memoryview):
        data, named = bytes(event), None
    else:
        value = getattr(event, "value", None)
        headers = getattr(event, "headers", None)
        data = value() if callable(value) else value
        named = _type_header(headers() if callable(headers) else headers)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SchemaError("the record has no value bytes: pass an events-topic record or stored bytes")
        data = bytes(data)
    name = codec.event_type_of(fingerprint_of(data))
    if name is None:
        raise SchemaError(f"written with a schema this installation does not know (fingerprint "
                          f"{data[2:HEADER_SIZE].hex()}): upgrade caseledger, which keeps every schema version")
    if named is not None and named != name:
        raise SchemaError(f"the record's type header names {named} but its bytes are a {name}")
    return DecodedEvent(name, codec.decode_record(name, data))


def _type_header(headers: Iterable[tuple[str, bytes | None]] | None) -> str | None:
    for key, value in headers or ():
        if key == "ce_type" and value:
            text = bytes(value).decode("utf-8", "replace")
            return text[len(TYPE_PREFIX):] if text.startswith(TYPE_PREFIX) else text
        if key == "event_type" and value:
            return bytes(value).decode("utf-8", "replace")
    return None
