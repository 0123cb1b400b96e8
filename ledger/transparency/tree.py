"""The ledger's Merkle tree: leaves appended in store position order, proofs read from stored nodes.

Leaf ``i`` is the ``i``-th event of the notification log (position order), its leaf hash the
RFC 6962 leaf over the audit's event hash: SHA-256(0x00 ‖ SHA-256(stored bytes)). The tree is
kept as rows (:mod:`caseledger.ledger.store.merkle_tables`): the leaves in tiles of 256, and every
complete subtree of 256 leaves or more. In memory the appender holds only the *frontier* — the
roots of the complete subtrees the tree's size splits into, one per set bit, at most 64 hashes —
and the last, partial tile (at most 256 leaves), so an append costs O(log n) hashing, about one
row per 128 leaves, and memory stays constant however long the log.

Which positions are leaves: the appender follows the notification log exactly as the publisher
does (``select_notifications(start=last + 1)``). Writers are serialized and insert in commit order
on both backends (see :mod:`caseledger.ledger.store.postgres_recorder`), so when a position is visible every
earlier one is either visible or will never be: a PostgreSQL sequence number consumed by a
rolled-back insert is a hole no event can fill later, and no leaf is ever skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from caseledger.ledger.errors import TreeMoved
from caseledger.ledger.store_ports import TILE_HEIGHT, MerkleStore, Tile
from caseledger.ledger.transparency.customer_map import CustomerMap, event_customer
from caseledger.verify.rfc9162 import (
    EMPTY_ROOT,
    consistency_ranges,
    fold,
    inclusion_ranges,
    node_hash,
    proof_nodes,
    subtrees,
)

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger

__all__ = ["MerkleLog", "tile_nodes"]

TILE = 1 << TILE_HEIGHT
_NO_END = (1 << 63) - 1  # a page of the log, however far it goes
MAP_FLUSH_LEAVES = 100_000
"""The customer map is written before each checkpoint, and at the latest after this many leaves (memory)."""


def tile_levels(tile: Tile) -> list[list[bytes]]:
    """The tile's complete subtrees by level: ``levels[j][k]`` is node ``(j, (tile.index << 8 >> j) + k)``."""
    hashes = [tile.leaves[i : i + 32] for i in range(0, len(tile.leaves), 32)]
    levels = [hashes]
    if tile.inner and len(hashes) == TILE:  # a full tile keeps its inner nodes
        at = 0
        for level in range(1, TILE_HEIGHT + 1):
            n = TILE >> level
            levels.append([tile.inner[i : i + 32] for i in range(at, at + 32 * n, 32)])
            at += 32 * n
        return levels
    sha256 = hashlib.sha256
    while len(levels) <= TILE_HEIGHT and len(hashes) > 1:
        hashes = [sha256(b"\x01" + hashes[i] + hashes[i + 1]).digest() for i in range(0, len(hashes) - 1, 2)]
        levels.append(hashes)
    return levels


def tile_nodes(tile: Tile) -> dict[tuple[int, int], bytes]:
    """Every complete subtree ``(level ≤ 8, index)`` inside a tile, from its leaves (255 hashes for a full one)."""
    found: dict[tuple[int, int], bytes] = {}
    for level, hashes in enumerate(tile_levels(tile)):
        start = (tile.index << TILE_HEIGHT) >> level
        found.update(((level, start + k), h) for k, h in enumerate(hashes))
    return found


def n_missing(found: dict[tuple[int, int], bytes], level: int, index: int) -> bool:
    """A node below a tile's height not found yet: read from its tile."""
    return level < TILE_HEIGHT and (level, index) not in found


