"""Avro codec: the bytes the store keeps for an event, and publishes, are its Avro encoding.

Each event is written as Avro *single-object encoding*: the two marker bytes ``C3 01``, the
8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form (the
envelope and every other named type inlined at first use, as Apache Avro's
``SchemaNormalization.parsingFingerprint64`` computes it), then the schemaless Avro body. The
fingerprint tells any reader — ours, Java's ``BinaryMessageDecoder`` — which schema wrote the
bytes, so history written with an older version of a schema is read through Avro schema
resolution into the current one. Older schema versions are kept in ``schemas/history/`` (the
test suite checks every committed version is there).

The envelope evolves too (``authentication`` and ``principal`` joined the actor in issue 17): its
retired versions are kept as ``schemas/history/caseledger.Envelope.<fingerprint>.avsc``, and every
event schema version, current or retired, is known with each of them — history written before an
envelope change is read through schema resolution like any other retired version.

Events stored before the standard fingerprint carry a *legacy* one (the canonical form with the
envelope left as a name, its bytes reversed). Those are not typed anywhere: the codec derives the
legacy fingerprint of every committed schema version, current and retired, and reads them too.

The event hash used by the audit chain is ``sha256`` over exactly these bytes.

Events of the current schemas are written and read by code compiled from those schemas
(``ledger.avrocompiled``); fastavro handles whatever that code refuses and all schema resolution.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import cached_property, lru_cache
from importlib import resources
from io import BytesIO
from typing import Any, Literal
from uuid import UUID

from eventsourcing.domain import CanInitAggregate
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder
from eventsourcing.utils import get_topic
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form

from caseledger.ledger.avro.avrocompiled import Unsupported, compile_reader, compile_writer
from caseledger.ledger.domain.case import Case
from caseledger.ledger.domain.catalog import EVENT_TYPES, name_of_topic
from caseledger.ledger.domain.events import LedgerEvent
from caseledger.ledger.errors import SchemaError, ValidationError

MAGIC = b"\xc3\x01"
HEADER_SIZE = 10
NO_CASE = "00000000-0000-0000-0000-000000000000"
"""The envelope's ``case_id`` of an event that belongs to no case (the nil UUID, RFC 9562 §5.9)."""
ENVELOPE = "caseledger.Envelope"
_ENVELOPE_ATTRS = {f.name for f in dataclasses.fields(LedgerEvent)}
_ENVELOPE_ORDER = {
    # Retired envelope versions, oldest first (file names in schemas/history/).
    f"{ENVELOPE}.38cac1c693acab99.avsc": 1,  # before the actor's authentication (issue 17)
}


def schema_fingerprint(parsed: Any, *, envelope: dict[str, Any] | None = None) -> bytes:
    """The 8 bytes single-object encoding puts after ``C3 01``: the CRC-64-AVRO of the full Parsing Canonical
    Form, least significant byte first — exactly the bytes of ``bytes.fromhex(fastavro.schema.fingerprint(...))``.

    An event schema parsed against the shared envelope (:func:`parse_event_schema`) names it;
    the envelope (``envelope``, the installed one by default) is inlined first, as Avro does.
    """
    full = _with_envelope(parsed, envelope)
    # fastavro's hex is already in stored order (Java's parsingFingerprint64 as a little-endian long): no reversal.
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(full)))


def legacy_fingerprint(parsed: Any) -> bytes:
    """The fingerprint caseledger wrote before the standard one (the canonical form with the
    envelope as a name, and the bytes reversed), derived so that the history it marks stays readable."""
    return int(fingerprint(to_parsing_canonical_form(parsed)), 16).to_bytes(8, "little")


_EMPTY_64 = 0xC15D213AA4D7A795  # the CRC-64-AVRO of nothing (the Avro specification's EMPTY)


def _crc64_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY_64 & -(fp & 1))
        table.append(fp)
    return tuple(table)


_CRC64_TABLE = _crc64_table()


def fingerprint(canonical_form: str) -> str:
    """``fastavro.schema.fingerprint(canonical_form, "CRC-64-AVRO")``, the same hex digits (a test holds them
    equal), with its table built once instead of on every call: the codec fingerprints some 300 schema versions
    as it starts, and every command that opens the ledger waited for fastavro's table each time."""
    result = _EMPTY_64
    table = _CRC64_TABLE
    for byte in canonical_form.encode():
        result = (result >> 8) ^ table[(result ^ byte) & 0xFF]
    return result.to_bytes(8, "little").hex()


