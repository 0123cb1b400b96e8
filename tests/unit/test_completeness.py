"""An export proves it holds every event of its customer (issue 26, "Completeness, provable").

Findings covered (each failed before the customer map: the verifier printed "verified: everything holds"):
an export with a whole case removed, even with the customer's link to that case still in the file; an
export with a case's first event removed. Also refused now: the last event, a middle one, everything, and an
export that claims its customer had no events. Hypothesis: any deletion from an export is detected; the map
(a sparse Merkle tree) agrees with a from-scratch computation at every version, and no tampered proof holds.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import ContactDraft, Identity
from caseledger.ledger.reports.export import OccurredRange, export_history
from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner, generate_key_file
from caseledger.ledger.transparency.customer_map import event_customer
from caseledger.ledger.transparency.tree import MerkleLog
from caseledger.verify.__main__ import main as verify_main
from caseledger.verify.completeness import (
    MapProof,
    chain,
    customer_key,
    map_root_of,
    root_from_proof,
    value_hash,
)
from caseledger.verify.failures import ProofError
from caseledger.verify.history import check_history, read_envelope, read_export
from tests.support.clock import FakeClock
from tests.support.contacts import cli
from tests.support.environment import ledger_settings
from tests.support.examples import examples
from tests.support.signed_ledgers import ORIGIN

JANE = Identity.parse("email:jane@example.com")


def contact(msg: str, who: Identity = JANE, **kw: Any) -> ContactDraft:
    return ContactDraft(channel="web_form", channel_message_id=msg, identity=who, subject="Card fees",
                        items=(f"question {msg}",), **kw)


@pytest.fixture
def ledger(signed_ledger: CaseLedger) -> CaseLedger:
    return signed_ledger


@pytest.fixture
def two_cases(ledger: CaseLedger, clock: FakeClock) -> tuple[str, str]:
    """Jane with two cases of two contacts each, another customer in between."""
    first = ledger.record_contact(contact("m1"))
    ledger.record_contact(contact("o1", Identity.parse("email:other@example.com")))
    clock.advance(hours=1)
    ledger.record_contact(contact("m2", case_reference=first.reference))
    second = ledger.record_contact(contact("m3"))
    clock.advance(hours=1)
    ledger.record_contact(contact("m4", case_reference=second.reference))
    return first.reference, second.reference


def export(ledger: CaseLedger, path: Path, fmt: str = "json", **kw: Any) -> dict[str, Any]:
    export_history(ledger, str(JANE), fmt, path, **kw)
    return read_export(path)


def codes(document: dict[str, Any], signer: CheckpointSigner) -> set[str]:
    return {f.code for f in check_history(document, signer.verifier_key).findings}


def _case_id(data: bytes) -> str:
    from caseledger.ledger.avro.envelope import parse_envelope

    return parse_envelope(data)[3].decode()


def without(document: dict[str, Any], keep: Any) -> dict[str, Any]:
    tampered = copy.deepcopy(document)
    tampered["events"] = [e for e in tampered["events"] if keep(e)]
    return tampered


def test_an_untouched_export_proves_itself_complete(ledger: CaseLedger, two_cases: tuple[str, str],
                                                   signer: CheckpointSigner, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    document = export(ledger, tmp_path / "jane.json")
    result = check_history(document, signer.verifier_key)
    assert result.ok and result.complete, result.findings
    assert result.counted == len(document["events"]) > 10
    assert verify_main([str(tmp_path / "jane.json"), "--key", str(signer.verifier_key)]) == 0
    assert f"complete: the export holds all {result.counted} events of customer" in capsys.readouterr().out


def test_a_whole_case_removed_is_refused_even_with_the_customers_link_to_it_still_there(
        ledger: CaseLedger, two_cases: tuple[str, str], signer: CheckpointSigner, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    document = export(ledger, tmp_path / "jane.json")
    gone = _case_id(base64.b64decode(document["events"][-1]["stored_bytes_base64"]))
    tampered = without(document, lambda e: _case_id(base64.b64decode(e["stored_bytes_base64"])) != gone
                       or e["event_type"] == "CaseLinked")
    assert any(e["event_type"] == "CaseLinked" and _case_id(base64.b64decode(e["stored_bytes_base64"])) == gone
               for e in tampered["events"])  # the customer's link to the case is still in the file
    assert len(tampered["events"]) < len(document["events"])
    assert "incomplete" in codes(tampered, signer)
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(tampered))
    assert verify_main([str(path), "--key", str(signer.verifier_key)]) == 1
    out = capsys.readouterr().out
    assert "verified: everything holds" not in out and "[incomplete]" in out and "NOT verified" in out


@pytest.mark.parametrize("which", ["first", "middle", "last", "a case's first", "everything"])
def test_any_missing_event_is_refused(ledger: CaseLedger, two_cases: tuple[str, str], signer: CheckpointSigner,
                                      tmp_path: Path, which: str) -> None:
    document = export(ledger, tmp_path / "jane.json")
    events = document["events"]
    if which == "a case's first":
        gone = {next(e["position"] for e in events if e["event_type"] == "CaseOpened"
                     and _case_id(base64.b64decode(e["stored_bytes_base64"])) == _case_id(
                         base64.b64decode(events[-1]["stored_bytes_base64"])))}
    else:
        gone = {"first": {events[0]["position"]}, "middle": {events[len(events) // 2]["position"]},
                "last": {events[-1]["position"]}, "everything": {e["position"] for e in events}}[which]
    assert "incomplete" in codes(without(document, lambda e: e["position"] not in gone), signer)


def test_a_claim_that_the_customer_has_no_events_is_refused(ledger: CaseLedger, two_cases: tuple[str, str],
                                                           signer: CheckpointSigner, tmp_path: Path) -> None:
    document = export(ledger, tmp_path / "jane.json")
    tampered = without(document, lambda e: False)
    key = customer_key(document["customer_id"])
    for proof in (MapProof("empty", ()), MapProof("empty", tuple(bytes(32) for _ in range(3))),
                  MapProof("other", (bytes(32),), bytes([key[0] ^ 0x01]) + key[1:], bytes(32))):
        tampered["transparency"]["customer_map"]["proof"] = proof.as_dict()
        assert codes(tampered, signer) == {"map-proof"}, proof
    del tampered["transparency"]["customer_map"]
    assert codes(tampered, signer) == {"map-proof"}


def test_a_customer_with_no_event_at_the_checkpoint_is_proved_absent(ledger: CaseLedger, signer: CheckpointSigner,
                                                                    clock: FakeClock, tmp_path: Path) -> None:
    for n in range(6):
        ledger.record_contact(contact(f"x{n}", Identity.parse(f"email:c{n}@example.com")))
    tree = MerkleLog.of(ledger)
    tree.catch_up(ledger)
    tree.commit_map(ledger)
    for n in range(6):
        customer = ledger.resolve_customer(f"email:c{n}@example.com")
        assert tree.customers.proof(customer, tree.size).included
    proof = tree.customers.proof("cus-0000000000000000", tree.size)
    assert not proof.included
    assert root_from_proof("cus-0000000000000000", 0, chain([]), proof) == tree.customers.root
    with pytest.raises(ProofError):
        root_from_proof("cus-0000000000000000", 1, chain([bytes(32)]), proof)


def test_the_avro_export_proves_itself_complete_and_refuses_a_deletion(
        ledger: CaseLedger, two_cases: tuple[str, str], signer: CheckpointSigner, tmp_path: Path) -> None:
    document = export(ledger, tmp_path / "jane.avro", "avro")
    result = check_history(document, signer.verifier_key)
    assert result.ok and result.complete, result.findings
    assert "incomplete" in codes(without(document, lambda e: e["position"] != document["events"][3]["position"]),
                                 signer)


def test_an_export_against_an_older_checkpoint_proves_the_customer_at_its_size(
        ledger: CaseLedger, two_cases: tuple[str, str], signer: CheckpointSigner, clock: FakeClock, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    export(ledger, tmp_path / "first.json")  # signs a checkpoint over everything so far
    clock.advance(hours=1)
    ledger.record_contact(contact("m9", case_reference=two_cases[0]))
    MerkleLog.of(ledger).catch_up(ledger)  # the tree (and map) move past the checkpoint
    monkeypatch.delenv("CASELEDGER_SIGNING_KEY_FILE")  # no key here: the latest stored checkpoint is used
    keyless = CaseLedger(ledger_settings(database=str(tmp_path / "ledger.sqlite"), origin=ORIGIN), clock=clock)
    try:
        document = export(keyless, tmp_path / "later.json")
    finally:
        keyless.close()
    result = check_history(document, signer.verifier_key)
    assert result.complete and result.counted < len(document["events"])  # the newest events are after it
    assert {f.code for f in result.findings} == {"uncommitted"}


@given(data=st.data())
@settings(max_examples=examples(60), deadline=None)
def test_any_deletion_from_an_export_is_detected(exported: tuple[dict[str, Any], CheckpointSigner],
                                                 data: st.DataObject) -> None:
    document, signer = exported
    positions = [e["position"] for e in document["events"]]
    gone = data.draw(st.sets(st.sampled_from(positions), min_size=1))
    result = check_history(without(document, lambda e: e["position"] not in gone), signer.verifier_key)
    assert not result.ok and not result.complete
    assert {f.code for f in result.findings} & {"incomplete", "map-proof"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], CheckpointSigner]]:
    """One export of a customer with two cases, for the property test (built once)."""
    folder = tmp_path_factory.mktemp("exported")
    signer = generate_key_file(folder / "signing.key", ORIGIN)
    clock = FakeClock()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CASELEDGER_SIGNING_KEY_FILE", str(folder / "signing.key"))
        app = CaseLedger(ledger_settings(database=str(folder / "ledger.sqlite"), origin=ORIGIN), clock=clock)
        try:
            first = app.record_contact(contact("m1"))
            app.record_contact(contact("m2", case_reference=first.reference))
            app.record_contact(contact("m3"))
            yield export(app, folder / "jane.json"), signer
        finally:
            app.close()


# -- the map itself -------------------------------------------------------------------------------------------


@given(batches=st.lists(st.lists(st.tuples(st.integers(0, 40), st.booleans()), min_size=1, max_size=30),
                        min_size=1, max_size=8))
@settings(max_examples=examples(40), deadline=None)
def test_the_stored_map_is_the_map_of_its_leaves_at_every_checkpoint_size(tmp_path_factory: pytest.TempPathFactory,
                                                                         batches: list[list[tuple[int, bool]]]) -> None:
    folder = tmp_path_factory.mktemp("map")
    app = CaseLedger(ledger_settings(database=str(folder / "m.sqlite")))
    try:
        tree = MerkleLog(app.storage.merkle())
        history: dict[str, list[bytes]] = {}
        versions = []
        position = 0
        for batch in batches:
            entries, customers = [], []
            for who, someone in batch:
                position += 1
                digest = hashlib.sha256(position.to_bytes(8, "big")).digest()
                customer = f"cus-{who:016x}" if someone else ""
                entries.append((position, digest))
                customers.append(customer.encode())
                if customer:
                    history.setdefault(customer, []).append(digest)
            tree.append(entries, customers)
            assert tree.store_map()  # as before each checkpoint
            expected = map_root_of({customer_key(c): value_hash(len(h), chain(h)) for c, h in history.items()})
            assert tree.customers.root == expected
            versions.append((tree.size, {c: list(h) for c, h in history.items()}, expected))
        for size, seen, root in versions:
            assert tree.customers.root_at(size) == root
            for who in [*seen, "cus-ffffffffffffffff"]:
                events = seen.get(who, [])
                proof = tree.customers.proof(who, size)
                assert proof.included == bool(events)
                assert root_from_proof(who, len(events), chain(events), proof) == root
                if events:  # one event fewer, or a claim that they have none: another root, or refused
                    assert root_from_proof(who, len(events) - 1, chain(events[:-1]), proof) != root
                    for claim in (MapProof("empty", proof.siblings), MapProof("empty", proof.siblings[1:]),
                                  tree.customers.proof("cus-ffffffffffffffff", size)):
                        with contextlib.suppress(ProofError):  # refused outright, or it leads elsewhere
                            assert root_from_proof(who, 0, chain([]), claim) != root
    finally:
        app.close()


def test_the_map_is_committed_by_the_checkpoint_and_kept_in_the_trees_transaction(
        ledger: CaseLedger, two_cases: tuple[str, str], signer: CheckpointSigner) -> None:
    from caseledger.ledger.transparency.checkpoints import sign_checkpoint
    from caseledger.verify.completeness import map_root_line
    from caseledger.verify.note import open_checkpoint

    stored = sign_checkpoint(ledger, signer)
    checkpoint = open_checkpoint(stored.note, signer.verifier_key)
    assert checkpoint.extensions[0].startswith("Timestamp: ")
    assert checkpoint.extensions[1].startswith("caseledger/customers ")
    tree = MerkleLog.of(ledger)
    assert map_root_line(checkpoint.extensions) == tree.customers.root
    assert tree.store.map_state()[0] == tree.store.state()[0] == checkpoint.size


def test_a_tree_kept_before_the_map_brings_it_up_from_the_log(ledger: CaseLedger, two_cases: tuple[str, str],
                                                              signer: CheckpointSigner, tmp_path: Path) -> None:
    tree = MerkleLog.of(ledger)
    notifications = ledger.recorder.select_notifications(start=1, limit=10_000)
    tree.append([(n.id, hashlib.sha256(n.state).digest()) for n in notifications])  # no customers: map behind
    assert not tree.map_in_step
    document = export(ledger, tmp_path / "jane.json")  # signing catches the map up from the log
    assert check_history(document, signer.verifier_key).complete
    assert MerkleLog.of(ledger).map_in_step


# -- occurred-time ranges ------------------------------------------------------------------------------------


def test_an_export_by_occurred_range_shows_the_range_and_proves_completeness_for_it(
        ledger: CaseLedger, two_cases: tuple[str, str], signer: CheckpointSigner, clock: FakeClock,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    start = clock.now - timedelta(minutes=30)  # the last hour's contact only
    document = export(ledger, tmp_path / "range.json", occurred=OccurredRange(start, None))
    shown = [e for e in document["events"] if e.get("in_range", True)]
    hidden = [e for e in document["events"] if not e.get("in_range", True)]
    assert shown and hidden and all(e["event"] is None and e["description"] is None for e in hidden)
    assert all(read_envelope(base64.b64decode(e["stored_bytes_base64"])).occurred_micros
               >= int((start.timestamp()) * 1_000_000) for e in shown)
    assert document["transparency"]["occurred_range"]["occurred_from"] == start.isoformat()
    result = check_history(document, signer.verifier_key)
    assert result.ok and result.complete and result.in_range == len(shown), result.findings
    assert verify_main([str(tmp_path / "range.json"), "--key", str(signer.verifier_key)]) == 0
    assert f"occurred range: {len(shown)} events shown in full" in capsys.readouterr().out
    # the ledger cannot hide an event of the range as "outside", nor show one from outside
    hide = copy.deepcopy(document)
    next(e for e in hide["events"] if e.get("in_range", True))["in_range"] = False
    assert "range" in codes(hide, signer)
    show = copy.deepcopy(document)
    del next(e for e in show["events"] if not e.get("in_range", True))["in_range"]
    assert "range" in codes(show, signer)
    # and dropping the hidden ones is a deletion like any other
    assert "incomplete" in codes(without(document, lambda e: e.get("in_range", True)), signer)
    avro = export(ledger, tmp_path / "range.avro", "avro", occurred=OccurredRange(start, None))
    assert check_history(avro, signer.verifier_key).in_range == len(shown)


def test_history_exports_a_year_by_when_things_occurred(key_file: Path, tmp_path: Path, signer: CheckpointSigner,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """"2026" can be asked for: --occurred-from/--occurred-until, on the export only, said in the file."""
    monkeypatch.chdir(tmp_path)
    cli("--now", "2025-06-01T10:00Z", "contact", "record", "-c", "web_form", "-m", "f1", "--from", str(JANE),
        "--subject", "S", "--item", "Q")
    cli("--now", "2026-03-01T10:00Z", "contact", "record", "-c", "web_form", "-m", "f2", "--from", str(JANE),
        "--subject", "S", "--item", "Q")
    year = ("--occurred-from", "2026-01-01T00:00Z", "--occurred-until", "2027-01-01T00:00Z")
    out = cli("history", str(JANE), "--export", "json", "2026.json", *year).stdout
    assert "occurred in the range" in out and "verified" in out
    document = read_export(tmp_path / "2026.json")
    assert document["transparency"]["occurred_range"]["occurred_from"] == "2026-01-01T00:00:00+00:00"
    result = check_history(document, signer.verifier_key)
    assert result.ok and result.complete and 0 < (result.in_range or 0) < result.events
    assert "add --export" in cli("history", str(JANE), *year[:2], code=2).stderr
    assert "is not after" in cli("history", str(JANE), "--export", "json", "x.json", "--occurred-from",
                                 "2026-01-01T00:00Z", "--occurred-until", "2025-01-01T00:00Z", code=2).stderr


def test_the_audit_recomputes_the_map_a_kept_checkpoint_commits_to(ledger: CaseLedger, two_cases: tuple[str, str],
                                                                  signer: CheckpointSigner) -> None:
    """What the map proves rests on the ledger's signature; whoever holds the log checks the map is the log's."""
    from caseledger.ledger.audit import verify
    from caseledger.ledger.audit.kept_checkpoint import HeldCheckpoint
    from caseledger.ledger.transparency.checkpoints import sign_checkpoint
    from caseledger.verify.note import Checkpoint, open_checkpoint

    honest = sign_checkpoint(ledger, signer).note
    report = verify(ledger, checkpoint=HeldCheckpoint(honest, signer.verifier_key))
    assert report.ok and any("its customer map is theirs" in note for note in report.notes), report.notes
    held = open_checkpoint(honest, signer.verifier_key)
    lying = Checkpoint(held.origin, held.size, held.root,  # the log's root, a map that forgot a case
                       (held.extensions[0], "caseledger/customers " + base64.b64encode(bytes(32)).decode()))
    report = verify(ledger, checkpoint=HeldCheckpoint(signer.sign(lying), signer.verifier_key))
    assert "checkpoint-map" in {d.code for d in report.errors}


def test_two_appenders_agree_on_the_map_whoever_stores_it_first(ledger: CaseLedger, two_cases: tuple[str, str],
                                                                 signer: CheckpointSigner, clock: FakeClock) -> None:
    """The publisher's appender and `audit checkpoint`'s, each with its map in memory: neither signs a stale map."""
    from caseledger.ledger.transparency.checkpoints import sign_checkpoint

    publisher, other = MerkleLog.of(ledger), MerkleLog.of(ledger)
    publisher.catch_up(ledger)
    ledger.record_contact(contact("m7"))
    sign_checkpoint(ledger, signer, tree=other)  # the other appender goes further and stores its map
    ledger.record_contact(contact("m8"))
    stored = sign_checkpoint(ledger, signer, tree=publisher)  # behind, moved: follows, then signs
    values = {}
    for n in ledger.recorder.select_notifications(start=1, limit=10_000):
        who = event_customer(n.state)
        if who:
            values.setdefault(who, []).append(hashlib.sha256(n.state).digest())
    expected = map_root_of({customer_key(c): value_hash(len(h), chain(h)) for c, h in values.items()})
    assert stored.tree_size == MerkleLog.of(ledger).size
    assert f"caseledger/customers {base64.b64encode(expected).decode()}" in stored.note


def test_bench_proofs_measures_the_customer_map_proof() -> None:
    """`caseledger bench proofs` at its smallest: the map proof's size and time beside the inclusion proofs'."""
    from caseledger.cli.bench.proofs_bench import bench_proofs

    result = bench_proofs(leaves=2000, customer_events=20)
    assert result.map_customers > 300 and 5 <= result.map_proof_hashes <= 20
    assert 0 < result.map_proof_bytes < 1200 and result.map_verify_ms > 0


def test_the_map_holds_no_identity_nor_anything_computed_from_one(ledger: CaseLedger, two_cases: tuple[str, str],
                                                                  signer: CheckpointSigner, tmp_path: Path) -> None:
    """Attack: whoever reads the map's rows or an export's proof tries the identities they can think of."""
    import sqlite3

    from caseledger.ledger.transparency.checkpoints import sign_checkpoint

    sign_checkpoint(ledger, signer)
    document = export(ledger, tmp_path / "jane.json")
    absent = MerkleLog.of(ledger).customers.proof("cus-0000000000000000", MerkleLog.of(ledger).size)
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        rows = b"".join(bytes(v) if isinstance(v, bytes) else str(v).encode()
                        for table in ("merkle_map_nodes", "merkle_map_customers", "merkle_map_state")
                        for row in db.execute(f"SELECT * FROM {table}") for v in row)
    seen = rows + json.dumps(document["transparency"]).encode() + json.dumps(absent.as_dict()).encode()
    for identity in ("email:jane@example.com", "jane@example.com", "email:other@example.com"):
        for guess in (identity.encode(), customer_key(identity), hashlib.sha256(identity.encode()).digest()):
            assert guess not in seen and base64.b64encode(guess) not in seen, identity


def test_the_maps_hashing_is_frozen_by_its_vectors() -> None:
    """tests/support/vectors/customer_map.json: what every checkpoint and export signed so far relies on (and what
    another implementation, e.g. the Go interop program, checks itself against)."""
    vectors = json.loads((Path(__file__).parents[1] / "support" / "vectors" / "customer_map.json").read_text())
    values = {customer_key(c): value_hash(len(e), chain(bytes.fromhex(h) for h in e))
              for c, e in vectors["customers"].items()}
    root = map_root_of(values)
    assert base64.b64encode(root).decode() == vectors["root"]
    for case in vectors["proofs"]:
        events = [bytes.fromhex(h) for h in case["event_hashes"]]
        assert base64.b64encode(customer_key(case["customer_id"])).decode() == case["key"]
        assert base64.b64encode(chain(events)).decode() == case["head"]
        proof = MapProof.from_dict(case["proof"])
        assert root_from_proof(case["customer_id"], case["count"], chain(events), proof) == root
