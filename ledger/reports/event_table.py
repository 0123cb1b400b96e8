"""One event type as a typed table: the envelope's columns, then the type's own fields, from its Avro schema.

Every event type's table starts with the same envelope columns, so the files of all types read as one
table of the whole log (DuckDB ``union_by_name``, polars ``how="diagonal"``); its own fields follow,
typed from its current Avro schema (records as structs, arrays as lists, maps as maps, ``["null", T]``
as a nullable T, ``timestamp-micros`` as a UTC timestamp). Events written with a retired schema
version are read into the current one, as every reader of the ledger does.

Personal fields (``ledger/domain/personal.py``) are sealed in the stored bytes. A column that holds
one is written *opened* — the text, or ``[erased]`` once the customer's keys are destroyed — only when
the caller may read personal data (:class:`Personal`); otherwise it is null, or ``[erased]`` where the
customer is erased: a token says nothing to an analyst and, being stable, would link rows across files.
Each such column carries a note saying so (the Parquet field metadata ``caseledger.personal``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from caseledger.ledger.avro.codec import NO_CASE, AvroEventCodec
from caseledger.ledger.domain.personal import ERASED, PERSONAL_FIELDS
from caseledger.ledger.domain.values import IDENTITY_KINDS
from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.privacy.data_keys import DataKeys
from caseledger.ledger.privacy.sealing import BYTES_PREFIX, TOKEN, apply_at_path

try:
    import pyarrow as pa
except ImportError:  # an extra: say which
    raise ConfigurationError("exporting events as Parquet needs pyarrow: pip install 'caseledger[analytics]'") from None

__all__ = ["ENVELOPE_COLUMNS", "OPENED_NOTE", "WITHHELD_NOTE", "Personal", "TypeTable", "personal_of"]

UTC_MICROS = pa.timestamp("us", tz="UTC")
ENVELOPE_COLUMNS: tuple[tuple[str, Any, str], ...] = (
    ("position", pa.int64(), "the event's place in the store's total order (notification id, ce_sequence)"),
    ("event_type", pa.string(), "the event type (ContactReceived, PromiseBroken, …)"),
    ("event_id", pa.string(), "the event's id (UUID)"),
    ("aggregate_id", pa.string(), "the aggregate it belongs to: a case, a customer, a directory entry (UUID)"),
    ("aggregate_version", pa.int64(), "its place in its aggregate, gapless from 1"),
    ("case_id", pa.string(), "the case it belongs to (UUID); null for an event of no case"),
    ("customer_id", pa.string(), "the customer's pseudonym (the ledger's id; an erasure unlinks it from the person); "
                                 "null in an export without personal data where an earlier release used the "
                                 "customer's identity itself as their id"),
    ("recorded_at", UTC_MICROS, "when the ledger recorded it (UTC)"),
    ("occurred_at", UTC_MICROS, "when it happened on the channel, as claimed (UTC); differs from recorded_at "
                                "for backfilled events"),
    ("actor_kind", pa.string(), "customer | agent | automation | system"),
    ("actor_id", pa.string(), "who acted"),
    ("actor_authentication", pa.string(), "token | oidc | adapter-signature | none | simulated-clock"),
    ("actor_principal", pa.string(), "the principal that relayed it, when not the actor"),
    ("channel", pa.string(), "the channel (web_form, email, phone, …); null when none"),
    ("correlation_id", pa.string(), "the contact that started this chain of events (UUID)"),
    ("causation_id", pa.string(), "the event or command this one follows from (UUID)"),
    ("previous_hash", pa.string(), "SHA-256 (hex) of the previous stored event of the same aggregate"),
    ("event_hash", pa.string(), "SHA-256 (hex) of this event's stored bytes: what the audit chains"),
)
WITHHELD_NOTE = ("personal data, not exported: null (written sealed; export with --personal and a role that may "
                 "export histories to open it), or [erased] where the customer is erased")
OPENED_NOTE = "personal data, opened: the text, or [erased] where the customer is erased"


@dataclass(frozen=True)
class Personal:
    """What becomes of sealed personal fields: opened (``open_value`` the ledger's) or withheld.

    ``erased(value)`` tells whether a sealed value's key is destroyed; ``open_value`` opens one (the
    text, or the ERASED marker). Without ``open_value`` sealed values are written null, erased ones
    ``[erased]``.
    """

    erased: Callable[[Any], bool]
    open_value: Callable[[Any], Any] | None = None

    @property
    def opened(self) -> bool:
        return self.open_value is not None

    def value(self, value: Any) -> Any:
        if value is None or value == "" or value == b"":
            return value
        if value == ERASED:  # the marker an event copied, in clear
            return str(ERASED)
        if self.open_value is not None:
            opened = self.open_value(value)
            return str(ERASED) if opened == ERASED else opened
        if self.erased(value):
            return str(ERASED) if isinstance(value, str) else None
        return None

    def customer(self, customer_id: str) -> str | None:
        """The envelope's customer id as exported: an identity used as an id by an earlier release is personal data."""
        if not customer_id:
            return None
        if self.open_value is None and customer_id.startswith(_IDENTITY_PREFIXES):
            return None
        return customer_id


