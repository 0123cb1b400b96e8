"""Issue 26, "the log served the standard way": the tree as C2SP tlog-tiles, read as a tlog client reads it.

Here, in-process: tile paths as the spec encodes them, the tiles of a synthetic tree of 2,600 leaves
folded back to its root the way a client does, entry bundles of a real ledger, and the routes' answers
(roles, 400 for a malformed path, 404 past the checkpoint, caching). Go's reference clients against a
running ``caseledger serve``, and the spec's own example of 70,000 leaves (tiles of level 2):
tests/system/test_go_interop.py.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from caseledger.ledger.access.principals import PrincipalRegistry
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.permissions import Role
from caseledger.ledger.domain.values import Actor
from caseledger.ledger.errors import NotFound, ValidationError
from caseledger.ledger.service.api import ServiceState
from caseledger.ledger.service.asgi import create_app
from caseledger.ledger.store_ports import MerkleStore, StoredCosignature
from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner
from caseledger.ledger.transparency.checkpoints import sign_checkpoint
from caseledger.ledger.transparency.tiles import TILE_WIDTH, TilePath, entry_bundle, tile_hashes
from caseledger.ledger.transparency.tree import MerkleLog
from caseledger.ledger.transparency.witnesses import text_sha256
from caseledger.verify.rfc9162 import leaf_hash, node_hash, tree_hash
from tests.support.contacts import draft
from tests.support.environment import ledger_settings
from tests.support.examples import examples
from tests.support.personal_data import JANE, SECRETS, jane_contact, work_the_case

# -- paths -------------------------------------------------------------------------------------------------------


def test_paths_are_encoded_as_the_spec_writes_them() -> None:
    assert TilePath(0, 1234067).path() == "tile/0/x001/x234/067"
    assert TilePath(None, 5, 17).path() == "tile/entries/005.p/17"
    assert TilePath(2, 0, 1).path() == "tile/2/000.p/1"
    assert TilePath(1, 1000).path() == "tile/1/x001/000"
    assert TilePath.parse("tile/0/x001/x234/067") == TilePath(0, 1234067)
    assert TilePath.parse("tile/entries/x001/234.p/255") == TilePath(None, 1234, 255)


@given(level=st.none() | st.integers(0, 63), index=st.integers(0, 10**20),
       width=st.integers(1, TILE_WIDTH))
@settings(max_examples=examples(200), deadline=None)
def test_every_path_reads_back_as_the_tile_it_names(level: int | None, index: int, width: int) -> None:
    tile = TilePath(level, index, width)
    assert TilePath.parse(tile.path()) == tile


@pytest.mark.parametrize("path", [
    "tile/", "tile/0", "tile/0/", "tile/0/1", "tile/0/0001", "tile/00/000", "tile/64/000", "tile/-1/000",
    "tile/0/x000/001", "tile/0/001/002", "tile/0/y001/002", "tile/0/000.p/0", "tile/0/000.p/256",
    "tile/0/000.p/01", "tile/0/000.p/", "tile/0/000.p", "tile/entries", "tile/entries/", "tile/data/000",
    "tile/0/x001/x002/x003/x004/x005/x006/x007/008", "tile/0/０００", "tile/0/000/", "checkpoint", "tile/0/000.p/1/2",
])
def test_a_malformed_path_is_refused_with_the_format(path: str) -> None:
    with pytest.raises(ValidationError, match="tlog-tiles"):
        TilePath.parse(path)


# -- tiles of a synthetic tree, folded back as a client does ----------------------------------------------------


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MerkleStore, list[bytes]]]:
    """2,600 leaves appended in uneven batches (positions with gaps): ten full level-0 tiles, one of width
    40, a level-1 tile of width 10. The ledger is held until the module ends: collected earlier (a full
    collection another test of the worker ran), it closed its database under the store."""
    ledger = CaseLedger(ledger_settings(database=str(tmp_path_factory.mktemp("tiles") / "tree.sqlite")))
    store = ledger.storage.merkle()
    rng = random.Random(26)
    positions = sorted(rng.sample(range(1, 10_000), 2_600))
    digests = [hashlib.sha256(p.to_bytes(8, "big")).digest() for p in positions]
    tree, done = MerkleLog(store), 0
    while done < len(positions):
        n = rng.choice([1, 3, 255, 256, 257, 700])
        tree.append(list(zip(positions[done:done + n], digests[done:done + n], strict=True)))
        done += n
    yield store, [leaf_hash(d) for d in digests]
    ledger.close()


def client_root(store: MerkleStore, size: int) -> bytes:
    """MTH of the first ``size`` leaves from the tiles alone, as sumdb/tlog's TileHashReader computes it: each
    complete subtree from the hashes of the tile at the highest level below it, the rest split as RFC 6962 does."""
    fetched: dict[TilePath, bytes] = {}

    def hashes(level: int, index: int) -> list[bytes]:
        """The hashes of level-``level`` tile ``index`` as the tree of ``size`` names it (full, else partial)."""
        width = min(TILE_WIDTH, size // TILE_WIDTH ** level - index * TILE_WIDTH)
        tile = TilePath(level, index, width)
        if tile not in fetched:
            fetched[tile] = tile_hashes(store, tile, size)
        data = fetched[tile]
        return [data[i : i + 32] for i in range(0, len(data), 32)]

    def mth(start: int, end: int) -> bytes:
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:  # a complete subtree: read from a tile
            height = n.bit_length() - 1
            level = height // 8
            below = 1 << (height - 8 * level)  # how many tile hashes it spans
            first = start // TILE_WIDTH ** level
            row = hashes(level, first // TILE_WIDTH)[first % TILE_WIDTH : first % TILE_WIDTH + below]
            while len(row) > 1:
                row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row), 2)]
            return row[0]
        split = 1 << ((n - 1).bit_length() - 1)
        return node_hash(mth(start, start + split), mth(start + split, end))

    root = mth(0, size)
    return root


def test_the_tiles_are_the_ones_the_spec_names_and_fold_to_the_root(big_tree: tuple[MerkleStore, list[bytes]]) -> None:
    store, leaves = big_tree
    size = 2_600
    assert tile_hashes(store, TilePath(0, 9), size) == b"".join(leaves[9 * 256 : 10 * 256])
    assert tile_hashes(store, TilePath(0, 10, 40), size) == b"".join(leaves[10 * 256 :])
    level1 = tile_hashes(store, TilePath(1, 0, 10), size)
    assert [level1[i : i + 32] for i in range(0, 320, 32)] == [tree_hash(leaves[k * 256 : k * 256 + 256])
                                                              for k in range(10)]
    for beyond in (TilePath(0, 10), TilePath(0, 10, 41), TilePath(0, 11, 1), TilePath(1, 0, 11), TilePath(1, 0),
                   TilePath(2, 0, 1), TilePath(63, 0, 1)):
        with pytest.raises(NotFound, match="not in the log"):
            tile_hashes(store, beyond, size)
    assert client_root(store, size) == tree_hash(leaves)


@pytest.mark.parametrize("size", [1, 2, 255, 256, 257, 511, 512, 2_559, 2_560, 2_599])
def test_any_older_checkpoint_is_folded_from_its_own_partial_tiles(big_tree: tuple[MerkleStore, list[bytes]],
                                                                   size: int) -> None:
    """A tile's bytes never change: the partial tiles of an older size are prefixes of today's tiles."""
    store, leaves = big_tree
    assert client_root(store, size) == tree_hash(leaves[:size])


def test_a_leaf_altered_in_the_store_no_longer_folds_to_the_signed_root(tmp_path: Path) -> None:
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "t.sqlite")))
    store = ledger.storage.merkle()
    digests = [hashlib.sha256(i.to_bytes(2, "big")).digest() for i in range(300)]
    MerkleLog(store).append(list(enumerate(digests, start=1)))
    leaves = [leaf_hash(d) for d in digests]
    assert client_root(store, 300) == tree_hash(leaves)
    with sqlite3.connect(tmp_path / "t.sqlite") as db:
        old = db.execute("SELECT leaves FROM merkle_tiles WHERE idx = 1").fetchone()[0]
        db.execute("UPDATE merkle_tiles SET leaves = ? WHERE idx = 1", (bytes([old[0] ^ 1]) + old[1:],))
    assert client_root(store, 300) != tree_hash(leaves)
    ledger.close()


# -- entry bundles and the routes of a real ledger --------------------------------------------------------------


@dataclass
class Served:
    """One ledger for the module (Jane's case worked, a few more contacts), signed; a token per role; one app."""

    ledger: CaseLedger
    signer: CheckpointSigner
    tokens: dict[Role, str]
    client: TestClient

    def get(self, path: str, role: Role | None = Role.AUDITOR) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return self.client.get(f"/v1/log/{path}", headers=headers)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    ledger = CaseLedger(ledger_settings(database=str(tmp_path_factory.mktemp("served") / "l.sqlite")))
    work_the_case(ledger, ledger.record_contact(jane_contact("m-jane")).reference)
    for i in range(3):
        ledger.record_contact(draft(f"m-{i}"))
    signer = CheckpointSigner("ledger.test/log", bytes(range(32)))
    sign_checkpoint(ledger, signer)
    registry = PrincipalRegistry(ledger.principal_store)
    tokens = {role: registry.add(f"{role.value}-1", role).token for role in Role}
    with TestClient(create_app(ServiceState(ledger.settings))) as client:
        yield Served(ledger, signer, tokens, client)
    ledger.close()


def latest_size(ledger: CaseLedger) -> int:
    latest = ledger.storage.merkle().latest_checkpoint()
    assert latest is not None
    return latest.tree_size


def bundle_entries(data: bytes) -> list[bytes]:
    entries = []
    while data:
        n = int.from_bytes(data[:2], "big")
        entries.append(data[2 : 2 + n])
        data = data[2 + n :]
    return entries


def test_an_entry_bundle_holds_each_leafs_event_hash(served: Served) -> None:
    ledger = served.ledger
    store = ledger.storage.merkle()
    size = latest_size(ledger)
    entries = bundle_entries(entry_bundle(ledger, store, TilePath(None, 0, size), size))
    stored = [hashlib.sha256(n.state).digest() for n in ledger.recorder.select_notifications(start=1, limit=size)]
    assert entries == stored
    assert [leaf_hash(e) for e in entries] == [store.tiles([0])[0].leaf(k) for k in range(size)]
    with pytest.raises(NotFound, match="not in the log"):
        entry_bundle(ledger, store, TilePath(None, 0, size + 1), size)


def test_an_event_missing_from_the_store_is_an_empty_entry_no_leaf_matches(tmp_path: Path) -> None:
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "l.sqlite")))
    ledger.record_contact(draft("m-1"))
    size = sign_checkpoint(ledger, CheckpointSigner("ledger.test/log", bytes(32))).tree_size
    with sqlite3.connect(tmp_path / "l.sqlite") as db:
        db.execute("DELETE FROM stored_events WHERE rowid = 2")
    entries = bundle_entries(entry_bundle(ledger, ledger.storage.merkle(), TilePath(None, 0, 3), size))
    assert entries[1] == b"" and len(entries[0]) == len(entries[2]) == 32
    ledger.close()


