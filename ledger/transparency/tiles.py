"""The tree served as C2SP tlog-tiles (https://c2sp.org/tlog-tiles): tile paths, tiles, entry bundles.

A tlog client (Go's ``golang.org/x/mod/sumdb/tlog``, ``filippo.io/torchwood``) follows the log from
three kinds of static resources under one prefix: ``checkpoint``; ``tile/<L>/<N>[.p/<W>]``, 256
hashes of level ``8·L`` (level 0: the leaf hashes, as our stored tiles hold them; level 1 and up:
complete subtrees of 256^L leaves, as our stored nodes hold them); ``tile/entries/<N>[.p/<W>]``, the
entries themselves, each a big-endian uint16 length and the entry. The log's entry is the 32-byte
event hash (SHA-256 of the event's stored bytes), so that an entry's RFC 6962 leaf hash,
SHA-256(0x00 ‖ entry), is the tree's leaf: the entries are hashes of sealed bytes, never the events.

What is served is what the latest signed checkpoint commits to: a tile or bundle reaching past its
size is not found. Every full tile, and every partial tile of a width that size allows, is the
same bytes forever (``.p/W`` is the first W hashes of the tile), so clients may cache them. Nothing
is checked here on the way out: a tile or an event altered in the store is served as it is, and
the client, which checks every hash against the signed root, refuses it (an event missing from the
store is served as an empty entry, which no leaf hash matches).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from caseledger.ledger.errors import NotFound, ValidationError
from caseledger.ledger.store_ports import TILE_HEIGHT, MerkleStore

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger

__all__ = ["TILE_WIDTH", "TilePath", "entry_bundle", "tile_hashes"]

TILE_WIDTH = 1 << TILE_HEIGHT
MAX_LEVEL = 63
_LEVEL = re.compile(r"0|[1-9][0-9]?")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")
_GROUP = re.compile(r"[0-9]{3}")
FORMAT = ("tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>]: L a level from 0 to 63, N the tile's index in "
          "groups of three digits all but the last prefixed with x (1234067 is x001/x234/067), W a width from 1 "
          "to 255 (c2sp.org/tlog-tiles)")


@dataclass(frozen=True)
class TilePath:
    """One resource of the tiles: level ``None`` for an entry bundle; ``width`` 256 for a full tile."""

    level: int | None
    index: int
    width: int = TILE_WIDTH

    @property
    def partial(self) -> bool:
        return self.width < TILE_WIDTH

    @property
    def end(self) -> int:
        """How many leaves the tree needs for this resource to exist: its last hash's last leaf, plus one."""
        return (self.index * TILE_WIDTH + self.width) * TILE_WIDTH ** (self.level or 0)

    def path(self) -> str:
        """The path under the log's prefix, as the spec encodes it."""
        digits = f"{self.index:03d}"
        digits = "0" * (-len(digits) % 3) + digits
        groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
        n = "/".join([*("x" + g for g in groups[:-1]), groups[-1]])
        suffix = f".p/{self.width}" if self.partial else ""
        return f"tile/{'entries' if self.level is None else self.level}/{n}{suffix}"

    @classmethod
    def parse(cls, text: str) -> TilePath:
        """The resource a path names (``tile/…``); ValidationError naming what is wrong and the format."""
        parts = text.removeprefix("tile/").split("/")
        width = TILE_WIDTH
        if len(parts) >= 3 and parts[-2].endswith(".p"):
            if not _WIDTH.fullmatch(parts[-1]) or int(parts[-1]) >= TILE_WIDTH:
                raise ValidationError(f"tile path {_shown(text)}: the width of a partial tile is 1 to 255, "
                                      f"without leading zeros; use {FORMAT}")
            width = int(parts[-1])
            parts = [*parts[:-2], parts[-2].removesuffix(".p")]
        if not text.startswith("tile/") or len(parts) < 2:
            raise ValidationError(f"tile path {_shown(text)}: use {FORMAT}")
        head, groups = parts[0], parts[1:]
        level: int | None = None
        if head != "entries":
            if not _LEVEL.fullmatch(head) or int(head) > MAX_LEVEL:
                raise ValidationError(f"tile path {_shown(text)}: the level is 0 to 63, without leading zeros, or "
                                      f"'entries'; use {FORMAT}")
            level = int(head)
        *prefixed, last = groups
        if (len(groups) > 7 or not _GROUP.fullmatch(last)
                or not all(g.startswith("x") and _GROUP.fullmatch(g[1:]) for g in prefixed)
                or (prefixed and prefixed[0] == "x000")):
            raise ValidationError(f"tile path {_shown(text)}: the index is groups of three digits, all but the "
                                  f"last prefixed with x, the first not x000; use {FORMAT}")
        index = int("".join(g.removeprefix("x") for g in groups))
        return cls(level, index, width)


def _shown(text: str) -> str:
    """A path as an error message names it: printable, short (it is the caller's own input)."""
    safe = "".join(c if c.isprintable() else "?" for c in text[:80])
    return repr(safe + ("…" if len(text) > 80 else ""))


def _require_in(tile: TilePath, tree_size: int) -> None:
    if tile.end > tree_size:
        raise NotFound(f"{tile.path()} is not in the log: its latest checkpoint commits to {tree_size} entries, and "
                       f"this tile needs {tile.end}; read the checkpoint first and ask only for the tiles its size "
                       "names (c2sp.org/tlog-tiles)")


def tile_hashes(store: MerkleStore, tile: TilePath, tree_size: int) -> bytes:
    """The ``width`` hashes of a Merkle tile of the tree of ``tree_size`` leaves, 32 bytes each."""
    assert tile.level is not None
    _require_in(tile, tree_size)
    if tile.level == 0:
        stored = store.tiles([tile.index]).get(tile.index)
        if stored is None or len(stored) < tile.width:
            raise _damaged(tile)
        return stored.leaves[: 32 * tile.width]
    level = TILE_HEIGHT * tile.level
    wanted = [(level, tile.index * TILE_WIDTH + i) for i in range(tile.width)]
    found = store.nodes(wanted)
    if len(found) != len(wanted):
        raise _damaged(tile)
    return b"".join(found[node] for node in wanted)


def entry_bundle(ledger: CaseLedger, store: MerkleStore, tile: TilePath, tree_size: int) -> bytes:
    """The entries of a level-0 tile: each leaf's event hash, read from the events themselves."""
    _require_in(tile, tree_size)
    stored = store.tiles([tile.index]).get(tile.index)
    if stored is None or len(stored) < tile.width:
        raise _damaged(tile)
    positions = [stored.position(k) for k in range(tile.width)]
    notifications = ledger.recorder.select_notifications(
        start=positions[0], limit=positions[-1] - positions[0] + 1, stop=positions[-1])
    states = {n.id: n.state for n in notifications}
    sha256 = hashlib.sha256
    bundle = bytearray()
    for position in positions:
        state = states.get(position)
        entry = sha256(state).digest() if state is not None else b""
        bundle += len(entry).to_bytes(2, "big") + entry
    return bytes(bundle)


def _damaged(tile: TilePath) -> NotFound:
    return NotFound(f"{tile.path()}: the ledger's Merkle tables lack it although its checkpoint commits to it; "
                    "they were damaged: run `caseledger audit verify`, then rebuild them (docs/audit.md)")
