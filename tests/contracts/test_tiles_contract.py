"""The tree as C2SP tlog-tiles on both backends: each entry of a bundle is its leaf's event hash.

The paths, the tiles of a 70,000-leaf tree and the routes: tests/unit/test_tlog_tiles.py; Go's clients
against a running service: tests/system/test_go_interop.py.
"""

from __future__ import annotations

import hashlib

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner
from caseledger.ledger.transparency.checkpoints import sign_checkpoint
from caseledger.ledger.transparency.tiles import TilePath, entry_bundle, tile_hashes
from caseledger.verify.rfc9162 import leaf_hash
from tests.support.contacts import draft


def test_every_entry_of_a_bundle_hashes_to_its_leaf_in_the_tile(ledger: CaseLedger) -> None:
    for i in range(4):
        ledger.record_contact(draft(f"m-{i}"))
    size = sign_checkpoint(ledger, CheckpointSigner("ledger.test/log", bytes(32))).tree_size
    store = ledger.storage.merkle()
    leaves = tile_hashes(store, TilePath(0, 0, size), size)
    bundle = entry_bundle(ledger, store, TilePath(None, 0, size), size)
    entries = [bundle[k * 34 + 2 : k * 34 + 34] for k in range(size)]
    assert len(bundle) == 34 * size and all(bundle[k * 34 : k * 34 + 2] == b"\x00\x20" for k in range(size))
    assert b"".join(leaf_hash(e) for e in entries) == leaves
    stored = [hashlib.sha256(n.state).digest() for n in ledger.recorder.select_notifications(start=1, limit=size)]
    assert entries == stored
    assert tile_hashes(store, TilePath(0, 0, 3), size) == leaves[:96]  # an older checkpoint's tile
