"""A full ledger generated fast (issue 29): the backend's bulk load writes what the ledger's own writes would have.

The stamped stories of ``bench verify`` are written once through the recorder's ``insert_events`` (the
ledger's write path, what generation used before) and once through ``load_events`` (PostgreSQL binary
``COPY``, SQLite's long transactions), into two fresh stores of the same backend: the rows are the same,
and the loaded ledger passes ``audit verify``, its events decode, its notification ids are gapless, its
data keys open its sealed texts, the Merkle tree builds over it, and the ledger's next write follows it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent

from caseledger.cli.bench import verify_bench
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.audit import verify
from caseledger.ledger.domain.values import Channel, ContactDraft, Identity
from caseledger.ledger.store import bulk_load
from caseledger.ledger.transparency.tree import MerkleLog
from caseledger.verify.rfc9162 import leaf_hash, tree_hash
from tests.support.environment import ledger_settings
from tests.support.postgres import PostgresServer

STORIES = 12


@pytest.fixture(params=["sqlite", "postgres"])
def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[CaseLedger, CaseLedger]]:
    """Two fresh, empty stores of one backend, a ledger on each."""
    if request.param == "sqlite":
        urls = [str(tmp_path / "written.sqlite"), str(tmp_path / "loaded.sqlite")]
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        urls = [server.new_database(), server.new_database()]
    ledgers = [CaseLedger(ledger_settings(database=url)) for url in urls]
    yield ledgers[0], ledgers[1]
    for ledger in ledgers:
        ledger.close()


def _rows(ledger: CaseLedger) -> list[tuple[int, str, int, str, bytes]]:
    return [(n.id, str(n.originator_id), n.originator_version, n.topic, bytes(n.state))
            for n in ledger.recorder.select_notifications(start=1, limit=10_000)]


def test_the_bulk_load_writes_what_the_ledger_writes_and_audit_verify_passes(
        two_stores: tuple[CaseLedger, CaseLedger], monkeypatch: pytest.MonkeyPatch) -> None:
    written, loaded = two_stores
    monkeypatch.setattr(bulk_load, "PER_TRANSACTION", 50)  # several transactions, and COPY buffers, in a small load
    monkeypatch.setattr(bulk_load, "_COPY_BUFFER", 7)
    template, aggregate_ids, event_ids = verify_bench._story(loaded)
    rows = list(verify_bench._stamped_rows(template, aggregate_ids, event_ids, STORIES, "f1a2", None))
    keys = loaded.data_keys.unsaved()
    written.recorder.insert_events([StoredEvent(*row) for row in rows], new_keys=keys)
    assert loaded.recorder.load_events(iter(rows), new_keys=keys) == len(rows) == STORIES * len(template)
    loaded.data_keys.saved(keys)

    assert _rows(loaded) == _rows(written)  # same bytes, same positions
    if loaded.storage.backend == "PostgreSQL":  # vacuumed and analysed: no autovacuum starts on it during a bench
        with loaded.recorder.datastore.transaction(commit=False) as curs:
            curs.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)",
                         (f"{loaded.recorder.datastore.schema}.{loaded.recorder.events_table_name}",))
            assert curs.fetchone()["reltuples"] == len(rows)
    assert [row[0] for row in _rows(loaded)] == list(range(1, len(rows) + 1))  # gapless
    assert all(loaded.mapper.to_domain_event(n) for n in loaded.recorder.select_notifications(start=1, limit=10_000))
    report = verify(loaded)
    assert report.ok and report.events == len(rows), "\n".join(d.line() for d in report.discrepancies)

    record = json.dumps(loaded.case_record("CL-F1000-00011"))  # a story's case, its sealed texts opened
    assert "refund has not arrived" in record and "enc:" not in record
    tree = MerkleLog.of(loaded)
    assert tree.catch_up(loaded) == len(rows)
    reference = MerkleLog.of(written)
    reference.catch_up(written)
    assert tree.root == reference.root

    # The ledger's own next write follows the loaded rows (ids, keys not stored twice).
    draft = ContactDraft(channel=Channel.EMAIL, channel_message_id="after-the-load", identity=Identity(
        kind="email", value="after@load.example"), items=("Q",), subject="After", body="A contact after the load.")
    outcome: Any = loaded.record_contact(draft)
    assert outcome.reference
    assert loaded.recorder.max_notification_id() > len(rows)
    assert verify(loaded).ok


def test_generate_ledger_fills_through_the_bulk_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "g.sqlite")))
    inserted: list[int] = []
    insert = ledger.recorder.insert_events
    monkeypatch.setattr(ledger.recorder, "insert_events", lambda events, **k: inserted.append(len(events)) or insert(
        events, **k))
    total = verify_bench.generate_ledger(ledger, 500) + verify_bench.generate_ledger(ledger, 100, open_cases=True)
    assert inserted == [] and ledger.recorder.max_notification_id() == total
    report = verify(ledger)
    assert report.ok and report.events == total
    ledger.close()


def test_the_tree_catches_up_over_a_filled_log_from_plain_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tree over a generated log reads plain rows (no notification objects: a UUID parsed per event was a
    fifth of its time at 1 M events), in pages that cross tiles, and its root is RFC 6962's over the events."""
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "t.sqlite")))
    total = verify_bench.generate_ledger(ledger, 700)
    states = [bytes(n.state) for n in ledger.recorder.select_notifications(start=1, limit=10_000)]

    def refused(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the tree read the log as notifications")

    monkeypatch.setattr(ledger.recorder, "select_notifications", refused)
    tree = MerkleLog.of(ledger)
    assert tree.catch_up(ledger, batch=300, limit=400) == 400  # a page cut by the limit
    assert tree.catch_up(ledger, batch=300) == total - 400
    assert tree.size == total and tree.last_position == total
    assert tree.root == tree_hash([leaf_hash(hashlib.sha256(s).digest()) for s in states])
    assert MerkleLog.of(ledger).root == tree.root  # as stored
    ledger.close()


def _stamped_as_before(template: list[Any], aggregate_ids: list[bytes], event_ids: list[bytes], stories: int,
                       run: str) -> list[tuple[Any, ...]]:
    """The stamping as it was before issue 29's fill (a replace per text, a splice of the hash): the reference."""
    from caseledger.ledger.domain.directory import case_id_for
    rows = []
    for n in range(stories):
        replace = {b"zq000000000": f"zq{n:09d}".encode(),
                   b"CL-ZQ000-00000": f"CL-{run[:2].upper()}{n // 100000:03d}-{n % 100000:05d}".encode()}
        new_ids = [f"{n:08x}-{run}-4{i:03x}-8000-{0xbe0c4:012x}".encode() for i in range(len(aggregate_ids))]
        new_ids[0] = str(case_id_for(replace[b"CL-ZQ000-00000"].decode())).encode()
        replace.update(zip(aggregate_ids, new_ids, strict=True))
        replace.update((old, f"{n:08x}-{run}-4{i:03x}-9000-{0xe7e47:012x}".encode()) for i, old in enumerate(event_ids))
        heads: list[bytes | None] = [None] * len(aggregate_ids)
        for event in template:
            data = event.data
            for token in event.tokens:
                data = data.replace(token, replace[token])
            head = heads[event.aggregate]
            if head is not None:
                data = data[: event.previous_at] + head + data[event.previous_at + 32 :]
            heads[event.aggregate] = hashlib.sha256(data).digest()
            rows.append((str(new_ids[event.aggregate].decode()), event.version, event.topic, data))
    return rows


def test_stamping_cuts_each_event_once_and_makes_the_same_bytes_as_replacing(tmp_path: Path) -> None:
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "s.sqlite")))
    for open_case in (False, True):
        template, aggregate_ids, event_ids = verify_bench._story(ledger, open_case=open_case)
        rows = [(str(i), v, t, d) for i, v, t, d in verify_bench._stamped_rows(
            template, aggregate_ids, event_ids, 30, "c3d4", None)]
        assert rows == _stamped_as_before(template, aggregate_ids, event_ids, 30, "c3d4")
    ledger.close()
