"""The ledger against a real witness: torchwood's litewitness v0.6.1 (tests/support/litewitness.py), not only itself.

Each test gives the witness a log of its own origin. The ledger submits its checkpoints by C2SP tlog-witness
and keeps the cosignatures, which our verifier checks with the key litewitness announced; a split view (two
checkpoints of one size, two roots, both signed by the ledger's key) is refused by the witness (422) and
named by the verifier (``split-view``); and the issue's finding: a log rolled back (its last events
deleted, tree and all) and written again still answered ``consistent`` to ``audit consistency`` against
the auditor's older checkpoint — with the witness's cosignature asked for, it is refused, because the
witness will not cosign the rewritten log.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.reports.export import export_history
from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner, generate_key_file
from caseledger.ledger.transparency.checkpoints import Checkpointer, sign_checkpoint
from caseledger.ledger.transparency.proofs import check_consistency
from caseledger.ledger.transparency.tree import MerkleLog
from caseledger.ledger.transparency.witnesses import cosigned_note, latest_cosigned_note, witness_now
from caseledger.verify.cosignatures import WitnessPolicy, check_cosignatures
from caseledger.verify.note import Checkpoint, open_checkpoint
from tests.support.contacts import cli, draft
from tests.support.environment import ledger_settings
from tests.support.fake_witness import WitnessSigner
from tests.support.litewitness import LiteWitness


class Deployment:
    """A SQLite ledger of an origin of its own, its signing key, and the witness configured for it."""

    def __init__(self, folder: Path, witness: LiteWitness, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder = folder
        self.origin = f"ledger.test/{uuid.uuid4().hex[:8]}"
        self.key_file = folder / "signing.key"
        self.signer: CheckpointSigner = generate_key_file(self.key_file, self.origin)
        self.database = str(folder / "ledger.sqlite")
        self.witness = witness
        self.policy = WitnessPolicy.k_of(1, [witness.key])
        witness.add_log(self.origin, str(self.signer.verifier_key))
        for name, value in {"CASELEDGER_ORIGIN": self.origin, "CASELEDGER_SIGNING_KEY_FILE": str(self.key_file),
                            "CASELEDGER_DATABASE": self.database,
                            "CASELEDGER_WITNESSES": f"lw {witness.key} {witness.url}"}.items():
            monkeypatch.setenv(name, value)
        self.ledgers: list[CaseLedger] = []

    def ledger(self, database: str | None = None) -> CaseLedger:
        ledger = CaseLedger(ledger_settings(database=database or self.database))
        self.ledgers.append(ledger)
        return ledger

    def close(self) -> None:
        for ledger in self.ledgers:
            ledger.close()


@pytest.fixture
def deployment(tmp_path: Path, litewitness: LiteWitness, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    built = Deployment(tmp_path, litewitness, monkeypatch)
    yield built
    built.close()


def record(ledger: CaseLedger, *numbers: int) -> None:
    for n in numbers:
        ledger.record_contact(draft(f"lw-{n}"))


def test_the_ledger_s_checkpoints_are_cosigned_by_litewitness_and_verify_in_our_verifier(
        deployment: Deployment, litewitness: LiteWitness) -> None:
    assert f"vkey={litewitness.key}" in litewitness.logged()  # the key it announces is the one we trust
    ledger = deployment.ledger()
    record(ledger, 1, 2)
    first = sign_checkpoint(ledger, deployment.signer)
    assert witness_now(ledger, first) == {"lw": "cosigned"}
    note = cosigned_note(ledger, first)
    cosigned = check_cosignatures(note, deployment.signer.verifier_key, deployment.policy)
    assert cosigned.checkpoint.size == first.tree_size and set(cosigned.witnesses) == {litewitness.key.name}
    # and in Go: x/mod's note.Open with the ledger's key and torchwood's cosignature verifier
    go = litewitness.go_check(note, str(deployment.signer.verifier_key))
    assert go.returncode == 0 and go.stdout.split() == [deployment.origin, litewitness.key.name], go.stderr
    forged = note[:-3] + ("A" if note[-3] != "A" else "B") + note[-2:]
    assert litewitness.go_check(forged, str(deployment.signer.verifier_key)).returncode == 1
    # the checkpointer service: each checkpoint on the submitter's thread, from the witness's size with a proof
    record(ledger, 3, 4, 5)
    stop = threading.Event()
    stop.set()  # one pass: append, sign once more on the way out, submit before closing
    Checkpointer(ledger, deployment.signer, interval_s=0).run(stop)
    latest = ledger.storage.merkle().latest_checkpoint()
    assert latest is not None and latest.tree_size > first.tree_size
    latest_note = latest_cosigned_note(ledger)
    assert latest_note is not None
    assert check_cosignatures(latest_note, deployment.signer.verifier_key, deployment.policy)
    assert litewitness.go_check(latest_note, str(deployment.signer.verifier_key)).returncode == 0
    # an export carries the cosigned checkpoint; the standalone verifier holds it to the policy
    export = deployment.folder / "jane.json"
    export_history(ledger, "email:jane@example.com", "json", export)
    verify = [sys.executable, "-m", "caseledger.verify", str(export), "--key", str(deployment.signer.verifier_key)]
    assert subprocess.run([*verify, "--witness", str(litewitness.key)], capture_output=True).returncode == 0
    other = deployment.folder / "policy.txt"
    other.write_text(f"witness lw {litewitness.key}\nwitness x {WitnessSigner('x.test/w').key}\ngroup both all lw x\n"
                     "quorum both\n")
    refused = subprocess.run([*verify, "--witness-policy", str(other), "--json"], capture_output=True, text=True)
    assert refused.returncode == 1 and {f["code"] for f in json.loads(refused.stdout)["findings"]} == {"witness-policy"}


def test_a_split_view_is_refused_by_the_witness_and_named_by_the_verifier(
        deployment: Deployment, litewitness: LiteWitness) -> None:
    ledger = deployment.ledger()
    record(ledger, 1, 2, 3)
    honest = sign_checkpoint(ledger, deployment.signer)
    assert witness_now(ledger, honest) == {"lw": "cosigned"}
    # the same key signs another root for the same size: the view shown to someone else
    shown = deployment.signer.sign(Checkpoint(deployment.origin, honest.tree_size, b"\x07" * 32))
    with httpx.Client(timeout=10) as client:
        conflict = client.post(f"{litewitness.url}/add-checkpoint", content=f"old 0\n\n{shown}")
        assert conflict.status_code == 409 and conflict.text == f"{honest.tree_size}\n"
        assert conflict.headers["content-type"] == "text/x.tlog.size"
        split = client.post(f"{litewitness.url}/add-checkpoint", content=f"old {honest.tree_size}\n\n{shown}")
        assert split.status_code == 422  # never cosigned
    kept = deployment.folder / "kept.checkpoint"
    kept.write_text(cosigned_note(ledger, honest))
    other = deployment.folder / "shown.checkpoint"
    other.write_text(shown)
    run = subprocess.run([sys.executable, "-m", "caseledger.verify", "checkpoint", str(kept), str(other), "--key",
                          str(deployment.signer.verifier_key), "--json"], capture_output=True, text=True)
    assert run.returncode == 1
    assert {f["code"] for f in json.loads(run.stdout)["findings"]} == {"split-view"}
    # and the split view, held to the witness policy, is refused on its own: no witness cosigned it
    run = subprocess.run([sys.executable, "-m", "caseledger.verify", "checkpoint", str(other), "--key",
                          str(deployment.signer.verifier_key), "--witness", str(litewitness.key)],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "[witness-policy]" in run.stdout


def test_a_log_rolled_back_and_written_again_is_consistent_to_the_ledger_but_not_to_its_witness(
        deployment: Deployment, litewitness: LiteWitness) -> None:
    """The finding: "after deleting the last 3 events, `audit consistency` still answers consistent"."""
    ledger = deployment.ledger()
    record(ledger, 1, 2)
    kept = sign_checkpoint(ledger, deployment.signer)
    assert witness_now(ledger, kept) == {"lw": "cosigned"}
    (deployment.folder / "kept.checkpoint").write_text(cosigned_note(ledger, kept))
    ledger.close()
    backup = deployment.folder / "backup.sqlite"
    shutil.copy(deployment.database, backup)
    ledger = deployment.ledger()
    record(ledger, 3)  # its events: the last ones, cosigned by the witness and then deleted
    cosigned = sign_checkpoint(ledger, deployment.signer)
    assert witness_now(ledger, cosigned) == {"lw": "cosigned"}
    ledger.close()
    shutil.copy(backup, deployment.database)  # the last events deleted, the tree and checkpoints with them
    ledger = deployment.ledger()
    record(ledger, 4, 5)  # and the log written again, past the size the witness cosigned
    rewritten = sign_checkpoint(ledger, deployment.signer)
    assert rewritten.tree_size > cosigned.tree_size
    assert witness_now(ledger, rewritten) == {"lw": "refused: inconsistent with what it cosigned"}
    held = (deployment.folder / "kept.checkpoint").read_text()
    # the ledger's own tables agree with themselves: without a witness, the auditor is told "consistent"
    assert check_consistency(ledger, held, deployment.signer.verifier_key).code == "consistent"
    # with the witness's cosignature asked for, the rewritten log is refused, in the library and by the CLI
    refused = check_consistency(ledger, held, deployment.signer.verifier_key, deployment.policy)
    assert refused.code == "witness-policy"
    kept_file = str(deployment.folder / "kept.checkpoint")
    result = cli("audit", "consistency", kept_file, "--witness", str(litewitness.key), "--json", code=5)
    assert json.loads(result.stdout)["code"] == "witness-policy"
    # the witness's cosigned checkpoint and the rewritten log's at that size are two roots for one size
    witnessed = open_checkpoint(cosigned.note, deployment.signer.verifier_key)
    assert witnessed.root != MerkleLog.of(ledger).root_at(cosigned.tree_size)


def test_the_publisher_submits_what_it_signs_on_a_thread_of_its_own(
        deployment: Deployment, litewitness: LiteWitness, kafka_bootstrap: str) -> None:
    from caseledger.ledger.kafka.publisher import KafkaEventPublisher
    from tests.support.kafka_topics import fresh_topics

    settings = fresh_topics(kafka_bootstrap, partitions=1)
    ledger = deployment.ledger()
    record(ledger, 1, 2)
    publisher = KafkaEventPublisher(deployment.ledger(), settings, batch_size=5, signer=deployment.signer,
                                    checkpoint_interval_s=0)
    assert publisher.witnesses is not None
    stop = threading.Event()
    thread = threading.Thread(target=publisher.run, args=(stop,))
    thread.start()
    try:
        record(ledger, 3, 4)
        target = ledger.recorder.max_notification_id()
        deadline = time.monotonic() + 60
        while publisher.stats.position < target and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(60)
    latest = ledger.storage.merkle().latest_checkpoint()
    assert latest is not None and publisher.stats.checkpoints >= 1 and not thread.is_alive()
    # the last checkpoint, signed on the way out, was submitted before the publisher returned
    cosigned = check_cosignatures(cosigned_note(ledger, latest), deployment.signer.verifier_key, deployment.policy)
    assert cosigned.checkpoint.size == latest.tree_size == publisher.stats.position
