"""The transparency log's tables: the Merkle tree in tiles, and signed checkpoints.

* ``merkle_tiles(idx, first_position, leaves, positions, inner_nodes)`` — the leaves in tiles of 256 (the
  tlog "tile" idea): tile ``t`` holds the leaf hashes (RFC 6962: SHA-256(0x00 ‖ event hash)) of
  leaves ``[256·t, 256·t + n)`` as one blob of ``32·n`` bytes, their store positions as one blob of
  ``8·n`` bytes (big-endian), and once full its 255 inner nodes (levels 1 to 8, computed anyway when
  it fills) so that proofs hash nothing. The last tile may be partial: each append rewrites it.
* ``merkle_nodes(level, idx, hash)`` — every *complete* subtree of height ≥ 8 (a full tile and
  above): node ``(level, idx)`` is MTH of leaves ``[idx·2^level, (idx+1)·2^level)``. The nodes
  inside a tile are recomputed from its leaves when a proof needs them (255 hashes).
* ``merkle_state`` — one row: the tree size and the last position appended.
* ``merkle_map_nodes(node, size, value)`` — the customer map's nodes (``ledger/transparency/customer_map.py``),
  one row per version: node ``node`` holds ``value`` from tree size ``size`` on, until a later row; a
  proof against an older checkpoint reads each node's latest version up to its size.
  ``merkle_map_customers(key, count, head)`` — each customer's count and chain head now;
  ``merkle_map_state`` — the leaves the map covers (the tree's size, unless it is catching up).
* ``checkpoints`` — every signed checkpoint (size, root, the signed note, when, which key, the
  position of its last leaf).

So an append writes about one row per 128 leaves besides rewriting the last tile, in one
transaction whose first statement moves ``merkle_state`` from the size the appender read: a
second appender (``audit checkpoint`` while ``caseledger run`` appends) updates no row and rolls
back (:class:`TreeMoved`). (One row per leaf and per node, measured: 12 µs of SQLite per event, a
quarter of the pipeline's CPU budget per contact; tiles: under 1 µs.) A proof reads O(log n) rows.

The port (:class:`~caseledger.ledger.store_ports.MerkleStore`) is the same on both backends; each backend's
provider builds its own (``SQLiteStorage.merkle``, ``PostgresStorage.merkle``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from caseledger.ledger.db_errors import created_despite_races
from caseledger.ledger.errors import TreeMoved
from caseledger.ledger.store_ports import MapRows, MerkleStore, StoredCheckpoint, Tile

__all__ = ["PostgresMerkleStore", "SQLiteMerkleStore"]

Node = tuple[int, int]  # (level, index)


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
            c.execute("CREATE TABLE IF NOT EXISTS merkle_tiles (idx INTEGER PRIMARY KEY, first_position INTEGER NOT NULL, "
                      "leaves BLOB NOT NULL, positions BLOB NOT NULL, inner_nodes BLOB NOT NULL)")
            c.execute("CREATE INDEX IF NOT EXISTS merkle_tiles_by_position ON merkle_tiles (first_position)")
            c.execute("CREATE TABLE IF NOT EXISTS merkle_nodes (level INTEGER NOT NULL, idx INTEGER NOT NULL, "
                      "hash BLOB NOT NULL, PRIMARY KEY (level, idx)) WITHOUT ROWID")
            c.execute("CREATE TABLE IF NOT EXISTS merkle_state (id INTEGER PRIMARY KEY CHECK (id = 1), "
                      "size INTEGER NOT NULL, last_position INTEGER NOT NULL)")
            c.execute("INSERT OR IGNORE INTO merkle_state (id, size, last_position) VALUES (1, 0, 0)")
            c.execute("CREATE TABLE IF NOT EXISTS checkpoints (id INTEGER PRIMARY KEY, tree_size INTEGER NOT NULL, "
                      "root BLOB NOT NULL, note TEXT NOT NULL, signed_at TEXT NOT NULL, key_id TEXT NOT NULL, "
                      "last_position INTEGER NOT NULL)")
            c.execute("CREATE INDEX IF NOT EXISTS checkpoints_by_size ON checkpoints (tree_size)")
            c.execute("CREATE TABLE IF NOT EXISTS merkle_map_nodes (node BLOB NOT NULL, size INTEGER NOT NULL, "
                      "value BLOB NOT NULL, PRIMARY KEY (node, size)) WITHOUT ROWID")
            c.execute("CREATE TABLE IF NOT EXISTS merkle_map_customers (key BLOB PRIMARY KEY, count INTEGER NOT NULL, "
                      "head BLOB NOT NULL) WITHOUT ROWID")
            c.execute("CREATE TABLE IF NOT EXISTS merkle_map_state (id INTEGER PRIMARY KEY CHECK (id = 1), "
                      "size INTEGER NOT NULL, last_position INTEGER NOT NULL)")
            c.execute("INSERT OR IGNORE INTO merkle_map_state (id, size, last_position) VALUES (1, 0, 0)")

    def state(self) -> tuple[int, int]:
        with self._cursor(commit=False) as c:
            row = c.execute("SELECT size, last_position FROM merkle_state WHERE id = 1").fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def append(self, old_size: int, new_size: int, last_position: int, tiles: Sequence[Tile],
               nodes: Sequence[tuple[int, int, bytes]]) -> None:
        with self._cursor(commit=True) as c:
            c.execute("UPDATE merkle_state SET size = ?, last_position = ? WHERE id = 1 AND size = ?",
                      (new_size, last_position, old_size))
            if c.rowcount != 1:
                raise TreeMoved(f"the tree is no longer of size {old_size}")
            c.executemany("INSERT OR REPLACE INTO merkle_tiles (idx, first_position, leaves, positions, inner_nodes) "
                          "VALUES (?, ?, ?, ?, ?)",
                          [(t.index, t.first_position, t.leaves, t.positions, t.inner) for t in tiles])
            c.executemany("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)

    def append_map(self, rows: MapRows) -> None:
        with self._cursor(commit=True) as c:
            self._append_map(c, rows)

    @staticmethod
    def _append_map(c: Any, rows: MapRows) -> None:
        c.execute("UPDATE merkle_map_state SET size = ?, last_position = ? WHERE id = 1 AND size = ?",
                  (rows.new_size, rows.last_position, rows.old_size))
        if c.rowcount != 1:
            raise TreeMoved(f"the customer map no longer covers {rows.old_size} leaves")
        c.executemany("INSERT OR REPLACE INTO merkle_map_nodes (node, size, value) VALUES (?, ?, ?)",
                      [(node, rows.new_size, value) for node, value in rows.nodes])
        c.executemany("INSERT OR REPLACE INTO merkle_map_customers (key, count, head) VALUES (?, ?, ?)",
                      rows.customers)

    def map_state(self) -> tuple[int, int]:
        with self._cursor(commit=False) as c:
            row = c.execute("SELECT size, last_position FROM merkle_map_state WHERE id = 1").fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def map_nodes(self, wanted: Iterable[bytes], size: int | None = None) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = {}
        upto = (1 << 62) if size is None else size
        with self._cursor(commit=False) as c:
            for chunk in _chunks(list(dict.fromkeys(wanted)), 250):
                marks = ",".join(["(?)"] * len(chunk))
                for node, value in c.execute(
                        f"WITH w(node) AS (VALUES {marks}) SELECT w.node, (SELECT m.value FROM merkle_map_nodes m "
                        "WHERE m.node = w.node AND m.size <= ? ORDER BY m.size DESC LIMIT 1) FROM w",
                        [*chunk, upto]):
                    if value is not None:
                        found[bytes(node)] = bytes(value)
        return found

    def map_customers(self, keys: Iterable[bytes]) -> dict[bytes, tuple[int, bytes]]:
        found: dict[bytes, tuple[int, bytes]] = {}
        with self._cursor(commit=False) as c:
            for chunk in _chunks(list(dict.fromkeys(keys)), 500):
                marks = ",".join("?" * len(chunk))
                for key, count, head in c.execute(
                        f"SELECT key, count, head FROM merkle_map_customers WHERE key IN ({marks})", chunk):
                    found[bytes(key)] = (int(count), bytes(head))
        return found

    def nodes(self, wanted: Iterable[Node]) -> dict[Node, bytes]:
        found: dict[Node, bytes] = {}
        with self._cursor(commit=False) as c:
            for chunk in _chunks(list(wanted), 250):
                pairs = ",".join(["(?, ?)"] * len(chunk))
                flat = [v for node in chunk for v in node]
                for level, i, h in c.execute(
                        f"WITH w(level, idx) AS (VALUES {pairs}) SELECT n.level, n.idx, n.hash FROM w "
                        "JOIN merkle_nodes n ON n.level = w.level AND n.idx = w.idx", flat):
                    found[(int(level), int(i))] = bytes(h)
        return found

    _TILE = "SELECT idx, first_position, leaves, positions, inner_nodes FROM merkle_tiles "

    def tiles(self, indexes: Iterable[int]) -> dict[int, Tile]:
        found: dict[int, Tile] = {}
        with self._cursor(commit=False) as c:
            for chunk in _chunks(sorted(set(indexes)), 500):
                marks = ",".join("?" * len(chunk))
                for i, first, leaves, positions, inner in c.execute(self._TILE + f"WHERE idx IN ({marks})", chunk):
                    found[int(i)] = Tile(int(i), int(first), bytes(leaves), bytes(positions), bytes(inner))
        return found

    def tile_of_position(self, position: int) -> Tile | None:
        with self._cursor(commit=False) as c:
            row = c.execute(self._TILE + "WHERE first_position <= ? ORDER BY first_position DESC LIMIT 1",
                            (position,)).fetchone()
        return Tile(int(row[0]), int(row[1]), bytes(row[2]), bytes(row[3]), bytes(row[4])) if row else None

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
    """The tables in the ledger's PostgreSQL schema, named after its events table (``<app>_merkle_tiles`` …)."""

    def __init__(self, datastore: Any, events_table: str) -> None:
        from psycopg.sql import SQL, Identifier

        self.datastore = datastore
        prefix = events_table.removesuffix("events")
        schema = Identifier(datastore.schema)

        def table(name: str) -> Any:
            return SQL("{}.{}").format(schema, Identifier(prefix + name))

        self.tiles_table, self.nodes_table = table("merkle_tiles"), table("merkle_nodes")
        self.state_table, self.checkpoints_table = table("merkle_state"), table("checkpoints")
        self.map_nodes_table, self.map_customers_table = table("merkle_map_nodes"), table("merkle_map_customers")
        self.map_state_table = table("merkle_map_state")
        self.tiles_index = Identifier(prefix + "merkle_tiles_by_position")
        self.SQL = SQL
        self._columns = SQL("SELECT tree_size, root, note, signed_at, key_id, last_position FROM {} ").format(
            self.checkpoints_table)
        self._tile = SQL("SELECT idx, first_position, leaves, positions, inner_nodes FROM {} ").format(self.tiles_table)

    @contextmanager
    def _cursor(self, *, commit: bool) -> Iterator[Any]:
        from psycopg.rows import tuple_row

        with self.datastore.get_connection() as conn, conn.transaction(force_rollback=not commit):
            yield conn.cursor(row_factory=tuple_row)

    def create_tables(self) -> None:
        sql = self.SQL
        statements = [
            sql("CREATE TABLE IF NOT EXISTS {} (idx bigint PRIMARY KEY, first_position bigint NOT NULL, "
                "leaves bytea NOT NULL, positions bytea NOT NULL, inner_nodes bytea NOT NULL)").format(self.tiles_table),
            sql("CREATE INDEX IF NOT EXISTS {} ON {} (first_position)").format(self.tiles_index, self.tiles_table),
            sql("CREATE TABLE IF NOT EXISTS {} (level smallint NOT NULL, idx bigint NOT NULL, hash bytea NOT NULL, "
                "PRIMARY KEY (level, idx))").format(self.nodes_table),
            sql("CREATE TABLE IF NOT EXISTS {} (id smallint PRIMARY KEY CHECK (id = 1), size bigint NOT NULL, "
                "last_position bigint NOT NULL)").format(self.state_table),
            sql("INSERT INTO {} (id, size, last_position) VALUES (1, 0, 0) ON CONFLICT DO NOTHING").format(
                self.state_table),
            sql("CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, tree_size bigint NOT NULL, root bytea NOT NULL, "
                "note text NOT NULL, signed_at timestamptz NOT NULL, key_id text NOT NULL, last_position bigint NOT NULL)"
                ).format(self.checkpoints_table),
            sql("CREATE TABLE IF NOT EXISTS {} (node bytea NOT NULL, size bigint NOT NULL, value bytea NOT NULL, "
                "PRIMARY KEY (node, size))").format(self.map_nodes_table),
            sql("CREATE TABLE IF NOT EXISTS {} (key bytea PRIMARY KEY, count bigint NOT NULL, head bytea NOT NULL)"
                ).format(self.map_customers_table),
            sql("CREATE TABLE IF NOT EXISTS {} (id smallint PRIMARY KEY CHECK (id = 1), size bigint NOT NULL, "
                "last_position bigint NOT NULL)").format(self.map_state_table),
            sql("INSERT INTO {} (id, size, last_position) VALUES (1, 0, 0) ON CONFLICT DO NOTHING").format(
                self.map_state_table),
        ]

        def run() -> None:
            with self._cursor(commit=True) as c:
                for statement in statements:
                    c.execute(statement)

        created_despite_races(run)  # another process creating the same tables at the same moment

    def state(self) -> tuple[int, int]:
        with self._cursor(commit=False) as c:
            row = c.execute(self.SQL("SELECT size, last_position FROM {} WHERE id = 1").format(self.state_table)
                            ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def append(self, old_size: int, new_size: int, last_position: int, tiles: Sequence[Tile],
               nodes: Sequence[tuple[int, int, bytes]]) -> None:
        sql = self.SQL
        with self._cursor(commit=True) as c:
            c.execute(sql("UPDATE {} SET size = %s, last_position = %s WHERE id = 1 AND size = %s").format(
                self.state_table), (new_size, last_position, old_size))
            if c.rowcount != 1:
                raise TreeMoved(f"the tree is no longer of size {old_size}")
            if tiles:
                c.execute(sql("INSERT INTO {} (idx, first_position, leaves, positions, inner_nodes) SELECT * FROM "
                              "unnest(%b::bigint[], %b::bigint[], %b::bytea[], %b::bytea[], %b::bytea[]) "
                              "ON CONFLICT (idx) DO UPDATE SET leaves = EXCLUDED.leaves, positions = EXCLUDED.positions, "
                              "first_position = EXCLUDED.first_position, inner_nodes = EXCLUDED.inner_nodes").format(
                              self.tiles_table),
                          ([t.index for t in tiles], [t.first_position for t in tiles], [t.leaves for t in tiles],
                           [t.positions for t in tiles], [t.inner for t in tiles]))
            if nodes:
                c.execute(sql("INSERT INTO {} (level, idx, hash) SELECT * FROM "
                              "unnest(%b::smallint[], %b::bigint[], %b::bytea[])").format(self.nodes_table),
                          ([x[0] for x in nodes], [x[1] for x in nodes], [x[2] for x in nodes]))

    def append_map(self, rows: MapRows) -> None:
        with self._cursor(commit=True) as c:
            self._append_map(c, rows)

    def _append_map(self, c: Any, rows: MapRows) -> None:
        sql = self.SQL
        c.execute(sql("UPDATE {} SET size = %s, last_position = %s WHERE id = 1 AND size = %s").format(
            self.map_state_table), (rows.new_size, rows.last_position, rows.old_size))
        if c.rowcount != 1:
            raise TreeMoved(f"the customer map no longer covers {rows.old_size} leaves")
        if rows.nodes:
            c.execute(sql("INSERT INTO {} (node, size, value) SELECT n, %s, v FROM unnest(%s::bytea[], %s::bytea[]) "
                          "AS w(n, v) ON CONFLICT (node, size) DO UPDATE SET value = EXCLUDED.value").format(
                          self.map_nodes_table),
                      (rows.new_size, [n for n, _ in rows.nodes], [v for _, v in rows.nodes]))
        if rows.customers:
            c.execute(sql("INSERT INTO {} (key, count, head) SELECT * FROM unnest(%s::bytea[], %s::bigint[], "
                          "%s::bytea[]) ON CONFLICT (key) DO UPDATE SET count = EXCLUDED.count, head = EXCLUDED.head"
                          ).format(self.map_customers_table),
                      ([k for k, _, _ in rows.customers], [n for _, n, _ in rows.customers],
                       [h for _, _, h in rows.customers]))

    def map_state(self) -> tuple[int, int]:
        with self._cursor(commit=False) as c:
            row = c.execute(self.SQL("SELECT size, last_position FROM {} WHERE id = 1").format(self.map_state_table)
                            ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def map_nodes(self, wanted: Iterable[bytes], size: int | None = None) -> dict[bytes, bytes]:
        ids = list(dict.fromkeys(wanted))
        if not ids:
            return {}
        upto = (1 << 62) if size is None else size
        with self._cursor(commit=False) as c:
            rows = c.execute(self.SQL("SELECT w.node, (SELECT m.value FROM {} m WHERE m.node = w.node AND m.size <= %s "
                                      "ORDER BY m.size DESC LIMIT 1) FROM unnest(%s::bytea[]) AS w(node)").format(
                                      self.map_nodes_table), (upto, ids)).fetchall()
        return {bytes(node): bytes(value) for node, value in rows if value is not None}

    def map_customers(self, keys: Iterable[bytes]) -> dict[bytes, tuple[int, bytes]]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        with self._cursor(commit=False) as c:
            rows = c.execute(self.SQL("SELECT key, count, head FROM {} WHERE key = ANY(%s)").format(
                self.map_customers_table), (wanted,)).fetchall()
        return {bytes(k): (int(n), bytes(h)) for k, n, h in rows}

    def nodes(self, wanted: Iterable[Node]) -> dict[Node, bytes]:
        inner = list(wanted)
        found: dict[Node, bytes] = {}
        if not inner:
            return found
        with self._cursor(commit=False) as c:
            for level, i, h in c.execute(
                    self.SQL("SELECT n.level, n.idx, n.hash FROM unnest(%s::smallint[], %s::bigint[]) AS w(level, idx) "
                             "CROSS JOIN LATERAL (SELECT * FROM {} x WHERE x.level = w.level AND x.idx = w.idx) n"
                             ).format(self.nodes_table), ([n[0] for n in inner], [n[1] for n in inner])).fetchall():
                found[(int(level), int(i))] = bytes(h)
        return found

    def tiles(self, indexes: Iterable[int]) -> dict[int, Tile]:
        wanted = sorted(set(indexes))
        if not wanted:
            return {}
        with self._cursor(commit=False) as c:
            rows = c.execute(self._tile + self.SQL("WHERE idx = ANY(%s)"), (wanted,)).fetchall()
        return {int(i): Tile(int(i), int(f), bytes(leaves), bytes(p), bytes(n)) for i, f, leaves, p, n in rows}

    def tile_of_position(self, position: int) -> Tile | None:
        with self._cursor(commit=False) as c:
            row = c.execute(self._tile + self.SQL("WHERE first_position <= %s ORDER BY first_position DESC LIMIT 1"),
                            (position,)).fetchone()
        return Tile(int(row[0]), int(row[1]), bytes(row[2]), bytes(row[3]), bytes(row[4])) if row else None

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
