"""The standalone verifier, strict where C2SP is, and an export checked against a checkpoint the auditor kept.

Findings covered (issue 26): the verifier accepted a note where a failing signature of the trusted key precedes a
valid one (C2SP signed-note: clients SHOULD reject the whole note) and an empty extension line (C2SP
tlog-checkpoint: MUST be non-empty); it exited 1 with a traceback on a missing file (docs say 2); split views needed
a kept checkpoint: ``python -m caseledger.verify EXPORT --key K --kept CHECKPOINT`` checks the export's checkpoint
against it offline (the export carries the consistency proof), exit codes 0 / 1 / 2 / 3 as docs/audit.md says.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import Actor, ContactDraft, Identity
from caseledger.ledger.reports.export import export_history
from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner, generate_key_file
from caseledger.ledger.transparency.checkpoints import sign_checkpoint
from caseledger.verify.__main__ import main as verify_main
from caseledger.verify.failures import MalformedInput, SignatureError
from caseledger.verify.note import Checkpoint, VerifierKey, open_checkpoint, verified_text
from tests.support.environment import ledger_settings
from tests.support.examples import examples
from tests.support.signed_ledgers import ORIGIN

GO_PRIVATE = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
JANE = Identity.parse("email:jane@example.com")


def _signature_line(note: str) -> str:
    return note.rstrip("\n").rpartition("\n")[2]


def _broken(line: str) -> str:
    """The signature line with its last signature byte flipped (the key id kept: it names the trusted key)."""
    name, _, encoded = line.rpartition(" ")
    raw = bytearray(base64.b64decode(encoded))
    raw[-1] ^= 1
    return f"{name} {base64.b64encode(bytes(raw)).decode()}"


def test_a_failing_signature_of_the_trusted_key_rejects_the_note_even_beside_a_valid_one() -> None:
    """Before: the valid line after the failing one was enough (``any``)."""
    signer = CheckpointSigner.parse(GO_PRIVATE, source="test")
    signed = signer.sign_text(GO_TEXT)
    good = _signature_line(signed)
    key = signer.verifier_key
    assert verified_text(signed, key) == GO_TEXT
    for lines in ([_broken(good), good], [good, _broken(good)]):
        with pytest.raises(SignatureError, match="refused whole"):
            verified_text(GO_TEXT + "\n" + "\n".join(lines) + "\n", key)
    # A line of another key (same name, other id) is ignored, as C2SP says: it is not the trusted key's.
    other = CheckpointSigner.parse(generate_key_text("PeterNeumann"), source="test")
    foreign = _signature_line(other.sign_text(GO_TEXT))
    assert verified_text(GO_TEXT + "\n" + "\n".join([_broken(foreign), good]) + "\n", key) == GO_TEXT


def generate_key_text(name: str) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return generate_key_file(Path(folder) / "k", name).private_text()


def test_an_empty_extension_line_is_malformed_even_when_signed() -> None:
    """Before: ``Checkpoint.parse_text`` kept the empty line as an extension."""
    signer = CheckpointSigner.parse(generate_key_text(ORIGIN), source="test")
    for extensions in (("",), ("Timestamp: 1", ""), ("", "Timestamp: 1")):
        note = signer.sign(Checkpoint(ORIGIN, 3, bytes(32), extensions))
        with pytest.raises(MalformedInput, match="empty"):
            open_checkpoint(note, signer.verifier_key)
    assert open_checkpoint(signer.sign(Checkpoint(ORIGIN, 3, bytes(32), ("Timestamp: 1",))),
                           signer.verifier_key).extensions == ("Timestamp: 1",)


def test_a_missing_or_unreadable_file_exits_2_without_a_traceback(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Before: FileNotFoundError escaped main (exit 1 with a traceback)."""
    key = str(CheckpointSigner.parse(GO_PRIVATE, source="test").verifier_key)
    assert verify_main([str(tmp_path / "missing.json"), "--key", key]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert verify_main([str(tmp_path), "--key", key]) == 2  # a directory
    assert verify_main([str(tmp_path / "missing.json"), "--key", str(tmp_path / "missing.pub")]) == 2


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=3), max_leaves=12)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(st.dictionaries(st.sampled_from(["position", "event_hash", "stored_bytes_base64",
                                                         "leaf_index", "inclusion_proof"]), json_values),
                        max_size=3) | json_values,
       transparency=json_values)
def test_any_json_document_is_verified_refused_or_named_malformed_never_a_crash(
        tmp_path: Path, events: object, transparency: object, capsys: pytest.CaptureFixture[str]) -> None:
    key = str(CheckpointSigner.parse(GO_PRIVATE, source="test").verifier_key)
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"format": "caseledger.history/1", "events": events, "transparency": transparency}))
    assert verify_main([str(path), "--key", key]) in (0, 1, 2)
    capsys.readouterr()


# -- --kept: the export's checkpoint against one the auditor kept ----------------------------------------------