class MerkleLog:
    """The tree over one ledger's log: append from the notification log, root, proofs."""

    def __init__(self, store: MerkleStore) -> None:
        self.store = store
        self.size = 0
        self.last_position = 0
        self.high: list[tuple[int, int, bytes]] = []  # the frontier's subtrees of height ≥ 8 (full tiles and up)
        self.tail: Tile | None = None  # the last tile while it is partial
        self.customers = CustomerMap(store)  # who has how many events, committed beside the root
        self.reload()

    @classmethod
    def of(cls, ledger: CaseLedger) -> MerkleLog:
        return cls(ledger.storage.merkle())

    def reload(self) -> None:
        """Read the size, the frontier and the partial tile from the store (after another appender moved it)."""
        self.size, self.last_position = self.store.state()
        full = self.size - self.size % TILE
        wanted = subtrees(0, full)  # all of height ≥ 8
        found = self.store.nodes(wanted)
        missing = [n for n in wanted if n not in found]
        self.tail = None
        if self.size % TILE:
            self.tail = self.store.tiles([self.size >> TILE_HEIGHT]).get(self.size >> TILE_HEIGHT)
            if self.tail is None or len(self.tail) != self.size % TILE:
                missing.append((0, full))
        if missing:
            raise LookupError(f"the Merkle tree of size {self.size} lacks its nodes {missing[:3]}: "
                              "its tables were damaged; rebuild them (docs/audit.md)")
        self.high = [(level, index, found[(level, index)]) for level, index in wanted]
        self.customers.reload()

    @property
    def map_in_step(self) -> bool:
        """Whether the customer map (in memory) covers exactly the tree's leaves (else ``catch_up_map`` brings it)."""
        return self.customers.size == self.size

    @property
    def frontier(self) -> list[tuple[int, int, bytes]]:
        """The roots ``(level, index, hash)`` of the complete subtrees the tree splits into, left to right."""
        if self.tail is None:
            return list(self.high)
        inside = tile_nodes(self.tail)
        start = self.tail.index << TILE_HEIGHT
        return [*self.high, *((level, index, inside[(level, index)]) for level, index in subtrees(start, self.size))]

    @property
    def root(self) -> bytes:
        """MTH of the whole tree."""
        frontier = self.frontier
        return fold([h for _, _, h in frontier]) if frontier else EMPTY_ROOT

    def append(self, entries: Sequence[tuple[int, bytes]], customers: Sequence[bytes] | None = None) -> int:
        """Append ``(position, event hash)`` entries (positions increasing, after ``last_position``).

        ``customers``: each entry's customer id (the envelope's, b"" for none), for the customer map, which
        moves in the same transaction while it is in step with the tree (without them it falls behind,
        and ``catch_up`` brings it up from the log).
        One transaction; TreeMoved (nothing written) when another appender moved the tree first.
        Only the leaf hash is computed per event; a tile's 255 inner nodes are computed once, when it
        fills, by pairwise list reductions (the fastest way to hash in Python), and only nodes of
        height ≥ 8 enter the frontier.
        """
        if not entries:
            return 0
        last = self.last_position
        for position, _ in entries:
            if position <= last:
                raise ValueError(f"position {position} is not after the tree's last position {last}")
            last = position
        sha256 = hashlib.sha256
        hashes = [sha256(b"\x00" + d).digest() for _, d in entries]
        high = list(self.high)
        nodes: list[tuple[int, int, bytes]] = []
        tiles: list[Tile] = []
        tail = self.tail
        leaves = bytearray(tail.leaves if tail else b"")
        positions = bytearray(tail.positions if tail else b"")
        first = tail.first_position if tail else entries[0][0]
        size = self.size
        done = 0
        while done < len(entries):
            take = min(TILE - size % TILE, len(entries) - done)
            if not leaves:
                first = entries[done][0]
            leaves += b"".join(hashes[done : done + take])
            positions += b"".join(p.to_bytes(8, "big") for p, _ in entries[done : done + take])
            size += take
            done += take
            if size % TILE == 0:  # a full tile: its root, then up the frontier
                index = (size >> TILE_HEIGHT) - 1
                level_hashes = [bytes(leaves[i : i + 32]) for i in range(0, len(leaves), 32)]
                inner: list[bytes] = []
                while len(level_hashes) > 1:
                    level_hashes = [sha256(b"\x01" + level_hashes[i] + level_hashes[i + 1]).digest()
                                    for i in range(0, len(level_hashes), 2)]
                    inner += level_hashes
                tiles.append(Tile(index, first, bytes(leaves), bytes(positions), b"".join(inner)))
                level, h = TILE_HEIGHT, level_hashes[0]
                nodes.append((level, index, h))
                while high and high[-1][0] == level:
                    h = node_hash(high.pop()[2], h)
                    level, index = level + 1, index >> 1
                    nodes.append((level, index, h))
                high.append((level, index, h))
                leaves, positions = bytearray(), bytearray()
        tail = Tile(size >> TILE_HEIGHT, first, bytes(leaves), bytes(positions)) if leaves else None
        if tail is not None:
            tiles.append(tail)
        in_step = customers is not None and self.map_in_step
        self.store.append(self.size, size, last, tiles, nodes)
        self.size, self.last_position, self.high, self.tail = size, last, high, tail
        if in_step:
            assert customers is not None
            self.customers.add(size, last, list(zip(customers, (d for _, d in entries), strict=True)))
            if self.customers.pending_leaves >= MAP_FLUSH_LEAVES:
                self.store_map()
        return len(entries)

    def store_map(self) -> bool:
        """Write the customer map as it is in memory (done before each checkpoint); False when another appender
        stored it first (the map is then reloaded, behind: ``catch_up_map``)."""
        flushed = self.customers.flush()
        if flushed is None:
            return True
        try:
            self.store.append_map(flushed[0])
        except TreeMoved:
            self.customers.reload()
            return False
        self.customers.stored(*flushed)
        return True

    def commit_map(self, ledger: CaseLedger) -> bytes:
        """The customer map over exactly the tree's leaves, stored: its root (what a checkpoint commits)."""
        while True:
            if self.customers.stored_size > self.size:  # another appender went further: follow it
                self.reload()
            self.catch_up_map(ledger)
            if self.store_map() and self.customers.stored_size == self.size:
                return self.customers.root

    def catch_up_map(self, ledger: CaseLedger, *, batch: int = 1000) -> int:
        """Bring the customer map (in memory) up to the tree from the log: a tree kept before the map, appended
        without customers, or another appender's; the leaves read."""
        done = 0
        while self.customers.size < self.size:
            cmap = self.customers
            want = min(batch, self.size - cmap.size)
            notifications = ledger.recorder.select_notifications(start=cmap.last_position + 1, limit=want)
            if not notifications:
                raise LookupError(f"the log lacks the events of leaves {cmap.size} to {self.size}: the customer map "
                                  "cannot be brought up to the tree")
            sha256 = hashlib.sha256
            cmap.add(cmap.size + len(notifications), notifications[-1].id,
                     [(event_customer(n.state), sha256(n.state).digest()) for n in notifications])
            done += len(notifications)
        return done

    def catch_up(self, ledger: CaseLedger, *, batch: int = 5000, limit: int | None = None) -> int:
        """Append every event of the notification log not yet in the tree (at most ``limit``), the customer map
        with it.

        The log is read as the audit reads it (``audit_snapshot``: plain rows, no notification objects, no id
        parsed), a page per short read transaction — closed before the page is appended (an in-memory SQLite
        store lets no writer in while a reader is open).
        """
        self.catch_up_map(ledger, batch=min(batch, 1000))
        done = 0
        sha256 = hashlib.sha256
        while limit is None or done < limit:
            want = batch if limit is None else min(batch, limit - done)
            with ledger.storage.audit_snapshot() as log:
                rows = next(iter(log.pages(self.last_position, _NO_END, want)), [])
            if not rows:
                break
            rows = rows[:want]
            try:
                done += self.append([(row[0], sha256(row[4]).digest()) for row in rows],
                                    [event_customer(row[4]) for row in rows])
            except TreeMoved:
                self.reload()
        return done

    # -- proofs ---------------------------------------------------------------------------------------------

    def _hashes(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """MTH of each range, from O(log n) stored rows (nodes of 256 leaves and more, and tiles) in two queries."""
        wanted = proof_nodes(ranges)
        found = {(level, index): h for level, index, h in self.high if (level, index) in wanted}
        found.update(self.store.nodes(n for n in wanted if n not in found and n[0] >= TILE_HEIGHT))
        low: dict[int, list[tuple[int, int]]] = {}
        for level, index in wanted:
            if n_missing(found, level, index):
                low.setdefault((index << level) >> TILE_HEIGHT, []).append((level, index))
        for t, tile in self.store.tiles(low).items():
            levels = tile_levels(tile)
            for level, index in low[t]:
                k = index - ((t << TILE_HEIGHT) >> level)
                if level < len(levels) and k < len(levels[level]):
                    found[(level, index)] = levels[level][k]
        missing = wanted - found.keys()
        if missing:
            raise LookupError(f"the Merkle tree lacks the nodes {sorted(missing)[:3]}: its tables were damaged")
        return [fold([found[n] for n in subtrees(a, b)]) for a, b in ranges]

    def root_at(self, size: int) -> bytes:
        """MTH of the first ``size`` leaves (from stored nodes)."""
        if not 0 <= size <= self.size:
            raise ValueError(f"the tree has {self.size} leaves, not {size}")
        return self._hashes([(0, size)])[0] if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The audit path of leaf ``index`` in the tree of ``size`` leaves."""
        return self._hashes(inclusion_ranges(index, size))

    def inclusion_proofs(self, indexes: Iterable[int], size: int) -> dict[int, list[bytes]]:
        """Audit paths of many leaves, every node read in one query."""
        wanted = {i: inclusion_ranges(i, size) for i in indexes}
        flat = [r for ranges in wanted.values() for r in ranges]
        hashes = iter(self._hashes(flat))
        return {i: [next(hashes) for _ in ranges] for i, ranges in wanted.items()}

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """The proof that the tree of ``new`` leaves extends the tree of ``old`` leaves."""
        return self._hashes(consistency_ranges(old, new))