def _with_envelope(parsed: Any, envelope: dict[str, Any] | None) -> Any:
    fields = parsed.get("fields") if isinstance(parsed, dict) else None
    if not fields or not any(f.get("type") == ENVELOPE for f in fields):
        return parsed
    inline = parse_schema(envelope if envelope is not None else _installed_envelope())
    return {**parsed, "fields": [{**f, "type": inline} if f.get("type") == ENVELOPE else f for f in fields]}


@lru_cache(maxsize=1)
def _installed_envelope() -> dict[str, Any]:
    return json.loads(resources.files("caseledger.schemas").joinpath(f"{ENVELOPE}.avsc").read_text(encoding="utf-8"))


def event_hash(data: bytes) -> bytes:
    """The hash of one stored event: SHA-256 over its encoded bytes."""
    return hashlib.sha256(data).digest()


def schema_files() -> Iterator[tuple[str, str]]:
    """(file name, JSON text) of every current schema shipped in the ``schemas`` package."""
    root = resources.files("caseledger.schemas")
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".avsc"):
            yield entry.name, entry.read_text(encoding="utf-8")


def history_files() -> Iterator[tuple[str, str]]:
    """(file name, JSON text) of every retired schema version kept in ``schemas/history``."""
    root = resources.files("caseledger.schemas").joinpath("history")
    if root.is_dir():
        for entry in sorted(root.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".avsc"):
                yield entry.name, entry.read_text(encoding="utf-8")


def parse_event_schema(text: str | dict[str, Any], envelope: dict[str, Any]) -> Any:
    """Parse one event schema, resolving the shared envelope type."""
    named: dict[str, Any] = {}
    parse_schema(envelope, named_schemas=named)
    schema = json.loads(text) if isinstance(text, str) else text
    return parse_schema(schema, named_schemas=named)


@dataclasses.dataclass(frozen=True)
class EventSchema:
    """One event type's current schema and how its fields map to the domain event."""

    name: str
    event_class: type[LedgerEvent]
    parsed: Any
    header: bytes
    fields: tuple[str, ...]
    has_case_id_field: bool
    is_case_event: bool
    is_creation: bool


Seal = Callable[[str, str, datetime, dict[str, Any]], None]
"""Seals an event's personal fields in its Avro record: (event type, customer id, recorded at, record)."""
Open = Callable[[str, dict[str, Any]], None]
"""Opens the sealed fields of a decoded event's attributes: (event type, attributes)."""


