"""Each port of ``ledger/store_ports.py`` has one contract, run on SQLite and on a real PostgreSQL.

A contract is a base class of tests written against the port alone; a backend is a mixin that gives
the fresh database (``OnSQLite``, ``OnPostgres``); each ``Test<Port>On<Backend>`` class is one pair. The
provider under test is the one a ledger's construction builds (``ledger.storage``), so the contracts
check the composition too. The events' port (``LedgerRecorder``) has its contract in test_store_contract.py,
beside eventsourcing's own recorder contracts.
"""

from __future__ import annotations

import hashlib
import random
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent, Tracking

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.audit import store_snapshot
from caseledger.ledger.avro.envelope import AvroEnvelopeDecoder, parse_envelope
from caseledger.ledger.domain.values import ContactDraft, Identity
from caseledger.ledger.errors import ConflictError, TreeMoved
from caseledger.ledger.service.idempotency import request_digest
from caseledger.ledger.store.data_key_table import TABLE as KEYS_TABLE
from caseledger.ledger.store_ports import (
    AdapterKeyStore,
    CosignatureStore,
    DataKeyRow,
    DataKeyStore,
    IdempotencyStore,
    LedgerRecorder,
    MapRows,
    MerkleStore,
    PrincipalStore,
    StorageProvider,
    StoredCheckpoint,
    StoredCosignature,
    Tile,
)
from caseledger.ledger.transparency.tree import MerkleLog
from caseledger.verify.completeness import chain, customer_key, map_root_of, root_from_proof, value_hash
from caseledger.verify.rfc9162 import leaf_hash, tree_hash, verify_consistency, verify_inclusion
from tests.support.clock import FakeClock
from tests.support.environment import ledger_settings
from tests.support.postgres import PostgresServer

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)

# -- the backends --------------------------------------------------------------------------------------------


class OnSQLite:
    """A new SQLite file for each test."""

    @pytest.fixture
    def database(self, tmp_path: Path) -> str:
        return str(tmp_path / "ledger.sqlite")

    @staticmethod
    def raw_bytes(database: str) -> bytes:
        """Every byte of the database's files: the main file, its WAL and shared memory."""
        return b"".join(f.read_bytes() for f in sorted(Path(database).parent.glob(Path(database).name + "*")))

    @staticmethod
    @contextmanager
    def reader(database: str, *, table: str = KEYS_TABLE) -> Iterator[None]:
        """Another connection holding a read snapshot of the database (read from ``table``) until the block ends."""
        conn = sqlite3.connect(database, isolation_level=None)
        try:
            conn.execute("BEGIN")
            conn.execute(f"SELECT count(*) FROM {table}").fetchall()
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()


class OnPostgres:
    """A new database on the session's PostgreSQL for each test."""

    @pytest.fixture
    def database(self, postgres: PostgresServer) -> str:
        return postgres.new_database()

    @staticmethod
    def raw_bytes(database: str) -> bytes:
        """The keys table's heap file as PostgreSQL wrote it, dead tuples included (read as the server's superuser)."""
        with psycopg.connect(database, autocommit=True) as conn:
            row = conn.execute(f"SELECT pg_read_binary_file(pg_relation_filepath('{KEYS_TABLE}'))").fetchone()
            assert row is not None
            return bytes(row[0])

    @staticmethod
    @contextmanager
    def reader(database: str, *, table: str = KEYS_TABLE) -> Iterator[None]:
        """Another session holding a snapshot (taken reading ``table``: the keys table's lock too), until the block ends."""
        with psycopg.connect(database) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            conn.execute(f"SELECT count(*) FROM {table}").fetchall()
            yield
            conn.rollback()


class StorageContract:
    """What every contract stands on: a ledger on the backend's database, and the provider it was built with."""

    @pytest.fixture
    def ledger(self, database: str, clock: FakeClock) -> Iterator[CaseLedger]:
        ledger = CaseLedger(ledger_settings(database=database), clock=clock)
        yield ledger
        ledger.close()

    @pytest.fixture
    def storage(self, ledger: CaseLedger) -> StorageProvider:
        assert isinstance(ledger.storage, StorageProvider)
        return ledger.storage


