"""The transparency log on SQLite and PostgreSQL: the stored tree, proofs, checkpoints, consistency outcomes.

The tree in the store is checked against the reference functions (``caseledger.verify.rfc9162``,
themselves checked against published vectors in test_merkle.py); every outcome an auditor can
meet is produced for real: consistent, rolled back, split view, another key.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.audit import verify
from caseledger.ledger.audit.kept_checkpoint import HeldCheckpoint
from caseledger.ledger.domain.values import Channel, ContactDraft, Identity
from caseledger.ledger.errors import TreeMoved
from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner, generate_key_file
from caseledger.ledger.transparency.checkpoints import Checkpointer, sign_checkpoint
from caseledger.ledger.transparency.proofs import check_consistency, event_proofs
from caseledger.ledger.transparency.tree import MerkleLog
from caseledger.verify.note import open_checkpoint
from caseledger.verify.rfc9162 import leaf_hash, tree_hash, verify_consistency, verify_inclusion
from tests.support.environment import ledger_settings


def contact(n: int) -> ContactDraft:
    return ContactDraft(channel=Channel.EMAIL, channel_message_id=f"t{n}",
                        identity=Identity.parse(f"email:c{n % 3}@example.com"), items=(f"question {n}",),
                        body=f"message {n}")


def event_hashes(ledger: CaseLedger) -> list[tuple[int, bytes]]:
    return [(n.id, hashlib.sha256(n.state).digest()) for n in ledger.recorder.select_notifications(start=1, limit=10**6)]


@pytest.fixture
def signer(tmp_path: Path) -> CheckpointSigner:
    return generate_key_file(tmp_path / "signing.key", "caseledger")


def test_the_stored_tree_is_the_rfc_tree_of_the_log_and_its_proofs_verify(
        make_ledger: Callable[..., CaseLedger], signer: CheckpointSigner) -> None:
    ledger = make_ledger()
    for n in range(7):
        ledger.record_contact(contact(n))
    tree = MerkleLog.of(ledger)
    assert tree.catch_up(ledger, batch=5) == len(event_hashes(ledger))
    leaves = [leaf_hash(d) for _, d in event_hashes(ledger)]
    assert tree.root == tree_hash(leaves)
    # a second appender sees the tree move and writes nothing; reloading it gives the same frontier
    other = MerkleLog.of(ledger)
    ledger.record_contact(contact(7))
    tree.catch_up(ledger)
    with pytest.raises(TreeMoved):
        other.append([(10**9, b"\x00" * 32)])
    other.reload()
    assert other.root == tree.root == tree_hash([leaf_hash(d) for _, d in event_hashes(ledger)])
    size = tree.size
    for old in (1, 2, 5, size // 2, size - 1, size):
        assert tree.root_at(old) == tree_hash(leaves[:old]) if old <= len(leaves) else True
        proof = tree.consistency_proof(old, size)
        verify_consistency(old, size, tree.root_at(old), tree.root, proof)
    checkpoint = sign_checkpoint(ledger, signer, tree=tree)
    assert sign_checkpoint(ledger, signer, tree=tree) == checkpoint  # nothing new: the same checkpoint
    opened = open_checkpoint(checkpoint.note, signer.verifier_key, origin=ledger.settings.origin)
    positions = [p for p, _ in event_hashes(ledger)]
    digests = dict(event_hashes(ledger))
    for proof in event_proofs(ledger, positions, checkpoint):
        assert proof.proof is not None and proof.leaf_index is not None
        verify_inclusion(proof.leaf_index, opened.size, leaf_hash(digests[proof.position]), proof.proof, opened.root)
    # an event after the checkpoint has no proof against it
    ledger.record_contact(contact(8))
    later = [p for p, _ in event_hashes(ledger)][-1]
    MerkleLog.of(ledger).catch_up(ledger)
    assert event_proofs(ledger, [later], checkpoint)[0].proof is None


def test_the_checkpointer_service_signs_while_the_log_grows_and_once_more_on_stop(
        make_ledger: Callable[..., CaseLedger], signer: CheckpointSigner) -> None:
    ledger = make_ledger()
    service_ledger = make_ledger()
    ledger.record_contact(contact(1))
    service = Checkpointer(service_ledger, signer, interval_s=0, idle_sleep_s=0.01)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,))
    thread.start()
    try:
        for n in range(2, 5):
            ledger.record_contact(contact(n))
    finally:
        stop.set()
        thread.join(30)
    store = MerkleLog.of(ledger).store
    latest = store.latest_checkpoint()
    assert latest is not None and latest.tree_size == len(event_hashes(ledger))
    assert service.stats.checkpoints >= 1 and service.stats.appended == latest.tree_size


def test_consistency_names_consistent_rolled_back_split_view_and_another_key(
        make_ledger: Callable[..., CaseLedger], signer: CheckpointSigner, tmp_path: Path) -> None:
    ledger = make_ledger()
    for n in range(3):
        ledger.record_contact(contact(n))
    held = sign_checkpoint(ledger, signer).note
    ledger.record_contact(contact(3))
    sign_checkpoint(ledger, signer)
    result = check_consistency(ledger, held, signer.verifier_key)
    assert result.ok and result.code == "consistent" and result.proof
    # another key: the auditor's key is not the one that signed
    stranger = generate_key_file(tmp_path / "other.key", "caseledger")
    assert check_consistency(ledger, held, stranger.verifier_key).code == "checkpoint-key"
    assert check_consistency(ledger, held.replace("\n", "\n\n", 1).replace("\n\n\n", "\n\n"),
                             signer.verifier_key).code in ("checkpoint-signature", "checkpoint-key")
    # split view: the ledger signs another root for the size the auditor holds
    size = open_checkpoint(held, signer.verifier_key).size
    from caseledger.ledger.store_ports import StoredCheckpoint
    from caseledger.verify.note import Checkpoint

    fake = Checkpoint(ledger.settings.origin, size, b"\x07" * 32)
    store = MerkleLog.of(ledger).store
    store.insert_checkpoint(StoredCheckpoint(size, fake.root, signer.sign(fake), store.latest_checkpoint().signed_at,  # type: ignore[union-attr]
                                             signer.verifier_key.key_id.hex()))
    split = check_consistency(ledger, held, signer.verifier_key)
    assert split.code == "split-view" and "two different roots" in split.message
    # rolled back: the auditor holds a checkpoint larger than the ledger's latest
    bigger = signer.sign(Checkpoint(ledger.settings.origin, 10**6, b"\x01" * 32))
    sign_checkpoint(ledger, signer, force=True)
    assert check_consistency(ledger, bigger, signer.verifier_key).code == "rolled-back"


def test_audit_verify_checkpoint_holds_and_reports_later_events_as_uncommitted(
        make_ledger: Callable[..., CaseLedger], signer: CheckpointSigner, tmp_path: Path) -> None:
    ledger = make_ledger()
    for n in range(4):
        ledger.record_contact(contact(n))
    note = sign_checkpoint(ledger, signer).note
    ledger.record_contact(contact(4))
    report = verify(ledger, checkpoint=HeldCheckpoint(note, signer.verifier_key))
    assert report.ok and "checkpoint" in report.checks
    assert [d.code for d in report.warnings if d.code == "uncommitted"] == ["uncommitted"]
    stranger = generate_key_file(tmp_path / "other.key", "caseledger")
    wrong = verify(ledger, checkpoint=HeldCheckpoint(note, stranger.verifier_key))
    assert not wrong.ok and {d.code for d in wrong.errors} == {"checkpoint-key"}
    altered = verify(ledger, checkpoint=HeldCheckpoint(note.replace("caseledger\n", "caseledgerX\n", 1),
                                                       signer.verifier_key))
    assert {d.code for d in altered.errors} == {"checkpoint-signature"}


def test_every_export_carries_the_checkpoint_and_proofs_and_the_verifier_reads_json_and_avro(
        make_ledger: Callable[..., CaseLedger], signer: CheckpointSigner, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import fastavro

    from caseledger.ledger.reports.export import export_history
    from caseledger.verify.avro import read_container
    from caseledger.verify.history import check_history, read_export

    # the signer fixture's file; set before the ledger is built, as a root reads its settings once
    monkeypatch.setenv("CASELEDGER_SIGNING_KEY_FILE", str(tmp_path / "signing.key"))
    ledger = make_ledger()
    for n in range(4):
        ledger.record_contact(contact(n))
    for fmt in ("json", "avro", "html"):
        export_history(ledger, "email:c1@example.com", fmt, tmp_path / f"jane.{fmt}")
    latest = MerkleLog.of(ledger).store.latest_checkpoint()
    assert latest is not None and latest.note in (tmp_path / "jane.html").read_text().replace("&#x27;", "'")
    # the stdlib Avro reader reads exactly what fastavro reads
    with (tmp_path / "jane.avro").open("rb") as f:
        reference = list(fastavro.reader(f))
    metadata, records = read_container(tmp_path / "jane.avro")
    assert [(r["position"], r["stored_bytes"], r["inclusion_proof"]) for r in records] == [
        (r["position"], r["stored_bytes"], r["inclusion_proof"]) for r in reference]
    assert b"checkpoint" in metadata["caseledger.transparency"]
    for fmt in ("json", "avro"):
        result = check_history(read_export(tmp_path / f"jane.{fmt}"), signer.verifier_key)
        assert result.ok and result.included == result.events > 0, (fmt, [f.line() for f in result.findings])
    # a record altered inside the Avro file (its stored bytes) is named
    document = read_export(tmp_path / "jane.avro")
    document["events"][1]["stored_bytes_base64"] = document["events"][0]["stored_bytes_base64"]
    assert {f.code for f in check_history(document, signer.verifier_key).findings} >= {"event-hash", "inclusion"}


def backup(database: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A copy of the whole store as it is now (its ledgers must be closed): a file copy, or a template copy."""
    import shutil
    import uuid

    if not database.startswith("postgresql://"):
        target = tmp_path / f"backup-{uuid.uuid4().hex[:6]}.sqlite"
        shutil.copy(database, target)
        return str(target)
    import psycopg

    server = request.getfixturevalue("postgres")
    name = f"b_{uuid.uuid4().hex[:12]}"
    from urllib.parse import urlsplit

    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{urlsplit(database).path.lstrip("/")}"')
    base, _, query = database.partition("?")
    return base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")