class AvroEventCodec:
    """Encodes ledger events to Avro single-object bytes and decodes them back.

    With ``seal`` (the application's), the personal fields of each event are sealed with its
    customer's data key before they are written (``caseledger.ledger.privacy``); decoding never
    opens them: the mapper does, for the application only.
    """

    def __init__(self, *, seal: Seal | None = None) -> None:
        self.seal = seal
        self._tables_lock = threading.Lock()
        self._tables_builder: int | None = None  # None: the schema tables are not built yet; -1: they are

    def __getattr__(self, name: str) -> Any:
        # The schema tables (every version of every schema, fingerprinted: ~25 ms) are built when first
        # needed, not as a ledger opens: a command that only reads the views (`caseledger case show`) never
        # needs them. Only names the tables define get here, before they are built.
        state = vars(self)
        if name.startswith("__") or state.get("_tables_builder", -1) == -1:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        with self._tables_lock:
            if state["_tables_builder"] is None:
                # Taken in one update: no other thread sees a table half filled.
                state.update(_schema_tables())
                state["_tables_builder"] = -1
        return getattr(self, name)

    def _build_tables(self) -> None:
        files = dict(schema_files())
        envelope_text = files.pop(f"{ENVELOPE}.avsc", None)
        if envelope_text is None:
            raise SchemaError("schemas/caseledger.Envelope.avsc is missing from the installation")
        self.envelope = json.loads(envelope_text)
        retired = [(f, t) for f, t in history_files() if f.startswith(f"{ENVELOPE}.")]
        # Oldest first: the legacy fingerprint names no envelope, and was only ever written with the first.
        self._retired_envelopes = [json.loads(t) for _f, t in sorted(retired, key=lambda e: _ENVELOPE_ORDER.get(e[0], 0))]
        self._current_envelope_fps: set[bytes] = set()
        self._by_name: dict[str, EventSchema] = {}
        self._by_class: dict[type, EventSchema] = {}
        self._writers: dict[bytes, Any] = {}
        self._writer_texts: dict[bytes, str | None] = {}
        # (event type, schema text, fingerprints, the envelope it was parsed with)
        self._versions: list[tuple[str, str, tuple[bytes, ...], dict[str, Any]]] = []
        for file_name, text in files.items():
            name = file_name.removesuffix(".avsc")
            cls = EVENT_TYPES.get(name)
            if cls is None:
                raise SchemaError(f"schemas/{file_name} names no event type the ledger knows")
            parsed = parse_event_schema(text, self.envelope)
            header = MAGIC + schema_fingerprint(parsed, envelope=self.envelope)
            own = tuple(f["name"] for f in parsed["fields"] if f["name"] != "envelope")
            spec = EventSchema(
                name=name,
                event_class=cls,
                parsed=parsed,
                header=header,
                fields=own,
                has_case_id_field="case_id" in {f.name for f in dataclasses.fields(cls)},
                is_case_event=issubclass(cls, Case.Event),
                is_creation=issubclass(cls, CanInitAggregate),
            )
            self._by_name[name] = spec
            self._by_class[cls] = spec
            self._version(name, text, parsed, header[2:])
        missing = sorted(set(EVENT_TYPES) - set(self._by_name))
        if missing:
            raise SchemaError(f"no schema under schemas/ for event types: {', '.join(missing)}")
        for file_name, text in history_files():
            if file_name.startswith(f"{ENVELOPE}."):
                continue
            parsed = parse_event_schema(text, self.envelope)
            self._version(file_name.split(".", 1)[0], text, parsed, schema_fingerprint(parsed, envelope=self.envelope))

    def _version(self, name: str, text: str, parsed: Any, standard: bytes) -> None:
        """Know one schema version as a writer: with the current envelope by its standard fingerprint, with
        each retired envelope by that combination's, and by its legacy fingerprint (with the first envelope)."""
        self._writers.setdefault(standard, parsed)
        self._current_envelope_fps.add(standard)
        self._versions.append((name, text, (standard,), self.envelope))
        for old in self._retired_envelopes:
            parsed_old = parse_event_schema(text, old)
            fp = schema_fingerprint(parsed_old, envelope=old)
            self._writers.setdefault(fp, parsed_old)
            self._versions.append((name, text, (fp,), old))
        first = self._retired_envelopes[0] if self._retired_envelopes else self.envelope
        legacy_writer = parse_event_schema(text, first) if self._retired_envelopes else parsed
        legacy = legacy_fingerprint(legacy_writer)
        self._writers.setdefault(legacy, legacy_writer)
        if not self._retired_envelopes:
            self._current_envelope_fps.add(legacy)
        self._versions.append((name, text, (legacy,), first))

    def writer_schema_text(self, fp: bytes) -> str | None:
        """The Parsing Canonical Form of the schema that wrote events with this fingerprint, self-contained (the
        envelope inlined) and hashing to it: what an export carries so that its verifier decodes the stored bytes.
        None for a legacy fingerprint (its form names the envelope without defining it)."""
        known = self._writer_texts.get(fp, "")
        if known != "":
            return known
        found = None
        for _name, text, fps, envelope in self._versions:
            if fps == (fp,):
                canonical = to_parsing_canonical_form(_with_envelope(parse_event_schema(text, envelope), envelope))
                if bytes.fromhex(fingerprint(canonical)) == fp:
                    found = canonical
                    break
        self._writer_texts[fp] = found
        return found

    def event_type_of(self, fp: bytes) -> str | None:
        """The event type whose schema (any version, any envelope, standard or legacy) has this fingerprint."""
        names = self._types_by_fingerprint
        return names.get(bytes(fp))

    @cached_property
    def _types_by_fingerprint(self) -> dict[bytes, str]:
        found: dict[bytes, str] = {}
        for name, _text, fps, _envelope in self._versions:
            for fp in fps:
                found.setdefault(fp, name)
        return found

    def writes_current_envelope(self, fp: bytes) -> bool:
        """Whether bytes with this fingerprint start with the current envelope (the hand-decoded fast path)."""
        return fp in self._current_envelope_fps

    # -- lookups ------------------------------------------------------------------------------------

    def schema(self, name: str) -> EventSchema:
        try:
            return self._by_name[name]
        except KeyError:
            raise SchemaError(f"unknown event type {name!r}") from None

    def schema_for(self, event: LedgerEvent) -> EventSchema:
        return self._by_class[type(event)]

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    @cached_property
    def _aggregate_topics(self) -> dict[str, str]:
        topics = {}
        for name, spec in self._by_name.items():
            if spec.is_creation:
                outer = spec.event_class.__qualname__.rsplit(".", 1)[0]
                module = __import__(spec.event_class.__module__, fromlist=[outer])
                topics[name] = get_topic(getattr(module, outer))
        return topics

    # -- encoding -----------------------------------------------------------------------------------

    def encode(self, event: LedgerEvent) -> bytes:
        """The Avro single-object bytes of a domain event."""
        try:
            return self._encode(event)
        except UnicodeEncodeError:
            # The one text no event can hold (a lone surrogate), whichever command field brought it.
            raise ValidationError(f"{type(event).__name__}: a text holds a lone surrogate (U+D800–U+DFFF), "
                                  "which is not text; send valid Unicode (UTF-8)") from None

    def _encode(self, event: LedgerEvent) -> bytes:
        spec = self._by_class.get(type(event))
        if spec is None:
            raise SchemaError(f"{type(event).__qualname__} is not an event type of the ledger")
        state = vars(event)
        # The envelope's uuid fields are given as strings: fastavro's own UUID conversion costs
        # more than the rest of the record (17 µs against 30 µs per event).
        aggregate_id = str(state["originator_id"])
        correlation_id, causation_id = state["correlation_id"], state["causation_id"]
        record: dict[str, Any] = {
            "envelope": {
                "event_id": str(state["event_id"]),
                "aggregate_id": aggregate_id,
                "aggregate_version": state["originator_version"],
                # The case the event belongs to: its aggregate, the case a directory entry points to,
                # or none (a customer, an identity claim, a rejection): the nil UUID.
                "case_id": aggregate_id if spec.is_case_event else (
                    str(state["case_id"]) if spec.has_case_id_field else NO_CASE),
                "customer_id": state["customer_id"],
                "occurred_at": state["occurred_at"],
                "recorded_at": state["timestamp"],
                "actor": {"kind": state["actor_kind"], "id": state["actor_id"],
                          "authentication": state.get("actor_authentication", "none"),
                          "principal": state.get("actor_principal")},
                "channel": state["channel"],
                "correlation_id": None if correlation_id is None else str(correlation_id),
                "causation_id": None if causation_id is None else str(causation_id),
                "previous_hash": state["previous_hash"],
            }
        }
        for name in spec.fields:
            record[name] = state[name]
        if self.seal is not None:
            self.seal(spec.name, state["customer_id"], state["timestamp"], record)
        write = self._compiled_for("write", spec.name)
        if write is not None:
            try:
                return spec.header + write(record)
            except Exception:  # fastavro below writes it, or says what is wrong
                pass
        out = BytesIO()
        out.write(spec.header)
        try:
            schemaless_writer(out, spec.parsed, record, strict_allow_default=True)
        except (ValueError, TypeError, KeyError) as error:
            raise SchemaError(f"{spec.name} does not fit schemas/{spec.name}.avsc: {error}") from error
        return out.getvalue()

    # -- compiled fast paths (ledger.avrocompiled); fastavro stays the authority ---------------------

    @cached_property
    def _text_named(self) -> dict[str, Any]:
        """The envelope's named types with its UUIDs as text, as the compiled code refers to them."""
        named: dict[str, Any] = {}
        parse_schema(_without_uuid_types(self.envelope), named_schemas=named)
        return named

    @cached_property
    def _named(self) -> dict[str, Any]:
        """The envelope's named types as declared (UUIDs read as ``UUID``)."""
        named: dict[str, Any] = {}
        parse_schema(self.envelope, named_schemas=named)
        return named

    @cached_property
    def _compiled(self) -> dict[tuple[str, str], Any]:
        """The compiled writers and readers made so far, shared by every codec of the process (the same schemas)."""
        return _schema_tables()["_compiled"]  # type: ignore[no-any-return]

    def _compiled_for(self, role: Literal["write", "read", "record"], name: str) -> Any:
        """The compiled writer or reader of ``name``'s current schema, None if it cannot be compiled.

        ``write`` and ``read`` take the envelope's UUIDs as text (what encode and decode use);
        ``record`` reads them as ``UUID``, as the schema declares (decode_record).
        """
        key = (role, name)
        try:
            return self._compiled[key]
        except KeyError:
            pass
        if role == "record":  # decode_record: the schema as declared, UUIDs as UUID
            schema, named = self._by_name[name].parsed, self._named
        else:
            schema, named = self._uuids_as_text[1][name], self._text_named
        try:
            compiled: Any = (compile_writer if role == "write" else compile_reader)(schema, named)
        except Unsupported:
            compiled = None
        self._compiled[key] = compiled
        return compiled

    def decode_record(self, name: str, data: bytes) -> dict[str, Any]:
        """The Avro record in ``data``, resolved into the current schema of ``name``."""
        spec = self.schema(name)
        return self._read(name, data, self._writers, spec.parsed, fast=self._compiled_for("record", name))

    def decode_plain(self, name: str, data: bytes) -> dict[str, Any]:
        """Like :meth:`decode_record`, with the envelope's ids left as their text (an export's columns)."""
        self.schema(name)
        writers, readers = self._uuids_as_text
        return self._read(name, data, writers, readers[name], fast=self._compiled_for("read", name))

    def _read(
        self, name: str, data: bytes, writers: dict[bytes, Any], reader: Any, *, fast: Any = None
    ) -> dict[str, Any]:
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise SchemaError(f"{name}: bytes are not Avro single-object encoded (no C3 01 marker)")
        fp = data[2:HEADER_SIZE]
        if fast is not None and fp == self._by_name[name].header[2:]:
            # Written with the current schema: no resolution needed, the compiled reader reads it.
            try:
                return fast(data, HEADER_SIZE)  # type: ignore[no-any-return]
            except Exception:  # fastavro below reads it, or says what is wrong
                pass
        writer = writers.get(fp)
        if writer is None:
            raise SchemaError(
                f"{name}: written with an unknown schema (fingerprint {fp.hex()}); "
                "keep every retired schema version in schemas/history/"
            )
        try:
            return schemaless_reader(BytesIO(data[HEADER_SIZE:]), writer, reader)  # type: ignore[return-value]
        except Exception as error:  # fastavro raises many types for corrupt input
            raise SchemaError(f"{name}: cannot decode event bytes: {error}") from error

    @cached_property
    def _uuids_as_text(self) -> tuple[dict[bytes, Any], dict[str, Any]]:
        """Writers (by fingerprint) and readers (by name) that leave the envelope's UUIDs as text.

        fastavro's uuid logical type is about half the cost of a decode; :meth:`decode` makes
        those UUIDs itself, reusing the ones it made lately (a case's events share theirs).
        """
        return _uuid_text_schemas()

    def _uuid(self, text: str) -> UUID:
        found = self._recent_uuids.get(text)
        if found is None:
            if len(self._recent_uuids) >= 50_000:
                self._recent_uuids.clear()
            found = self._recent_uuids[text] = UUID(text)
        return found

    @cached_property
    def _recent_uuids(self) -> dict[str, UUID]:
        return {}

    def decode(self, name: str, data: bytes) -> LedgerEvent:
        """The domain event in ``data``."""
        spec = self.schema(name)
        writers, readers = self._uuids_as_text
        record = self._read(name, data, writers, readers[name], fast=self._compiled_for("read", name))
        env = record.pop("envelope")
        uuid = self._uuid
        correlation_id, causation_id = env["correlation_id"], env["causation_id"]
        state: dict[str, Any] = {
            "originator_id": uuid(env["aggregate_id"]),
            "originator_version": env["aggregate_version"],
            "timestamp": env["recorded_at"],
            "event_id": UUID(env["event_id"]),  # unique: no use keeping it
            "customer_id": env["customer_id"],
            "occurred_at": env["occurred_at"],
            "actor_kind": env["actor"]["kind"],
            "actor_id": env["actor"]["id"],
            "actor_authentication": env["actor"]["authentication"],
            "actor_principal": env["actor"]["principal"],
            "channel": env["channel"],
            "correlation_id": uuid(correlation_id) if correlation_id is not None else None,
            "causation_id": uuid(causation_id) if causation_id is not None else None,
            "previous_hash": env["previous_hash"],
        }
        if spec.has_case_id_field:
            state["case_id"] = uuid(env["case_id"])
        if spec.is_creation:
            state["originator_topic"] = self._aggregate_topics[name]
        for field_name in spec.fields:
            state[field_name] = record[field_name]
        event = object.__new__(spec.event_class)
        object.__setattr__(event, "__dict__", state)
        return event


