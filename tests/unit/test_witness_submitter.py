"""The ledger's side of tlog-witness: configuration, submission, the witness's answers, cosignatures kept.

Against :mod:`tests.support.fake_witness` (the answers torchwood's litewitness gives); the real witness is
tests/system/test_litewitness.py's.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.settings import TransparencySettings
from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner, generate_key_file
from caseledger.ledger.transparency.checkpoints import sign_checkpoint
from caseledger.ledger.transparency.proofs import check_consistency
from caseledger.ledger.transparency.witnesses import (
    Witness,
    WitnessSubmitter,
    configured_policy,
    configured_witnesses,
    cosigned_note,
    latest_cosigned_note,
)
from caseledger.verify.cosignatures import WitnessPolicy, check_cosignatures
from tests.support.contacts import draft
from tests.support.fake_witness import FakeWitness, WitnessSigner, transport_of


def contact(n: int) -> object:
    return draft(f"w{n}")


@pytest.fixture
def signer(tmp_path: Path) -> CheckpointSigner:
    return generate_key_file(tmp_path / "signing.key", "caseledger")


def witnesses_of(*signers: WitnessSigner, auth: str = "") -> list[Witness]:
    return [Witness(f"w{i}", s.key, f"http://{auth}w{i}/prefix") for i, s in enumerate(signers)]


def test_witnesses_and_the_policy_are_read_from_the_settings() -> None:
    a, b = WitnessSigner("a.example/w"), WitnessSigner("b.example/w")
    given = TransparencySettings(witnesses=f"wa {a.key} https://a.example/w/ ;\n wb {b.key} http://b.example:8080",
                                 witness_policy="1 of wa, wb")
    found = configured_witnesses(given)
    assert [(w.name, w.key, w.url) for w in found] == [("wa", a.key, "https://a.example/w"),
                                                        ("wb", b.key, "http://b.example:8080")]
    policy = configured_policy(given)
    assert policy is not None and policy.met_by(["wb"]) and not policy.met_by([])
    assert configured_policy(replace(given, witness_policy="all")).met_by(["wa"]) is False  # type: ignore[union-attr]
    assert configured_policy(replace(given, witness_policy=None)) is None
    for bad in (f"wa {a.key}", f"wa {a.key} ftp://a", "wa a.example/w+00000000+AA== http://a", f"wa {a.key} http://a;"
                f"wa {b.key} http://b"):
        with pytest.raises(ConfigurationError, match="CASELEDGER_WITNESSES"):
            configured_witnesses(TransparencySettings(witnesses=bad))
    for policy_text in ("3 of wa,wb", "1 of wc", "most"):
        with pytest.raises(ConfigurationError, match="CASELEDGER_WITNESS_POLICY"):
            configured_policy(replace(given, witness_policy=policy_text))


def test_each_checkpoint_is_submitted_with_its_consistency_proof_and_the_cosignature_kept(
        sqlite_ledger: CaseLedger, signer: CheckpointSigner) -> None:
    ledger = sqlite_ledger
    fake = FakeWitness(WitnessSigner("witness.example/w0"), signer.verifier_key)
    submitter = WitnessSubmitter(ledger, witnesses_of(fake.signer), client=transport_of({"w0": fake}))
    ledger.record_contact(contact(1))
    first = sign_checkpoint(ledger, signer)
    assert submitter.submit(first) == {"w0": "cosigned"}
    assert fake.requests[0] == "old 0\n\n" + first.note
    for n in range(2, 5):
        ledger.record_contact(contact(n))
    second = sign_checkpoint(ledger, signer)
    assert submitter.submit(second) == {"w0": "cosigned"}
    head, _, note = fake.requests[1].partition("\n\n")
    assert head.split("\n")[0] == f"old {first.tree_size}" and len(head.split("\n")) > 1 and note == second.note
    policy = WitnessPolicy.k_of(1, [fake.signer.key])
    for stored in (first, second):
        cosigned = cosigned_note(ledger, stored)
        assert cosigned.startswith(stored.note) and cosigned != stored.note
        assert check_cosignatures(cosigned, signer.verifier_key, policy).checkpoint.size == stored.tree_size
    assert latest_cosigned_note(ledger) == cosigned_note(ledger, second)
    # audit consistency with the policy: the latest is witnessed
    assert check_consistency(ledger, first.note, signer.verifier_key, policy).code == "consistent"


def test_a_409_resubmits_from_the_witness_s_size_and_a_split_view_is_refused_without_stopping_anything(
        sqlite_ledger: CaseLedger, signer: CheckpointSigner, caplog: pytest.LogCaptureFixture) -> None:
    ledger = sqlite_ledger
    for n in range(3):
        ledger.record_contact(contact(n))
    first = sign_checkpoint(ledger, signer)
    # the witness cosigned this tree before (another process of the ledger): we do not know its size yet
    fake = FakeWitness(WitnessSigner("witness.example/w0"), signer.verifier_key, first.tree_size, first.root)
    ledger.record_contact(contact(3))
    second = sign_checkpoint(ledger, signer)
    submitter = WitnessSubmitter(ledger, witnesses_of(fake.signer), client=transport_of({"w0": fake}))
    assert submitter.submit(second) == {"w0": "cosigned"}
    assert [r.split("\n")[0] for r in fake.requests] == ["old 0", f"old {first.tree_size}"]
    # a split view: the witness holds another root for a size this log has
    other = FakeWitness(WitnessSigner("witness.example/w1"), signer.verifier_key, first.tree_size, b"\x07" * 32)
    submitter = WitnessSubmitter(ledger, witnesses_of(other.signer), client=transport_of({"w0": other}))
    with caplog.at_level(logging.ERROR, logger="caseledger.witnesses"):
        assert submitter.submit(second) == {"w0": "refused: inconsistent with what it cosigned"}
    assert "split view or a rollback" in caplog.text
    policy = WitnessPolicy.k_of(1, [other.signer.key])
    refused = check_consistency(ledger, first.note, signer.verifier_key, policy)
    assert refused.code == "witness-policy" and "witnesses refused it" in refused.message


def test_a_witness_that_does_not_know_the_log_or_is_down_is_logged_without_credentials_and_retried(
        sqlite_ledger: CaseLedger, signer: CheckpointSigner, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ledger = sqlite_ledger
    stranger = generate_key_file(tmp_path / "other.key", "caseledger")
    unknown = FakeWitness(WitnessSigner("witness.example/w0"), stranger.verifier_key)
    down = FakeWitness(WitnessSigner("witness.example/w1"), signer.verifier_key, down=True)
    witnesses = witnesses_of(unknown.signer, down.signer, auth="user:s3cret-token@")
    submitter = WitnessSubmitter(ledger, witnesses, client=transport_of({"w0": unknown, "w1": down}))
    ledger.record_contact(contact(1))
    with caplog.at_level(logging.INFO, logger="caseledger.witnesses"):
        outcomes = submitter.submit(sign_checkpoint(ledger, signer))
        assert outcomes == {"w0": "refused: HTTP 403, unknown log or key", "w1": "unreachable: ConnectError"}
        assert "audit key" in caplog.text and "s3cret" not in caplog.text and "user" not in caplog.text
        # on its own thread, as the publisher does: the next checkpoint goes once the witness is back
        down.down = False
        ledger.record_contact(contact(2))
        with submitter:
            sign_checkpoint(ledger, signer, witnesses=submitter)
        assert down.size == ledger.storage.merkle().latest_checkpoint().tree_size  # type: ignore[union-attr]
    assert "s3cret" not in caplog.text


def test_audit_verify_checkpoint_and_prove_refuse_a_checkpoint_without_the_witnesses_asked_for(
        sqlite_ledger: CaseLedger, signer: CheckpointSigner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from caseledger.ledger.audit import verify
    from caseledger.ledger.audit.kept_checkpoint import HeldCheckpoint
    from tests.support.contacts import cli

    ledger = sqlite_ledger
    w0, w1 = WitnessSigner("witness.example/w0"), WitnessSigner("witness.example/w1")
    for n in range(3):
        ledger.record_contact(contact(n))
    note = sign_checkpoint(ledger, signer).note
    policy = WitnessPolicy.k_of(1, [w0.key, w1.key])
    assert verify(ledger, checkpoint=HeldCheckpoint(w1.cosign(note), signer.verifier_key, witnesses=policy)).ok
    bare = verify(ledger, checkpoint=HeldCheckpoint(note, signer.verifier_key, witnesses=policy))
    assert {d.code for d in bare.errors} == {"witness-policy"}
    line = w0.cosign(note)[len(note):]
    ledger.record_contact(contact(3))  # an old cosignature replayed on a larger tree
    replayed = verify(ledger, checkpoint=HeldCheckpoint(sign_checkpoint(ledger, signer).note + line,
                                                        signer.verifier_key, witnesses=policy))
    assert {d.code for d in replayed.errors} == {"witness-signature"}
    # the CLI: audit prove with a witness, against a ledger whose latest checkpoint no witness cosigned
    monkeypatch.setenv("CASELEDGER_DATABASE", str(tmp_path / "l.sqlite"))
    monkeypatch.setenv("CASELEDGER_SIGNING_KEY_FILE", str(tmp_path / "signing.key"))
    monkeypatch.delenv("CASELEDGER_WITNESSES", raising=False)
    result = cli("audit", "prove", "email:jane@example.com", "--witness", str(w0.key), "--json", code=5)
    assert any(p.startswith("witness-policy") for p in __import__("json").loads(result.stdout)["problems"])
    cli("audit", "prove", "email:jane@example.com", "--witnesses-needed", "1", code=2)


def test_close_submits_the_checkpoint_offered_while_the_one_before_was_being_submitted(sqlite_ledger: CaseLedger) -> None:
    """The publisher signs a last checkpoint on its way out and closes the submitter: if that one was offered
    while an earlier one was still being submitted (a slow witness, a loaded machine), it is still sent before
    close returns. (It was dropped: the thread saw the stop after the earlier submission and returned; a CI run
    of tests/system/test_litewitness.py found the last checkpoint uncosigned.)"""
    sent: list[str] = []
    first_started, first_may_end = threading.Event(), threading.Event()

    class SlowFirst(WitnessSubmitter):
        def submit(self, checkpoint: Any) -> dict[str, str]:
            sent.append(str(checkpoint))
            if len(sent) == 1:
                first_started.set()
                first_may_end.wait(10)
            return {}

    submitter = SlowFirst(sqlite_ledger, [])
    submitter.offer("first")  # type: ignore[arg-type]
    assert first_started.wait(10)
    submitter.offer("last")  # type: ignore[arg-type]
    closing = threading.Thread(target=submitter.close, kwargs={"wait_s": 10})
    closing.start()
    while not submitter._stop.is_set():
        threading.Event().wait(0.01)
    first_may_end.set()
    closing.join(20)
    assert sent == ["first", "last"]
