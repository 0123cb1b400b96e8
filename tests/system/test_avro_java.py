"""The ledger's bytes against Apache Avro for Java, the reference implementation (issue 14).

Every event is stored and published as Avro single-object encoding; any Avro reader must be
able to take them with nothing but the ``.avsc`` files. Here Java's ``BinaryMessageDecoder``
(with a ``SchemaStore.Cache`` of every schema, retired ones too) reads what a real ledger
stored and what its publisher put on a real Kafka topic, Java's ``BinaryMessageEncoder`` writes
what a Java channel adapter would publish, and Java's ``SchemaCompatibility`` checks every
schema against its retired versions. The Java side is ``tests/support/java/AvroInterop.java``, run by
the ``avro_java`` fixture (``tests/support/avro_java.py``; jars from Maven Central, cached).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form
from kafka import KafkaProducer

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.avro.codec import MAGIC, AvroEventCodec
from caseledger.ledger.domain.personal import PERSONAL_FIELDS
from caseledger.ledger.domain.values import Actor, Attachment, ContactDraft, Identity
from caseledger.ledger.intake.adapter_sdk import intake_key
from caseledger.ledger.intake.records import IntakeCodec, ReadReceipt
from caseledger.ledger.intake.verdict_reads import read_verdict
from caseledger.ledger.intake.worker import IntakeRecord, KafkaIntakeWorker
from caseledger.ledger.kafka.events_record import event_type_of, header
from caseledger.ledger.reports.describe import plain
from caseledger.ledger.settings import KafkaSettings
from tests.support.avro_java import AvroJava
from tests.support.environment import ledger_settings
from tests.support.kafka_topics import drain, publish_all, read_topic

#: The schemas of the installed package, as a directory Java can read.
SCHEMAS = Path(str(resources.files("caseledger.schemas")))
ENVELOPE_FILE = "caseledger.Envelope.avsc"
INTAKE = "caseledger.intake.IntakeRecord"
DEMO_CUSTOMER = "cust-1042"
#: Committed test data: a ledger written before the standard fingerprint (legacy fingerprints).
LEGACY_LEDGER = Path(__file__).parents[1] / "data" / "ledger-written-by-0.1.0-before-the-namespace.sqlite"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- the Java side -----------------------------------------------------------------------------------


def java_fingerprints(java: AvroJava, schema_dir: Path = SCHEMAS) -> dict[str, tuple[str, str]]:
    """Name → (fingerprint hex as single-object encoding writes it, Parsing Canonical Form), per Java."""
    out = {}
    for line in java.run("fingerprint", schema_dir).lines:
        name, fp, pcf = line.split("\t")
        out[name] = (fp, pcf)
    return out


def java_decode(
    java: AvroJava, tmp_path: Path, messages: Iterable[tuple[str, bytes]], *, check: bool | int = True,
    schema_dir: Path = SCHEMAS,
) -> list[dict[str, Any]]:
    """What Java's BinaryMessageDecoder makes of each (event type, single-object bytes): one dict each."""
    messages = list(messages)
    file = tmp_path / f"messages-{uuid.uuid4().hex[:8]}.txt"
    file.write_text("".join(f"{name}\t{base64.b64encode(data).decode()}\n" for name, data in messages))
    result = java.run("decode", schema_dir, file, check=check)
    decoded = [json.loads(line) for line in result.lines]
    assert len(decoded) == len(messages), result.stderr
    return decoded