_ENVELOPE_UUIDS = ("event_id", "aggregate_id", "case_id", "correlation_id", "causation_id")


@lru_cache(maxsize=1)
def _schema_tables() -> dict[str, Any]:
    """The codec's schema tables (every version of every schema, fingerprinted), built once per process: they
    depend on the installed schema files only, and every ledger of the process (the service's pool, each test)
    reads the same ones. With them, ``_compiled``: the compiled writers and readers, made as first needed."""
    twin = object.__new__(AvroEventCodec)
    vars(twin).update(seal=None, _tables_builder=-1)
    twin._build_tables()
    return {**{k: v for k, v in vars(twin).items() if k not in ("seal", "_tables_builder")}, "_compiled": {}}


@lru_cache(maxsize=1)
def _uuid_text_schemas() -> tuple[dict[bytes, Any], dict[str, Any]]:
    """AvroEventCodec._uuids_as_text, made once per process from :func:`_schema_tables`."""
    tables = _schema_tables()
    declared, by_name = tables["envelope"], tables["_by_name"]
    envelope = _without_uuid_types(declared)
    readers = {name: parse_event_schema(text, envelope)
               for name, text in ((f.removesuffix(".avsc"), t) for f, t in schema_files()) if name in by_name}
    writers: dict[bytes, Any] = {}
    for name, text, fps, env in tables["_versions"]:  # every version, with every envelope, and its legacy fingerprint
        if name in readers and by_name[name].header[2:] in fps:
            writer = readers[name]
        else:
            writer = parse_event_schema(text, envelope if env is declared else _without_uuid_types(env))
        for fp in fps:
            writers.setdefault(fp, writer)
    return writers, readers


