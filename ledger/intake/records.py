"""Intake records: what channel adapters publish, as Avro, and how the ledger applies them.

An intake record is one ``caseledger.intake.IntakeRecord`` (``schemas/intake/``) in Avro
single-object encoding. Its payload is an inbound contact, a delivery report of one of our
messages, or a read receipt. Decoding validates the bytes against the schema and the values
against the domain's rules, so a bad record is refused with a precise reason — by the adapter
SDK before publishing, and by the intake worker, which records it as a rejection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from io import BytesIO
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from caseledger.ledger.avro.codec import HEADER_SIZE, MAGIC, legacy_fingerprint, schema_fingerprint
from caseledger.ledger.domain.values import Actor, Attachment, ContactDraft, Identity, require_utc
from caseledger.ledger.errors import SchemaError, ValidationError, naming

MAX_RECORD_BYTES = 2_000_000
_SCHEMA_FILE = "caseledger.intake.IntakeRecord.avsc"


@dataclass(frozen=True, kw_only=True)
class DeliveryReport:
    """A channel confirmed one of our messages (ACK1, R2, W1, N3 …) reached the customer."""

    case_reference: str
    message_id: str
    delivered_at: datetime

    def __post_init__(self) -> None:
        if not self.case_reference.strip() or not self.message_id.strip():
            raise ValidationError("a delivery report needs a case reference and a message id",
                                  field="message_id" if self.case_reference.strip() else "case_reference")
        object.__setattr__(self, "delivered_at", require_utc(self.delivered_at, "delivered_at"))


@dataclass(frozen=True, kw_only=True)
class ReadReceipt:
    """The customer read one of our messages, or an agent read one of the customer's."""

    case_reference: str
    message_id: str
    reader: Actor
    read_at: datetime

    def __post_init__(self) -> None:
        if not self.case_reference.strip() or not self.message_id.strip():
            raise ValidationError("a read receipt needs a case reference and a message id",
                                  field="message_id" if self.case_reference.strip() else "case_reference")
        object.__setattr__(self, "read_at", require_utc(self.read_at, "read_at"))


IntakeMessage = ContactDraft | DeliveryReport | ReadReceipt


def kind_of(message: IntakeMessage) -> str:
    return {ContactDraft: "contact", DeliveryReport: "delivery", ReadReceipt: "read"}[type(message)]


class IntakeCodec:
    """Encodes intake messages for the intake topic and decodes (and validates) them back."""

    def __init__(self) -> None:
        text = resources.files("caseledger.schemas").joinpath("intake", _SCHEMA_FILE).read_text(encoding="utf-8")
        self.schema = parse_schema(json.loads(text))
        self.header = MAGIC + schema_fingerprint(self.schema)
        # Adapters built before the standard fingerprint still publish the legacy one (same schema),
        # and adapters built before a schema change publish a retired version, read into this one.
        self._writers: dict[bytes, Any] = {}
        for retired in _retired_schemas():
            self._writers[MAGIC + schema_fingerprint(retired)] = retired
            self._writers[MAGIC + legacy_fingerprint(retired)] = retired
        self._writers[self.header] = self.schema
        self._writers[MAGIC + legacy_fingerprint(self.schema)] = self.schema
        self._headers = frozenset(self._writers)

    @property
    def fingerprint(self) -> str:
        return self.header[2:].hex()

    def encode(self, message: IntakeMessage, *, adapter: str, published_at: datetime | None = None) -> bytes:
        """The Avro bytes an adapter publishes for ``message``."""
        if not adapter.strip():
            raise ValidationError("name the adapter that publishes (e.g. mail-gateway-1)")
        record = {
            "adapter": adapter,
            "published_at": published_at or datetime.now(UTC),
            "payload": (f"caseledger.intake.{_payload_name(message)}", _payload(message)),
        }
        out = BytesIO()
        out.write(self.header)
        try:
            schemaless_writer(out, self.schema, record)
        except (ValueError, TypeError, KeyError) as error:
            raise SchemaError(f"intake record does not fit the intake schema: {error}") from error
        data = out.getvalue()
        if len(data) > MAX_RECORD_BYTES:
            raise ValidationError(
                f"intake record is {len(data)} bytes; the limit is {MAX_RECORD_BYTES} — send files as attachments"
            )
        return data

    def decode(self, data: bytes) -> tuple[str, IntakeMessage]:
        """(adapter, message) from intake bytes; SchemaError or ValidationError says what is wrong."""
        if len(data) > MAX_RECORD_BYTES:
            raise ValidationError(f"intake record is {len(data)} bytes; the limit is {MAX_RECORD_BYTES}")
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise SchemaError("not an Avro single-object encoded intake record (no C3 01 marker)")
        if data[:HEADER_SIZE] not in self._headers:
            raise SchemaError(
                f"written with an unknown intake schema (fingerprint {data[2:HEADER_SIZE].hex()}, "
                f"expected {self.fingerprint}); upgrade the adapter or the ledger"
            )
        try:
            record: Any = schemaless_reader(
                BytesIO(data[HEADER_SIZE:]), self._writers[data[:HEADER_SIZE]], self.schema, return_record_name=True
            )
        except Exception as error:  # fastavro raises many types for corrupt input
            raise SchemaError(f"corrupt intake record: {type(error).__name__}: {error}") from error
        full_name, payload = record["payload"]
        name = full_name.rsplit(".", 1)[-1]
        payload = dict(payload)
        adapter = record["adapter"]
        try:
            if name == "Contact":
                return adapter, _contact(payload)
            if name == "DeliveryReport":
                return adapter, DeliveryReport(**payload)
            with naming("reader"):
                reader = Actor(kind=payload.pop("reader_kind"), id=payload.pop("reader_id"))
            return adapter, ReadReceipt(reader=reader, **payload)
        except ValidationError:
            raise
        except (TypeError, ValueError) as error:
            raise ValidationError(f"invalid {name} record: {error}") from error


