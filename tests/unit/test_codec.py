"""The Avro codec: every event type round-trips, and every schema reads its previous version's data."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import uuid
from io import BytesIO
from pathlib import Path

import pytest
from fastavro import schemaless_writer
from fastavro.utils import generate_many

from caseledger.ledger.avro.codec import (
    HEADER_SIZE,
    MAGIC,
    AvroEventCodec,
    parse_event_schema,
    schema_fingerprint,
)
from caseledger.ledger.domain.case import Case
from caseledger.ledger.domain.catalog import EVENT_TYPES
from caseledger.ledger.domain.events import Context, LedgerEvent
from caseledger.ledger.domain.values import SYSTEM, ContactDraft, Identity
from caseledger.ledger.errors import SchemaError

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
CODEC = AvroEventCodec()
ENVELOPE_ONLY = {f.name for f in dataclasses.fields(LedgerEvent)} | {"originator_topic", "case_id"}


def test_every_event_type_has_exactly_one_schema() -> None:
    files = {p.stem for p in SCHEMAS.glob("*.avsc")} - {"caseledger.Envelope"}
    assert files == set(EVENT_TYPES)


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_schema_fields_match_the_event_fields(name: str) -> None:
    event_fields = {f.name for f in dataclasses.fields(EVENT_TYPES[name])} - ENVELOPE_ONLY
    assert set(CODEC.schema(name).fields) == event_fields


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_every_event_type_round_trips(name: str) -> None:
    """Random records of each schema decode to an event that survives encode/decode unchanged."""
    spec = CODEC.schema(name)
    for record in generate_many(spec.parsed, 25):
        out = BytesIO()
        out.write(spec.header)
        schemaless_writer(out, spec.parsed, record)
        data = out.getvalue()
        event = CODEC.decode(name, data)
        assert type(event) is EVENT_TYPES[name]
        encoded = CODEC.encode(event)
        again = CODEC.decode(name, encoded)
        assert again == event
        assert vars(again) == vars(event)
        # Stable bytes: what the store keeps re-encodes identically (the audit hash relies on it).
        assert CODEC.encode(again) == encoded


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_decode_gives_what_fastavro_reads_with_every_logical_type(name: str) -> None:
    """decode makes the envelope's UUIDs itself (a faster path): the values must be fastavro's own."""
    spec = CODEC.schema(name)
    for record in generate_many(spec.parsed, 25):
        record["envelope"]["correlation_id"] = None if len(record["envelope"]["customer_id"]) % 2 else uuid.uuid4()
        out = BytesIO()
        out.write(spec.header)
        schemaless_writer(out, spec.parsed, record)
        data = out.getvalue()
        reference = CODEC.decode_record(name, data)
        env = reference.pop("envelope")
        state = vars(CODEC.decode(name, data))
        for attr, key in (("originator_id", "aggregate_id"), ("event_id", "event_id"),
                          ("correlation_id", "correlation_id"), ("causation_id", "causation_id"),
                          ("timestamp", "recorded_at"), ("occurred_at", "occurred_at")):
            assert state[attr] == env[key]
            assert type(state[attr]) is type(env[key])
        if spec.has_case_id_field:
            assert state["case_id"] == env["case_id"] and type(state["case_id"]) is uuid.UUID
        assert {k: state[k] for k in reference} == reference


def test_decoding_refuses_foreign_or_corrupt_bytes() -> None:
    with pytest.raises(SchemaError, match="single-object"):
        CODEC.decode("CaseOpened", b"{}")
    with pytest.raises(SchemaError, match="unknown schema"):
        CODEC.decode("CaseOpened", MAGIC + b"\x00" * 8 + b"\x02")
    header = CODEC.schema("CaseOpened").header
    with pytest.raises(SchemaError, match="cannot decode"):
        CODEC.decode("CaseOpened", header + b"\xff")
    with pytest.raises(SchemaError, match="unknown event type"):
        CODEC.decode("NoSuchEvent", header)


def _previous_committed_versions(path: Path) -> list[str]:
    """Texts of the file as of each commit that changed it, newest first, differing from now."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return []
    rel = path.relative_to(ROOT).as_posix()
    log = subprocess.run(
        ["git", "log", "--format=%H", "--", rel], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    current = path.read_text()
    versions = []
    for commit in log:
        shown = subprocess.run(["git", "show", f"{commit}:{rel}"], cwd=ROOT, capture_output=True, text=True)
        if shown.returncode == 0 and shown.stdout != current:
            versions.append(shown.stdout)
    return versions


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_schema_reads_data_written_with_its_previous_committed_version(name: str) -> None:
    """History stays readable: data written with the last committed schema resolves into the current one."""
    path = SCHEMAS / f"{name}.avsc"
    previous = _previous_committed_versions(path)
    envelope = json.loads((SCHEMAS / "caseledger.Envelope.avsc").read_text())
    writers = [parse_event_schema(text, envelope) for text in previous[:1]]
    if not writers:
        # Unchanged since it was first committed: the current version must read its own data.
        writers = [CODEC.schema(name).parsed]
    for writer in writers:
        fingerprint = schema_fingerprint(writer)
        for record in generate_many(writer, 20):
            out = BytesIO()
            out.write(MAGIC + fingerprint)
            schemaless_writer(out, writer, record)
            # The codec must know the writer (current, or kept in schemas/history/).
            decoded = CODEC.decode_record(name, out.getvalue())
            assert set(decoded) == {f["name"] for f in CODEC.schema(name).parsed["fields"]}


def test_single_object_header_names_the_writer_schema() -> None:
    spec = CODEC.schema("ContactReceived")
    assert spec.header[:2] == MAGIC and len(spec.header) == HEADER_SIZE
    assert spec.header[2:] == schema_fingerprint(spec.parsed)


# -- the standard fingerprint (issue 14) and the legacy one ---------------------------------------------------


def test_the_fingerprint_covers_the_envelope_so_changing_it_changes_every_event_type() -> None:
    envelope = json.loads((SCHEMAS / "caseledger.Envelope.avsc").read_text())
    grown = {**envelope, "fields": [*envelope["fields"], {"name": "tenant", "type": ["null", "string"],
                                                          "default": None}]}
    for name in sorted(EVENT_TYPES):
        spec = CODEC.schema(name)
        assert schema_fingerprint(spec.parsed, envelope=envelope) == spec.header[2:]
        assert schema_fingerprint(spec.parsed, envelope=grown) != spec.header[2:], name


def test_the_fingerprint_is_the_one_of_the_schema_with_its_named_types_inlined() -> None:
    """Parsed against the shared envelope or written out in full: one schema, one fingerprint."""
    from fastavro import parse_schema

    envelope = json.loads((SCHEMAS / "caseledger.Envelope.avsc").read_text())
    for name in ("CaseOpened", "ContactReceived", "MessageIdCollided"):
        text = json.loads((SCHEMAS / f"{name}.avsc").read_text())
        inlined = {**text, "fields": [{**f, "type": envelope} if f["type"] == "caseledger.Envelope" else f
                                      for f in text["fields"]]}
        assert schema_fingerprint(parse_schema(inlined)) == CODEC.schema(name).header[2:]


def test_events_stored_with_the_legacy_fingerprint_still_decode() -> None:
    from caseledger.ledger.avro.codec import legacy_fingerprint

    spec = CODEC.schema("CaseOpened")
    legacy = legacy_fingerprint(spec.parsed)
    assert legacy != spec.header[2:]
    case = Case.open(case_id=uuid.uuid4(), reference="CL-AAAAA-BBBBB", customer_id="c-1", subject="s",
                     category=None, segment=None, ctx=Context(actor=SYSTEM))
    (opened,) = case.collect_events()
    data = CODEC.encode(opened)
    # Legacy bytes were written with the first envelope (before the actor's authentication).
    first = json.loads((SCHEMAS / "history" / "caseledger.Envelope.38cac1c693acab99.avsc").read_text())
    writer = parse_event_schema((SCHEMAS / "CaseOpened.avsc").read_text(), first)
    record = CODEC.decode_record("CaseOpened", data)
    record["envelope"]["actor"] = {"kind": "system", "id": "caseledger"}
    out = BytesIO()
    schemaless_writer(out, writer, record)
    old = MAGIC + legacy + out.getvalue()
    decoded = CODEC.decode("CaseOpened", old)
    assert decoded.reference == "CL-AAAAA-BBBBB" and decoded.actor_authentication == "none"
    with pytest.raises(SchemaError, match="unknown schema"):
        CODEC.decode("CaseOpened", MAGIC + bytes(8) + data[HEADER_SIZE:])


def test_intake_records_of_adapters_built_before_the_standard_fingerprint_are_still_read() -> None:
    from caseledger.ledger.avro.codec import legacy_fingerprint
    from caseledger.ledger.intake.records import IntakeCodec

    codec = IntakeCodec()
    draft = ContactDraft(channel="email", channel_message_id="m-1", identity=Identity.parse("email:a@b.example"),
                         items=("Where is my refund?",))
    data = codec.encode(draft, adapter="old-adapter")
    old = MAGIC + legacy_fingerprint(codec.schema) + data[HEADER_SIZE:]
    assert codec.decode(old)[1].items == draft.items
    with pytest.raises(SchemaError, match="unknown intake schema"):
        codec.decode(MAGIC + bytes(8) + data[HEADER_SIZE:])


def test_the_envelope_names_a_case_only_for_events_that_belong_to_one() -> None:
    from caseledger.ledger.avro.codec import NO_CASE
    from caseledger.ledger.domain.directory import ChannelMessage, Customer
    from caseledger.ledger.domain.values import Channel

    ctx = Context(actor=SYSTEM)
    case = Case.open(case_id=uuid.uuid4(), reference="CL-AAAAA-CCCCC", customer_id="c-1", subject="s",
                     category=None, segment=None, ctx=ctx)
    message = ChannelMessage.register(channel=Channel.EMAIL, channel_message_id="m", case_id=case.id,
                                      reference=case.reference, contact_id="C1", acknowledgement_id="ACK1",
                                      content_digest="", customer_id="c-1", ctx=ctx)
    customer = Customer.register(customer_id="c-1", segment=None, ctx=ctx)
    envelopes = {
        type(e).__name__: CODEC.decode_record(type(e).__name__, CODEC.encode(e))["envelope"]
        for aggregate in (case, message, customer) for e in aggregate.collect_events()
    }
    assert str(envelopes["CaseOpened"]["case_id"]) == str(case.id)
    assert str(envelopes["MessageRegistered"]["case_id"]) == str(case.id)
    assert str(envelopes["CustomerRegistered"]["case_id"]) == NO_CASE