def records(decoded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of a decode that must have succeeded entirely."""
    failed = [d for d in decoded if "error" in d]
    assert not failed, f"{len(failed)} of {len(decoded)} messages refused by Java, first: {failed[0]}"
    return [d["record"] for d in decoded]


# -- the schemas, as plain JSON (to normalise Java's values the way the export writes them) -------------


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def with_envelope(schema: dict[str, Any]) -> dict[str, Any]:
    """An event schema with the envelope's definition in place of its name (as Avro's PCF has it)."""
    envelope = load(SCHEMAS / ENVELOPE_FILE)
    return {**schema, "fields": [{**f, "type": envelope} if f["type"] == "caseledger.Envelope" else f
                                 for f in schema["fields"]]}


def current_schema(name: str) -> dict[str, Any]:
    return with_envelope(load(SCHEMAS / f"{name}.avsc"))


class Plain:
    """Java's JSON (timestamp-micros as longs, bytes as base64) as the export writes values (ISO, hex)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.named: dict[str, Any] = {}

    def __call__(self, value: Any) -> Any:
        return self.convert(self.schema, value, "")

    def convert(self, schema: Any, value: Any, namespace: str) -> Any:
        if isinstance(schema, str):
            if schema in self.named:
                return self.convert(self.named[schema], value, namespace)
            return base64.b64decode(value).hex() if schema == "bytes" else value
        if isinstance(schema, list):  # the event schemas' unions are all [null, T]
            branches = [b for b in schema if b != "null"]
            assert len(branches) == 1, schema
            return None if value is None else self.convert(branches[0], value, namespace)
        kind = schema["type"]
        if kind == "record":
            name = schema["name"]
            full = name if "." in name else f"{schema.get('namespace', namespace)}.{name}".lstrip(".")
            self.named[full] = self.named[name] = schema
            inner = full.rpartition(".")[0]
            assert set(value) == {f["name"] for f in schema["fields"]}, (full, sorted(value))
            return {f["name"]: self.convert(f["type"], value[f["name"]], inner) for f in schema["fields"]}
        if kind == "array":
            return [self.convert(schema["items"], v, namespace) for v in value]
        if kind == "map":
            return {k: self.convert(schema["values"], v, namespace) for k, v in value.items()}
        if schema.get("logicalType") == "timestamp-micros":
            return (EPOCH + timedelta(microseconds=value)).isoformat()
        return self.convert(kind, value, namespace)


def standard_fingerprint(schema: dict[str, Any]) -> tuple[str, str]:
    """(fingerprint hex, PCF) by fastavro, of a schema with every name it uses defined in it."""
    pcf = to_parsing_canonical_form(parse_schema(schema))
    return fingerprint(pcf, "CRC-64-AVRO"), pcf


# -- a real ledger ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Demo:
    """The ledger ``caseledger demo`` wrote, what its store holds, and its customer's JSON export."""

    database: Path
    stored: list[tuple[str, str, int, bytes]]  # (event type, originator id, version, state) in store order
    export: dict[str, Any]