class ProviderContract(StorageContract):
    """The store settings choose the provider; it names its backend and where a key file may sit."""

    def test_the_settings_choose_the_provider_of_their_backend(self, ledger: CaseLedger, storage: StorageProvider,
                                                               database: str) -> None:
        assert storage.backend == ledger.settings.store.describe().split(" ")[0]
        assert storage.process_recorder is not None and isinstance(ledger.recorder, LedgerRecorder)
        if storage.backend == "SQLite":
            assert storage.database_file == Path(database)
        else:
            assert storage.database_file is None
        assert storage.principals() is storage.principals()  # built once, its statements with it


class TestProviderOnSQLite(OnSQLite, ProviderContract):
    pass


class TestProviderOnPostgres(OnPostgres, ProviderContract):
    pass


# -- data keys -----------------------------------------------------------------------------------------------


def key(key_id: str, subject: str, wrapped: bytes | None = b"wrapped", kek_id: str = "kek-1") -> DataKeyRow:
    return DataKeyRow(key_id=key_id, subject=subject, kek_id=kek_id, wrapped=wrapped, created_at=NOW.isoformat())


class DataKeysContract(StorageContract):
    """Keys are inserted with the events that first use them, read by subject or id, destroyed for good."""

    @pytest.fixture
    def store(self, storage: StorageProvider) -> DataKeyStore:
        return storage.data_keys()

    def test_new_keys_are_stored_in_the_transaction_of_their_first_events(
            self, ledger: CaseLedger, store: DataKeyStore) -> None:
        event = StoredEvent(uuid4(), 1, "topic", b"state")
        ledger.recorder.insert_events([event], new_keys=[key("k1", "customer-1"), key("k2", "customer-2")])
        assert [r.key_id for r in store.by_subjects(["customer-1", "customer-2"])] == ["k1", "k2"]
        # a transaction refused for its events stores none of its keys
        with pytest.raises(Exception):  # noqa: B017  (eventsourcing's IntegrityError, whatever the backend)
            ledger.recorder.insert_events([event], new_keys=[key("k3", "customer-3")])
        assert store.by_ids(["k3"]) == []

    def test_keys_are_read_by_subject_id_prefix_and_state(self, ledger: CaseLedger, store: DataKeyStore) -> None:
        store.insert_if_absent(key("k1", "customer-1"))
        store.insert_if_absent(key("k1", "customer-1", wrapped=b"another"))  # a second writer changes nothing
        store.insert_if_absent(key("k2", "intake-rejections:2026-03"))
        store.insert_if_absent(key("k3", "intake-rejections:2026-04"))
        assert store.by_ids(["k1", "k1", "missing"]) == [key("k1", "customer-1")]
        many = [f"m{n}" for n in range(450)]  # more than one query's 200 parameters
        for key_id in many:
            store.insert_if_absent(key(key_id, "many"))
        assert len(store.by_ids(many)) == len(many) and len(store.by_subjects(["many"])) == len(many)
        assert [r.key_id for r in store.subjects_like("intake-rejections:")] == ["k2", "k3"]
        assert {r.key_id for r in store.live()} == {"k1", "k2", "k3", *many}
        store.mark("ledger:marker", at=NOW)
        (marker,) = store.by_subjects(["ledger:marker"])
        assert marker.wrapped is None and marker.destroyed_at == NOW.isoformat()
        assert [r.key_id for r in store.destroyed()] == [marker.key_id]

    def test_a_destroyed_key_keeps_its_row_without_its_bytes(self, store: DataKeyStore) -> None:
        store.insert_if_absent(key("k1", "customer-1"))
        store.insert_if_absent(key("k2", "customer-1"))
        store.destroy(["k1"], at=NOW)
        store.destroy([], at=NOW)  # nothing to do
        gone, kept = store.by_subjects(["customer-1"])
        assert (gone.key_id, gone.wrapped, gone.destroyed_at) == ("k1", None, NOW.isoformat())
        assert (kept.key_id, kept.wrapped, kept.destroyed_at) == ("k2", b"wrapped", None)
        assert [r.key_id for r in store.live()] == ["k2"]

    @pytest.mark.parametrize("read", [KEYS_TABLE, "caseledger_snapshot_only"], ids=["keys-read", "snapshot-only"])
    def test_a_destroyed_key_leaves_no_byte_in_the_files_and_a_reader_makes_it_pending(
            self, store: DataKeyStore, database: str, read: str) -> None:
        # "Success reported early": a reader's snapshot kept the wrapped key in the files while erase said erased.
        wrapped = {f"k{n}": random.randbytes(60) for n in range(300)}  # pages split, as a ledger's table does
        for key_id, secret in wrapped.items():
            store.insert_if_absent(key(key_id, f"customer-{key_id}", wrapped=secret))
        assert store.forget_destroyed(within=5)
        assert wrapped["k7"] in self.raw_bytes(database)  # planted: the probe finds what is there
        store.destroy(["k7", "k8"], at=NOW)
        assert store.forget_destroyed(within=5)
        raw = self.raw_bytes(database)
        assert wrapped["k7"] not in raw and wrapped["k8"] not in raw and wrapped["k9"] in raw

        if read != KEYS_TABLE:  # a reader of another table: no lock on the keys, but a snapshot from before
            _make_table(database, read)
        with self.reader(database, table=read):  # a long query, a backup: it sees the keys as they were
            store.destroy(["k9"], at=NOW)
            assert store.forget_destroyed(within=0.3) is False  # pending, said so: never "done" early
        assert store.forget_destroyed(within=5)  # the reader gone, the next call (a tick) finishes it
        assert wrapped["k9"] not in self.raw_bytes(database)
        assert {r.key_id: r.wrapped for r in store.by_ids(["k9", "k10"])} == {"k9": None, "k10": wrapped["k10"]}

    def test_the_files_are_rewritten_only_when_an_erasure_owes_it(self, store: DataKeyStore, database: str) -> None:
        """Before: every ``tick`` rewrote the key table (``VACUUM FULL`` on PostgreSQL), erasure or not, and so
        waited for, and was held pending by, any reader. Now a scrub runs only when an erasure owes one."""
        store.insert_if_absent(key("k1", "customer-1"))
        store.insert_if_absent(key("k2", "customer-2"))
        assert store.forget_destroyed(within=5)  # a table of an earlier release: scrubbed once, then tracked
        with self.reader(database, table=KEYS_TABLE):
            assert store.forget_destroyed(within=0.3)  # nothing owed: nothing to wait for
            store.destroy(["k1"], at=NOW)
            assert store.forget_destroyed(within=0.3) is False  # owed now, and the reader holds it back
        assert store.forget_destroyed(within=5)
        with self.reader(database, table=KEYS_TABLE):
            assert store.forget_destroyed(within=0.3)  # done: owed no more
            store.delete(["k2"])  # a lookup secret deleted owes one too
            assert store.forget_destroyed(within=0.3) is False
        assert store.forget_destroyed(within=5)
        assert [r.key_id for r in store.live()] == []

    def test_a_rotation_rewraps_live_keys_only(self, store: DataKeyStore) -> None:
        store.insert_if_absent(key("k1", "customer-1"))
        store.insert_if_absent(key("k2", "customer-2"))
        store.destroy(["k2"], at=NOW)
        store.rewrap([key("k1", "customer-1", wrapped=b"new", kek_id="kek-2"),
                      key("k2", "customer-2", wrapped=b"revived", kek_id="kek-2")])
        assert [(r.key_id, r.wrapped, r.kek_id) for r in store.by_ids(["k1", "k2"])] == [
            ("k1", b"new", "kek-2"), ("k2", None, "kek-1")]


