"""``caseledger bench proofs``: proof size and time at scale, on the store's own Merkle tables.

A tree of ``leaves`` synthetic leaf hashes is appended to a fresh store through the appender's own
path (``MerkleLog.append``, 10,000 leaves per transaction), then measured:

* one customer's ``customer_events`` events spread over the tree: their inclusion proofs read
  from the stored nodes (one query) and verified, against the checkpoint of the whole tree;
* the same customer's proof in the customer map (the other leaves belong to ``leaves / 6.5``
  customers, a contact's worth of events each on average), read and verified: the customer's
  events chained and counted, then the proof up to the map's root — what proves an export complete;
* a consistency proof between two checkpoints ``leaves - 1000`` apart (sizes 1,000 and ``leaves``).
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from caseledger.cli.bench import environment
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.settings import LedgerSettings
from caseledger.ledger.transparency.tree import MerkleLog
from caseledger.verify.completeness import chain, root_from_proof
from caseledger.verify.rfc9162 import leaf_hash, verify_consistency, verify_inclusion

BATCH = 10_000
CUSTOMER = b"cus-00000000bench"


@dataclass
class ProofsBenchResult:
    backend: str
    leaves: int
    append_leaves_per_s: float
    customer_events: int
    proofs_ms: float
    verify_ms: float
    proof_hashes_mean: float
    proof_bytes_total: int
    consistency_old: int
    consistency_new: int
    consistency_ms: float
    consistency_hashes: int
    map_customers: int = 0
    map_proof_ms: float = 0.0
    map_verify_ms: float = 0.0
    map_proof_hashes: int = 0
    map_proof_bytes: int = 0

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("backend", self.backend),
            ("tree size (leaves)", f"{self.leaves:,}"),
            ("append (MerkleLog.append, 10,000 per transaction)", f"{self.append_leaves_per_s:,.0f} leaves/s"),
            (f"inclusion proofs of a customer's {self.customer_events:,} events (read, one query)",
             f"{self.proofs_ms:,.1f} ms"),
            ("… verified (RFC 9162 §2.1.3.2)", f"{self.verify_ms:,.1f} ms"),
            ("proof size", f"{self.proof_hashes_mean:.1f} hashes per event, {self.proof_bytes_total:,} bytes in all"),
            (f"consistency proof {self.consistency_old:,} → {self.consistency_new:,} (read + verify)",
             f"{self.consistency_ms:,.1f} ms, {self.consistency_hashes} hashes"),
            (f"customer map proof of the customer ({self.map_customers:,} customers in the map; read)",
             f"{self.map_proof_ms:,.1f} ms, {self.map_proof_hashes} hashes, {self.map_proof_bytes:,} bytes as exported"),
            (f"… verified: their {self.customer_events:,} events chained and counted, the proof to the map's root",
             f"{self.map_verify_ms:,.1f} ms"),
        ]


def bench_proofs(*, leaves: int = 1_000_000, customer_events: int = 1000, database: str | None = None,
                 progress: Callable[[str, int, int], None] | None = None) -> ProofsBenchResult:
    """Build the tree and measure (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="caseledger-bench-proofs-") as folder:
        target = database or str(Path(folder) / "proofs.sqlite")
        ledger = CaseLedger(LedgerSettings.resolve(database=target, settings=environment()))
        try:
            tree = MerkleLog(ledger.storage.merkle())
            if tree.size:
                raise ValueError(f"{target} already has a Merkle tree: give an empty database")
            rng = random.Random(16)
            indexes = sorted(rng.sample(range(leaves), customer_events))
            chosen, others = set(indexes), max(1, int(leaves / 6.5))
            started = time.perf_counter()
            for start in range(0, leaves, BATCH):
                n = min(BATCH, leaves - start)
                tree.append([(start + i + 1, hashlib.sha256((start + i).to_bytes(8, "big")).digest())
                             for i in range(n)],
                            [CUSTOMER if start + i in chosen else f"cus-{rng.randrange(others):016x}".encode()
                             for i in range(n)])
                if progress:
                    progress("leaves appended", start + n, leaves)
            tree.store_map()  # as before a checkpoint
            append_rate = leaves / (time.perf_counter() - started)
            root = tree.root
            times = []
            for _ in range(3):
                t = time.perf_counter()
                proofs = MerkleLog(tree.store).inclusion_proofs(indexes, leaves)
                times.append(time.perf_counter() - t)
            t = time.perf_counter()
            for i in indexes:
                verify_inclusion(i, leaves, leaf_hash(hashlib.sha256(i.to_bytes(8, "big")).digest()), proofs[i], root)
            verify_s = time.perf_counter() - t
            old = min(1000, leaves - 1)
            t = time.perf_counter()
            fresh = MerkleLog(tree.store)
            old_root = fresh.root_at(old)
            proof = fresh.consistency_proof(old, leaves)
            verify_consistency(old, leaves, old_root, root, proof)
            consistency_s = time.perf_counter() - t
            map_times = []
            for _ in range(3):
                t = time.perf_counter()
                map_proof = MerkleLog(tree.store).customers.proof(CUSTOMER.decode(), leaves)
                map_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            events = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in indexes]
            map_root = root_from_proof(CUSTOMER.decode(), len(events), chain(events), map_proof)
            map_verify_s = time.perf_counter() - t
            if map_root != tree.customers.root or not map_proof.included:
                raise RuntimeError("the customer's map proof does not lead to the map's root")
            sizes = [len(p) for p in proofs.values()]
            return ProofsBenchResult(
                backend=ledger.settings.store.describe().split(" ")[0], leaves=leaves,
                append_leaves_per_s=append_rate, customer_events=customer_events,
                proofs_ms=statistics.median(times) * 1000, verify_ms=verify_s * 1000,
                proof_hashes_mean=statistics.mean(sizes), proof_bytes_total=sum(sizes) * 32,
                consistency_old=old, consistency_new=leaves, consistency_ms=consistency_s * 1000,
                consistency_hashes=len(proof), map_customers=others + 1, map_proof_ms=statistics.median(map_times) * 1000,
                map_verify_ms=map_verify_s * 1000, map_proof_hashes=len(map_proof.siblings),
                map_proof_bytes=len(json.dumps(map_proof.as_dict())))
        finally:
            ledger.close()
