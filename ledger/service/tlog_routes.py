"""The transparency log over HTTP as C2SP tlog-tiles, so that existing tlog clients follow and verify it.

Under the prefix ``/v1/log/`` (docs/audit.md, "The log as tiles"):

- ``GET /v1/log/checkpoint``: the latest signed checkpoint with the witnesses' cosignatures kept for it
  (``text/plain; charset=utf-8``, not cached);
- ``GET /v1/log/tile/<L>/<N>[.p/<W>]``: a Merkle tile, 32-byte hashes (``application/octet-stream``);
- ``GET /v1/log/tile/entries/<N>[.p/<W>]``: an entry bundle, each entry a 32-byte event hash.

Read-only, for the roles that may ``log.read`` (docs/api.md). A tile's bytes never change, full or
partial: they are cacheable for a year, privately (the answer is to an authenticated principal).
A malformed path is a 400 naming the format, a tile past the checkpoint a 404: never a 500. What the
bytes are, and why nothing is checked on the way out: :mod:`caseledger.ledger.transparency.tiles`.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import Response

from caseledger.ledger.access.principals import Principal
from caseledger.ledger.domain.permissions import Operation
from caseledger.ledger.errors import NotFound
from caseledger.ledger.service.api import ServiceState, principal_for
from caseledger.ledger.store_ports import MerkleStore, StoredCheckpoint
from caseledger.ledger.transparency.tiles import TilePath, entry_bundle, tile_hashes
from caseledger.ledger.transparency.witnesses import cosigned_note

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger

__all__ = ["PREFIX", "add_routes"]

PREFIX = "/v1/log"
TILE_CACHE = "private, max-age=31536000, immutable"
CHECKPOINT_CACHE = "private, no-cache"
O = Operation  # noqa: E741 -- as in the other route modules


def add_routes(app: FastAPI, state: ServiceState) -> None:
    # One Merkle store per pooled ledger: building one looks for its tables in a write transaction.
    stores: weakref.WeakKeyDictionary[CaseLedger, MerkleStore] = weakref.WeakKeyDictionary()
    lock = threading.Lock()

    def merkle(ledger: CaseLedger) -> MerkleStore:
        with lock:
            store = stores.get(ledger)
        if store is None:
            store = ledger.storage.merkle()
            with lock:
                stores[ledger] = store
        return store

    def latest(store: MerkleStore) -> StoredCheckpoint:
        found = store.latest_checkpoint()
        if found is None:
            raise NotFound("the ledger has signed no checkpoint yet: its log is served from the first one on "
                           "(`caseledger audit checkpoint`, or the publisher with a signing key; docs/audit.md)")
        return found

    @app.get(f"{PREFIX}/checkpoint", tags=["log"], openapi_extra={"x-operation": O.LOG_READ.value})
    def checkpoint(_p: Principal = principal_for(O.LOG_READ)) -> Response:
        """The latest signed checkpoint (C2SP tlog-checkpoint) with the witnesses' cosignatures, as tlog clients read it."""
        ledger = state.ledger()
        note = cosigned_note(ledger, latest(merkle(ledger)))
        return Response(note.encode(), media_type="text/plain; charset=utf-8", headers={"Cache-Control": CHECKPOINT_CACHE})

    @app.get(PREFIX + "/tile/{path:path}", tags=["log"], openapi_extra={"x-operation": O.LOG_READ.value})
    def tile(path: str, _p: Principal = principal_for(O.LOG_READ)) -> Response:
        """A Merkle tile ``<L>/<N>[.p/<W>]`` or an entry bundle ``entries/<N>[.p/<W>]`` (C2SP tlog-tiles)."""
        wanted = TilePath.parse("tile/" + path)
        ledger = state.ledger()
        store = merkle(ledger)
        size = latest(store).tree_size
        if wanted.level is None:
            data = entry_bundle(ledger, store, wanted, size)
        else:
            data = tile_hashes(store, wanted, size)
        return Response(data, media_type="application/octet-stream", headers={"Cache-Control": TILE_CACHE})