def _make_table(database: str, name: str) -> None:
    if database.startswith("postgresql"):
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {name} (n int)")
    else:
        with sqlite3.connect(database) as conn:
            conn.execute(f"CREATE TABLE {name} (n int)")


class TestDataKeysOnSQLite(OnSQLite, DataKeysContract):
    pass


class TestDataKeysOnPostgres(OnPostgres, DataKeysContract):
    pass


# -- Merkle tiles and checkpoints ----------------------------------------------------------------------------


def tile(index: int, positions: list[int]) -> Tile:
    leaves = b"".join(hashlib.sha256(p.to_bytes(8, "big")).digest() for p in positions)
    return Tile(index, positions[0], leaves, b"".join(p.to_bytes(8, "big") for p in positions))


class MerkleContract(StorageContract):
    """Tiles replace each other whole, nodes are kept by (level, index), an append is refused once the tree moved."""

    @pytest.fixture
    def store(self, storage: StorageProvider) -> MerkleStore:
        return storage.merkle()

    def test_an_append_moves_the_state_and_a_stale_one_writes_nothing(self, storage: StorageProvider,
                                                                       store: MerkleStore) -> None:
        assert store.state() == (0, 0) and store.tiles([0]) == {} and store.tile_of_position(1) is None
        store.append(0, 2, 20, [tile(0, [10, 20])], [])
        store.append(2, 3, 35, [tile(0, [10, 20, 35])], [(8, 0, b"n" * 32)])  # the partial tile is rewritten
        with pytest.raises(TreeMoved) as moved:
            store.append(2, 4, 50, [tile(0, [10, 20, 35, 50])], [])
        assert isinstance(moved.value, ConflictError)  # in the one error tree: reload and retry
        assert store.state() == (3, 35) and storage.merkle().state() == (3, 35)  # another look finds the tables
        assert len(store.tiles([0, 1])[0]) == 3 and store.tiles([0])[0].position(2) == 35
        assert store.nodes([(8, 0), (8, 1)]) == {(8, 0): b"n" * 32} and store.nodes([]) == {}
        found = store.tile_of_position(36)
        assert found is not None and found.index == 0
        assert store.leaf_indexes([10, 35, 36]) == {10: 0, 35: 2}
        assert [(i, p) for i, p, _ in store.leaves(1, 3)] == [(1, 20), (2, 35)]

    def test_the_customer_map_keeps_each_nodes_versions_and_refuses_a_stale_step(self, storage: StorageProvider,
                                                                                  store: MerkleStore) -> None:
        a, b, root = b"\x00\x01" + b"a", b"\x00\x01" + b"\x80", b"\x00\x00"
        assert store.map_state() == (0, 0) and store.map_nodes([root]) == {} and store.map_customers([b"k"]) == {}
        store.append_map(MapRows(0, 5, 50, [(root, b"r" * 32), (a, b"x" * 64)], [(b"k" * 32, 2, b"h" * 32)]))
        store.append_map(MapRows(5, 9, 90, [(root, b"s" * 32), (b, b"y" * 64)], [(b"k" * 32, 3, b"i" * 32)]))
        with pytest.raises(TreeMoved):
            store.append_map(MapRows(5, 12, 120, [(root, b"t" * 32)], []))
        assert store.map_state() == (9, 90) and storage.merkle().map_state() == (9, 90)
        assert store.map_nodes([root, a, b]) == {root: b"s" * 32, a: b"x" * 64, b: b"y" * 64}
        assert store.map_nodes([root, a, b], 8) == {root: b"r" * 32, a: b"x" * 64}  # as at the checkpoint of 8
        assert store.map_nodes([root], 4) == {}
        assert store.map_customers([b"k" * 32, b"z" * 32]) == {b"k" * 32: (3, b"i" * 32)}

    def test_the_customer_map_beside_the_tree_is_the_map_of_its_leaves(self, store: MerkleStore) -> None:
        rng = random.Random(3)
        tree = MerkleLog(store)
        history: dict[str, list[bytes]] = {}
        for batch in range(4):
            entries, customers = [], []
            for _k in range(rng.randint(50, 300)):
                position = tree.size + len(entries) + 1
                digest = hashlib.sha256(position.to_bytes(8, "big")).digest()
                who = f"cus-{rng.randrange(120):016x}"
                entries.append((position, digest))
                customers.append(who.encode())
                history.setdefault(who, []).append(digest)
            tree.append(entries, customers)
            if batch % 2:
                assert tree.store_map()
        assert tree.store_map() and store.map_state()[0] == tree.size
        values = {customer_key(c): value_hash(len(h), chain(h)) for c, h in history.items()}
        assert MerkleLog(store).customers.root == map_root_of(values)
        for who in [*list(history)[:5], "cus-absent"]:
            events = history.get(who, [])
            proof = MerkleLog(store).customers.proof(who, tree.size)
            assert root_from_proof(who, len(events), chain(events), proof) == map_root_of(values)

    def test_checkpoints_are_listed_in_signing_order(self, store: MerkleStore) -> None:
        assert store.latest_checkpoint() is None and store.checkpoints() == []
        signed = [StoredCheckpoint(size, bytes([size]) * 32, f"note {size}", NOW + timedelta(seconds=size), "key-1",
                                   size * 10) for size in (3, 5, 5, 9)]
        for checkpoint in signed:
            store.insert_checkpoint(checkpoint)
        assert store.latest_checkpoint() == signed[-1]
        assert store.checkpoints() == signed
        assert store.checkpoints(after_size=4, limit=2) == signed[1:3]
        assert store.checkpoints(size=5) == signed[1:3]

    def test_tiles_and_nodes_give_the_reference_tree_across_tile_boundaries(self, store: MerkleStore) -> None:
        """Synthetic leaves appended in uneven batches (and by a reloaded appender) across many 256-leaf tiles."""
        rng = random.Random(7)
        tree = MerkleLog(store)
        positions = sorted(rng.sample(range(1, 10_000), 1300))  # gaps, as PostgreSQL positions may have
        digests = [hashlib.sha256(p.to_bytes(8, "big")).digest() for p in positions]
        done = 0
        while done < len(positions):
            n = rng.choice([1, 3, 100, 255, 256, 257, 400])
            tree.append(list(zip(positions[done:done + n], digests[done:done + n], strict=True)))
            done = min(len(positions), done + n)
            if rng.random() < 0.3:
                tree = MerkleLog(store)  # a restarted appender resumes mid-tile
        leaves = [leaf_hash(d) for d in digests]
        assert tree.size == len(leaves) and tree.root == tree_hash(leaves)
        fresh = MerkleLog(store)
        assert fresh.root == tree.root
        for size in (1, 255, 256, 257, 511, 512, 1024, 1299, 1300):
            assert fresh.root_at(size) == tree_hash(leaves[:size])
            for index in {0, size // 3, size - 1}:
                verify_inclusion(index, size, leaves[index], fresh.inclusion_proof(index, size),
                                 tree_hash(leaves[:size]))
            for old in {1, size // 2 or 1, size}:
                verify_consistency(old, size, tree_hash(leaves[:old]), tree_hash(leaves[:size]),
                                   fresh.consistency_proof(old, size))
        sample = positions[::97]
        assert store.leaf_indexes([*sample, 10_001]) == {p: positions.index(p) for p in sample}
        assert [x[1] for x in store.leaves(250, 260)] == positions[250:260]


class TestMerkleOnSQLite(OnSQLite, MerkleContract):
    pass


class TestMerkleOnPostgres(OnPostgres, MerkleContract):
    pass


# -- principals and their sessions -----------------------------------------------------------------------------


class PrincipalsContract(StorageContract):
    """A name is used once; a revoked token's hash is forgotten and its sessions end with it."""

    @pytest.fixture
    def store(self, storage: StorageProvider) -> PrincipalStore:
        return storage.principals()

    def test_a_principal_is_added_once_found_by_token_hash_and_revoked(self, store: PrincipalStore) -> None:
        token = hashlib.sha256(b"token").digest()
        assert store.insert_principal("alice", "agent", token, NOW)
        assert not store.insert_principal("alice", "admin", hashlib.sha256(b"other").digest(), NOW)
        assert store.insert_principal("bob", "auditor", hashlib.sha256(b"bob").digest(), NOW)
        alice = store.select_principal_by_token(token)
        assert alice is not None and (alice.name, alice.role, alice.token_sha256) == ("alice", "agent", token)
        assert alice.created_at == NOW and alice.created_at.tzinfo is not None and alice.revoked_at is None
        assert [p.name for p in store.select_principals()] == ["alice", "bob"]
        assert store.revoke_principal("alice", NOW + timedelta(hours=1))
        assert not store.revoke_principal("alice", NOW + timedelta(hours=2))
        revoked = store.select_principal("alice")
        assert revoked is not None and revoked.token_sha256 is None and revoked.revoked_at == NOW + timedelta(hours=1)
        assert store.select_principal_by_token(token) is None and store.select_principal("carol") is None

    def test_sessions_expire_and_end_with_their_principal(self, store: PrincipalStore) -> None:
        store.insert_principal("erin", "agent", hashlib.sha256(b"erin").digest(), NOW)
        first, second, late = (hashlib.sha256(s).digest() for s in (b"s1", b"s2", b"s3"))
        store.insert_session(first, "erin", "agent", "token", NOW, NOW + timedelta(minutes=5))
        store.insert_session(second, "erin", "agent", "token", NOW, NOW + timedelta(hours=8))
        session = store.select_session(first)
        assert session is not None and session.principal_active and session.expires_at == NOW + timedelta(minutes=5)
        store.insert_session(late, "erin", "agent", "token", NOW + timedelta(hours=1), NOW + timedelta(hours=9))
        assert store.select_session(first) is None  # expired sessions go when another opens
        store.delete_session(late)
        assert store.select_session(late) is None
        store.revoke_principal("erin", NOW + timedelta(hours=2))
        assert store.select_session(second) is None


class TestPrincipalsOnSQLite(OnSQLite, PrincipalsContract):
    pass


class TestPrincipalsOnPostgres(OnPostgres, PrincipalsContract):
    pass


# -- adapter keys ----------------------------------------------------------------------------------------------


class AdapterKeysContract(StorageContract):
    """An adapter's name is used once; its channels come back as given; revoking it is kept."""

    @pytest.fixture
    def store(self, storage: StorageProvider) -> AdapterKeyStore:
        return storage.adapter_keys()

    def test_an_adapter_key_is_added_once_listed_and_revoked(self, store: AdapterKeyStore) -> None:
        assert store.insert_adapter("mail-1", b"k" * 32, ("email", "sms"), NOW)
        assert not store.insert_adapter("mail-1", b"x" * 32, ("chat",), NOW)
        assert store.insert_adapter("chat-1", b"c" * 32, (), NOW)
        row = store.select_adapter("mail-1")
        assert row is not None and (row.public_key, row.channels, row.created_at) == (b"k" * 32, ("email", "sms"), NOW)
        assert [(r.name, r.channels) for r in store.select_adapters()] == [("chat-1", ()), ("mail-1", ("email", "sms"))]
        assert store.revoke_adapter("mail-1", NOW + timedelta(days=1))
        assert not store.revoke_adapter("mail-1", NOW + timedelta(days=2))
        revoked = store.select_adapter("mail-1")
        assert revoked is not None and revoked.revoked_at == NOW + timedelta(days=1)
        assert store.select_adapter("nobody") is None


class TestAdapterKeysOnSQLite(OnSQLite, AdapterKeysContract):
    pass


class TestAdapterKeysOnPostgres(OnPostgres, AdapterKeysContract):
    pass


# -- witnesses' cosignatures -----------------------------------------------------------------------------------


class CosignaturesContract(StorageContract):
    """A witness's cosignature of a checkpoint text is kept once; a witness's largest cosigned tree is found."""

    @pytest.fixture
    def store(self, storage: StorageProvider) -> CosignatureStore:
        return storage.cosignatures()

    def test_cosignatures_are_kept_once_per_witness_and_text_and_the_largest_tree_is_found(
            self, store: CosignatureStore) -> None:
        text = hashlib.sha256(b"o\n5\nroot\n").digest()
        first = StoredCosignature("w.example/a", "0a0b0c0d", 5, text, "\u2014 w.example/a AAAA", NOW)
        store.insert_cosignature(first)
        store.insert_cosignature(StoredCosignature("w.example/a", "0a0b0c0d", 5, text, "\u2014 w.example/a BBBB",
                                                   NOW + timedelta(seconds=1)))  # cosigned again: the first is kept
        store.insert_cosignature(StoredCosignature("w.example/b", "01020304", 5, text, "\u2014 w.example/b CCCC", NOW))
        later = StoredCosignature("w.example/a", "0a0b0c0d", 9, hashlib.sha256(b"9").digest(), "\u2014 w.example/a D",
                                  NOW)
        store.insert_cosignature(later)
        assert store.select_cosignatures(text) == [first, StoredCosignature("w.example/b", "01020304", 5, text,
                                                                            "\u2014 w.example/b CCCC", NOW)]
        assert store.latest_cosignature("w.example/a", "0a0b0c0d") == later
        assert store.latest_cosignature("w.example/a", "ffffffff") is None
        assert store.select_cosignatures(b"\x00" * 32) == []


class TestCosignaturesOnSQLite(OnSQLite, CosignaturesContract):
    pass


class TestCosignaturesOnPostgres(OnPostgres, CosignaturesContract):
    pass


# -- idempotency keys ------------------------------------------------------------------------------------------


class IdempotencyContract(StorageContract):
    """A key is claimed once and answers its first response; an answer can be stored with the key's events."""

    @pytest.fixture
    def store(self, storage: StorageProvider) -> IdempotencyStore:
        return storage.idempotency()

    def test_an_idempotency_key_claims_once_and_answers_its_first_response(self, store: IdempotencyStore) -> None:
        now = datetime.now(UTC)
        digest = request_digest("POST", "/v1/x", b'{"a": 1, "b": 2}')
        assert digest == request_digest("POST", "/v1/x", b'{"b":2,"a":1}')  # the same JSON, however written
        assert store.insert_idempotency("k1", digest, now)
        assert not store.insert_idempotency("k1", digest, now)
        store.complete_idempotency("k1", 201, '{"ok": true}')
        row = store.select_idempotency("k1")
        assert row is not None and (row.status, row.response) == (201, '{"ok": true}')
        store.release_idempotency("k1")  # a completed key is never released
        assert store.select_idempotency("k1") is not None
        # A stale claim is taken over by one caller only.
        assert store.insert_idempotency("k2", digest, now - timedelta(minutes=5))
        stale = store.select_idempotency("k2")
        assert stale is not None
        assert store.restart_idempotency("k2", stale.created_at, now)
        assert not store.restart_idempotency("k2", stale.created_at, now)

    def test_rows_past_their_window_are_purged(self, store: IdempotencyStore) -> None:
        now = datetime.now(UTC)
        assert store.insert_idempotency("old", b"d" * 32, now - timedelta(hours=25))
        assert store.insert_idempotency("new", b"d" * 32, now)
        assert store.purge_idempotency(now - timedelta(hours=24)) == 1
        assert store.select_idempotency("old") is None and store.select_idempotency("new") is not None

    def test_answers_stored_with_their_events_are_read_many_at_once(self, ledger: CaseLedger,
                                                                     store: IdempotencyStore) -> None:
        answered = [store.answered_idempotency(f"key-{n}", b"d" * 32, 201, f'{{"n": {n}}}', NOW) for n in range(250)]
        ledger.recorder.insert_events([StoredEvent(uuid4(), 1, "topic", b"state")], also_execute=answered)
        found = store.select_idempotency_many([f"key-{n}" for n in range(260)])  # more than one query's 200 keys
        assert len(found) == 250 and found["key-7"].response == '{"n": 7}' and found["key-7"].created_at == NOW
        # an answer stored meanwhile fails the whole transaction, its events included
        event = StoredEvent(uuid4(), 1, "topic", b"state")
        with pytest.raises(Exception):  # noqa: B017  (eventsourcing's IntegrityError, whatever the backend)
            ledger.recorder.insert_events([event], also_execute=answered[:1])
        assert ledger.recorder.select_events(event.originator_id) == []
        store.release_idempotency("key-1")  # answered: kept
        assert store.select_idempotency("key-1") is not None


class TestIdempotencyOnSQLite(OnSQLite, IdempotencyContract):
    pass


class TestIdempotencyOnPostgres(OnPostgres, IdempotencyContract):
    pass


# -- the audit's read ----------------------------------------------------------------------------------------

JANE = Identity.parse("email:jane@example.com")


def contact(msg: str) -> ContactDraft:
    return ContactDraft(channel="web_form", channel_message_id=msg, identity=JANE, items=("Where is my refund?",),
                        subject="Refund", body="The parcel went back two weeks ago.")


class AuditReadContract(StorageContract):
    """Both backends' snapshots return the same rows, as plain tuples, for the same ledger."""

    def test_an_empty_store_has_no_rows_and_no_tracking(self, ledger: CaseLedger) -> None:
        with store_snapshot(ledger) as store:
            assert store.head() == 0
            assert list(store.pages(0, 10, 5)) == []
            assert store.row_at_or_after(1) is None
            assert not [name for name in store.tracking() if not name.startswith("__")]  # eventsourcing's own only

    def test_rows_come_in_position_order_in_pages_up_to_the_bound(self, ledger: CaseLedger) -> None:
        with ledger.unit_of_work(Tracking(application_name="intake/t/0", notification_id=7)):
            ledger.record_contact(contact("a"))
        ledger.record_contact(contact("b"))
        head = ledger.recorder.max_notification_id() or 0
        assert head >= 6
        with store_snapshot(ledger) as store:
            assert store.head() == head
            assert store.backend in ledger.settings.store.describe()
            pages = list(store.pages(0, head, 4))
            assert all(0 < len(page) <= 4 for page in pages)
            rows = [row for page in pages for row in page]
            assert [row[0] for row in rows] == sorted(row[0] for row in rows)
            assert rows[-1][0] == head
            bounded = [row[0] for page in store.pages(1, 4, 2) for row in page]
            assert bounded == [p for p in (row[0] for row in rows) if 1 < p <= 4]
            for position, oid, version, topic, state in rows:
                assert re.fullmatch(rb"[0-9a-f]{32}", bytes(oid)) and version >= 1 and topic
                same = store.event(bytes(oid), version)
                assert same is not None and same[0] == position and bytes(same[4]) == bytes(state)
                at = store.row_at_or_after(position)
                assert at is not None and at[0] == position
            assert store.event(b"0" * 32, 1) is None
            assert store.row_at_or_after(head + 1) is None
            assert store.tracking()["intake/t/0"] == 7
            if not store.positions_may_skip:
                assert [row[0] for row in rows] == list(range(1, head + 1))

    def test_envelopes_decode_straight_from_the_stored_bytes(self, ledger: CaseLedger) -> None:
        ledger.record_contact(contact("a"))
        decoder = AvroEnvelopeDecoder(ledger.codec)
        chains: dict[bytes, bytes] = {}
        with store_snapshot(ledger) as store:
            for page in store.pages(0, store.head(), 100):
                for _position, oid, version, _topic, state in page:
                    state = bytes(state)
                    envelope = parse_envelope(state)
                    assert envelope == decoder.envelope(state)
                    event_id, aggregate, env_version, _case, customer, _recorded, _causation, previous, end = envelope
                    assert UUID(event_id.decode()) and aggregate.replace(b"-", b"") == bytes(oid)
                    assert env_version == version and customer and 0 < end <= len(state)
                    assert previous == chains.get(bytes(oid))  # None for version 1, else the previous event's hash
                    chains[bytes(oid)] = hashlib.sha256(state).digest()


class TestAuditReadOnSQLite(OnSQLite, AuditReadContract):
    pass


class TestAuditReadOnPostgres(OnPostgres, AuditReadContract):
    pass
