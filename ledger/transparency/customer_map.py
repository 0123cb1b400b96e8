"""The customer map: for each customer, how many events and the head of their chain, committed by each checkpoint.

The hashing, the proofs and their check are ``caseledger.verify.completeness`` (the auditor's side);
this module keeps the map beside the Merkle tree. :class:`~caseledger.ledger.transparency.tree.MerkleLog`
hands it each batch it appended (:meth:`CustomerMap.add`: each customer's count and chain head move
in memory, one hash per event), and writes the map's changed nodes when a checkpoint is signed
(:meth:`CustomerMap.flush`, in one transaction guarded by the size the stored map covers), so the
upper levels of the tree are hashed and written once per checkpoint rather than once per batch. The
stored map always says which leaves it covers: after a crash it is behind the tree, never apart from
it, and the appender brings it up from the log (``MerkleLog.catch_up_map``) before the next
checkpoint. Which customer an event belongs to is read from the envelope in clear in its stored bytes
(:func:`event_customer`), never unsealed.

Storage (``ledger/store/merkle_tables.py``): each node of the sparse tree is a row per version —
``(node id, tree size from which it holds, value)``, the value an inner node's hash or a leaf's key
and value hash — so a proof against any checkpoint reads each node's latest version up to its size;
each customer's current count and chain head is a row. Writing the map reads the nodes along the
changed customers' paths (the upper 16 levels from memory once read), one query per level below, and
writes the nodes it changed.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from caseledger.ledger.avro.envelope import parse_envelope
from caseledger.ledger.store_ports import MapRows, MerkleStore
from caseledger.verify.completeness import (
    CHAIN_START,
    EMPTY,
    MapProof,
    bit,
    chain,
    customer_key,
    map_leaf,
    map_node,
    value_hash,
)
from caseledger.verify.history import envelope_customer

__all__ = ["CustomerMap", "event_customer", "node_id"]

Reader = Callable[[list[bytes]], dict[bytes, bytes]]


def event_customer(data: bytes) -> bytes:
    """The envelope's ``customer_id`` of an event's stored bytes (b"": an event of no customer).

    The auditor's verifier reads it the same way (``caseledger.verify.history.envelope_customer``); the
    fast path reads the current envelope, the verifier's reader every earlier one.
    """
    try:
        return parse_envelope(data)[4]
    except (ValueError, IndexError):
        return envelope_customer(data)


def node_id(key: bytes, depth: int) -> bytes:
    """The node at ``depth`` on ``key``'s path: the depth (2 bytes) and the key's first ``depth`` bits."""
    n, rest = divmod(depth, 8)
    prefix = key[:n]
    if rest:
        prefix += bytes([key[n] & (0xFF << (8 - rest)) & 0xFF])
    return depth.to_bytes(2, "big") + prefix


ROOT = node_id(bytes(32), 0)
CACHED_DEPTH = 16
"""The appender keeps the map's nodes down to this depth in memory (at most 2^17 of them, ~16 MB): a checkpoint's
update then reads only the levels below from the store."""
CACHED = CACHED_DEPTH.to_bytes(2, "big")
MISS = b"?"


def node_hash(value: bytes | None) -> bytes:
    if value is None:
        return EMPTY
    return value if len(value) == 32 else map_leaf(value[:32], value[32:])


@dataclass
class _Plan:
    """The nodes an update reads, level by level, and the rows it writes."""

    read: Reader
    values: dict[bytes, bytes | None]
    writes: dict[bytes, bytes]


class CustomerMap:
    """The map beside one MerkleLog: what is stored (its size and root) and what was appended since, in memory."""

    def __init__(self, store: MerkleStore) -> None:
        self.store = store
        self.stored_size = self.size = 0  # leaves the stored map covers / the map in memory covers
        self.stored_position = self.last_position = 0
        self.root = EMPTY  # the stored map's root; read by reload(), which the MerkleLog calls
        self.pending: dict[bytes, tuple[int, bytes]] = {}  # key → (count, head), changed since stored
        self.upper: dict[bytes, bytes | None] = {}  # the stored map's nodes down to CACHED_DEPTH, as read or written

    def reload(self) -> None:
        """Back to the stored map (what was appended since, in memory only, is dropped)."""
        self.stored_size, self.stored_position = self.store.map_state()
        self.size, self.last_position = self.stored_size, self.stored_position
        self.root = node_hash(self.store.map_nodes([ROOT]).get(ROOT))
        self.pending = {}
        self.upper = {}

    def add(self, new_size: int, last_position: int, events: Sequence[tuple[bytes, bytes]]) -> None:
        """``events`` ``(customer id, event hash)``, leaves ``size`` to ``new_size`` in leaf order (b"": no customer's)."""
        by_customer: dict[bytes, list[bytes]] = {}
        for customer, digest in events:
            if customer:
                by_customer.setdefault(customer, []).append(digest)
        by_key = {customer_key(customer): digests for customer, digests in by_customer.items()}
        pending = self.pending
        unknown = [k for k in by_key if k not in pending]
        current = self.store.map_customers(unknown) if unknown else {}
        for key, digests in by_key.items():
            count, head = pending.get(key) or current.get(key) or (0, CHAIN_START)
            pending[key] = (count + len(digests), chain(digests, head))
        self.size, self.last_position = new_size, last_position

    @property
    def pending_leaves(self) -> int:
        return self.size - self.stored_size

    def flush(self) -> tuple[MapRows, bytes] | None:
        """The rows taking the stored map to the map in memory, and its root (None: nothing to write)."""
        if self.size == self.stored_size:
            return None
        changes = {key: value_hash(count, head) for key, (count, head) in self.pending.items()}
        plan = _Plan(self._read, {}, {})
        root = _update(plan, changes) if changes else self.root
        customers = [(key, count, head) for key, (count, head) in self.pending.items()]
        rows = MapRows(self.stored_size, self.size, self.last_position, list(plan.writes.items()), customers)
        return rows, root

    def stored(self, rows: MapRows, root: bytes) -> None:
        """``rows`` were written: they are the stored map now."""
        self.stored_size, self.stored_position, self.root = rows.new_size, rows.last_position, root
        self.pending = {}
        self.upper.update((node, value) for node, value in rows.nodes if node[:2] <= CACHED)

    def _read(self, ids: list[bytes]) -> dict[bytes, bytes]:
        """The stored map's current nodes: the upper levels from memory once read, the rest from the store."""
        upper = self.upper
        found = {node: value for node in ids if node[:2] <= CACHED and (value := upper.get(node, MISS)) is not MISS
                 and value is not None}
        wanted = [node for node in ids if node not in found and not (node[:2] <= CACHED and node in upper)]
        if wanted:
            read = self.store.map_nodes(wanted)
            found.update(read)
            upper.update((node, read.get(node)) for node in wanted if node[:2] <= CACHED)
        return found

    def root_at(self, size: int) -> bytes:
        """The map's root over the first ``size`` leaves (the latest version of the root node up to it)."""
        return node_hash(self.store.map_nodes([ROOT], size).get(ROOT))

    def proof(self, customer_id: str, size: int) -> MapProof:
        """The customer's proof against the map of ``size`` leaves: inclusion, or non-inclusion."""
        key = customer_key(customer_id)
        path: list[bytes] = []  # the sibling at each depth from 1 down
        for start in range(0, 257, 16):
            depths = range(start, min(start + 16, 257))
            found = self.store.map_nodes([node_id(key, d) for d in depths]
                                         + [sibling_id(key, d) for d in depths if d], size)
            for d in depths:
                if d:
                    path.append(node_hash(found.get(sibling_id(key, d))))
                value = found.get(node_id(key, d))
                if value is None:
                    return MapProof("empty", tuple(reversed(path)))
                if len(value) == 64:
                    if value[:32] == key:
                        return MapProof("leaf", tuple(reversed(path)))
                    return MapProof("other", tuple(reversed(path)), value[:32], value[32:])
        raise LookupError("the customer map's path runs past 256 levels: its tables were damaged")


def sibling_id(key: bytes, depth: int) -> bytes:
    """The node beside the one at ``depth`` (≥ 1) on ``key``'s path."""
    flipped = bytearray(key)
    flipped[(depth - 1) >> 3] ^= 0x80 >> ((depth - 1) & 7)
    return node_id(bytes(flipped), depth)


def _nid(key: int, depth: int) -> bytes:
    """:func:`node_id` of a key given as an integer (the hot path of an update)."""
    return depth.to_bytes(2, "big") + ((key >> (256 - depth)) << (-depth % 8)).to_bytes((depth + 7) >> 3, "big")


def _update(plan: _Plan, changes: dict[bytes, bytes]) -> bytes:
    """Apply ``changes`` (key → value hash) to the stored map; the new root. Reads each level once.

    The changed keys, as sorted integers, split at each inner node into two runs (a binary search), so an
    update costs a hash and a row per changed node, plus a read per level."""
    keys = sorted(int.from_bytes(k, "big") for k in changes)
    # Read down, one query per level: the nodes on the changed keys' paths and the siblings beside them.
    level: list[tuple[int, int, int]] = [(0, 0, len(keys))]  # (depth, first, end): keys[first:end] below the node
    beside: list[bytes] = []
    inner: list[tuple[int, int, int, int]] = []  # (depth, first, split, end)
    ends: list[tuple[int, int, int]] = []
    while level or beside:
        ids = [_nid(keys[first], depth) for depth, first, _ in level]
        wanted = ids + beside
        found = plan.read(wanted) if wanted else {}
        for node in wanted:
            plan.values[node] = found.get(node)
        beside = []
        below: list[tuple[int, int, int]] = []
        for (depth, first, end), node in zip(level, ids, strict=True):
            value = plan.values[node]
            if value is None or len(value) == 64:
                ends.append((depth, first, end))
                continue
            shift = 255 - depth
            split = bisect.bisect_left(keys, ((keys[first] >> shift) | 1) << shift, first, end)
            inner.append((depth, first, split, end))
            for lo, hi in ((first, split), (split, end)):
                if lo < hi:
                    below.append((depth + 1, lo, hi))
                else:
                    beside.append(_nid(keys[first] ^ (1 << shift), depth + 1))
        level = below
    # Rebuild each subtree where a path ended (empty, or one leaf), then the inner nodes bottom-up.
    hashes: dict[bytes, bytes] = {}
    for depth, first, end in ends:
        node = _nid(keys[first], depth)
        value = plan.values[node]
        contents = {(k := key.to_bytes(32, "big")): changes[k] for key in keys[first:end]}
        if value is not None and value[:32] not in contents:
            contents[value[:32]] = value[32:]
        hashes[node] = _build(plan, depth, contents)
    for depth, first, split, end in sorted(inner, reverse=True):
        shift = 255 - depth
        left = hashes[_nid(keys[first], depth + 1)] if first < split else \
            node_hash(plan.values.get(_nid(keys[first] ^ (1 << shift), depth + 1)))
        right = hashes[_nid(keys[split], depth + 1)] if split < end else \
            node_hash(plan.values.get(_nid(keys[first] ^ (1 << shift), depth + 1)))
        node = _nid(keys[first], depth)
        hashes[node] = plan.writes[node] = map_node(left, right)
    return hashes[ROOT]


def _build(plan: _Plan, depth: int, contents: dict[bytes, bytes]) -> bytes:
    """Write the subtree at ``depth`` holding ``contents`` (where nothing was below: empty or one leaf)."""
    key = next(iter(contents))
    node = node_id(key, depth)
    if len(contents) == 1:
        plan.writes[node] = key + contents[key]
        return map_leaf(key, contents[key])
    left = {k: v for k, v in contents.items() if not bit(k, depth)}
    right = {k: v for k, v in contents.items() if bit(k, depth)}
    digest = map_node(_build(plan, depth + 1, left) if left else EMPTY,
                      _build(plan, depth + 1, right) if right else EMPTY)
    plan.writes[node] = digest
    return digest


