"""A receipt proved in the log with a checkpoint alone (issue 25's leftover).

Finding: "with any later checkpoint or export it proves the contact is in the log" — ``verify receipt``
proved inclusion with an export only. Now ``caseledger contact receipt REF --proof`` (and
``GET …/contacts/C/receipt/proof``) hands out the contact's leaf index and inclusion proof against the
ledger's latest signed checkpoint (or a kept one, ``--tree-size``), and ``python -m caseledger.verify
receipt FILE --key K --proof P [--checkpoint CP]`` checks it: ``included``, ``pending`` before the promised
time, ``missing`` — proof against the operator — after it, ``unverified`` when the proof or checkpoint
does not hold, with the same exit codes as with an export.
"""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import Actor, ContactDraft, Identity
from caseledger.ledger.errors import NotFound, ValidationError
from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner, generate_key_file
from caseledger.ledger.transparency.checkpoints import sign_checkpoint
from caseledger.ledger.transparency.tree import MerkleLog
from caseledger.verify.__main__ import main as verify_main
from caseledger.verify.failures import MalformedInput
from caseledger.verify.receipts import PROOF_FORMAT, check_receipt, read_proof
from tests.support.clock import FakeClock
from tests.support.contacts import register_adapter
from tests.support.environment import ledger_settings
from tests.support.examples import examples
from tests.support.signed_ledgers import ORIGIN

JANE = Identity.parse("email:jane@example.com")


def jane(msg: str = "form-1", **kw: object) -> ContactDraft:
    fields: dict[str, object] = {"subject": "Card fees", "items": ("Why two card fees in February?",)}
    fields.update(kw)
    return ContactDraft(channel="web_form", channel_message_id=msg, identity=JANE, **fields)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.sqlite")


@pytest.fixture
def ledger(signed_ledger: CaseLedger) -> CaseLedger:
    return signed_ledger


def _files(tmp_path: Path, receipt: str, proof: dict[str, Any], key: CheckpointSigner) -> list[str]:
    (tmp_path / "receipt.txt").write_text(receipt)
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    return ["receipt", str(tmp_path / "receipt.txt"), "--key", str(key.verifier_key), "--proof",
            str(tmp_path / "proof.json")]


