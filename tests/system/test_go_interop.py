"""The transparency log against Go's reference libraries (issue 26), as the Avro bytes are against Java's.

A real ``caseledger serve`` on loopback serves the log as C2SP tlog-tiles; the Go program
``tests/support/go/interop`` (``golang.org/x/mod`` v0.43.0, ``transparency-dev/merkle`` v0.0.2,
``transparency-dev/formats`` v0.1.1, ``filippo.io/torchwood`` v0.6.1; built once per session by the
``go_interop`` fixture, tests/support/go_programs.py) reads it as an auditor's tools would, with an
auditor's token and the key file ``caseledger audit key`` wrote, as it is:

- the served checkpoint verifies with ``note.NewVerifier``/``note.Open`` and parses with
  ``formats/log`` and torchwood;
- a customer's events are proved in it from the served tiles (``tlog.ProveRecord``/``CheckRecord``
  over ``TileHashReader``), and read from the entry bundles by torchwood's client;
- a checkpoint kept earlier is proved consistent with it from the tiles (``tlog.ProveTree``/
  ``CheckTree``, and transparency-dev/merkle on the same proof);
- every entry of the log is read and checked by torchwood's client: each is an event's hash;
- the proofs ``audit prove``, ``audit consistency`` and a history export carry verify with
  transparency-dev/merkle;
- a tree of 70,000 leaves: tiles of level 1 and 2, partial and full, as the spec's own example;
- tampering: a tile altered in the database, or an event's stored bytes, is refused by the Go client;
- the customer map's hashing, written again in Go from docs/audit.md: the frozen vectors and a real export's
  completeness proof lead to the same roots.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from caseledger.cli.app import app
from caseledger.ledger.access.principals import PrincipalRegistry
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.permissions import Role
from caseledger.ledger.service.api import ServiceState
from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner, generate_key_file
from caseledger.ledger.transparency.checkpoints import sign_checkpoint
from caseledger.ledger.transparency.tree import MerkleLog
from caseledger.verify.history import envelope_customer
from tests.support.environment import ledger_settings
from tests.support.go_programs import GoProgram
from tests.support.service_server import Service, serve_in_thread, start_service, stop_service

ORIGIN = "ledger.test/complaints"
JANE = "email:jane@example.com"


@dataclass
class Log:
    """A served ledger, its key file as ``audit key`` wrote it, and how to run the Go checks against it."""

    service: Service
    where: Path
    key_file: Path
    env: dict[str, str]
    go: GoProgram

    @property
    def database(self) -> str:
        return self.service.database

    def check(self, command: str, *args: str | Path, ok: bool = True) -> Any:
        """A Go subcommand against the served log, as the auditor: its JSON, or (``ok=False``) its error."""
        return go_check(self.go, self.service.url, self.service.tokens[Role.AUDITOR], self.key_file, command, *args,
                        ok=ok)

    def cli(self, *args: str, code: int = 0) -> str:
        result = CliRunner().invoke(app, ["--database", self.database, *args], env=self.env)
        assert result.exit_code == code, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
        return result.stdout


def go_check(go: GoProgram, url: str, token: str, key_file: Path, command: str, *args: str | Path,
             ok: bool = True) -> Any:
    result = go.run(command, "-url", f"{url}/v1/log/", "-key", key_file, *args, env={"CASELEDGER_TOKEN": token},
                    check=ok)
    if ok:
        return result.json()
    assert result.returncode == 1, (result.stdout, result.stderr)
    return result.stderr


def record(service: Service, count: int, *, who: str) -> None:
    with service.client(Role.AGENT) as agent:
        for _ in range(count):
            body = {"channel": "email", "channel_message_id": f"m-{uuid.uuid4()}", "from": who,
                    "subject": "Card blocked", "items": ["Why?", "When?"]}
            answer = agent.post("/v1/contacts", json=body)
            assert answer.status_code == 201, answer.text


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, go_interop: GoProgram) -> Iterator[Log]:
    where = tmp_path_factory.mktemp("go-interop")
    generate_key_file(where / "signing.key", ORIGIN)
    env = {"CASELEDGER_SIGNING_KEY_FILE": str(where / "signing.key"), "CASELEDGER_ORIGIN": ORIGIN}
    service = start_service(where, env=env)
    key_file = where / "ledger.pub"
    with key_file.open("wb") as out:  # `caseledger audit key > ledger.pub`, a real redirect of a real process
        subprocess.run([sys.executable, "-m", "caseledger.cli.app", "--database", service.database, "audit", "key"],
                       stdout=out, check=True, env={**os.environ, **env})
    try:
        yield Log(service, where, key_file, env, go_interop)
    finally:
        stop_service(service)


def test_go_follows_and_verifies_the_served_log(served: Log) -> None:
    """Two checkpoints across a tile boundary; every check of the Go program holds against them."""
    record(served.service, 20, who=JANE)
    record(served.service, 10, who="email:sam@example.com")
    kept = served.where / "kept.checkpoint"
    served.cli("audit", "checkpoint", "--out", str(kept))
    first = served.check("checkpoint")
    assert first["origin"] == ORIGIN and first["extension"].startswith("Timestamp: ")
    # The finding: what `audit key` wrote before (the key, then an "origin:" line) Go's verifier refuses.
    before = served.where / "two-lines.pub"
    before.write_text(served.key_file.read_text() + f"origin: {ORIGIN}\n")
    refused = served.go.run("checkpoint", "-url", f"{served.service.url}/v1/log/", "-key", before, check=False)
    assert refused.returncode == 1 and "note.NewVerifier refuses" in refused.stderr
    record(served.service, 25, who=JANE)
    served.cli("audit", "checkpoint")
    latest = served.check("checkpoint", "-out", served.where / "served.checkpoint")
    assert first["size"] < 256 < latest["size"]  # the kept one in a partial tile, the served one past it
    assert (served.where / "served.checkpoint").read_text() == served.cli("audit", "checkpoint")

    # A customer's events, proved from the tiles and read from the entry bundles.
    proofs = served.where / "jane.proofs.json"
    proofs.write_text(served.cli("audit", "prove", JANE, "--key", str(served.key_file), "--json"))
    events = json.loads(proofs.read_text())["events"]
    assert len(events) > 100 and all(e["status"] == "included" for e in events)
    chosen = events[:: max(1, len(events) // 12)] + events[-1:]
    answer = served.check("inclusion", "-index", ",".join(str(e["leaf_index"]) for e in chosen),
                          "-hash", ",".join(e["event_hash"] for e in chosen))
    assert answer == {"size": latest["size"], "proved": len(chosen)}

    # The kept checkpoint is extended by the served one; the proofs the CLI prints verify with merkle.
    consistency = served.check("consistency", "-old", kept)
    assert consistency["old"] == first["size"] and consistency["new"] == latest["size"] and consistency["proof"] > 0
    assert served.go.run("proofs", "-file", proofs, "-key", served.key_file).json() == {
        "size": latest["size"], "inclusion": len(events)}
    cons = served.where / "consistency.json"
    cons.write_text(served.cli("audit", "consistency", str(kept), "--key", str(served.key_file), "--json"))
    assert served.go.run("proofs", "-file", cons, "-key", served.key_file).json() == {
        "consistency": [first["size"], latest["size"]]}
    export = served.where / "jane.json"
    served.cli("history", JANE, "--export", "json", str(export))
    assert served.go.run("proofs", "-file", export, "-key", served.key_file).json()["inclusion"] == len(events)

    # Every entry of the log, through torchwood's client: the hash of each stored event, in position order.
    entries = served.check("entries")["entries"]
    ledger = CaseLedger(ledger_settings(database=served.database))
    try:
        stored = [hashlib.sha256(n.state).digest().hex()
                  for n in ledger.recorder.select_notifications(start=1, limit=latest["size"] + 1000)]
    finally:
        ledger.close()
    assert entries == stored[: latest["size"]]


def test_a_tile_or_an_event_altered_in_the_database_is_refused_by_the_go_client(served: Log) -> None:
    if not (served.where / "kept.checkpoint").exists():
        test_go_follows_and_verifies_the_served_log(served)
    size = served.check("checkpoint")["size"]
    db = sqlite3.connect(served.database)
    try:
        leaves = db.execute("SELECT leaves FROM merkle_tiles WHERE idx = 0").fetchone()[0]
        db.execute("UPDATE merkle_tiles SET leaves = ? WHERE idx = 0", (leaves[:40] + bytes([leaves[40] ^ 1]) +
                                                                         leaves[41:],))
        db.commit()
        assert "inconsistent" in served.check("inclusion", "-index", "1", "-hash", "00" * 32, ok=False)
        assert "inconsistent" in served.check("consistency", "-old", served.where / "kept.checkpoint", ok=False)
        served.check("entries", ok=False)
        db.execute("UPDATE merkle_tiles SET leaves = ? WHERE idx = 0", (leaves,))
        db.commit()
        assert served.check("entries")["size"] == size

        position, state = db.execute("SELECT rowid, state FROM stored_events WHERE rowid = 3").fetchone()
        db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (state[:-1] + bytes([state[-1] ^ 1]), position))
        db.commit()
        refused = served.check("entries", ok=False)
        assert "hash mismatch for entry 2" in refused, refused
        assert "does not match" in served.check("inclusion", "-index", "2", "-hash", hashlib.sha256(state).hexdigest(),
                                                ok=False)
        db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (state, position))
        db.commit()
        assert served.check("entries")["size"] == size
    finally:
        db.close()


def test_tiles_of_level_1_and_2_as_the_spec_example_of_70000_leaves(served: Log, tmp_path: Path) -> None:
    """A tree only (synthetic entries, no events): 273 full level-0 tiles and one of width 112, a full level-1
    tile and one of width 17, a level-2 tile of width 1. Go proves leaves and consistency across all of them."""
    database = str(tmp_path / "tree.sqlite")
    signer = CheckpointSigner.parse((served.where / "signing.key").read_text(), source="test key")
    ledger = CaseLedger(ledger_settings(database=database, origin=ORIGIN))
    try:
        tree = MerkleLog.of(ledger)
        digests = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(70_000)]
        # no event behind the entries: no customer's either (the customer map the checkpoints commit to is empty)
        tree.append(list(enumerate(digests[:300], start=1)), [b""] * 300)
        old = sign_checkpoint(ledger, signer, tree=tree, catch_up=False)
        (tmp_path / "old.checkpoint").write_text(old.note)
        tree.append(list(enumerate(digests[300:], start=301)), [b""] * (70_000 - 300))
        sign_checkpoint(ledger, signer, tree=tree, catch_up=False)
        token = PrincipalRegistry(ledger.principal_store).add("auditor-1", Role.AUDITOR).token
    finally:
        ledger.close()
    with serve_in_thread(ServiceState(ledger_settings(database=database))) as url:  # no events: no worker needed
        def check(command: str, *args: str | Path) -> Any:
            return go_check(served.go, url, token, served.key_file, command, *args)

        assert check("checkpoint")["size"] == 70_000
        indexes = [0, 255, 256, 65_535, 65_536, 69_887, 69_888, 69_999]
        assert check("inclusion", "-index", ",".join(map(str, indexes)), "-entries=false",
                     "-hash", ",".join(digests[i].hex() for i in indexes))["proved"] == len(indexes)
        assert check("consistency", "-old", tmp_path / "old.checkpoint")["old"] == 300


def test_the_customer_maps_hashing_written_again_in_go_gives_the_same_roots(served: Log) -> None:
    """The completeness proof's hashing (docs/audit.md, "Completeness") written again from its description in Go
    (``customermap``): the frozen vectors' root and proofs, and a real export's proof against the signed
    ``caseledger/customers`` line, come out the same; a customer's event left out does not."""
    vectors = Path(__file__).resolve().parents[1] / "support" / "vectors" / "customer_map.json"
    assert served.go.run("customermap", "-vectors", vectors).json()["proofs"] >= 4
    record(served.service, 3, who=JANE)
    export = served.where / "jane-map.json"
    served.cli("history", JANE, "--export", "json", str(export))
    document = json.loads(export.read_text())
    transparency = document["transparency"]
    size = int(transparency["checkpoint"].split("\n")[1])
    mine = sorted((e["leaf_index"], e["event_hash"]) for e in document["events"]
                  if e.get("leaf_index") is not None and e["leaf_index"] < size
                  and envelope_customer(base64.b64decode(e["stored_bytes_base64"])) == document["customer_id"].encode())
    assert len(mine) > 3
    live = {"checkpoint": transparency["checkpoint"], "customer_id": document["customer_id"],
            "event_hashes": [h for _, h in mine], "proof": transparency["customer_map"]["proof"]}
    path = served.where / "jane-map.live.json"
    path.write_text(json.dumps(live))
    assert served.go.run("customermap", "-live", path, "-key", served.key_file).json() == {
        "tree_size": size, "events": len(mine), "kind": "leaf"}
    path.write_text(json.dumps({**live, "event_hashes": [h for _, h in mine[1:]]}))  # the first one left out
    refused = served.go.run("customermap", "-live", path, "-key", served.key_file, check=False)
    assert refused.returncode == 1 and "do not lead to the signed map root" in refused.stderr
