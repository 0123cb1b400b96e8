"""The compiled Avro fast path writes fastavro's bytes and reads fastavro's values, or refuses.

Every schema the ledger ships (current and retired event schemas) and a synthetic schema with
each construct the compiler covers are checked both ways against fastavro, with hypothesis data.
The other half of the contract: for input the compiled code does not handle — wrong types,
corrupt or cut bytes — it raises, so the codec hands the input to fastavro instead of storing
or returning something fastavro would not.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_one
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caseledger.ledger.avro.avrocompiled import Unsupported, compile_reader, compile_writer
from caseledger.ledger.avro.codec import (
    MAGIC,
    AvroEventCodec,
    _without_uuid_types,
    history_files,
    schema_files,
    schema_fingerprint,
)
from caseledger.ledger.errors import SchemaError
from tests.support.examples import examples

CODEC = AvroEventCodec()
LONGS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-200, 200),
    st.integers(2**48, 2**56),  # the eight-byte varints of timestamps, which have their own path
    st.sampled_from([63, 64, -64, -65, 8191, 8192, -8192, -8193, 2**63 - 1, -(2**63)]),
)
TIMES = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2300, 1, 1), timezones=st.just(UTC)
)

SYNTHETIC = {
    "type": "record",
    "name": "Everything",
    "namespace": "test",
    "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "small", "type": "int"},
        {"name": "big", "type": "long"},
        {"name": "ratio", "type": "double"},
        {"name": "single", "type": "float"},
        {"name": "blob", "type": "bytes"},
        {"name": "text", "type": "string"},
        {"name": "nothing", "type": "null"},
        {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN", "BLUE"]}},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
        {"name": "when", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "when_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "maybe", "type": ["null", "string"]},
        {"name": "maybe_last", "type": ["long", "null"]},
        {"name": "only", "type": ["double"]},
        {"name": "tags", "type": {"type": "map", "values": "long"}},
        {
            "name": "items",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Item",
                    "fields": [
                        {"name": "label", "type": "string"},
                        {"name": "colour", "type": ["null", "Colour"]},
                        {"name": "nested", "type": {"type": "array", "items": {"type": "map", "values": "string"}}},
                    ],
                },
            },
        },
        {"name": "again", "type": ["null", "Item"]},
    ],
}


def data_for(schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Hypothesis data fitting a parsed schema (a test oracle independent of the compiler)."""
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    if isinstance(schema, list):
        return st.one_of(*(data_for(branch, named) for branch in schema))
    if isinstance(schema, dict):
        kind, logical = schema["type"], schema.get("logicalType")
        if logical == "uuid":
            return st.one_of(st.uuids(), st.uuids().map(str))
        if logical == "timestamp-micros":
            return TIMES
        if logical == "timestamp-millis":
            return TIMES.map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))
        if kind in ("record", "error"):
            named.setdefault(schema["name"], schema)
            return st.fixed_dictionaries({f["name"]: data_for(f["type"], named) for f in schema["fields"]})
        if kind == "enum":
            named.setdefault(schema["name"], schema)
            return st.sampled_from(schema["symbols"])
        if kind == "fixed":
            named.setdefault(schema["name"], schema)
            return st.binary(min_size=schema["size"], max_size=schema["size"])
        if kind == "array":
            return st.lists(data_for(schema["items"], named), max_size=4)
        if kind == "map":
            return st.dictionaries(st.text(max_size=8), data_for(schema["values"], named), max_size=4)
        return data_for(kind, named)
    return {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": LONGS,
        "float": st.floats(width=32, allow_nan=False),
        "double": st.floats(allow_nan=False),
        "bytes": st.binary(max_size=100),
        "string": st.one_of(st.text(max_size=20), st.text(min_size=60, max_size=200)),
    }[schema]


def fastavro_bytes(schema: Any, datum: Any) -> bytes:
    out = BytesIO()
    schemaless_writer(out, schema, datum)
    return out.getvalue()


def fastavro_value(schema: Any, data: bytes) -> Any:
    return schemaless_reader(BytesIO(data), schema, None)


def _event_schemas() -> list[tuple[str, Any, dict[str, Any]]]:
    """(label, parsed schema, named types) of every event schema shipped, both UUID flavours."""
    found = []
    for label, envelope in (("uuid", CODEC.envelope), ("text", _without_uuid_types(CODEC.envelope))):
        for file_name, text in [*schema_files(), *(("history/" + f, t) for f, t in history_files())]:
            if file_name.startswith("caseledger.Envelope"):
                continue
            named: dict[str, Any] = {}
            parse_schema(envelope, named_schemas=named)
            parsed = parse_schema(json.loads(text), named_schemas=named)
            found.append((f"{file_name}/{label}", parsed, named))
    return found


EVENT_SCHEMAS = _event_schemas()
SYNTHETIC_NAMED: dict[str, Any] = {}
SYNTHETIC_PARSED = parse_schema(SYNTHETIC, named_schemas=SYNTHETIC_NAMED)
CASES = [*EVENT_SCHEMAS, ("synthetic", SYNTHETIC_PARSED, SYNTHETIC_NAMED)]


@pytest.mark.parametrize(("label", "schema", "named"), CASES, ids=[c[0] for c in CASES])
@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_compiled_writer_and_reader_equal_fastavro(label: str, schema: Any, named: dict[str, Any], data: Any) -> None:
    write, read = compile_writer(schema, named), compile_reader(schema, named)
    datum = data.draw(data_for(schema, dict(named)))
    expected = fastavro_bytes(schema, datum)
    assert write(datum) == expected
    assert read(expected, 0) == fastavro_value(schema, expected)
    # Read from an offset, as the codec does past the single-object header; trailing bytes ignored.
    assert read(b"\xc3\x01" + expected + b"\x00", 2) == fastavro_value(schema, expected)