def test_the_routes_serve_the_tiles_to_the_roles_that_audit(served: Served) -> None:
    size = latest_size(served.ledger)
    answer = served.get("checkpoint")
    assert answer.status_code == 200 and answer.text == served.ledger.storage.merkle().latest_checkpoint().note  # type: ignore[union-attr]
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert "immutable" not in answer.headers["cache-control"]
    tile = served.get(f"tile/0/000.p/{size}")
    assert tile.status_code == 200 and tile.headers["content-type"] == "application/octet-stream"
    assert tile.content == served.ledger.storage.merkle().tiles([0])[0].leaves[: 32 * size]
    assert "immutable" in tile.headers["cache-control"] and "private" in tile.headers["cache-control"]
    assert len(served.get(f"tile/entries/000.p/{size}").content) == 34 * size
    for role in Role:
        allowed = role in (Role.AUDITOR, Role.SUPERVISOR, Role.ADMIN)
        assert served.get("checkpoint", role).status_code == (200 if allowed else 403), role
    assert served.get("checkpoint", None).status_code == 401
    for path, status in [("tile/0/000", 404), (f"tile/0/000.p/{size + 1}", 404), ("tile/1/000.p/1", 404),
                         ("tile/0/0", 400), ("tile/entries/000.p/0", 400), ("tile/%C3%A9/000", 400),
                         ("tile/0/x000/000", 400), ("tile/" + "x999/" * 300 + "000", 400)]:
        answer = served.get(path)
        assert answer.status_code == status, (path, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert "tlog-tiles" in answer.json()["detail"]


def test_no_tile_is_served_before_the_first_checkpoint(tmp_path: Path) -> None:
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "l.sqlite")))
    ledger.record_contact(draft("m-1"))
    token = PrincipalRegistry(ledger.principal_store).add("auditor-1", Role.AUDITOR).token
    client = TestClient(create_app(ServiceState(ledger.settings)))  # no lifespan: nothing to warm for three reads
    for path in ("checkpoint", "tile/0/000.p/1", "tile/entries/000.p/1"):
        answer = client.get(f"/v1/log/{path}", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 404 and "no checkpoint" in answer.json()["detail"], path
    ledger.close()


def test_no_path_under_the_tiles_is_a_500(served: Served) -> None:
    """Arbitrary paths (hypothesis): a tile, a 400 naming the format, or a 404; never a 5xx."""
    segment = st.sampled_from(["0", "1", "63", "64", "entries", "000", "x001", "x000", "001.p", "255", "1.p", ""])
    paths = st.lists(segment | st.text(max_size=6), min_size=0, max_size=6).map("/".join)

    @settings(max_examples=examples(300), deadline=None, database=None)
    @given(path=paths)
    def drive(path: str) -> None:
        answer = served.get("tile/" + quote(path.encode("utf-8", "surrogatepass"), safe="/"))
        assert answer.status_code in (200, 400, 404), (path, answer.status_code, answer.text)
        if answer.status_code != 200:
            assert answer.headers["content-type"] == "application/problem+json"

    drive()


def test_what_the_tiles_serve_holds_no_personal_datum_nor_its_digest(served: Served) -> None:
    """Attack: an auditor's token reads every tile and bundle, searches them for Jane's data in clear and for the
    SHA-256 of each datum (the brute-forced digest: hash the guesses, look for a match). Nothing is found, before
    and after her erasure, and the bytes served do not change when she is erased."""
    guesses = [s.encode() for s in [*SECRETS, str(JANE), JANE.value.upper()]]
    digests = {hashlib.sha256(g).digest() for g in guesses} | {hashlib.sha256(g.lower()).digest() for g in guesses}

    def read(size: int) -> list[bytes]:
        """The checkpoint, and the level-0 tile and entry bundle of the tree of ``size`` leaves."""
        answers = [served.get(path) for path in ("checkpoint", f"tile/0/000.p/{size}", f"tile/entries/000.p/{size}")]
        assert all(answer.status_code == 200 for answer in answers)
        return [answer.content for answer in answers]

    def found(data: bytes) -> list[bytes]:
        return [g for g in guesses if g.lower() in data.lower()] + [d for d in digests if d in data]

    size = latest_size(served.ledger)
    before = read(size)
    assert found(b"".join(before)) == []
    served.ledger.erasure.erase_customer(str(JANE), actor=Actor.parse("agent:dpo"), reason="art. 17 request")
    grown = sign_checkpoint(served.ledger, served.signer).tree_size
    assert grown > size and found(b"".join(read(grown))) == []
    assert read(size)[1:] == before[1:]  # erasure changes no byte the tiles served


def test_the_checkpoint_is_served_with_the_witnesses_cosignatures_kept_for_it(tmp_path: Path) -> None:
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "l.sqlite")))
    ledger.record_contact(draft("m-1"))
    checkpoint = sign_checkpoint(ledger, CheckpointSigner("ledger.test/log", bytes(32)))
    line = "— witness.test/w1 AAAAAQ" + "A" * 86
    ledger.storage.cosignatures().insert_cosignature(StoredCosignature(
        "witness.test/w1", "00000001", checkpoint.tree_size, text_sha256(checkpoint.note), line, datetime.now(UTC)))
    registry = PrincipalRegistry(ledger.principal_store)
    token = registry.add("auditor-1", Role.AUDITOR).token
    with TestClient(create_app(ServiceState(ledger.settings))) as client:
        answer = client.get("/v1/log/checkpoint", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and answer.text == checkpoint.note + line + "\n"
    ledger.close()