def caseledger(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    script = Path(sys.executable).parent / "caseledger"
    proc = subprocess.run([str(script), *map(str, args)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"caseledger {' '.join(map(str, args))}: exit {proc.returncode}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    where = tmp_path_factory.mktemp("demo")
    database = where / "demo.sqlite"
    caseledger("demo", "--database", database)
    # The demo closes cases but reopens none; reopen one so CaseReopened (which has a retired version) is stored too.
    with sqlite3.connect(database) as conn:
        opened = conn.execute(
            "SELECT o.state FROM stored_events o JOIN stored_events c ON c.originator_id = o.originator_id "
            "WHERE o.topic LIKE '%.CaseOpened' AND c.topic LIKE '%.CaseClosed' LIMIT 1"
        ).fetchone()
    reference = AvroEventCodec().decode("CaseOpened", bytes(opened[0])).reference  # type: ignore[attr-defined]
    caseledger("--database", database, "case", "reopen", reference, "--reason", "the customer objected",
               "--notice", "Nous reprenons votre demande.")
    caseledger("--database", database, "case", "status", reference, "in_progress", "--reason", "taken up again",
               "--notice", "Votre demande est de nouveau en cours de traitement.")
    # Nor does it change a status or withdraw a promise (StatusChanged, PromiseWithdrawn have retired versions).
    made = caseledger("--database", database, "promise", "make", reference, "-c", "email", "-k", "credit",
                      "-t", "un avoir de 20 EUR", "--due", (datetime.now(UTC) + timedelta(days=3)).isoformat())
    promise = re.search(r"Promise (P\d+) recorded", made.stdout)
    assert promise, made.stdout
    caseledger("--database", database, "promise", "withdraw", reference, promise[1], "--reason", "offer ended",
               "--notice", "Nous ne pouvons finalement pas vous accorder cet avoir.")
    # And no one is erased in the demo (CustomerErased has a retired version): another customer writes, then is.
    caseledger("--database", database, "contact", "record", "-c", "email", "-m", "gone-1", "--from",
               "email:gone@example.org", "--item", "Please forget me")
    caseledger("--database", database, "customer", "erase", "email:gone@example.org", "--reason", "art. 17 request")
    # Nor does intake reach it: a record resubmitted, one colliding, one rejected (their events have retired
    # versions since issue 25), applied as the intake worker applies what it reads.
    # The demo's customer sends them, so that her export holds them too.
    codec = IntakeCodec()
    sent = dict(channel="email", channel_message_id="<intake-1@mail>", customer_id=DEMO_CUSTOMER,
                identity=Identity.parse("email:demo.intake@example.org"))
    future = datetime.now(UTC) + timedelta(days=1)
    ledger = CaseLedger(ledger_settings(database=str(database)))
    try:
        worker = KafkaIntakeWorker(ledger, KafkaSettings(bootstrap_servers="unused:9092"))
        worker.apply_batch(0, [IntakeRecord("caseledger.intake", 0, n, codec.encode(draft, adapter="mail-1"))
                               for n, draft in enumerate([
            ContactDraft(**sent, items=("Where is my card?",)), ContactDraft(**sent, items=("Where is my card?",)),
            ContactDraft(**sent, items=("Something else",)),
            ContactDraft(**{**sent, "channel_message_id": "<intake-2@mail>"}, items=("Late?",), occurred_at=future),
        ])])
        # ...and the customer reads the acknowledgement, as the adapter reports it (MessageRead has a retired version).
        reference = read_verdict(ledger, adapter="mail-1", topic="caseledger.intake", partition=0, offset=0,
                                 channel="email", channel_message_id="<intake-1@mail>").reference  # type: ignore[attr-defined]
        read = ReadReceipt(case_reference=reference, message_id="ACK1", reader=Actor.parse(f"customer:{DEMO_CUSTOMER}"),
                           read_at=datetime.now(UTC))
        worker.apply_batch(0, [IntakeRecord("caseledger.intake", 0, 4, codec.encode(read, adapter="mail-1"))])
    finally:
        ledger.close()
    with sqlite3.connect(database) as conn:  # into the file itself: a test copies the file alone
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    export = where / "history.json"
    caseledger("--database", database, "history", DEMO_CUSTOMER, "--export", "json", export)
    with sqlite3.connect(database) as conn:
        rows = conn.execute(
            "SELECT topic, originator_id, originator_version, state FROM stored_events ORDER BY rowid"
        ).fetchall()
    stored = [(topic.rsplit(".", 1)[-1], str(uuid.UUID(oid)), int(version), bytes(state)) for topic, oid, version, state in rows]
    assert len(stored) > 50 and len({name for name, *_ in stored}) > 20, "the demo should store many event types"
    return Demo(database, stored, json.loads(export.read_text(encoding="utf-8")))


# -- fingerprints -------------------------------------------------------------------------------------


def retired_event_schemas() -> list[Path]:
    """Retired event schema versions (retired envelopes are kept beside them, and read with each)."""
    return sorted(p for p in (SCHEMAS / "history").glob("*.avsc") if not p.name.startswith("caseledger.Envelope."))


def test_events_written_with_the_retired_envelope_resolve_in_java(
    avro_java: AvroJava, demo: Demo, tmp_path: Path
) -> None:
    """Events written before the actor's authentication joined the envelope (standard fingerprint of the event
    schema with the retired envelope) are read by a stock Java decoder as today's, the new fields defaulted."""
    from caseledger.ledger.avro.codec import parse_event_schema, schema_fingerprint

    old_envelope = load(SCHEMAS / "history" / "caseledger.Envelope.38cac1c693acab99.avsc")
    codec = AvroEventCodec()
    messages = []
    for name, _aggregate, _version, state in demo.stored[:40]:
        writer = parse_event_schema((SCHEMAS / f"{name}.avsc").read_text(), old_envelope)
        record = codec.decode_record(name, state)
        actor = record["envelope"]["actor"]
        record["envelope"]["actor"] = {"kind": actor["kind"], "id": actor["id"]}
        out = BytesIO()
        schemaless_writer(out, writer, record)
        old = MAGIC + schema_fingerprint(writer, envelope=old_envelope) + out.getvalue()
        assert not codec.writes_current_envelope(old[2:10])
        assert codec.decode_record(name, old)["envelope"]["actor"]["authentication"] == "none"
        messages.append((name, old))
    decoded = records(java_decode(avro_java, tmp_path, messages))
    for (name, data), record in zip(messages, decoded, strict=True):
        assert record["envelope"]["actor"]["authentication"] == "none", name
        assert Plain(current_schema(name))(record) == plain(codec.decode_record(name, data)), name


def test_fastavro_canonical_form_of_the_inlined_schemas_is_javas(avro_java: AvroJava) -> None:
    """The standard fingerprint can be computed with fastavro, once the envelope is defined where it is first used."""
    java = java_fingerprints(avro_java)
    events = sorted(p.name.removesuffix(".avsc") for p in SCHEMAS.glob("*.avsc") if p.name != ENVELOPE_FILE)
    assert sorted(n for n in java if n != INTAKE and not n.startswith("history/")) == events
    for name in events:
        assert standard_fingerprint(current_schema(name)) == java[name], name
    assert standard_fingerprint(load(SCHEMAS / "intake" / f"{INTAKE}.avsc")) == java[INTAKE]
    for path in retired_event_schemas():
        assert standard_fingerprint(with_envelope(load(path))) == java[f"history/{path.name}"], path.name


def test_the_codec_writes_the_fingerprint_java_computes(avro_java: AvroJava) -> None:
    """The 8 bytes after C3 01 are Java's parsingFingerprint64 of the full canonical form, little-endian."""
    java = java_fingerprints(avro_java)
    codec = AvroEventCodec()
    assert sorted(n for n in java if n != INTAKE and not n.startswith("history/")) == codec.names
    wrong = {name: (codec.schema(name).header[2:].hex(), java[name][0])
             for name in codec.names if codec.schema(name).header[2:].hex() != java[name][0]}
    intake = IntakeCodec().header
    assert intake[:2] == MAGIC
    if intake[2:].hex() != java[INTAKE][0]:
        wrong[INTAKE] = (intake[2:].hex(), java[INTAKE][0])
    assert not wrong, f"{len(wrong)} schemas: codec's fingerprint ≠ Java's (codec, java): {wrong}"


# -- what a real ledger stored ------------------------------------------------------------------------


def test_every_stored_event_decodes_in_java_as_the_export_reads_it(
    avro_java: AvroJava, demo: Demo, tmp_path: Path
) -> None:
    decoded = records(java_decode(avro_java, tmp_path, [(name, state) for name, _, _, state in demo.stored]))
    by_bytes = {state: (name, record) for (name, _, _, state), record in zip(demo.stored, decoded, strict=True)}
    # What Java read agrees with the store's own columns, for every event (exported or not)...
    for (name, originator_id, version, _), record in zip(demo.stored, decoded, strict=True):
        envelope = record["envelope"]
        assert (envelope["aggregate_id"], envelope["aggregate_version"]) == (originator_id, version), name
    # ...and, field by field, with the ledger's own export of the customer's history.
    # Java reads the personal fields sealed, as stored (docs/privacy.md); the export is the customer's copy,
    # opened by the ledger: opening what Java read gives exactly the export.
    exported = demo.export["events"]
    assert len(exported) >= len(demo.stored) - 15 and demo.export["verification"]["verified"]
    ledger = CaseLedger(ledger_settings(database=str(demo.database)))
    try:
        for entry in exported:
            data = base64.b64decode(entry["stored_bytes_base64"])
            assert data in by_bytes, f"exported event {entry['position']} is not in the store"
            name, record = by_bytes[data]
            assert name == entry["event_type"]
            java = Plain(current_schema(name))(record)
            texts = [java[p[0]] for p in PERSONAL_FIELDS.get(name, ()) if len(p) == 1 and isinstance(java.get(p[0]), str)]
            assert all(t.startswith(("enc:1:", "434c454e4331")) for t in texts if t), (name, texts)  # sealed
            ledger.sealer.open_state(name, java)
            for path in PERSONAL_FIELDS.get(name, ()):
                if isinstance(java.get(path[0]), str) and java[path[0]].startswith("434c454e4331"):  # sealed bytes
                    java[path[0]] = ledger.sealer.open_value(bytes.fromhex(java[path[0]])).hex()
            assert java == entry["event"], (entry["position"], name)
            assert record["envelope"]["customer_id"] == DEMO_CUSTOMER
    finally:
        ledger.close()


@pytest.mark.kafka
def test_events_topic_records_decode_in_java(
    avro_java: AvroJava, demo: Demo, kafka: KafkaSettings, tmp_path: Path
) -> None:
    database = tmp_path / "published.sqlite"
    shutil.copy(demo.database, database)  # the publisher keeps its position in the ledger
    ledger = CaseLedger(ledger_settings(database=str(database)))
    try:
        publish_all(ledger, kafka)
    finally:
        ledger.close()
    topic = read_topic(kafka, kafka.events_topic)
    assert len(topic) == len(demo.stored)
    messages = [((event_type_of(r.headers) or ""), bytes(r.value)) for r in topic]
    # The bytes published are the bytes stored...
    assert sorted(data for _, data in messages) == sorted(state for *_, state in demo.stored)
    # ...and Java reads each record of the topic as it reads the same event from the store.
    from_topic = records(java_decode(avro_java, tmp_path, messages))
    from_store = dict(zip((s for *_, s in demo.stored),
                          records(java_decode(avro_java, tmp_path, [(n, s) for n, _, _, s in demo.stored])),
                          strict=True))
    fingerprints = java_fingerprints(avro_java)
    for record, (name, data), message in zip(from_topic, messages, topic, strict=True):
        assert record == from_store[data], name
        assert message.key == record["envelope"]["customer_id"].encode()
        assert f"fingerprint={fingerprints[name][0]}".encode() in (header(message.headers, "content-type") or b""), name


# -- retired schema versions -------------------------------------------------------------------------


def test_events_written_with_a_retired_version_resolve_in_java(
    avro_java: AvroJava, demo: Demo, tmp_path: Path
) -> None:
    """Bytes of each retired version (standard fingerprint) are read by Java into the current schema."""
    codec = AvroEventCodec()
    fingerprints = java_fingerprints(avro_java)
    retired = retired_event_schemas()
    assert retired
    messages, originals, old_fields_of = [], [], []
    for path in retired:
        name = path.name.split(".", 1)[0]
        samples = [state for n, _, _, state in demo.stored if n == name]
        assert samples, f"the demo stores no {name} to rewrite with {path.name}"
        old = with_envelope(load(path))
        old_fields = {f["name"] for f in old["fields"]}
        new_fields = {f["name"]: f for f in current_schema(name)["fields"]}
        assert set(new_fields) - old_fields, f"{path.name}: expected fields added since"
        for state in samples:
            record = codec.decode_record(name, state)
            out = BytesIO()
            schemaless_writer(out, parse_schema(old), {k: v for k, v in record.items() if k in old_fields})
            messages.append((name, MAGIC + bytes.fromhex(fingerprints[f"history/{path.name}"][0]) + out.getvalue()))
            originals.append((name, state))
            old_fields_of.append((old_fields, new_fields))
    # Java reads each as the current schema: as the original, but the fields added since take their defaults.
    expected = [{k: (v if k in old else new[k]["default"]) for k, v in current.items()}
                for current, (old, new) in zip(records(java_decode(avro_java, tmp_path, originals)), old_fields_of,
                                               strict=True)]
    assert records(java_decode(avro_java, tmp_path, messages)) == expected


def test_every_schema_reads_its_retired_versions_per_java(avro_java: AvroJava) -> None:
    result = avro_java.run("compat", SCHEMAS)
    lines = [line.split("\t") for line in result.lines]
    retired = sorted(p.name for p in retired_event_schemas())
    assert sorted(line[1] for line in lines) == retired and retired
    assert all(line[2] == "COMPATIBLE" for line in lines), result.stdout


def test_history_stored_before_the_standard_fingerprint_needs_the_legacy_lookup_in_java(
    avro_java: AvroJava, tmp_path: Path
) -> None:
    """Events stored before issue 14's fix carry the legacy fingerprint: a stock Java decoder refuses
    them; one that also knows each schema by its legacy fingerprint reads them as the ledger does."""
    with sqlite3.connect(f"file:{LEGACY_LEDGER}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT topic, state FROM stored_events ORDER BY rowid").fetchall()
    messages = [(topic.rsplit(".", 1)[-1], bytes(state)) for topic, state in rows]
    assert len(messages) == 71
    refused = java_decode(avro_java, tmp_path, messages, check=3)
    assert {d.get("error") for d in refused} == {"org.apache.avro.message.MissingSchemaException"}
    file = tmp_path / "legacy.txt"
    file.write_text("".join(f"{name}\t{base64.b64encode(data).decode()}\n" for name, data in messages))
    decoded = records([json.loads(line) for line in avro_java.run("decode", "--legacy", SCHEMAS, file).lines])
    codec = AvroEventCodec()
    assert len(decoded) == len(messages)
    for (name, data), record in zip(messages, decoded, strict=True):
        assert Plain(current_schema(name))(record) == plain(codec.decode_record(name, data)), name


# -- intake: what a Java adapter publishes -------------------------------------------------------------

JAVA_CONTACT = {
    "adapter": "java-mail-gateway",
    "published_at": "2026-03-02T08:00:05.250Z",
    "payload": {"caseledger.intake.Contact": {
        "channel": "email",
        "channel_message_id": "<java-1@mail.example.com>",
        "identity": {"kind": "email", "value": "java.adapter@example.com"},
        "customer_id": None,
        "subject": "Carte bloquée",
        "body": "Ma carte est bloquée depuis hier — pourquoi ?",
        "items": ["Why is my card blocked?", "When will it work again?"],
        "attachments": [{
            "ref": "s3://inbox/java-1/scan.pdf", "sha256": "ab" * 32, "size": 48213,
            "media_type": "application/pdf", "filename": {"string": "scan.pdf"},
        }],
        "occurred_at": 1772438400000000,  # 2026-03-02T08:00:00Z in micros
        # segment, case_reference, follow_up, category and metadata left out: their schema defaults
    }},
}


def java_intake_bytes(java: AvroJava, tmp_path: Path, record: dict[str, Any] = JAVA_CONTACT) -> bytes:
    source = tmp_path / "intake.json"
    source.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    return base64.b64decode(java.run("encode-intake", SCHEMAS / "intake" / f"{INTAKE}.avsc", source).stdout)


def test_an_intake_record_written_by_java_decodes_as_the_contact(avro_java: AvroJava, tmp_path: Path) -> None:
    data = java_intake_bytes(avro_java, tmp_path)
    assert data[:2] == MAGIC
    assert data[2:10].hex() == java_fingerprints(avro_java)[INTAKE][0]
    adapter, draft = IntakeCodec().decode(data)
    assert adapter == "java-mail-gateway"
    assert isinstance(draft, ContactDraft)
    assert draft == ContactDraft(
        channel="email", channel_message_id="<java-1@mail.example.com>",
        identity=Identity(kind="email", value="java.adapter@example.com"),
        subject="Carte bloquée", body="Ma carte est bloquée depuis hier — pourquoi ?",
        items=("Why is my card blocked?", "When will it work again?"),
        attachments=(Attachment(ref="s3://inbox/java-1/scan.pdf", sha256="ab" * 32, size=48213,
                                media_type="application/pdf", filename="scan.pdf"),),
        occurred_at=datetime(2026, 3, 2, 8, 0, tzinfo=UTC),
        follow_up=False, metadata={}, segment=None, case_reference=None, category=None, customer_id=None,
    )


def test_an_intake_record_written_by_python_decodes_in_java(avro_java: AvroJava, tmp_path: Path) -> None:
    """The other way round: what the Python adapter SDK publishes, Java's BinaryMessageDecoder reads."""
    draft = ContactDraft(
        channel="chat", channel_message_id="chat-77", identity=Identity.parse("phone:+33612345678"),
        items=("Résilier l'option ?",), subject="Option", segment="retail", follow_up=True,
        metadata={"session": "s-9", "agent_queue": "cards"}, occurred_at=datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
    )
    published_at = datetime(2026, 3, 2, 9, 30, 1, 500, tzinfo=UTC)
    data = IntakeCodec().encode(draft, adapter="py-chat", published_at=published_at)
    (decoded,) = records(java_decode(avro_java, tmp_path, [(INTAKE, data)]))
    contact = decoded["payload"]["caseledger.intake.Contact"]
    assert decoded["adapter"] == "py-chat"
    assert decoded["published_at"] == (published_at - EPOCH) // timedelta(microseconds=1)
    assert contact["occurred_at"] == (draft.occurred_at - EPOCH) // timedelta(microseconds=1)
    assert (contact["channel"], contact["channel_message_id"], contact["identity"]) == (
        "chat", "chat-77", {"kind": "phone", "value": "+33612345678"})
    assert (contact["items"], contact["segment"], contact["follow_up"], contact["metadata"]) == (
        ["Résilier l'option ?"], "retail", True, {"agent_queue": "cards", "session": "s-9"})


@pytest.mark.kafka
def test_a_java_adapters_record_on_the_intake_topic_is_recorded_as_a_contact(
    avro_java: AvroJava, kafka: KafkaSettings, tmp_path: Path
) -> None:
    # Sent a minute ago: the ledger records only what happened within its horizon (docs/api.md, Times).
    recent = int((datetime.now(UTC) - timedelta(minutes=1)).timestamp() * 1_000_000)
    contact = {**JAVA_CONTACT["payload"]["caseledger.intake.Contact"], "occurred_at": recent}
    data = java_intake_bytes(avro_java, tmp_path, {**JAVA_CONTACT, "payload": {"caseledger.intake.Contact": contact}})
    _, draft = IntakeCodec().decode(data)
    producer = KafkaProducer(**kafka.client_options(), acks="all")
    try:
        producer.send(kafka.intake_topic, key=intake_key(draft, b"a deployment salt"), value=data).get(timeout=30)
    finally:
        producer.close(timeout=10)
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "intake.sqlite")))
    try:
        worker = KafkaIntakeWorker(ledger, kafka)
        drain(worker, until=1)
        assert (worker.stats.contacts, worker.stats.rejected) == (1, 0), worker.stats.line()
        kinds = [type(e).__name__ for e in ledger.history("email:java.adapter@example.com")]
        assert kinds.count("ContactReceived") == 1 and "IntakeRejected" not in kinds, kinds
        found = ledger.find_by_message("email", "<java-1@mail.example.com>")
        assert found.reference
    finally:
        ledger.close()


