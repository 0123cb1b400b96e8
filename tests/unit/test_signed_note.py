"""C2SP signed notes and checkpoints, checked against golang.org/x/mod/sumdb/note's published vectors.

The key ``PRIVATE+KEY+PeterNeumann+c74f20a3+…`` and the note it signs are note_test.go's
(TestSign, TestNewVerifier); Ed25519 is deterministic, so our signature must be theirs byte for byte.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner, generate_key_file, load_signer
from caseledger.verify.failures import MalformedInput, SignatureError, WrongKeyError
from caseledger.verify.note import Checkpoint, VerifierKey, open_checkpoint, split_note, verified_text
from tests.support.environment import environment

GO_PRIVATE = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_PUBLIC = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIGNED = GO_TEXT + ("\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdng"
                       "otpRZb6KE6RyyBwJnAM=\n")
GO_ENOCH = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"


def test_signing_matches_go_sumdb_note_byte_for_byte() -> None:
    signer = CheckpointSigner.parse(GO_PRIVATE, source="test")
    assert str(signer.verifier_key) == GO_PUBLIC
    assert signer.private_text() == GO_PRIVATE
    assert signer.sign_text(GO_TEXT) == GO_SIGNED
    assert verified_text(GO_SIGNED, VerifierKey.parse(GO_PUBLIC)) == GO_TEXT
    assert "AYEKF" not in repr(signer)  # the private key never shows


def test_verifier_keys_are_parsed_strictly() -> None:
    assert str(VerifierKey.parse(GO_PUBLIC)) == GO_PUBLIC
    for bad in (GO_PUBLIC[:-1], GO_PUBLIC.replace("c74f20a3", "c74f20a4"), "PeterNeumann+c74f20a3",
                "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "a b+c74f20a3+AAAA"):
        with pytest.raises(MalformedInput):
            VerifierKey.parse(bad)


def test_a_note_by_another_key_an_altered_note_and_malformed_notes_are_named() -> None:
    with pytest.raises(WrongKeyError, match="signed by PeterNeumann"):
        verified_text(GO_SIGNED, VerifierKey.parse(GO_ENOCH))
    with pytest.raises(SignatureError, match="altered"):
        verified_text(GO_SIGNED.replace("cryptography", "Cryptography"), VerifierKey.parse(GO_PUBLIC))
    for bad in (GO_TEXT, GO_TEXT + "\n", GO_SIGNED[:-1], "\x01" + GO_SIGNED, GO_SIGNED + "Unexpected line.\n",
                GO_TEXT + "\n\u2014 Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvq\n"):
        with pytest.raises(MalformedInput):
            split_note(bad) if bad != GO_SIGNED + "Unexpected line.\n" else verified_text(
                bad, VerifierKey.parse(GO_PUBLIC))


def test_a_checkpoint_round_trips_and_its_format_is_the_c2sp_one(tmp_path: Path) -> None:
    signer = generate_key_file(tmp_path / "key", "bank.example/complaints")
    checkpoint = Checkpoint("bank.example/complaints", 12, bytes(range(32)))
    note = signer.sign(checkpoint)
    lines = note.split("\n")
    assert lines[:4] == ["bank.example/complaints", "12", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", ""]
    assert lines[4].startswith("\u2014 bank.example/complaints ") and lines[5] == ""
    assert open_checkpoint(note, signer.verifier_key) == checkpoint
    with pytest.raises(WrongKeyError, match="origin"):
        open_checkpoint(note, signer.verifier_key, origin="other")
    forged = note.replace("\n12\n", "\n13\n")
    with pytest.raises(SignatureError):
        open_checkpoint(forged, signer.verifier_key)


def test_keys_init_writes_a_private_file_and_never_overwrites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "signing.key"
    signer = generate_key_file(path, "caseledger")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(ConfigurationError, match="never overwritten"):
        generate_key_file(path, "caseledger")
    monkeypatch.setenv("CASELEDGER_SIGNING_KEY_FILE", str(path))
    assert load_signer(environment().transparency) is not None and str(load_signer(environment().transparency).verifier_key) == str(signer.verifier_key)  # type: ignore[union-attr]
    monkeypatch.delenv("CASELEDGER_SIGNING_KEY_FILE")
    monkeypatch.setenv("CASELEDGER_SIGNING_KEY", "PRIVATE+KEY+x+00000000+AAAA")
    with pytest.raises(ConfigurationError) as refused:
        load_signer(environment().transparency)
    assert "AAAA" not in str(refused.value) and "CASELEDGER_SIGNING_KEY" in str(refused.value)
    monkeypatch.delenv("CASELEDGER_SIGNING_KEY")
    assert load_signer(environment().transparency) is None


def test_audit_key_writes_one_line_that_every_verifier_reads_as_it_is(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding (issue 26): ``audit key > ledger.pub`` wrote a second line (the origin) that Go's
    ``note.NewVerifier`` refuses. Standard output is now the key alone; the origin goes to stderr.
    Go reads the file as it is in tests/system/test_go_interop.py."""
    from typer.testing import CliRunner

    from caseledger.cli.app import app

    signer = generate_key_file(tmp_path / "signing.key", "bank.example/complaints")
    monkeypatch.setenv("CASELEDGER_SIGNING_KEY_FILE", str(tmp_path / "signing.key"))
    result = CliRunner().invoke(app, ["--database", str(tmp_path / "l.sqlite"), "audit", "key"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{signer.verifier_key}\n"
    assert VerifierKey.parse(result.stdout.strip()) == signer.verifier_key
    assert "origin: caseledger" in result.stderr