def personal_of(keys: DataKeys, *, open_value: Callable[[Any], Any] | None = None) -> Personal:
    """Sealed fields withheld (``[erased]`` where ``keys`` says the key is destroyed), or opened by ``open_value``."""

    def erased(value: Any) -> bool:
        if isinstance(value, str):
            match = TOKEN.fullmatch(value)
            return match is not None and keys.cipher(match.group(1)) is None
        if isinstance(value, bytes) and value.startswith(BYTES_PREFIX):
            return keys.cipher(value[6:14].hex()) is None
        return False

    return Personal(erased=erased, open_value=open_value)


class TypeTable:
    """The Arrow schema of one event type and how its decoded records become a batch of rows."""

    def __init__(self, codec: AvroEventCodec, name: str, personal: Personal) -> None:
        spec = codec.schema(name)
        self.name = name
        self.personal = personal
        self.fingerprint = spec.header[2:].hex()
        parsed = spec.parsed
        self._named: dict[str, Any] = dict(parsed.get("__named_schemas", {}))
        self._paths = PERSONAL_FIELDS.get(name, ())
        sealed_heads = {path[0] for path in self._paths}
        note = (OPENED_NOTE if personal.opened else WITHHELD_NOTE).encode()
        fields = [pa.field(column, kind, metadata={b"caseledger.doc": doc.encode()})
                  for column, kind, doc in ENVELOPE_COLUMNS]
        taken = {column for column, _kind, _doc in ENVELOPE_COLUMNS}
        self.own: list[tuple[str, str]] = []  # (Avro field, column)
        for field in parsed["fields"]:
            if field["name"] == "envelope":
                continue
            column = field["name"] if field["name"] not in taken else f"{name}_{field['name']}"
            metadata = {b"caseledger.avro": json.dumps(_plain(field["type"])).encode()}
            if field["name"] in sealed_heads:
                metadata[b"caseledger.personal"] = note
                paths = [".".join(p) for p in self._paths if p[0] == field["name"]]
                metadata[b"caseledger.personal_paths"] = ",".join(paths).encode()
            if field.get("doc"):
                metadata[b"caseledger.doc"] = str(field["doc"]).encode()
            fields.append(pa.field(column, self._arrow(field["type"]), metadata=metadata))
            self.own.append((field["name"], column))
        self.schema = pa.schema(fields, metadata={b"caseledger.event_type": name.encode(),
                                                  b"caseledger.fingerprint": self.fingerprint.encode()})

    def _arrow(self, avro: Any) -> Any:
        """The Arrow type of an Avro type (nullable: every Arrow field is)."""
        if isinstance(avro, str):
            if avro in self._named:
                return self._arrow(self._named[avro])
            return _PRIMITIVES[avro]
        if isinstance(avro, list):
            branches = [b for b in avro if b != "null"]
            if len(branches) == 1:
                return self._arrow(branches[0])
            return pa.string()  # a union of several types: its JSON text
        kind, logical = avro["type"], avro.get("logicalType")
        if logical == "timestamp-micros":
            return UTC_MICROS
        if logical == "timestamp-millis":
            return pa.timestamp("ms", tz="UTC")
        if kind == "record":
            self._named.setdefault(avro["name"], avro)
            return pa.struct([pa.field(f["name"], self._arrow(f["type"])) for f in avro["fields"]])
        if kind == "array":
            return pa.list_(self._arrow(avro["items"]))
        if kind == "map":
            return pa.map_(pa.string(), self._arrow(avro["values"]))
        if kind == "enum":
            return pa.string()
        if kind == "fixed":
            return pa.binary(avro["size"])
        return self._arrow(kind)

    def row(self, position: int, event_hash: bytes, record: dict[str, Any]) -> dict[str, Any]:
        """One event's row: its envelope's columns, then its own fields (personal ones as :class:`Personal` says)."""
        env = record["envelope"]
        actor = env["actor"]
        case_id = env["case_id"]
        previous = env["previous_hash"]
        row: dict[str, Any] = {
            "position": position, "event_type": self.name, "event_id": env["event_id"],
            "aggregate_id": env["aggregate_id"], "aggregate_version": env["aggregate_version"],
            "case_id": None if case_id == NO_CASE else case_id, "customer_id": self.personal.customer(env["customer_id"]),
            "recorded_at": env["recorded_at"], "occurred_at": env["occurred_at"],
            "actor_kind": actor["kind"], "actor_id": actor["id"], "actor_authentication": actor["authentication"],
            "actor_principal": actor["principal"], "channel": env["channel"],
            "correlation_id": env["correlation_id"], "causation_id": env["causation_id"],
            "previous_hash": previous.hex() if previous else None,
            "event_hash": event_hash.hex(),
        }
        for path in self._paths:
            apply_at_path(record, path, self.personal.value)
        for field_name, column in self.own:
            row[column] = record.get(field_name)
        return row

    def batch(self, rows: list[dict[str, Any]]) -> Any:
        """The rows as one Arrow record batch of this type's schema."""
        return pa.RecordBatch.from_pylist(rows, schema=self.schema)


_IDENTITY_PREFIXES = tuple(f"{kind}:" for kind in IDENTITY_KINDS)
_PRIMITIVES = {"string": pa.string(), "long": pa.int64(), "int": pa.int32(), "boolean": pa.bool_(),
               "double": pa.float64(), "float": pa.float32(), "bytes": pa.binary(), "null": pa.null()}


def _plain(avro: Any) -> Any:
    """An Avro type as JSON can say it (fastavro's parsed schemas carry private keys)."""
    if isinstance(avro, dict):
        return {k: _plain(v) for k, v in avro.items() if not k.startswith("__")}
    if isinstance(avro, list):
        return [_plain(v) for v in avro]
    return avro