# -- negative controls: the harness can fail ------------------------------------------------------------


def test_a_fingerprint_unknown_to_the_store_is_refused_by_java(
    avro_java: AvroJava, demo: Demo, tmp_path: Path
) -> None:
    name, _, _, state = demo.stored[0]
    known = {bytes.fromhex(fp) for fp, _ in java_fingerprints(avro_java).values()}
    unknown = bytes(8)
    assert unknown not in known
    good, missing, no_marker = java_decode(
        avro_java, tmp_path,
        [(name, state), (name, MAGIC + unknown + state[10:]), (name, b"\x00\x01" + state[2:])],
        check=3,
    )
    assert "record" in good
    assert missing["error"] == "org.apache.avro.message.MissingSchemaException", missing
    assert no_marker["error"] == "org.apache.avro.message.BadHeaderException", no_marker


def test_an_incompatible_retired_version_is_reported_by_java(avro_java: AvroJava, tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, schemas, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    opened = load(SCHEMAS / "CaseOpened.avsc")
    # A "retired" CaseOpened without the reference the current one requires (no default), and a
    # subject of another type: the current schema cannot read it.
    broken = {**opened, "fields": [
        {**f, "type": "long"} if f["name"] == "subject" else f for f in opened["fields"] if f["name"] != "reference"]}
    (schemas / "history" / "CaseOpened.0000000000000000.avsc").write_text(json.dumps(broken))
    result = avro_java.run("compat", schemas, check=1)
    verdicts = {line.split("\t")[1]: line.split("\t") for line in result.lines}
    assert verdicts["CaseOpened.0000000000000000.avsc"][2] == "INCOMPATIBLE"
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in verdicts["CaseOpened.0000000000000000.avsc"][3]
    assert "TYPE_MISMATCH" in verdicts["CaseOpened.0000000000000000.avsc"][3]
    assert all(v[2] == "COMPATIBLE" for file, v in verdicts.items() if not file.startswith("CaseOpened."))
