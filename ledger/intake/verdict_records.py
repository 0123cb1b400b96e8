"""The outcomes topic's records, straight from the events that decide them (the publisher's path).

The publisher produces a verdict for every intake record, in the transaction of the event that decides it
(:mod:`caseledger.ledger.intake.verdicts`). On its path the verdict's fields are read from the event's stored
bytes by hand (the envelope and the few fields after it: no full decode) and written as the ``IntakeVerdict``
Avro record by hand too: a decode and a fastavro encode per contact cost about as much as publishing the
contact's events. Events written with an older schema go through the codec. The fields are a dict named as
the schema's fields (``schemas/intake/caseledger.intake.IntakeVerdict.avsc``); a test checks both paths give
the same bytes as fastavro.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from caseledger.ledger.avro.codec import HEADER_SIZE
from caseledger.ledger.avro.envelope import parse_envelope, read_actor, read_bytes, read_long
from caseledger.ledger.domain.permissions import Authentication

__all__ = ["COLLISION_FIX", "REPORTS", "VERDICT_EVENTS", "encode_fields", "fields_of_bytes", "fields_of_event"]

VERDICT_EVENTS = frozenset({"MessageRegistered", "ResubmissionTraced", "MessageIdCollided", "IntakeRejected",
                            "MessageDelivered", "MessageRead"})
"""The event types a verdict is derived from (the outcome of an intake record, or its registration)."""
REPORTS = frozenset({"MessageDelivered", "MessageRead"})

COLLISION_FIX = ("send the request again with a new channel message id (this one is another request's); "
                 "the operator sees the kept request with `caseledger intake collisions`")
OPERATOR = "the operator reads the full reason with `caseledger intake rejections`"
_SIGNED = Authentication.ADAPTER_SIGNATURE.value
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _source(text: str) -> tuple[str, int, int] | None:
    """``topic/partition/offset`` → its parts; None when empty or not one."""
    rest, _, offset = text.rpartition("/")
    topic, _, partition = rest.rpartition("/")
    if not topic or not partition.isdigit() or not offset.isdigit():
        return None
    return topic, int(partition), int(offset)


def _micros(value: Any) -> int:
    if isinstance(value, datetime):
        return (value - _EPOCH) // timedelta(microseconds=1)
    return int(value)


def _fields(name: str, *, adapter: str, causation: str, event_id: str, position: int, recorded_at: int,
            customer_id: str, where: tuple[str, int, int], body: dict[str, Any]) -> dict[str, Any]:
    """The verdict's fields, from what every deciding event gives (``body``: the fields particular to ``name``)."""
    fields: dict[str, Any] = {
        "adapter": adapter, "intake_id": causation, "intake_topic": where[0], "intake_partition": where[1],
        "intake_offset": where[2], "outcome": "", "reference": None, "contact_id": None, "acknowledgement_id": None,
        "customer_id": None, "collision_kind": None, "reason": None, "event_id": event_id, "position": position,
        "recorded_at": recorded_at,
    }
    if name in ("MessageRegistered", "ResubmissionTraced"):
        fields.update(outcome="recorded" if name == "MessageRegistered" else "resubmission",
                      reference=body["reference"], contact_id=body["contact_id"],
                      acknowledgement_id=body["acknowledgement_id"], customer_id=customer_id)
    elif name == "MessageIdCollided":
        kind = body["kind"]
        fields.update(outcome="collision", collision_kind=kind,
                      reason={"code": f"collision-{kind}", "field": "channel_message_id", "fix": COLLISION_FIX})
    elif name == "IntakeRejected":
        fields.update(outcome="rejected", reason=body["public_reason"] or {"code": "rejected", "field": "",
                                                                          "fix": OPERATOR})
    else:
        fields["outcome"] = "applied"
    return fields


def fields_of_event(name: str, record: dict[str, Any], position: int) -> dict[str, Any] | None:
    """The verdict's fields from a decoded event (envelope included); None when it decides no verdict (recorded
    directly, not from the intake topic, or before its source was kept)."""
    envelope = record["envelope"]
    causation = envelope.get("causation_id")
    if causation is None or name not in VERDICT_EVENTS:
        return None
    where: tuple[str, int, int] | None = ("", -1, -1)  # a report: its source is only its causation id
    if name == "IntakeRejected":
        where = (record["source_topic"], record["source_partition"], record["source_offset"])
    elif name not in REPORTS:
        where = _source(record.get("source") or "")
    if where is None:
        return None
    actor = envelope["actor"]
    if name in REPORTS:  # the adapter the report names; before it was kept, its signer's name
        adapter = record.get("adapter") or (actor["id"] if actor.get("authentication") == _SIGNED else "")
    else:
        adapter = record.get("adapter") or ""
    return _fields(name, adapter=adapter, causation=str(causation), event_id=str(envelope["event_id"]),
                   position=position, recorded_at=_micros(envelope["recorded_at"]),
                   customer_id=envelope["customer_id"], where=where, body=record)


