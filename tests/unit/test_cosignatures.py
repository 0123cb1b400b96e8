"""Witness cosignatures (C2SP tlog-cosignature v1) and the witness policy, as the standalone verifier checks them.

Attack tests: a forged cosignature, one copied from another checkpoint, an old one replayed for a new
size, a key of the wrong type, one dated in the future; hypothesis: a k-of-n policy holds exactly when k
of its witnesses' valid cosignatures are there, and no change to a cosigned note's text survives.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner
from caseledger.verify.__main__ import main as verify_main
from caseledger.verify.cosignatures import (
    PolicyError,
    WitnessKey,
    WitnessPolicy,
    check_cosignatures,
    cosigned_message,
    split_view,
)
from caseledger.verify.failures import MalformedInput, SignatureError
from caseledger.verify.note import Checkpoint, open_checkpoint
from tests.support.examples import examples
from tests.support.fake_witness import WitnessSigner

LOG = CheckpointSigner.parse("PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
                             source="test")
WITNESSES = [WitnessSigner(f"witness.example/w{i}") for i in range(4)]


def checkpoint(size: int = 7, root: bytes = b"\x03" * 32) -> str:
    return LOG.sign(Checkpoint("PeterNeumann", size, root, ("Timestamp: 1765000000000000000",)))


def test_a_cosignature_is_the_spec_s_message_signed_and_its_key_id_has_type_0x04() -> None:
    w = WITNESSES[0]
    assert cosigned_message("o\n1\nAA==\n", 1679315147) == b"cosignature/v1\ntime 1679315147\no\n1\nAA==\n"
    import hashlib

    assert w.key.key_id == hashlib.sha256(w.name.encode() + b"\n\x04" + w.key.public_key).digest()[:4]
    assert WitnessKey.parse(str(w.key)) == w.key
    note = w.cosign(checkpoint())
    cosigned = check_cosignatures(note, LOG.verifier_key, WitnessPolicy.k_of(1, [w.key]))
    assert cosigned.witnesses == {w.name: 1_765_000_000} and cosigned.checkpoint.size == 7


def test_k_of_n_counts_valid_cosignatures_of_policy_witnesses_only() -> None:
    policy = WitnessPolicy.k_of(2, [w.key for w in WITNESSES[:3]])
    stranger = WitnessSigner("stranger.example/w")
    one = stranger.cosign(WITNESSES[0].cosign(checkpoint()))  # a stranger's line is ignored, not counted
    with pytest.raises(PolicyError, match=r"valid cosignatures from witness\.example/w0") as refused:
        check_cosignatures(one, LOG.verifier_key, policy)
    assert refused.value.code == "witness-policy"
    two = WITNESSES[2].cosign(one)
    assert set(check_cosignatures(two, LOG.verifier_key, policy).witnesses) == {WITNESSES[0].name, WITNESSES[2].name}
    with pytest.raises(PolicyError, match="not cosigned"):
        check_cosignatures(checkpoint(), LOG.verifier_key, policy)  # the ledger's note alone


def test_attacks_a_forged_line_another_checkpoint_s_and_an_old_one_replayed_for_a_new_size() -> None:
    policy = WitnessPolicy.k_of(1, [WITNESSES[0].key])
    honest = WITNESSES[0].cosign(checkpoint(size=7))
    line = honest.rstrip("\n").rsplit("\n", 1)[1]
    raw = bytearray(base64.b64decode(line.rsplit(" ", 1)[1]))
    raw[-1] ^= 1
    forged = checkpoint(size=7) + line.rsplit(" ", 1)[0] + " " + base64.b64encode(bytes(raw)).decode() + "\n"
    replayed = checkpoint(size=9, root=b"\x04" * 32) + line + "\n"  # last week's cosignature on today's tree
    other_root = checkpoint(size=7, root=b"\x05" * 32) + line + "\n"  # the same size, another root
    for note in (forged, replayed, other_root):
        with pytest.raises(PolicyError) as refused:
            check_cosignatures(note, LOG.verifier_key, policy)
        assert refused.value.code == "witness-signature"
    # a valid cosignature of another witness beside a forged one of a policy witness: the note is refused whole
    with pytest.raises(PolicyError, match="does not verify"):
        check_cosignatures(WITNESSES[1].cosign(forged), LOG.verifier_key,
                           WitnessPolicy.k_of(1, [WITNESSES[0].key, WITNESSES[1].key]))
    # a cosignature dated far in the future
    future = WITNESSES[0].line(checkpoint().split("\n\n")[0] + "\n", 4_000_000_000)
    with pytest.raises(PolicyError, match="future"):
        check_cosignatures(checkpoint() + future + "\n", LOG.verifier_key, policy, now=1_765_000_000)


def test_a_key_of_the_wrong_type_is_refused_and_a_witness_line_does_not_sign_for_the_log() -> None:
    with pytest.raises(MalformedInput, match="type 0x01"):
        WitnessKey.parse(str(LOG.verifier_key))  # the log's Ed25519 note key is not a cosigning key
    wrong_id = str(WITNESSES[0].key).replace("+", "+0", 1)[:-1]
    with pytest.raises(MalformedInput):
        WitnessKey.parse(wrong_id)
    # the same Ed25519 key as a witness: its 0x04 key id differs from its 0x01 one, so its line is no log signature
    as_witness = WitnessSigner("PeterNeumann")
    note = as_witness.cosign(LOG.sign(Checkpoint("PeterNeumann", 1, b"\x01" * 32)))
    assert open_checkpoint(note, LOG.verifier_key).size == 1
    with pytest.raises(SignatureError):
        open_checkpoint(as_witness.cosign(checkpoint()).replace(checkpoint().split("\n\n")[1], ""), LOG.verifier_key)


def test_a_tlog_policy_file_with_groups_and_its_errors() -> None:
    w = [x.key for x in WITNESSES]
    text = (f"# ours\nlog {LOG.verifier_key}\nwitness A {w[0]}\nwitness B {w[1]} https://b.example/\n"
            f"witness C\t{w[2]}\ngroup AB any A B\ngroup both all AB C\nquorum both\n")
    policy = WitnessPolicy.parse(text)
    assert policy.met_by(["A", "C"]) and policy.met_by(["B", "C"])
    assert not policy.met_by(["A", "B"]) and not policy.met_by(["C"])
    assert not WitnessPolicy.parse("quorum none").needs_cosignatures
    for bad in ("witness A x", f"witness A {w[0]}\nquorum B", f"witness A {w[0]}", f"witness A {w[0]}\nwitness B {w[0]}\n"
                "quorum A", f"witness A {w[0]}\ngroup G 2 A\nquorum G", f"witness A {w[0]}\nquorum A\nquorum A"):
        with pytest.raises(MalformedInput):
            WitnessPolicy.parse(bad)
    with pytest.raises(MalformedInput):
        WitnessPolicy.k_of(3, w[:2])


def test_two_checkpoints_of_one_size_and_two_roots_are_a_split_view() -> None:
    a = open_checkpoint(checkpoint(5, b"\x01" * 32), LOG.verifier_key)
    b = open_checkpoint(checkpoint(5, b"\x02" * 32), LOG.verifier_key)
    assert split_view(a, b) and "split view" in str(split_view(a, b))
    assert split_view(a, a) is None
    assert split_view(a, open_checkpoint(checkpoint(6, b"\x02" * 32), LOG.verifier_key)) is None


def test_the_verifier_s_checkpoint_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w0, w1 = WITNESSES[0], WITNESSES[1]
    kept = tmp_path / "kept.checkpoint"
    kept.write_text(w0.cosign(checkpoint(5, b"\x01" * 32)))
    shown = tmp_path / "shown.checkpoint"
    shown.write_text(w0.cosign(checkpoint(5, b"\x02" * 32)))
    key = str(LOG.verifier_key)
    assert verify_main(["checkpoint", str(kept), "--key", key, "--witness", str(w0.key)]) == 0
    assert "cosigned by witness.example/w0" in capsys.readouterr().out
    assert verify_main(["checkpoint", str(kept), str(shown), "--key", key, "--json"]) == 1
    assert {f["code"] for f in json.loads(capsys.readouterr().out)["findings"]} == {"split-view"}
    assert verify_main(["checkpoint", str(kept), "--key", key, "--witness", str(w0.key), "--witness",
                        str(w1.key)]) == 1  # both needed by default
    assert "[witness-policy]" in capsys.readouterr().out
    assert verify_main(["checkpoint", str(kept), "--key", key, "--witness", str(LOG.verifier_key)]) == 2
    assert verify_main(["checkpoint", str(kept), "--key", key, "--witnesses-needed", "1"]) == 2


@settings(max_examples=examples(60), deadline=None)
@given(needed=st.integers(1, 4), signed=st.sets(st.integers(0, 3)), stranger=st.booleans())
def test_a_k_of_n_policy_holds_exactly_with_k_valid_cosignatures(needed: int, signed: set[int], stranger: bool) -> None:
    note = checkpoint()
    for i in sorted(signed):
        note = WITNESSES[i].cosign(note)
    if stranger:
        note = WitnessSigner("stranger.example/x").cosign(note)
    policy = WitnessPolicy.k_of(needed, [w.key for w in WITNESSES])
    if len(signed) >= needed:
        assert len(check_cosignatures(note, LOG.verifier_key, policy).witnesses) == len(signed)
    else:
        with pytest.raises(PolicyError):
            check_cosignatures(note, LOG.verifier_key, policy)


@settings(max_examples=examples(80), deadline=None)
@given(where=st.integers(0, 10_000), byte=st.integers(1, 255))
def test_no_change_to_a_cosigned_note_survives(where: int, byte: int) -> None:
    note = WITNESSES[0].cosign(checkpoint())
    raw = bytearray(note.encode())
    raw[where % len(raw)] ^= byte
    try:
        changed = raw.decode()
    except UnicodeDecodeError:
        return
    try:
        check_cosignatures(changed, LOG.verifier_key, WitnessPolicy.k_of(1, [WITNESSES[0].key]))
    except (PolicyError, MalformedInput, SignatureError):
        return
    assert changed == note or changed.split("\n\n")[0] == note.split("\n\n")[0]