@pytest.fixture
def ledger(signed_ledger: CaseLedger) -> CaseLedger:
    return signed_ledger


def _contact(ledger: CaseLedger, n: int) -> None:
    ledger.record_contact(ContactDraft(channel="web_form", channel_message_id=f"form-{n}", identity=JANE,
                                       items=(f"Question {n}?",)))


def _verify(tmp_path: Path, export: Path, kept: str, signer: CheckpointSigner,
            capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    (tmp_path / "kept.checkpoint").write_text(kept)
    (tmp_path / "ledger.pub").write_text(f"{signer.verifier_key}\n")
    code = verify_main([str(export), "--key", str(tmp_path / "ledger.pub"), "--kept", str(tmp_path / "kept.checkpoint")])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_an_export_proves_it_extends_the_checkpoint_the_auditor_kept(
        ledger: CaseLedger, signer: CheckpointSigner, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        fmt: str) -> None:
    _contact(ledger, 1)
    kept = sign_checkpoint(ledger, signer)
    for n in range(2, 5):
        _contact(ledger, n)
    export = tmp_path / f"jane.{fmt}"
    export_history(ledger, str(JANE), fmt, export, kept=kept.tree_size)
    code, out = _verify(tmp_path, export, kept.note, signer, capsys)
    assert code == 0 and f"extends the one you kept ({kept.tree_size} events)" in out, out
    # The kept one is the export's own: the roots are compared.
    latest = ledger.storage.merkle().latest_checkpoint()
    assert latest is not None
    assert _verify(tmp_path, export, latest.note, signer, capsys)[0] == 0


def test_a_kept_checkpoint_the_export_contradicts_is_a_split_view_or_a_rollback(
        ledger: CaseLedger, signer: CheckpointSigner, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _contact(ledger, 1)
    kept = sign_checkpoint(ledger, signer)
    _contact(ledger, 2)
    export = tmp_path / "jane.json"
    export_history(ledger, str(JANE), "json", export, kept=kept.tree_size)
    exported = open_checkpoint(json.loads(export.read_text())["transparency"]["checkpoint"], signer.verifier_key)
    # Another root signed for the export's own size: two views of one log.
    forked = signer.sign(Checkpoint(ORIGIN, exported.size, bytes(32), ("Timestamp: 1",)))
    code, out = _verify(tmp_path, export, forked, signer, capsys)
    assert code == 1 and "[split-view]" in out and "NOT verified" in out, out
    # A kept checkpoint of the old size with another root: the export's log does not extend it.
    rewritten = signer.sign(Checkpoint(ORIGIN, kept.tree_size, bytes(32), ("Timestamp: 1",)))
    code, out = _verify(tmp_path, export, rewritten, signer, capsys)
    assert code == 1 and "[rolled-back]" in out, out


def test_a_kept_checkpoint_the_export_cannot_prove_exits_3_and_says_what_to_do(
        ledger: CaseLedger, signer: CheckpointSigner, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _contact(ledger, 1)
    kept = sign_checkpoint(ledger, signer)
    _contact(ledger, 2)
    export = tmp_path / "jane.json"
    export_history(ledger, str(JANE), "json", export)  # no --kept: no proof from the kept size
    code, out = _verify(tmp_path, export, kept.note, signer, capsys)
    assert code == 3 and "no consistency proof" in out and "--kept" in out, out
    # A checkpoint kept after the export was made: the export cannot prove it.
    _contact(ledger, 3)
    newer = sign_checkpoint(ledger, signer)
    code, out = _verify(tmp_path, export, newer.note, signer, capsys)
    assert code == 3 and "newer than the export's" in out, out
    # The kept file itself unreadable, or by another key: the auditor's input, exit 2.
    stranger = CheckpointSigner.parse(generate_key_text(ORIGIN), source="test")
    assert _verify(tmp_path, export, stranger.sign(Checkpoint(ORIGIN, 1, bytes(32))), signer, capsys)[0] == 2
    assert _verify(tmp_path, export, "not a note", signer, capsys)[0] == 2


# -- the readable view against the stored bytes ------------------------------------------------------------------


def test_every_readable_view_is_checked_against_its_stored_bytes_and_an_edited_one_is_named(
        ledger: CaseLedger, signer: CheckpointSigner, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Finding: an export whose readable ``event`` JSON was edited still verified (only the stored bytes were
    checked). Now the export carries each event's writer schema and the verifier decodes the bytes and compares."""
    _contact(ledger, 1)
    ledger.respond(ledger.cases_of(str(JANE))[0].reference, actor=Actor.parse("agent:alice"), body="Done.",
                   answers=["Q1"])
    sign_checkpoint(ledger, signer)
    pub = tmp_path / "ledger.pub"
    pub.write_text(f"{signer.verifier_key}\n")
    for fmt in ("json", "avro"):
        export = tmp_path / f"jane.{fmt}"
        export_history(ledger, str(JANE), fmt, export)
        code = verify_main([str(export), "--key", str(pub), "--json"])
        checked = json.loads(capsys.readouterr().out)
        assert code == 0 and checked["views_checked"] == checked["events"] > 5 and not checked["views_unchecked"]
    document = json.loads((tmp_path / "jane.json").read_text())
    edits: list[Callable[[dict[str, Any]], None]] = [
        lambda e: e["envelope"].update(recorded_at="2020-01-01T00:00:00+00:00"),  # backdated, in the view only
        lambda e: e["envelope"].update(aggregate_version=e["envelope"]["aggregate_version"] + 1),
        lambda e: e["envelope"]["actor"].update(id="someone-else"),
        lambda e: e.pop("envelope"),
    ]
    for edit in edits:
        forged = json.loads(json.dumps(document))
        edit(forged["events"][1]["event"])
        (tmp_path / "forged.json").write_text(json.dumps(forged))
        code = verify_main([str(tmp_path / "forged.json"), "--key", str(pub)])
        out = capsys.readouterr().out
        assert code == 1 and "[view-mismatch]" in out and "NOT verified" in out, out
    # A schema swapped for another: refused by its fingerprint, not used to decode.
    forged = json.loads(json.dumps(document))
    fp = next(iter(forged["schemas"]))
    assert '"name":"event_id"' in forged["schemas"][fp]
    forged["schemas"][fp] = forged["schemas"][fp].replace('"name":"event_id"', '"name":"event_ix"')
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    assert verify_main([str(tmp_path / "forged.json"), "--key", str(pub)]) == 1
    assert "not the one its fingerprint names" in capsys.readouterr().out
    # Without the schemas (an export of an earlier release): verified, and the reader is told what was not checked.
    del document["schemas"]
    (tmp_path / "older.json").write_text(json.dumps(document))
    assert verify_main([str(tmp_path / "older.json"), "--key", str(pub)]) == 0
    assert "could not be checked against their stored bytes" in capsys.readouterr().out


def test_the_verifiers_crc64_is_avros_for_every_schema_the_ledger_writes() -> None:
    from fastavro.schema import fingerprint

    from caseledger.ledger.avro.codec import AvroEventCodec
    from caseledger.verify.decoded import crc64_avro

    codec = AvroEventCodec()
    texts = [t for fp in codec._writers if (t := codec.writer_schema_text(fp)) is not None]
    assert len(texts) >= len(codec.names)
    for text in texts:
        assert crc64_avro(text.encode()) == bytes.fromhex(fingerprint(text, "CRC-64-AVRO"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[list[tuple[Any, ...]]]]:
    """A JSON export of a small story and, per event, the paths of its view's leaves that are not sealed."""
    import base64 as b64

    from caseledger.ledger.avro.codec import AvroEventCodec
    from tests.support.clock import FakeClock as Clock

    folder = tmp_path_factory.mktemp("views")
    app = CaseLedger(ledger_settings(database=str(folder / "l.sqlite"), origin=ORIGIN), clock=Clock())
    try:
        for n in range(2):
            _contact(app, n)
        reference = app.cases_of(str(JANE))[0].reference
        app.respond(reference, actor=Actor.parse("agent:alice"), body="Done.", answers=["Q1"])
        export_history(app, str(JANE), "json", folder / "jane.json")
    finally:
        app.close()
    document = json.loads((folder / "jane.json").read_text())
    codec = AvroEventCodec()

    def leaves(view: Any, stored: Any, path: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if isinstance(view, dict):
            return [p for k in view for p in leaves(view[k], (stored or {}).get(k), (*path, k))]
        if isinstance(view, list):
            return [p for i, v in enumerate(view) for p in leaves(v, stored[i] if stored else None, (*path, i))]
        sealed = (isinstance(stored, str) and stored.startswith("enc:1:")) or (
            isinstance(stored, bytes) and stored.startswith(b"CLENC1"))
        return [] if sealed else [path]

    paths = [leaves(e["event"], codec.decode_record(e["event_type"], b64.b64decode(e["stored_bytes_base64"])), ())
             for e in document["events"]]
    return document, paths


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_edit_of_a_field_the_stored_bytes_hold_in_clear_is_a_view_mismatch(
        exported: tuple[dict[str, Any], list[list[tuple[Any, ...]]]], data: st.DataObject) -> None:
    from caseledger.verify.history import check_history

    document, paths = exported
    index = data.draw(st.integers(0, len(paths) - 1))
    path = data.draw(st.sampled_from(paths[index]))
    forged = json.loads(json.dumps(document))
    parent = forged["events"][index]["event"]
    for step in path[:-1]:
        parent = parent[step]
    value = parent[path[-1]]
    parent[path[-1]] = (not value if isinstance(value, bool) else value + 1 if isinstance(value, int | float)
                        else "x" if value is None else value + "x" if isinstance(value, str) else None)
    result = check_history(forged, VerifierKey("x", bytes(32)))
    assert [f.code for f in result.findings if f.code == "view-mismatch"] == ["view-mismatch"], (index, path)