def fields_of_bytes(codec: Any, name: str, data: bytes, position: int) -> dict[str, Any] | None:
    """The verdict's fields from an event's stored bytes (``codec``: the ledger's, for older writer schemas)."""
    if name not in VERDICT_EVENTS:
        return None
    if data[:HEADER_SIZE] != codec.schema(name).header:
        return fields_of_event(name, codec.decode_record(name, data), position)
    event_id, _aggregate, _version, _case, customer_id, recorded, causation, _previous, p = parse_envelope(data)
    if causation is None:
        return None
    body: dict[str, Any] = {}
    if name in REPORTS:
        for _ in range(1 if name == "MessageDelivered" else 3):  # message_id [, reader_kind, reader_id]
            _skipped, p = read_bytes(data, p)
        _at, p = read_long(data, p)
        adapter_bytes, p = read_bytes(data, p)
        where: tuple[str, int, int] | None = ("", -1, -1)
        adapter = adapter_bytes.decode()
        if not adapter:  # not from the intake topic, or recorded before the report named its adapter
            _kind, actor_id, authentication = read_actor(data)
            adapter = actor_id if authentication == _SIGNED else ""
    elif name == "IntakeRejected":
        topic, p = read_bytes(data, p)
        partition, p = read_long(data, p)
        offset, p = read_long(data, p)
        for _ in range(3):  # kind, reason (sealed), raw (sealed)
            _skipped, p = read_bytes(data, p)
        adapter_bytes, p = read_bytes(data, p)
        where, adapter = (topic.decode(), partition, offset), adapter_bytes.decode()
        branch, p = read_long(data, p)
        if branch:
            code, p = read_bytes(data, p)
            field, p = read_bytes(data, p)
            fix, p = read_bytes(data, p)
            body["public_reason"] = {"code": code.decode(), "field": field.decode(), "fix": fix.decode()}
        else:
            body["public_reason"] = None
    elif name == "MessageRegistered":
        _message, p = read_bytes(data, p)  # channel_message_id (sealed)
        for key in ("reference", "contact_id", "acknowledgement_id"):
            value, p = read_bytes(data, p)
            body[key] = value.decode()
        _digest, p = read_bytes(data, p)
        branch, p = read_long(data, p)
        if branch:
            _signature, p = read_bytes(data, p)
        _signed, p = read_bytes(data, p)
        source, p = read_bytes(data, p)
        adapter_bytes, p = read_bytes(data, p)
        where, adapter = _source(source.decode()), adapter_bytes.decode()
    elif name == "ResubmissionTraced":
        source, p = read_bytes(data, p)
        for key in ("reference", "contact_id", "acknowledgement_id"):
            value, p = read_bytes(data, p)
            body[key] = value.decode()
        adapter_bytes, p = read_bytes(data, p)
        where, adapter = _source(source.decode()), adapter_bytes.decode()
    else:  # MessageIdCollided
        source, p = read_bytes(data, p)
        _message, p = read_bytes(data, p)
        kind, p = read_bytes(data, p)
        for _ in range(3):  # reason, content_digest, raw
            _skipped, p = read_bytes(data, p)
        adapter_bytes, p = read_bytes(data, p)
        body["kind"] = kind.decode()
        where, adapter = _source(source.decode()), adapter_bytes.decode()
    if where is None:
        return None
    return _fields(name, adapter=adapter, causation=causation.decode(), event_id=event_id.decode(),
                   position=position, recorded_at=recorded, customer_id=customer_id.decode(), where=where, body=body)


# -- writing the IntakeVerdict record ----------------------------------------------------------------------------


def _long(out: bytearray, value: int) -> None:
    n = (value << 1) ^ (value >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _string(out: bytearray, value: str) -> None:
    data = value.encode()
    _long(out, len(data))
    out += data


def _optional(out: bytearray, value: str | None) -> None:
    if value is None:
        out.append(0)
    else:
        out.append(2)
        _string(out, value)


def encode_fields(header: bytes, fields: dict[str, Any]) -> bytes:
    """The ``IntakeVerdict`` record of ``fields`` in Avro single-object encoding (``header``: its C3 01 + fingerprint)."""
    out = bytearray(header)
    _string(out, fields["adapter"])
    _string(out, fields["intake_id"])
    _string(out, fields["intake_topic"])
    _long(out, fields["intake_partition"])
    _long(out, fields["intake_offset"])
    _string(out, fields["outcome"])
    for name in ("reference", "contact_id", "acknowledgement_id", "customer_id", "collision_kind"):
        _optional(out, fields[name])
    reason = fields["reason"]
    if reason is None:
        out.append(0)
    else:
        out.append(2)
        _string(out, reason["code"])
        _string(out, reason["field"])
        _string(out, reason["fix"])
    _string(out, fields["event_id"])
    _long(out, fields["position"])
    _long(out, fields["recorded_at"])
    return bytes(out)
