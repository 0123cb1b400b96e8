"""The transparency log's tables: the Merkle tree's leaves and complete subtrees, and signed checkpoints.

* ``merkle_leaves(leaf_index, position, hash)`` — one row per event, in position order: the leaf
  hash (RFC 6962: SHA-256(0x00 ‖ event hash)) and the store position it commits.
* ``merkle_nodes(level, idx, hash)`` — every *complete* subtree of height ≥ 1: node ``(level, idx)``
  is MTH of leaves ``[idx·2^level, (idx+1)·2^level)``. About one node per leaf in all.
* ``merkle_state`` — one row: the tree size and the last position appended.
* ``checkpoints`` — every signed checkpoint (size, root, the signed note, when, which key).

Appending k leaves writes k leaf rows and about k node rows in one transaction, whose first
statement moves ``merkle_state`` from the size the appender read: a second appender (``audit
checkpoint`` while ``caseledger run`` appends) updates no row and rolls back (:class:`TreeMoved`).
A proof reads O(log n) nodes in one query. The tree never needs to be held in memory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger

__all__ = ["MerkleStore", "PostgresMerkleStore", "SQLiteMerkleStore", "StoredCheckpoint", "TreeMoved", "merkle_store"]

Node = tuple[int, int]  # (level, index)


class TreeMoved(Exception):
    """Another appender moved the tree since it was read: reload and retry."""


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint as stored: its tree size and root, the signed note, when it was signed, by which key."""

    tree_size: int
    root: bytes
    note: str
    signed_at: datetime
    key_id: str
    last_position: int = 0  # the store position of its last leaf (the publisher waits for it)