def _without_uuid_types(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope schema with its UUID fields as plain strings (the same bytes on the wire)."""

    def plain(schema: Any) -> Any:
        if isinstance(schema, dict) and schema.get("logicalType") == "uuid":
            return {k: v for k, v in schema.items() if k != "logicalType"}
        if isinstance(schema, list):
            return [plain(branch) for branch in schema]
        return schema

    fields = [{**f, "type": plain(f["type"])} if f["name"] in _ENVELOPE_UUIDS else f for f in envelope["fields"]]
    return {**envelope, "fields": fields}


class _UnusedTranscoder(Transcoder):
    """The Avro mapper encodes whole events itself; eventsourcing still wants a transcoder."""

    def encode(self, obj: Any) -> bytes:
        raise TypeError("AvroMapper encodes events itself; this transcoder is never used")

    def decode(self, data: bytes) -> Any:
        raise TypeError("AvroMapper decodes events itself; this transcoder is never used")


class AvroMapper(Mapper[UUID]):
    """eventsourcing mapper whose stored state is the event's Avro single-object bytes.

    ``open_fields`` opens the sealed personal fields of every event it reads (the application's
    aggregates need the texts; the views keep them sealed).
    """

    def __init__(self, codec: AvroEventCodec, *, open_fields: Open | None = None) -> None:
        super().__init__(transcoder=_UnusedTranscoder())
        self.codec = codec
        self.open_fields = open_fields

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        # The application encodes each new event once, to chain its hash; reuse those bytes.
        data = vars(domain_event).pop("_encoded", None)
        if data is None:
            data = self.codec.encode(domain_event)
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=get_topic(type(domain_event)),
            state=data,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        name = name_of_topic(stored_event.topic)
        event = self.codec.decode(name, bytes(stored_event.state))
        if self.open_fields is not None:
            self.open_fields(name, vars(event))
        # Lets the aggregate know the hash of its last stored event (see LedgerEvent.mutate).
        vars(event)["_stored_hash"] = event_hash(bytes(stored_event.state))
        return event