def _contact(p: dict[str, Any]) -> ContactDraft:
    with naming("identity"):
        identity = Identity(kind=p["identity"]["kind"], value=p["identity"]["value"])
    with naming("attachments"):
        attachments = tuple(Attachment(**a) for a in p["attachments"])
    return ContactDraft(
        channel=p["channel"],
        channel_message_id=p["channel_message_id"],
        identity=identity,
        customer_id=p["customer_id"] or None,
        segment=p["segment"],
        subject=p["subject"],
        body=p["body"],
        items=tuple(p["items"]),
        attachments=attachments,
        case_reference=p["case_reference"],
        follow_up=p["follow_up"],
        category=p["category"],
        occurred_at=p["occurred_at"],
        metadata=dict(p["metadata"]),
        locale=p["locale"],
        time_zone=p["time_zone"],
    )


def _retired_schemas() -> list[Any]:
    """Retired versions of the intake schema (``schemas/intake/caseledger.intake.IntakeRecord.<fp>.avsc``)."""
    folder = resources.files("caseledger.schemas").joinpath("intake")
    prefix = _SCHEMA_FILE.removesuffix(".avsc") + "."
    return [
        parse_schema(json.loads(f.read_text(encoding="utf-8")))
        for f in sorted(folder.iterdir(), key=lambda f: f.name)
        if f.name.startswith(prefix) and f.name.endswith(".avsc") and f.name != _SCHEMA_FILE
    ]


def _payload_name(message: IntakeMessage) -> str:
    return {"contact": "Contact", "delivery": "DeliveryReport", "read": "ReadReceipt"}[kind_of(message)]


def _payload(message: IntakeMessage) -> dict[str, Any]:
    if isinstance(message, ContactDraft):
        return {
            "channel": message.channel.value,
            "channel_message_id": message.channel_message_id,
            "identity": message.identity.as_record(),
            "customer_id": message.customer_id,
            "segment": message.segment,
            "subject": message.subject,
            "body": message.body,
            "items": list(message.items),
            "attachments": [a.as_record() for a in message.attachments],
            "case_reference": message.case_reference,
            "follow_up": message.follow_up,
            "category": message.category,
            "occurred_at": message.occurred_at or datetime.now(UTC),
            "metadata": dict(message.metadata),
            "locale": message.locale,
            "time_zone": message.time_zone,
        }
    if isinstance(message, DeliveryReport):
        return {
            "case_reference": message.case_reference,
            "message_id": message.message_id,
            "delivered_at": message.delivered_at,
        }
    return {
        "case_reference": message.case_reference,
        "message_id": message.message_id,
        "reader_kind": message.reader.kind.value,
        "reader_id": message.reader.id,
        "read_at": message.read_at,
    }


def contact_from_json(data: dict[str, Any]) -> IntakeMessage:
    """An intake message from the JSON a shell adapter writes (see ``caseledger publish --help``)."""
    if not isinstance(data, dict):
        raise ValidationError("each intake record must be a JSON object")
    kind = data.get("kind", "contact")
    try:
        if kind == "contact":
            identity = data.get("identity") or data.get("from")
            if not identity:
                raise ValidationError("a contact needs the customer's identity (\"identity\": \"email:…\")")
            return ContactDraft(
                channel=data["channel"],
                channel_message_id=str(data["channel_message_id"]),
                identity=Identity.parse(identity) if isinstance(identity, str) else Identity(**identity),
                items=tuple(data.get("items") or ()),
                subject=data.get("subject", ""),
                body=data.get("body", ""),
                attachments=tuple(Attachment(**a) for a in data.get("attachments", [])),
                case_reference=data.get("case_reference"),
                follow_up=bool(data.get("follow_up", False)),
                category=data.get("category"),
                customer_id=data.get("customer_id"),
                segment=data.get("segment"),
                occurred_at=_time(data.get("occurred_at")),
                locale=data.get("locale"),
                time_zone=data.get("time_zone"),
            )
        if kind == "delivery":
            return DeliveryReport(
                case_reference=data["case_reference"],
                message_id=data["message_id"],
                delivered_at=_time(data.get("delivered_at")) or datetime.now(UTC),
            )
        if kind == "read":
            return ReadReceipt(
                case_reference=data["case_reference"],
                message_id=data["message_id"],
                reader=Actor.parse(data["reader"]),
                read_at=_time(data.get("read_at")) or datetime.now(UTC),
            )
    except KeyError as missing:
        raise ValidationError(f"a {kind} record needs the field {missing}") from None
    except TypeError as error:
        raise ValidationError(f"invalid {kind} record: {error}") from None
    raise ValidationError(f"unknown record kind {kind!r}; use contact, delivery or read")


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"{value!r} is not an ISO-8601 time such as 2026-11-23T10:00:00+01:00") from None
    return require_utc(parsed, "time")