def test_a_later_checkpoint_and_the_contacts_proof_prove_it_in_the_log(
        ledger: CaseLedger, signer: CheckpointSigner, clock: FakeClock, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    outcome = ledger.record_contact(jane())
    for n in range(2, 7):  # other contacts around it: the proof has hashes to check
        ledger.record_contact(jane(f"form-{n}", items=(f"question {n}",)))
    clock.advance(minutes=5)
    checkpoint = sign_checkpoint(ledger, signer)
    proof = ledger.contact_receipt_proof(outcome.reference, "C1")
    assert proof["format"] == PROOF_FORMAT and proof["tree_size"] == checkpoint.tree_size
    assert proof["checkpoint"] == checkpoint.note and proof["leaf_index"] is not None
    assert proof["inclusion_proof"]  # a path of hashes, not an empty one
    result = check_receipt(outcome.receipt or "", signer.verifier_key, proof=proof)
    assert result.verdict == "included" and result.ok, result.lines
    assert "proved included" in result.lines[-1]
    # the command line: the receipt, the proof file, and a checkpoint given apart (as an auditor keeps it)
    args = _files(tmp_path, outcome.acknowledgement, proof, signer)
    assert verify_main(args) == 0
    assert "the contact is in the log" in capsys.readouterr().out
    (tmp_path / "cp.note").write_text(checkpoint.note)
    assert verify_main([*args, "--checkpoint", str(tmp_path / "cp.note"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "included"


def test_a_checkpoint_the_holder_kept_is_proved_against_with_its_tree_size(
        ledger: CaseLedger, signer: CheckpointSigner, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outcome = ledger.record_contact(jane())
    kept = sign_checkpoint(ledger, signer)
    ledger.record_contact(jane("form-2", items=("Another question",)))
    latest = sign_checkpoint(ledger, signer)
    assert latest.tree_size > kept.tree_size
    (tmp_path / "kept.note").write_text(kept.note)
    # the latest proof is against another tree than the kept checkpoint: nothing follows, and it says what to ask
    args = _files(tmp_path, outcome.receipt or "", ledger.contact_receipt_proof(outcome.reference), signer)
    assert verify_main([*args, "--checkpoint", str(tmp_path / "kept.note")]) == 1
    assert f"--tree-size {kept.tree_size}" in capsys.readouterr().out
    against_kept = ledger.contact_receipt_proof(outcome.reference, "C1", kept.tree_size)
    assert against_kept["checkpoint"] == kept.note
    args = _files(tmp_path, outcome.receipt or "", against_kept, signer)
    assert verify_main([*args, "--checkpoint", str(tmp_path / "kept.note")]) == 0
    with pytest.raises(NotFound, match="no checkpoint of 999"):
        ledger.contact_receipt_proof(outcome.reference, "C1", 999)
    with pytest.raises(ValidationError, match="tree_size"):
        ledger.contact_receipt_proof(outcome.reference, "C1", -1)
    with pytest.raises(NotFound, match="C1"):
        ledger.contact_receipt_proof(outcome.reference, "C9")


def test_a_checkpoint_that_lacks_the_contact_is_pending_before_the_promised_time_and_proof_against_the_operator_after(
        ledger: CaseLedger, signer: CheckpointSigner, clock: FakeClock, tmp_path: Path) -> None:
    """The contact is recorded after the latest checkpoint; then a checkpointer that stopped following the log
    signs again after the promised time: the ledger's own proof names no leaf in a checkpoint it promised it in."""
    ledger.record_contact(jane("form-0", items=("Before",)))
    sign_checkpoint(ledger, signer)
    outcome = ledger.record_contact(jane())
    receipt = outcome.receipt or ""
    early = ledger.contact_receipt_proof(outcome.reference, "C1")
    assert early["leaf_index"] is None and early["inclusion_proof"] is None
    pending = check_receipt(receipt, signer.verifier_key, proof=early)
    assert pending.verdict == "pending" and not pending.ok, pending.lines
    assert verify_main(_files(tmp_path, receipt, early, signer)) == 3
    clock.advance(days=1, seconds=1)
    lagging = MerkleLog.of(ledger)  # as the tree stood, without the contact
    sign_checkpoint(ledger, signer, tree=lagging, catch_up=False, force=True)
    late = ledger.contact_receipt_proof(outcome.reference, "C1")
    assert late["leaf_index"] is None and late["checkpoint"] != early["checkpoint"]
    missing = check_receipt(receipt, signer.verifier_key, proof=late)
    assert missing.verdict == "missing" and not missing.ok, missing.lines
    assert "proof against the operator" in missing.lines[-1]
    assert verify_main(_files(tmp_path, receipt, late, signer)) == 1
    sign_checkpoint(ledger, signer)  # the log caught up: the checkpoint signed now holds it
    held = ledger.contact_receipt_proof(outcome.reference, "C1")
    assert check_receipt(receipt, signer.verifier_key, proof=held).verdict == "included"
    assert verify_main(_files(tmp_path, receipt, held, signer)) == 0


def test_a_proof_that_does_not_hold_proves_nothing(ledger: CaseLedger, signer: CheckpointSigner,
                                                   tmp_path: Path) -> None:
    outcome = ledger.record_contact(jane())
    other = ledger.record_contact(jane("form-2", items=("Another question",)))
    for n in range(3, 6):
        ledger.record_contact(jane(f"form-{n}", items=(f"question {n}",)))
    sign_checkpoint(ledger, signer)
    proof = ledger.contact_receipt_proof(outcome.reference, "C1")
    key = signer.verifier_key

    def verdict(**changes: Any) -> str:
        return check_receipt(outcome.receipt or "", key, proof={**proof, **changes}).verdict

    first = base64.b64decode(proof["inclusion_proof"][0])
    assert verdict(inclusion_proof=[base64.b64encode(bytes([first[0] ^ 1]) + first[1:]).decode(),
                                    *proof["inclusion_proof"][1:]]) == "unverified"
    assert verdict(leaf_index=proof["leaf_index"] + 1) == "unverified"
    assert verdict(inclusion_proof=proof["inclusion_proof"][:-1]) == "unverified"
    # another contact's proof, presented for this receipt
    assert check_receipt(outcome.receipt or "", key,
                         proof=ledger.contact_receipt_proof(other.reference, "C1")).verdict == "unverified"
    # a checkpoint of another key, or altered
    mallory = generate_key_file(tmp_path / "mallory.key", ORIGIN)
    assert verdict(checkpoint=proof["checkpoint"].replace(str(proof["tree_size"]) + "\n", "1\n", 1)) == "unverified"
    assert check_receipt(outcome.receipt or "", mallory.verifier_key, proof=proof).verdict == "wrong-key"
    # a proof that claims the leaf is not there, against a checkpoint of another size
    assert verdict(leaf_index=None, inclusion_proof=None, tree_size=1) == "unverified"


def test_the_verifier_refuses_what_is_not_a_proof_as_malformed(ledger: CaseLedger, signer: CheckpointSigner,
                                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outcome = ledger.record_contact(jane())
    sign_checkpoint(ledger, signer)
    proof = ledger.contact_receipt_proof(outcome.reference)
    args = _files(tmp_path, outcome.receipt or "", proof, signer)
    (tmp_path / "proof.json").write_text("{not json")
    assert verify_main(args) == 2
    assert "format" in capsys.readouterr().err
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    (tmp_path / "cp.note").write_text(proof["checkpoint"])
    assert verify_main(["receipt", args[1], "--key", args[3], "--checkpoint", str(tmp_path / "cp.note")]) == 2
    assert "--checkpoint needs --proof" in capsys.readouterr().err
    assert verify_main([*args, "--export", str(tmp_path / "proof.json")]) == 2


proof_values = st.recursive(st.none() | st.booleans() | st.integers(-2, 2**64) | st.text(max_size=70),
                            lambda inner: st.lists(inner, max_size=4), max_leaves=8)


@settings(max_examples=examples(200), deadline=None)
@given(changes=st.dictionaries(st.sampled_from(["format", "event_hash", "tree_size", "leaf_index", "inclusion_proof",
                                                "checkpoint"]), proof_values, max_size=4),
       raw=st.text(max_size=40))
def test_any_proof_text_is_read_or_refused_as_malformed_never_a_crash(changes: dict[str, Any], raw: str) -> None:
    base = {"format": PROOF_FORMAT, "event_hash": "ab" * 32, "tree_size": 3, "leaf_index": 1,
            "inclusion_proof": ["AA=="], "checkpoint": None}
    for text in (json.dumps({**base, **changes}), raw):
        with contextlib.suppress(MalformedInput):
            read_proof(text)


def test_an_erased_customers_receipt_is_still_proved_and_the_proof_holds_no_personal_data(
        ledger: CaseLedger, signer: CheckpointSigner) -> None:
    outcome = ledger.record_contact(jane())
    ledger.erase_customer(str(JANE), reason="art. 17 request of 2026-03-02, ticket 4711",
                          actor=Actor.parse("agent:alice"))
    sign_checkpoint(ledger, signer)
    proof = ledger.contact_receipt_proof(outcome.reference)
    text = json.dumps(proof)
    assert not any(word in text.lower() for word in ("jane", "example.com", "card fees", "february"))
    assert check_receipt(outcome.receipt or "", signer.verifier_key, proof=proof).verdict == "included"


def test_the_adapter_gets_the_proof_over_http_and_the_cli_prints_it(
        key_file: Path, db: str, signer: CheckpointSigner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from caseledger.ledger.access.principals import PrincipalRegistry
    from caseledger.ledger.service.api import ServiceState
    from caseledger.ledger.service.asgi import create_app
    from tests.support.contacts import cli

    settings_ = ledger_settings(database=db, origin=ORIGIN)
    setup = CaseLedger(settings_)
    adapter = PrincipalRegistry(setup.principal_store).add("mail-gateway-1", "adapter").token
    register_adapter(setup, "mail-gateway-1", ["email"])
    setup.close()
    with TestClient(create_app(ServiceState(settings_))) as client:
        headers = {"Authorization": f"Bearer {adapter}"}
        body = {"channel": "email", "channel_message_id": "m-1", "from": "email:jane@example.com", "items": ["?"]}
        recorded = client.post("/v1/contacts", json=body, headers=headers).json()
        route = f"/v1/cases/{recorded['reference']}/contacts/C1/receipt/proof"
        none_yet = client.get(route, headers=headers)
        assert none_yet.status_code == 404 and "no checkpoint" in none_yet.json()["detail"]
        app = CaseLedger(settings_)
        try:
            sign_checkpoint(app, signer)
        finally:
            app.close()
        got = client.get(route, headers=headers)
        assert got.status_code == 200, got.text
        assert check_receipt(recorded["receipt"], signer.verifier_key, proof=got.json()).verdict == "included"
        for bad in ("-1", "x", "1e9999"):
            answer = client.get(f"{route}?tree_size={bad}", headers=headers)
            assert 400 <= answer.status_code < 500, (bad, answer.text)
        assert client.get(route).status_code == 401
    monkeypatch.setenv("CASELEDGER_DATABASE", db)
    printed = json.loads(cli("contact", "receipt", recorded["reference"], "--proof").stdout)
    assert check_receipt(recorded["receipt"], signer.verifier_key, proof=printed).verdict == "included"


def test_the_proofs_path_is_the_trees_own_across_tiles(ledger: CaseLedger) -> None:
    """The proof is read from the stored rows as the tree reads its own (600 leaves: two full tiles and a partial)."""
    import hashlib

    from caseledger.ledger.transparency.receipt_proofs import inclusion_path

    tree = MerkleLog.of(ledger)
    tree.append([(p, hashlib.sha256(str(p).encode()).digest()) for p in range(1, 601)])
    for size in (1, 2, 255, 256, 257, 511, 512, 513, 600):
        for index in sorted({0, 1, size // 3, size // 2, size - 2, size - 1} & set(range(size))):
            assert inclusion_path(tree.store, index, size) == tree.inclusion_proof(index, size), (index, size)


def test_an_adapter_reads_only_its_channels_contacts_receipts_and_proofs(
        key_file: Path, db: str, signer: CheckpointSigner) -> None:
    """Finding: the receipt route was not limited to the adapter's channels. Another channel's contact, an unknown
    contact and an unknown case read alike (404, the same words); an adapter with no registered channels: 403."""
    from fastapi.testclient import TestClient

    from caseledger.ledger.access.principals import PrincipalRegistry
    from caseledger.ledger.service.api import ServiceState
    from caseledger.ledger.service.asgi import create_app

    settings_ = ledger_settings(database=db, origin=ORIGIN)
    setup = CaseLedger(settings_)
    registry = PrincipalRegistry(setup.principal_store)
    tokens = {name: registry.add(name, role).token for name, role in
              (("mail-1", "adapter"), ("sms-1", "adapter"), ("bare-1", "adapter"), ("alice", "agent"))}
    register_adapter(setup, "mail-1", ["email"])
    register_adapter(setup, "sms-1", ["sms"])
    mailed = setup.record_contact(jane(), actor=None).reference  # a web form
    emailed = setup.record_contact(ContactDraft(channel="email", channel_message_id="<m@x>", identity=JANE,
                                                items=("By mail",))).reference
    sign_checkpoint(setup, signer)
    setup.close()

    def get(who: str, path: str) -> Any:
        return client.get(path, headers={"Authorization": f"Bearer {tokens[who]}"})

    with TestClient(create_app(ServiceState(settings_))) as client:
        for tail in ("receipt", "receipt/proof"):
            assert get("mail-1", f"/v1/cases/{emailed}/contacts/C1/{tail}").status_code == 200
            assert get("alice", f"/v1/cases/{mailed}/contacts/C1/{tail}").status_code == 200  # roles not scoped
            other = get("sms-1", f"/v1/cases/{emailed}/contacts/C1/{tail}")
            unknown = get("sms-1", f"/v1/cases/{emailed}/contacts/C9/{tail}")
            nowhere = get("sms-1", f"/v1/cases/CL-AAAAA-BBBBB/contacts/C1/{tail}")
            web = get("mail-1", f"/v1/cases/{mailed}/contacts/C1/{tail}")
            assert other.status_code == unknown.status_code == nowhere.status_code == web.status_code == 404
            # the same words but the contact's number (the case's reference held aside: it may hold "C9" itself)
            masked = unknown.json()["detail"].replace(emailed, "{case}")
            assert other.json()["detail"] == masked.replace("C9", "C1").replace("{case}", emailed)
            assert nowhere.json()["detail"] == other.json()["detail"].replace(emailed, "CL-AAAAA-BBBBB")
            assert get("bare-1", f"/v1/cases/{emailed}/contacts/C1/{tail}").status_code == 403
