"""Issue 27, "decoding in one call": `caseledger.ledger.decode_event` on stored bytes and topic records, and the
fingerprint's wording (README, docs/analysts.md) checked against what fastavro returns."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from caseledger.ledger import SchemaError, decode_event
from caseledger.ledger.avro.codec import ENVELOPE, AvroEventCodec, schema_files
from caseledger.ledger.domain.catalog import name_of_topic

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
WRITTEN = sorted(DATA.glob("ledger-written-by-*.sqlite"))


def stored_events(database: Path) -> list[tuple[str, bytes]]:
    with sqlite3.connect(database) as db:
        return [(name_of_topic(t), bytes(s)) for t, s in db.execute("SELECT topic, state FROM stored_events")]


@pytest.mark.parametrize("database", WRITTEN, ids=lambda p: p.name)
def test_every_stored_event_of_every_release_decodes_in_one_call(database: Path) -> None:
    """Finding: decoding undocumented for Python; with fastavro the envelope had to be inlined by hand.

    The stored history of earlier releases holds legacy fingerprints and the retired envelope: one call reads
    them all, the type from the bytes alone."""
    codec = AvroEventCodec()
    events = stored_events(database)
    assert len(events) > 20
    for name, data in events:
        decoded = decode_event(data)
        assert decoded.type == name
        assert decoded.record == codec.decode_record(name, data)
        event_type, record = decoded  # a (type, dict) pair
        assert event_type == name
        assert record["envelope"]["recorded_at"].tzinfo is not None


def test_a_topic_record_of_either_client_decodes_and_its_type_header_is_checked() -> None:
    name, data = stored_events(WRITTEN[-1])[0]
    kafka_python = SimpleNamespace(value=data, headers=[("ce_specversion", b"1.0"),
                                                         ("ce_type", f"caseledger.events.{name}".encode())])
    confluent = SimpleNamespace(value=lambda: data, headers=lambda: [("event_type", name.encode())])
    assert decode_event(kafka_python).type == decode_event(confluent).type == name
    wrong = SimpleNamespace(value=data, headers=[("ce_type", b"caseledger.events.PromiseBroken")])
    with pytest.raises(SchemaError, match="names PromiseBroken"):
        decode_event(wrong)
    with pytest.raises(SchemaError, match="C3 01"):
        decode_event(b"{}")
    with pytest.raises(SchemaError, match="does not know"):
        decode_event(b"\xc3\x01" + b"\x00" * 8 + data[10:])


def _canonical_with_envelope(text: str, envelope: dict[str, object]) -> str:
    """What the README tells a reader to fingerprint: the schema with caseledger.Envelope inlined at its use."""
    schema = json.loads(text)
    schema["fields"] = [{**f, "type": envelope} if f["type"] == ENVELOPE else f for f in schema["fields"]]
    return str(to_parsing_canonical_form(parse_schema(schema)))


def test_the_fingerprint_is_fastavros_bytes_as_stored_and_the_docs_say_so() -> None:
    """Finding: the README's "little-endian" led readers to reverse the bytes fastavro already gives in stored order."""
    files = dict(schema_files())
    envelope = json.loads(files.pop(f"{ENVELOPE}.avsc"))
    codec = AvroEventCodec()
    for file_name, text in files.items():
        name = file_name.removesuffix(".avsc")
        stored = codec.schema(name).header[2:]
        as_fastavro_says = bytes.fromhex(fingerprint(_canonical_with_envelope(text, envelope), "CRC-64-AVRO"))
        assert stored == as_fastavro_says, name
        assert stored != as_fastavro_says[::-1], name  # reversing them, as "little-endian" suggested, is wrong
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    paragraph = readme[readme.index("**Fingerprints.**"):]
    paragraph = paragraph[: paragraph.index("\n\n")]
    assert 'bytes.fromhex(fastavro.schema.fingerprint(' in paragraph and "do not reverse" in paragraph
    assert not re.search(r"The 8 bytes after `C3 01` are Avro's standard single-object fingerprint: the\s+little-endian",
                         paragraph)
    analysts = (ROOT / "docs" / "analysts.md").read_text(encoding="utf-8")
    assert "decode_event" in analysts and "do not reverse" in analysts
    assert "decode_event" in readme[readme.index("### Reading the topics from Python"):]


def test_every_codec_of_a_process_reads_one_set_of_schema_tables() -> None:
    """Finding (issue 29, the fast loop): every ledger opened fingerprinted every version of every schema again
    and parsed its readers again (tens of ms each, about a fifth of the unit floor's time), though they depend on
    the installed schema files only. Each codec keeps its own seal."""
    first, second = AvroEventCodec(), AvroEventCodec(seal=SimpleNamespace())  # type: ignore[arg-type]
    assert first.schema("ContactReceived") is second.schema("ContactReceived")
    assert first._uuids_as_text is second._uuids_as_text
    assert first._compiled is second._compiled
    assert first.seal is None and second.seal is not None
