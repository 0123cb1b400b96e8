"""A contact's inclusion proof, for its receipt: the leaf it is in a signed checkpoint's tree, and the audit path.

A receipt names the hash of its ``ContactReceived`` event (the log's leaf is SHA-256(0x00 ‖ that
hash)). With this proof and a checkpoint the ledger signed, the receipt's holder proves the contact
in the log offline (``python -m caseledger.verify receipt FILE --key K --proof P``,
:func:`caseledger.verify.receipts.check_receipt`); a proof that names no leaf, from a checkpoint
signed after the receipt's promised time, is the operator's own word that it broke its promise.

The document holds hashes, the case reference and the contact's handle only, never a word of the
request: it is handed out after an erasure too (the customer's receipt still verifies).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any
from uuid import UUID

from caseledger.ledger.errors import NotFound
from caseledger.ledger.store_ports import TILE_HEIGHT, MerkleStore
from caseledger.verify.receipts import PROOF_FORMAT
from caseledger.verify.rfc9162 import fold, inclusion_ranges, proof_nodes, subtrees, tree_hash

if TYPE_CHECKING:
    from caseledger.ledger.core import LedgerCore

__all__ = ["inclusion_document"]


def inclusion_document(core: LedgerCore, *, reference: str, contact_id: str, case_id: UUID, version: int,
                       event_hash: bytes, tree_size: int | None = None) -> dict[str, Any]:
    """The proof of the event ``(case_id, version)`` against the latest signed checkpoint, or the one of
    ``tree_size``; ``leaf_index`` None when that checkpoint does not hold it (yet)."""
    store = core.storage.merkle()
    if tree_size is None:
        checkpoint = store.latest_checkpoint()
        if checkpoint is None:
            raise NotFound("the ledger has signed no checkpoint yet: ask again later (the publisher or "
                           "`caseledger audit checkpoint` signs them)")
    else:
        found = store.checkpoints(size=tree_size, limit=1)
        if not found:
            raise NotFound(f"the ledger signed no checkpoint of {tree_size} events: give the tree size of a "
                           "checkpoint it signed, or none for its latest")
        checkpoint = found[0]
    with core.storage.audit_snapshot() as snapshot:
        row = snapshot.event(case_id.hex.encode(), version)
    index = store.leaf_indexes([row[0]]).get(row[0]) if row is not None else None
    if index is not None and index >= checkpoint.tree_size:
        index = None
    path = inclusion_path(store, index, checkpoint.tree_size) if index is not None else None
    return {
        "format": PROOF_FORMAT, "reference": reference, "contact_id": contact_id, "event_hash": event_hash.hex(),
        "tree_size": checkpoint.tree_size, "leaf_index": index,
        "inclusion_proof": [base64.b64encode(h).decode() for h in path] if path is not None else None,
        "checkpoint": checkpoint.note,
    }


def inclusion_path(store: MerkleStore, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) from the stored rows: nodes of 256 leaves and more as stored, smaller subtrees from
    their tile's leaves (two queries). (The tree's own reader, ``MerkleLog``, needs the whole ledger.)"""
    ranges = inclusion_ranges(index, size)
    wanted = proof_nodes(ranges)
    found = store.nodes(n for n in wanted if n[0] >= TILE_HEIGHT)
    low = [n for n in wanted if n[0] < TILE_HEIGHT]
    tiles = store.tiles({(i << level) >> TILE_HEIGHT for level, i in low})
    for level, i in low:
        tile, first = tiles.get((i << level) >> TILE_HEIGHT), (i << level) % (1 << TILE_HEIGHT)
        if tile is not None and first + (1 << level) <= len(tile):
            found[(level, i)] = tree_hash([tile.leaf(k) for k in range(first, first + (1 << level))])
    missing = wanted - found.keys()
    if missing:
        raise LookupError(f"the Merkle tree lacks the nodes {sorted(missing)[:3]}: its tables were damaged; "
                          "rebuild them (docs/audit.md)")
    return [fold([found[n] for n in subtrees(a, b)]) for a, b in ranges]