class MerkleStore(ABC):
    """The Merkle tree's and the checkpoints' rows in the ledger's database."""

    @abstractmethod
    def create_tables(self) -> None:
        """Create the tables when missing."""

    @abstractmethod
    def state(self) -> tuple[int, int]:
        """(tree size, last position appended); (0, 0) for an empty tree."""

    @abstractmethod
    def append(self, old_size: int, new_size: int, last_position: int,
               leaves: Sequence[tuple[int, int, bytes]], nodes: Sequence[tuple[int, int, bytes]]) -> None:
        """Leaves ``(index, position, hash)`` and nodes ``(level, index, hash)`` in one transaction.

        TreeMoved when the stored size is no longer ``old_size``.
        """

    @abstractmethod
    def nodes(self, wanted: Iterable[Node]) -> dict[Node, bytes]:
        """The hashes of the complete subtrees ``(level, index)`` (level 0: leaves) that exist."""

    @abstractmethod
    def leaf_indexes(self, positions: Sequence[int]) -> dict[int, int]:
        """position → leaf index, for the positions that are leaves."""

    @abstractmethod
    def leaves(self, start: int, end: int) -> list[tuple[int, int, bytes]]:
        """Leaves ``(index, position, hash)`` with ``start <= index < end``."""

    @abstractmethod
    def insert_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        """Store a signed checkpoint."""

    @abstractmethod
    def checkpoints(self, *, after_size: int = -1, size: int | None = None, limit: int = 100) -> list[StoredCheckpoint]:
        """Checkpoints in signing order: those above ``after_size``, or of exactly ``size``."""

    @abstractmethod
    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The checkpoint signed last."""


def _rows(checkpoints: Iterable[Any]) -> list[StoredCheckpoint]:
    return [StoredCheckpoint(int(s), bytes(r), str(n), t if isinstance(t, datetime) else datetime.fromisoformat(t),
                             str(k), int(p)) for s, r, n, t, k, p in checkpoints]


class SQLiteMerkleStore(MerkleStore):
    """The tables in the ledger's SQLite file."""

    def __init__(self, datastore: Any) -> None:
        self.datastore = datastore

    @contextmanager
    def _cursor(self, *, commit: bool) -> Iterator[Any]:
        with self.datastore.transaction(commit=commit) as wrapped:
            cursor = wrapped.sqlite_cursor
            cursor.row_factory = None
            yield cursor

    def create_tables(self) -> None:
        with self._cursor(commit=True) as c:
            c.execute("CREATE TABLE IF NOT EXISTS merkle_leaves (leaf_index INTEGER PRIMARY KEY, "
                      "position INTEGER NOT NULL UNIQUE, hash BLOB NOT NULL)")
            c.execute("CREATE TABLE IF NOT EXISTS merkle_nodes (level INTEGER NOT NULL, idx INTEGER NOT NULL, "
                      "hash BLOB NOT NULL, PRIMARY KEY (level, idx)) WITHOUT ROWID")
            c.execute("CREATE TABLE IF NOT EXISTS merkle_state (id INTEGER PRIMARY KEY CHECK (id = 1), "
                      "size INTEGER NOT NULL, last_position INTEGER NOT NULL)")
            c.execute("INSERT OR IGNORE INTO merkle_state (id, size, last_position) VALUES (1, 0, 0)")
            c.execute("CREATE TABLE IF NOT EXISTS checkpoints (id INTEGER PRIMARY KEY, tree_size INTEGER NOT NULL, "
                      "root BLOB NOT NULL, note TEXT NOT NULL, signed_at TEXT NOT NULL, key_id TEXT NOT NULL, "
                      "last_position INTEGER NOT NULL)")
            c.execute("CREATE INDEX IF NOT EXISTS checkpoints_by_size ON checkpoints (tree_size)")

    def state(self) -> tuple[int, int]:
        with self._cursor(commit=False) as c:
            row = c.execute("SELECT size, last_position FROM merkle_state WHERE id = 1").fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def append(self, old_size: int, new_size: int, last_position: int,
               leaves: Sequence[tuple[int, int, bytes]], nodes: Sequence[tuple[int, int, bytes]]) -> None:
        with self._cursor(commit=True) as c:
            c.execute("UPDATE merkle_state SET size = ?, last_position = ? WHERE id = 1 AND size = ?",
                      (new_size, last_position, old_size))
            if c.rowcount != 1:
                raise TreeMoved(f"the tree is no longer of size {old_size}")
            c.executemany("INSERT INTO merkle_leaves (leaf_index, position, hash) VALUES (?, ?, ?)", leaves)
            c.executemany("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)

    def nodes(self, wanted: Iterable[Node]) -> dict[Node, bytes]:
        wanted = list(wanted)
        found: dict[Node, bytes] = {}
        leaves = [i for level, i in wanted if level == 0]
        inner = [(level, i) for level, i in wanted if level > 0]
        with self._cursor(commit=False) as c:
            for chunk in _chunks(leaves, 500):
                marks = ",".join("?" * len(chunk))
                for i, h in c.execute(f"SELECT leaf_index, hash FROM merkle_leaves WHERE leaf_index IN ({marks})",
                                      chunk):
                    found[(0, int(i))] = bytes(h)
            for chunk in _chunks(inner, 250):
                pairs = ",".join(["(?, ?)"] * len(chunk))
                flat = [v for node in chunk for v in node]
                for level, i, h in c.execute(
                        f"WITH w(level, idx) AS (VALUES {pairs}) SELECT n.level, n.idx, n.hash FROM w "
                        "JOIN merkle_nodes n ON n.level = w.level AND n.idx = w.idx", flat):
                    found[(int(level), int(i))] = bytes(h)
        return found

    def leaf_indexes(self, positions: Sequence[int]) -> dict[int, int]:
        found: dict[int, int] = {}
        with self._cursor(commit=False) as c:
            for chunk in _chunks(list(positions), 500):
                marks = ",".join("?" * len(chunk))
                for p, i in c.execute(f"SELECT position, leaf_index FROM merkle_leaves WHERE position IN ({marks})",
                                      chunk):
                    found[int(p)] = int(i)
        return found

    def leaves(self, start: int, end: int) -> list[tuple[int, int, bytes]]:
        with self._cursor(commit=False) as c:
            rows = c.execute("SELECT leaf_index, position, hash FROM merkle_leaves WHERE leaf_index >= ? AND "
                             "leaf_index < ? ORDER BY leaf_index", (start, end)).fetchall()
        return [(int(i), int(p), bytes(h)) for i, p, h in rows]

    def insert_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        with self._cursor(commit=True) as c:
            c.execute("INSERT INTO checkpoints (tree_size, root, note, signed_at, key_id, last_position) "
                      "VALUES (?, ?, ?, ?, ?, ?)",
                      (checkpoint.tree_size, checkpoint.root, checkpoint.note, checkpoint.signed_at.isoformat(),
                       checkpoint.key_id, checkpoint.last_position))

    _COLUMNS = "SELECT tree_size, root, note, signed_at, key_id, last_position FROM checkpoints "

    def checkpoints(self, *, after_size: int = -1, size: int | None = None, limit: int = 100) -> list[StoredCheckpoint]:
        with self._cursor(commit=False) as c:
            if size is not None:
                rows = c.execute(self._COLUMNS + "WHERE tree_size = ? ORDER BY id LIMIT ?", (size, limit))
            else:
                rows = c.execute(self._COLUMNS + "WHERE tree_size > ? ORDER BY id LIMIT ?", (after_size, limit))
            return _rows(rows.fetchall())

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        with self._cursor(commit=False) as c:
            found = _rows(c.execute(self._COLUMNS + "ORDER BY id DESC LIMIT 1").fetchall())
        return found[0] if found else None


class PostgresMerkleStore(MerkleStore):
    """The tables in the ledger's PostgreSQL schema, named after its events table (``<app>_merkle_nodes`` …)."""

    def __init__(self, datastore: Any, events_table: str) -> None:
        from psycopg.sql import SQL, Identifier

        self.datastore = datastore
        prefix = events_table.removesuffix("events")
        schema = Identifier(datastore.schema)

        def table(name: str) -> Any:
            return SQL("{}.{}").format(schema, Identifier(prefix + name))

        self.leaves_table, self.nodes_table = table("merkle_leaves"), table("merkle_nodes")
        self.state_table, self.checkpoints_table = table("merkle_state"), table("checkpoints")
        self.SQL = SQL
        self._columns = SQL("SELECT tree_size, root, note, signed_at, key_id, last_position FROM {} ").format(self.checkpoints_table)

    @contextmanager
    def _cursor(self, *, commit: bool) -> Iterator[Any]:
        from psycopg.rows import tuple_row

        with self.datastore.get_connection() as conn, conn.transaction(force_rollback=not commit):
            yield conn.cursor(row_factory=tuple_row)

    def create_tables(self) -> None:
        from caseledger.ledger.store.postgres import is_schema_race

        sql = self.SQL
        statements = [
            sql("CREATE TABLE IF NOT EXISTS {} (leaf_index bigint PRIMARY KEY, position bigint NOT NULL UNIQUE, "
                "hash bytea NOT NULL)").format(self.leaves_table),
            sql("CREATE TABLE IF NOT EXISTS {} (level smallint NOT NULL, idx bigint NOT NULL, hash bytea NOT NULL, "
                "PRIMARY KEY (level, idx))").format(self.nodes_table),
            sql("CREATE TABLE IF NOT EXISTS {} (id smallint PRIMARY KEY CHECK (id = 1), size bigint NOT NULL, "
                "last_position bigint NOT NULL)").format(self.state_table),
            sql("INSERT INTO {} (id, size, last_position) VALUES (1, 0, 0) ON CONFLICT DO NOTHING").format(
                self.state_table),
            sql("CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, tree_size bigint NOT NULL, root bytea NOT NULL, "
                "note text NOT NULL, signed_at timestamptz NOT NULL, key_id text NOT NULL, last_position bigint NOT NULL)"
                ).format(
                self.checkpoints_table),
        ]
        for _attempt in range(5):
            try:
                with self._cursor(commit=True) as c:
                    for statement in statements:
                        c.execute(statement)
                return
            except Exception as error:  # another process creating the same tables
                cause = error.__cause__ or error
                if not is_schema_race(cause) and not is_schema_race(error):
                    raise

    def state(self) -> tuple[int, int]:
        with self._cursor(commit=False) as c:
            row = c.execute(self.SQL("SELECT size, last_position FROM {} WHERE id = 1").format(self.state_table)
                            ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def append(self, old_size: int, new_size: int, last_position: int,
               leaves: Sequence[tuple[int, int, bytes]], nodes: Sequence[tuple[int, int, bytes]]) -> None:
        sql = self.SQL
        with self._cursor(commit=True) as c:
            c.execute(sql("UPDATE {} SET size = %s, last_position = %s WHERE id = 1 AND size = %s").format(
                self.state_table), (new_size, last_position, old_size))
            if c.rowcount != 1:
                raise TreeMoved(f"the tree is no longer of size {old_size}")
            if leaves:
                c.execute(sql("INSERT INTO {} (leaf_index, position, hash) SELECT * FROM "
                              "unnest(%b::bigint[], %b::bigint[], %b::bytea[])").format(self.leaves_table),
                          ([x[0] for x in leaves], [x[1] for x in leaves], [x[2] for x in leaves]))
            if nodes:
                c.execute(sql("INSERT INTO {} (level, idx, hash) SELECT * FROM "
                              "unnest(%b::smallint[], %b::bigint[], %b::bytea[])").format(self.nodes_table),
                          ([x[0] for x in nodes], [x[1] for x in nodes], [x[2] for x in nodes]))

    def nodes(self, wanted: Iterable[Node]) -> dict[Node, bytes]:
        wanted = list(wanted)
        found: dict[Node, bytes] = {}
        leaves = [i for level, i in wanted if level == 0]
        inner = [(level, i) for level, i in wanted if level > 0]
        sql = self.SQL
        with self._cursor(commit=False) as c:
            if leaves:
                for i, h in c.execute(sql("SELECT leaf_index, hash FROM {} WHERE leaf_index = ANY(%s)").format(
                        self.leaves_table), (leaves,)).fetchall():
                    found[(0, int(i))] = bytes(h)
            if inner:
                for level, i, h in c.execute(
                        sql("SELECT n.level, n.idx, n.hash FROM unnest(%s::smallint[], %s::bigint[]) AS w(level, idx) "
                            "CROSS JOIN LATERAL (SELECT * FROM {} x WHERE x.level = w.level AND x.idx = w.idx) n"
                            ).format(self.nodes_table), ([n[0] for n in inner], [n[1] for n in inner])).fetchall():
                    found[(int(level), int(i))] = bytes(h)
        return found

    def leaf_indexes(self, positions: Sequence[int]) -> dict[int, int]:
        with self._cursor(commit=False) as c:
            rows = c.execute(self.SQL("SELECT position, leaf_index FROM {} WHERE position = ANY(%s)").format(
                self.leaves_table), (list(positions),)).fetchall()
        return {int(p): int(i) for p, i in rows}

    def leaves(self, start: int, end: int) -> list[tuple[int, int, bytes]]:
        with self._cursor(commit=False) as c:
            rows = c.execute(self.SQL("SELECT leaf_index, position, hash FROM {} WHERE leaf_index >= %s AND "
                                      "leaf_index < %s ORDER BY leaf_index").format(self.leaves_table),
                             (start, end)).fetchall()
        return [(int(i), int(p), bytes(h)) for i, p, h in rows]

    def insert_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        with self._cursor(commit=True) as c:
            c.execute(self.SQL("INSERT INTO {} (tree_size, root, note, signed_at, key_id, last_position) "
                               "VALUES (%s, %s, %s, %s, %s, %s)").format(self.checkpoints_table),
                      (checkpoint.tree_size, checkpoint.root, checkpoint.note, checkpoint.signed_at,
                       checkpoint.key_id, checkpoint.last_position))

    def checkpoints(self, *, after_size: int = -1, size: int | None = None, limit: int = 100) -> list[StoredCheckpoint]:
        sql = self.SQL
        with self._cursor(commit=False) as c:
            if size is not None:
                rows = c.execute(self._columns + sql("WHERE tree_size = %s ORDER BY id LIMIT %s"), (size, limit))
            else:
                rows = c.execute(self._columns + sql("WHERE tree_size > %s ORDER BY id LIMIT %s"), (after_size, limit))
            return _rows(rows.fetchall())

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        with self._cursor(commit=False) as c:
            found = _rows(c.execute(self._columns + self.SQL("ORDER BY id DESC LIMIT 1")).fetchall())
        return found[0] if found else None


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def merkle_store(ledger: CaseLedger) -> MerkleStore:
    """The ledger's Merkle tree and checkpoint tables (created on first use)."""
    recorder: Any = ledger.recorder
    store: MerkleStore
    if ledger.settings.store.is_postgres:
        store = PostgresMerkleStore(recorder.datastore, recorder.events_table_name)
    else:
        store = SQLiteMerkleStore(recorder.datastore)
    store.create_tables()
    return store