@settings(max_examples=examples(300), deadline=None)
@given(data=st.binary(max_size=200))
def test_compiled_reader_never_disagrees_with_fastavro_on_arbitrary_bytes(data: bytes) -> None:
    """Corrupt or cut bytes: either the compiled reader refuses, or it reads what fastavro reads."""
    read = compile_reader(SYNTHETIC_PARSED, SYNTHETIC_NAMED)
    try:
        value = read(data, 0)
    except Exception:  # refusing is the contract; the codec then asks fastavro
        return
    # repr: a NaN read by both is the same reading, though NaN != NaN.
    assert repr(value) == repr(fastavro_value(SYNTHETIC_PARSED, data))


TEXT_CONTACT = CODEC._uuids_as_text[1]["ContactReceived"]


@settings(max_examples=examples(50), deadline=None)
@given(datum=data_for(TEXT_CONTACT, dict(CODEC._text_named)), cut=st.integers(1, 40))
def test_compiled_reader_refuses_cut_bytes(datum: dict[str, Any], cut: int) -> None:
    schema = TEXT_CONTACT
    read = compile_reader(schema, CODEC._text_named)
    whole = fastavro_bytes(schema, datum)
    assert read(whole, 0) == fastavro_value(schema, whole)
    with pytest.raises(Exception):  # noqa: B017 - any exception sends the bytes to fastavro
        read(whole[:-cut], 0)


ODD_VALUES = [1.5, "7", None, b"x", [1], {"a": 1}, uuid.uuid4(), datetime(2026, 1, 1), object()]


@pytest.mark.parametrize(
    "field", [f["name"] for f in SYNTHETIC["fields"] if f["name"] not in ("nothing",)]  # type: ignore[index]
)
@pytest.mark.parametrize("odd", ODD_VALUES, ids=lambda v: type(v).__name__)
def test_compiled_writer_never_writes_what_fastavro_would_not(field: str, odd: Any) -> None:
    """A value of the wrong type: the compiled writer refuses it, or writes fastavro's very bytes."""
    write = compile_writer(SYNTHETIC_PARSED, SYNTHETIC_NAMED)
    good = generate_one(SYNTHETIC)
    bad = {**good, field: odd}
    try:
        written = write(bad)
    except Exception:  # refusing is the contract
        return
    assert written == fastavro_bytes(SYNTHETIC_PARSED, bad)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "record", "name": "U", "fields": [{"name": "x", "type": ["null", "long", "string"]}]},
        {"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"]}]},
        {"type": "int", "logicalType": "date"},
    ],
    ids=["union-of-several", "recursive", "date"],
)
def test_what_the_compiler_does_not_cover_is_left_to_fastavro(schema: dict[str, Any]) -> None:
    parsed = parse_schema(schema)
    with pytest.raises(Unsupported):
        compile_writer(parsed)
    with pytest.raises(Unsupported):
        compile_reader(parsed)


def test_codec_falls_back_to_fastavro_for_what_it_does_not_compile() -> None:
    """A naive datetime is refused by the compiled writer; fastavro decides, as before the fast path."""
    event = CODEC.decode("CaseLinked", _some_event_bytes("CaseLinked"))
    vars(event)["occurred_at"] = "not a time"
    with pytest.raises(SchemaError, match="CaseLinked does not fit"):
        CODEC.encode(event)


def test_codec_reads_bytes_of_a_retired_schema_through_fastavro_resolution() -> None:
    """Only bytes of the current schema take the compiled reader; history is resolved by fastavro."""
    for file_name, text in history_files():
        name = file_name.split(".", 1)[0]
        if name not in CODEC.names:
            continue
        named: dict[str, Any] = {}
        parse_schema(CODEC.envelope, named_schemas=named)
        old = parse_schema(json.loads(text), named_schemas=named)
        datum = generate_one(old)
        data = MAGIC + schema_fingerprint(old) + fastavro_bytes(old, datum)
        event = CODEC.decode(name, data)
        assert event.originator_id == uuid.UUID(str(datum["envelope"]["aggregate_id"]))
        assert event.customer_id == datum["envelope"]["customer_id"]
        return
    pytest.fail("schemas/history holds no retired event schema to read")


def _some_event_bytes(name: str) -> bytes:
    spec = CODEC.schema(name)
    datum = generate_one(spec.parsed)
    return spec.header + fastavro_bytes(spec.parsed, datum)



def test_timestamps_read_back_as_aware_utc() -> None:
    schema = parse_schema({"type": "long", "logicalType": "timestamp-micros"})
    when = datetime(2026, 11, 24, 1, 2, 3, 456789, tzinfo=UTC)
    read = compile_reader(schema)
    value = read(compile_writer(schema)(when), 0)
    assert value == when and value.tzinfo is not None and value.utcoffset() == timedelta(0)


def test_a_field_name_cannot_inject_code() -> None:
    """Field names reach the generated code only as string literals."""
    hostile = "x'] + __import__('os').getcwd() + d['"
    schema = {"type": "record", "name": "R", "fields": [{"name": hostile, "type": "string"}]}
    parsed = parse_schema(schema)  # fastavro accepts the name as it is
    write, read = compile_writer(parsed), compile_reader(parsed)
    data = write({hostile: "value"})
    assert data == fastavro_bytes(parsed, {hostile: "value"}) == b"\x0avalue"
    assert read(data, 0) == {hostile: "value"}
