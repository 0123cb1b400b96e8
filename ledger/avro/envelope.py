"""The envelope of a stored event, read straight from its bytes (Avro single-object encoding).

Every event's bytes start with ``C3 01``, the 8-byte fingerprint of its writer schema, then the
``caseledger.Envelope`` record (ids, version, times, causation, ``previous_hash``). The publisher
needs the envelope of every event it publishes and the audit of every event it reads, so it is
hand-decoded here rather than through fastavro; events written with a retired schema go through
the codec (``AvroEnvelopeDecoder.slow_envelope``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from caseledger.ledger.avro.codec import ENVELOPE, HEADER_SIZE, AvroEventCodec
from caseledger.ledger.domain.catalog import EVENT_TYPES, topic_of

__all__ = ["AvroEnvelopeDecoder", "Envelope", "WriterSchema", "parse_envelope", "read_actor", "read_bytes",
           "read_long"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

Envelope = tuple[bytes, bytes, int, bytes, bytes, int, bytes | None, bytes | None, int]
"""(event id, aggregate id, version, case id, customer id, recorded_at µs, causation id, previous hash,
offset of the first byte after the envelope). Ids are the ASCII bytes of their canonical text."""


def read_long(b: bytes, p: int) -> tuple[int, int]:
    """An Avro long (zig-zag varint) at ``p``; returns (value, next offset)."""
    c = b[p]
    p += 1
    if c < 0x80:
        return (c >> 1) ^ -(c & 1), p
    r = c & 0x7F
    s = 7
    while True:
        c = b[p]
        p += 1
        r |= (c & 0x7F) << s
        if c < 0x80:
            return (r >> 1) ^ -(r & 1), p
        s += 7


def _length(b: bytes, p: int) -> tuple[int, int]:
    """A string or bytes length at ``p`` (never negative)."""
    n, p = read_long(b, p)
    if n < 0:
        raise ValueError("negative length in the event")
    return n, p


def read_bytes(b: bytes, p: int) -> tuple[bytes, int]:
    """A string or bytes value at ``p``; returns (its bytes, next offset)."""
    n, p = _length(b, p)
    if p + n > len(b):
        raise ValueError("string runs past the end of the event")
    return b[p : p + n], p + n


def parse_envelope(b: bytes) -> Envelope:
    """The envelope of an event whose writer schema starts with the current ``caseledger.Envelope``.

    Hand-decoded from the Avro binary encoding, straight-line with the common one-byte lengths
    inlined: over twice as fast as fastavro on the same bytes, and the audit reads every event. Raises
    ValueError or IndexError on bytes that do not decode.
    """
    p = HEADER_SIZE
    # event_id
    n = b[p]
    if n < 0x80:
        p += 1
        n >>= 1
    else:
        n, p = _length(b, p)
    event_id = b[p : p + n]
    p += n
    # aggregate_id
    n = b[p]
    if n < 0x80:
        p += 1
        n >>= 1
    else:
        n, p = _length(b, p)
    aggregate_id = b[p : p + n]
    p += n
    version, p = read_long(b, p)
    # case_id
    n = b[p]
    if n < 0x80:
        p += 1
        n >>= 1
    else:
        n, p = _length(b, p)
    case_id = b[p : p + n]
    p += n
    # customer_id
    n = b[p]
    if n < 0x80:
        p += 1
        n >>= 1
    else:
        n, p = _length(b, p)
    customer_id = b[p : p + n]
    p += n
    while b[p] & 0x80:  # occurred_at: skipped
        p += 1
    recorded_at, p = read_long(b, p + 1)
    for _ in (0, 1, 2):  # actor kind, id and authentication: skipped
        n = b[p]
        if n < 0x80:
            p += 1 + (n >> 1)
        else:
            n, p = _length(b, p)
            p += n
    for _ in (0, 1, 2):  # actor principal, channel and correlation_id, unions with null: skipped
        branch = b[p]
        p += 1
        if branch == 2:
            n = b[p]
            if n < 0x80:
                p += 1 + (n >> 1)
            else:
                n, p = _length(b, p)
                p += n
        elif branch:
            raise ValueError(f"bad union branch {branch} in the envelope")
    causation: bytes | None = None
    branch = b[p]
    p += 1
    if branch == 2:
        n = b[p]
        if n < 0x80:
            p += 1
            n >>= 1
        else:
            n, p = _length(b, p)
        causation = b[p : p + n]
        p += n
    elif branch:
        raise ValueError(f"bad union branch {branch} for causation_id")
    previous: bytes | None = None
    branch = b[p]
    p += 1
    if branch == 2:
        n = b[p]
        if n < 0x80:
            p += 1
            n >>= 1
        else:
            n, p = _length(b, p)
        previous = b[p : p + n]
        p += n
    elif branch:
        raise ValueError(f"bad union branch {branch} for previous_hash")
    if p > len(b):
        raise ValueError("the envelope runs past the end of the event")
    return event_id, aggregate_id, version, case_id, customer_id, recorded_at, causation, previous, p


def read_actor(b: bytes) -> tuple[str, str, str]:
    """(kind, id, authentication) of the actor of an event written with the current envelope."""
    p = HEADER_SIZE
    _n, p = read_bytes(b, p)  # event_id, aggregate_id, version, case_id, customer_id
    _n, p = read_bytes(b, p)
    _v, p = read_long(b, p)
    _n, p = read_bytes(b, p)
    _n, p = read_bytes(b, p)
    _t, p = read_long(b, p)  # occurred_at
    _t, p = read_long(b, p)  # recorded_at
    kind, p = read_bytes(b, p)
    ident, p = read_bytes(b, p)
    authentication, p = read_bytes(b, p)
    return kind.decode(), ident.decode(), authentication.decode()


@dataclass(frozen=True)
class WriterSchema:
    """The event type a writer schema encodes, and whether its bytes start with the current envelope."""

    name: str
    topic: str
    fast: bool  # starts with the current envelope: parse_envelope applies


class AvroEnvelopeDecoder:
    """Which event type and envelope each stored event carries, from its schema fingerprint."""

    def __init__(self, codec: AvroEventCodec) -> None:
        self.codec = codec
        self.by_fingerprint: dict[bytes, WriterSchema] = {}
        for fp, parsed in codec._writers.items():
            name = str(parsed["name"]).rsplit(".", 1)[-1]
            if name not in EVENT_TYPES:
                continue
            first = parsed["fields"][0] if parsed.get("fields") else {}
            # Every schema version names the envelope; one written with a retired envelope, or one that
            # embedded an envelope of its own, goes through the codec.
            fast = (first.get("name") == "envelope" and first.get("type") == f"{ENVELOPE}"
                    and codec.writes_current_envelope(fp))
            self.by_fingerprint[fp] = WriterSchema(name, topic_of(name), fast)

    def envelope(self, state: bytes) -> Envelope:
        """The envelope of one stored event, whichever schema wrote it (KeyError: unknown fingerprint)."""
        schema = self.by_fingerprint[state[2:HEADER_SIZE]]
        return parse_envelope(state) if schema.fast else self.slow_envelope(schema.name, state)

    def slow_envelope(self, name: str, data: bytes) -> Envelope:
        """The envelope through the codec (retired schema versions)."""
        env = self.codec.decode_record(name, data)["envelope"]

        def text(value: Any) -> bytes | None:
            return None if value is None else str(value).encode()

        recorded = env["recorded_at"]
        micros = recorded if isinstance(recorded, int) else (recorded - _EPOCH) // _MICROSECOND
        return (
            str(env["event_id"]).encode(), str(env["aggregate_id"]).encode(), int(env["aggregate_version"]),
            str(env["case_id"]).encode(), str(env["customer_id"]).encode(), micros,
            text(env["causation_id"]), env["previous_hash"], 0,
        )