def test_a_log_restored_from_a_backup_and_written_again_is_named_rolled_back(
        database: str, signer: CheckpointSigner, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The operator restores last week's backup (events, tree and all) and goes on: the auditor's checkpoint tells."""
    ledger = CaseLedger(ledger_settings(database=database))
    for n in range(3):
        ledger.record_contact(contact(n))
    sign_checkpoint(ledger, signer)
    ledger.close()
    restored = backup(database, request, tmp_path)
    ledger = CaseLedger(ledger_settings(database=database))
    try:
        for n in range(3, 6):
            ledger.record_contact(contact(n))
        held = sign_checkpoint(ledger, signer).note
    finally:
        ledger.close()
    other = CaseLedger(ledger_settings(database=restored))
    try:
        for n in range(10, 14):  # other events where the held checkpoint's were
            other.record_contact(contact(n))
        assert sign_checkpoint(other, signer).tree_size > open_checkpoint(held, signer.verifier_key).size
        result = check_consistency(other, held, signer.verifier_key)
        assert result.code == "rolled-back" and "does not extend" in result.message
        # audit verify --checkpoint on the restored store names it too
        report = verify(other, checkpoint=HeldCheckpoint(held, signer.verifier_key))
        assert "checkpoint-mismatch" in {d.code for d in report.errors}
    finally:
        other.close()


@pytest.mark.kafka
def test_the_publisher_publishes_each_checkpoint_once_after_the_events_it_covers(
        sqlite_ledger: CaseLedger, signer: CheckpointSigner, kafka_bootstrap: str) -> None:
    import time
    import uuid

    from caseledger.ledger.kafka.events_record import position_of
    from caseledger.ledger.kafka.publisher import KafkaEventPublisher
    from caseledger.ledger.kafka.topics import ensure_topics
    from caseledger.ledger.settings import KafkaSettings
    from tests.support.kafka_topics import read_topic

    run = uuid.uuid4().hex[:8]
    settings = KafkaSettings.resolve(bootstrap_servers=kafka_bootstrap, intake_topic=f"cp-in-{run}",
                                     events_topic=f"cp-{run}.events")
    assert settings.checkpoints_topic == f"cp-{run}.checkpoints"
    assert "created (1 partitions)" in ensure_topics(settings)[settings.checkpoints_topic]
    ledger = sqlite_ledger
    notes = []
    for n in range(2):
        ledger.record_contact(contact(n))
        notes.append(sign_checkpoint(ledger, signer).note)

    def publish(until_checkpoints: int) -> KafkaEventPublisher:
        publisher = KafkaEventPublisher(ledger, settings, batch_size=200)
        stop = threading.Event()
        thread = threading.Thread(target=publisher.run, args=(stop,))
        thread.start()
        deadline = time.monotonic() + 60
        try:
            while publisher.stats.checkpoints < until_checkpoints and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.5)  # an idle look more: nothing else is published
        finally:
            stop.set()
            thread.join(30)
        return publisher

    assert publish(2).stats.checkpoints == 2
    ledger.record_contact(contact(5))
    notes.append(sign_checkpoint(ledger, signer).note)
    assert publish(1).stats.checkpoints == 1  # resumed after the topic's last checkpoint
    records = read_topic(settings, settings.checkpoints_topic)
    assert [r.value.decode() for r in records] == notes
    assert [position_of(r.headers) for r in records] == [open_checkpoint(n, signer.verifier_key).size for n in notes]
    assert {r.key for r in records} == {ledger.settings.origin.encode()}


@pytest.mark.kafka
def test_a_publisher_with_the_signing_key_keeps_the_tree_signs_and_publishes_checkpoints(
        make_ledger: Callable[..., CaseLedger], signer: CheckpointSigner, kafka_bootstrap: str) -> None:
    import time
    import uuid

    from caseledger.ledger.kafka.publisher import KafkaEventPublisher
    from caseledger.ledger.kafka.topics import ensure_topics
    from caseledger.ledger.settings import KafkaSettings
    from tests.support.kafka_topics import read_topic

    run = uuid.uuid4().hex[:8]
    settings = KafkaSettings.resolve(bootstrap_servers=kafka_bootstrap, intake_topic=f"cps-in-{run}",
                                     events_topic=f"cps-{run}.events")
    ensure_topics(settings)
    ledger = make_ledger()
    ledger.record_contact(contact(0))
    MerkleLog.of(ledger).catch_up(ledger)  # the tree may be ahead of the publisher (an `audit checkpoint`)
    publisher = KafkaEventPublisher(make_ledger(), settings, batch_size=3, signer=signer, checkpoint_interval_s=0)
    stop = threading.Event()
    thread = threading.Thread(target=publisher.run, args=(stop,))
    thread.start()
    try:
        for n in range(1, 4):
            ledger.record_contact(contact(n))
        target = ledger.recorder.max_notification_id()
        deadline = time.monotonic() + 60
        while publisher.stats.position < target and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(30)
    tree = MerkleLog.of(ledger)
    assert tree.size == len(event_hashes(ledger))
    assert tree.root == tree_hash([leaf_hash(d) for _, d in event_hashes(ledger)])
    latest = tree.store.latest_checkpoint()
    assert latest is not None and latest.tree_size == tree.size and publisher.stats.checkpoints >= 2
    notes = [r.value.decode() for r in read_topic(settings, settings.checkpoints_topic)]
    assert notes[-1] == latest.note
    sizes = [open_checkpoint(n, signer.verifier_key).size for n in notes]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
