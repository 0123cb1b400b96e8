"""The records of the events topic: key, value and CloudEvents headers.

One record per stored event, in the CloudEvents Kafka protocol binding, *binary* mode (the value is
the event's data, the attributes are headers), so any CloudEvents SDK or Kafka tool reads them:

===================  ========================================================================
key                  the customer id: a customer's whole history on one partition, in order.
                     An event of no customer (an intake rejection) is keyed by its own
                     aggregate id: such events spread over the partitions instead of piling on
                     one, each stays in order, and the audit can still tell where it must be.
value                the exact bytes the store keeps (Avro single-object encoding).
``ce_specversion``   ``1.0``
``ce_id``            the event id (a UUID)
``ce_source``        ``urn:caseledger:ORIGIN`` — the ledger that recorded it (``CASELEDGER_ORIGIN``)
``ce_type``          ``caseledger.events.NAME`` — the Avro schema's full name
``ce_time``          when the ledger recorded it (RFC 3339, UTC)
``ce_subject``       the case id; absent for an event that belongs to no case
``content-type``     ``application/avro; encoding=single-object; schema=caseledger.events.NAME;
                     fingerprint=HEX`` (the writer schema's fingerprint, as in the value's header)
``ce_sequence``      the event's position in the store's total order (decimal; CloudEvents'
                     *sequence* extension): what the publisher resumes from and the audit matches
``ce_eventhash``     SHA-256 of the value (hex): the hash the audit's chains are made of
===================  ========================================================================

A customer's erasure is a record too, ``CustomerErased``, keyed by their customer id: what a consumer
must then drop is docs/privacy.md's contract (*Consumers of the events topic*).

Records published before this format carry the ledger's own headers (``event_type``,
``schema_fingerprint``, ``event_id``, ``case_id``, ``position``, ``event_hash``); every reader here
accepts both, so a topic written by an earlier release stays readable and auditable.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from caseledger.ledger.avro.codec import HEADER_SIZE, NO_CASE, event_hash
from caseledger.ledger.avro.envelope import parse_envelope
from caseledger.ledger.kafka.ports import PartitionReader, ReadRecord

Header = tuple[str, bytes]

SPECVERSION = ("ce_specversion", b"1.0")
ID, SOURCE, TYPE, TIME, SUBJECT = "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject"
CONTENT_TYPE = "content-type"
SEQUENCE, EVENT_HASH = "ce_sequence", "ce_eventhash"
TYPE_PREFIX = "caseledger.events."
LEGACY = {SEQUENCE: "position", TYPE: "event_type", ID: "event_id", SUBJECT: "case_id", EVENT_HASH: "event_hash"}
"""The header each CloudEvents header replaced (records published by earlier releases)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_CASE = NO_CASE.encode()


def source_for(origin: str) -> bytes:
    """The ``ce_source`` of the events a ledger named ``origin`` records."""
    return f"urn:caseledger:{origin}".encode()


@lru_cache(maxsize=256)
def constant_headers(name: str, fingerprint: bytes) -> tuple[Header, Header]:
    """(``ce_type``, ``content-type``) of one event type's schema version (the same for all its events)."""
    full = TYPE_PREFIX + name
    return (
        (TYPE, full.encode()),
        (CONTENT_TYPE, f"application/avro; encoding=single-object; schema={full}; "
                       f"fingerprint={fingerprint.hex()}".encode()),
    )


def time_header(recorded_micros: int) -> bytes:
    """RFC 3339 in UTC, to the microsecond: ``2026-03-02T08:00:00.123456+00:00``."""
    return (_EPOCH + timedelta(microseconds=recorded_micros)).isoformat().encode()


def cloudevents_headers(
    *, name: str, data: bytes, position: int, event_id: bytes, case_id: bytes, recorded_micros: int, source: bytes,
) -> list[Header]:
    """The headers of the record of one stored event (see the module docstring)."""
    event_type, content_type = constant_headers(name, data[2:HEADER_SIZE])
    # The two headers every reader of the topic looks for come first (a projection source stops there).
    headers = [(SEQUENCE, str(position).encode()), event_type, SPECVERSION, (ID, event_id), (SOURCE, source),
               (TIME, time_header(recorded_micros))]
    if case_id != _NO_CASE:
        headers.append((SUBJECT, case_id))
    headers += [content_type, (EVENT_HASH, event_hash(data).hex().encode())]
    return headers


def event_record(
    codec: Any, notification: Any, *, source: bytes,
) -> tuple[bytes, bytes, list[Header]]:
    """(key, value, headers) of the Kafka record for one stored event (``codec``: the ledger's Avro codec)."""
    data = bytes(notification.state)
    name = notification.topic.rsplit(".", 1)[-1]
    if data[:HEADER_SIZE] == codec.schema(name).header:
        # Written with the current schema, so with the current envelope first: read only that,
        # straight from the bytes (several times faster than decoding the whole event).
        event_id, aggregate_id, _version, case_id, customer_id, recorded, *_ = parse_envelope(data)
    else:  # an older writer schema: let Avro schema resolution read it
        envelope = codec.decode_record(name, data)["envelope"]
        event_id, case_id = str(envelope["event_id"]).encode(), str(envelope["case_id"]).encode()
        aggregate_id, customer_id = str(envelope["aggregate_id"]).encode(), envelope["customer_id"].encode()
        at = envelope["recorded_at"]
        recorded = at if isinstance(at, int) else (at - _EPOCH) // timedelta(microseconds=1)
    headers = cloudevents_headers(name=name, data=data, position=notification.id, event_id=event_id,
                                  case_id=case_id, recorded_micros=recorded, source=source)
    return record_key(customer_id, aggregate_id), data, headers


def record_key(customer_id: bytes, aggregate_id: bytes) -> bytes:
    """The record key of an event: its customer, or — an event of no customer — its own aggregate."""
    return customer_id or aggregate_id


def header(headers: Iterable[Header] | None, name: str) -> bytes | None:
    """The value of header ``name`` (or of the one it replaced, on records of earlier releases)."""
    legacy = LEGACY.get(name)
    found = None
    for key, value in headers or ():
        if key == name:
            return value
        if key == legacy:
            found = value
    return found


def position_of(headers: Iterable[Header] | None) -> int | None:
    """The store position a record carries (``ce_sequence``, or ``position`` before it); None if none or bad."""
    value = header(headers, SEQUENCE)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def event_type_of(headers: Iterable[Header] | None) -> str | None:
    """The event type a record carries (``CaseOpened``), from ``ce_type`` or ``event_type`` before it."""
    value = header(headers, TYPE)
    if value is None:
        return None
    text = value.decode(errors="replace")
    return text[len(TYPE_PREFIX):] if text.startswith(TYPE_PREFIX) else text


def last_position_in(reader: PartitionReader, partition: int, end: int, *, stall_s: float = 30.0) -> int:
    """The highest store position among ``partition``'s records below offset ``end``; 0 when none.

    Reads backwards from the end in growing windows: the tail may hold only transaction markers or
    aborted records.
    """
    window = 16
    while end > 0:
        start = max(0, end - window)
        reader.assign({partition: start})
        last = 0
        deadline = time.monotonic() + stall_s
        while reader.positions()[partition] < end and time.monotonic() < deadline:
            for record in reader.fetch(500, 0.5, ReadRecord):
                if record.offset < end:
                    last = max(last, position_of(record.headers) or 0)
        if last or start == 0:
            return last
        window *= 8
    return 0

