"""Signing checkpoints: after each committed batch, at most every N seconds, and on demand.

:func:`sign_checkpoint` brings the tree up to the store's head and, when it grew since the last
checkpoint (or the key changed), signs ``(origin, size, root)`` as a C2SP checkpoint and stores
it, with the time it was signed on the ledger's clock (a ``Timestamp:`` extension line, as Rekor's
checkpoints carry it: what a contact's receipt promises is checked against it) and the root of the
customer map over the same leaves (``caseledger/customers <base64 root>``: what proves an export
complete, ``caseledger.verify.completeness``). With Kafka, the
publisher keeps the tree (it has every event's hash in hand) and signs at most once per
``CASELEDGER_CHECKPOINT_INTERVAL`` seconds (default 10) while the log grows
(:mod:`caseledger.ledger.kafka.publisher`). Without it, :class:`Checkpointer` is the same as a
service of its own (``caseledger audit checkpoint --follow``): it follows the notification log,
appends each batch to the tree and signs on the same schedule.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.settings import CHECKPOINT_INTERVAL_ENV as INTERVAL_ENV
from caseledger.ledger.store_ports import StoredCheckpoint
from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner
from caseledger.ledger.transparency.tree import MerkleLog
from caseledger.ledger.transparency.witnesses import WitnessSubmitter
from caseledger.verify.completeness import EXTENSION as MAP_EXTENSION
from caseledger.verify.note import Checkpoint

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger

__all__ = ["DEFAULT_INTERVAL_S", "INTERVAL_ENV", "Checkpointer", "CheckpointerStats", "checkpoint_interval",
           "current_checkpoint", "sign_checkpoint"]

log = logging.getLogger("caseledger.checkpoints")

DEFAULT_INTERVAL_S = 10.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def checkpoint_interval(value: float | str | None = None, *, given: str | None = None) -> float:
    """Seconds between two checkpoints at most: the option, else ``given`` (CASELEDGER_CHECKPOINT_INTERVAL), else 10."""
    raw = value if value is not None else given
    if raw is None or raw == "":
        return DEFAULT_INTERVAL_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 86400:
        raise ConfigurationError(f"checkpoint interval {raw!r} ({INTERVAL_ENV}): give seconds from 0 to 86400")
    return seconds


def sign_checkpoint(ledger: CaseLedger, signer: CheckpointSigner, *, tree: MerkleLog | None = None,
                    catch_up: bool = True, force: bool = False,
                    witnesses: WitnessSubmitter | None = None) -> StoredCheckpoint:
    """The latest checkpoint of this key, signing a new one when the tree grew (or ``force``); a new one is
    offered to ``witnesses``, which submit it on their own thread."""
    tree = tree or MerkleLog.of(ledger)
    if catch_up:
        tree.catch_up(ledger)
    key_id = signer.verifier_key.key_id.hex()
    latest = tree.store.latest_checkpoint()
    if (not force and latest is not None and latest.tree_size == tree.size and latest.key_id == key_id
            and f"\n{MAP_EXTENSION} " in latest.note):  # (one signed before the customer map is signed again)
        return latest
    # When it was signed, on the ledger's clock (the clock contacts are received on): a receipt promises
    # its contact in every checkpoint signed from a given time on, and this line says which those are.
    stamp = ledger.clock()
    nanos = ((stamp - EPOCH) // timedelta(microseconds=1)) * 1000
    # The customer map over the same leaves, stored (docs/audit.md, "Completeness").
    extensions = [f"Timestamp: {nanos}", f"{MAP_EXTENSION} {base64.b64encode(tree.commit_map(ledger)).decode()}"]
    checkpoint = Checkpoint(ledger.settings.origin, tree.size, tree.root, tuple(extensions))
    stored = StoredCheckpoint(tree.size, tree.root, signer.sign(checkpoint), datetime.now(UTC), key_id,
                              tree.last_position)
    tree.store.insert_checkpoint(stored)
    log.info("checkpoint signed: %s leaves, root %s", tree.size, tree.root.hex()[:16])
    if witnesses is not None:
        witnesses.offer(stored)
    return stored


_SIGNING = threading.Lock()  # one signer at a time in a process: concurrent requests would sign the same size twice


def current_checkpoint(ledger: CaseLedger, *, tree: MerkleLog | None = None) -> StoredCheckpoint | None:
    """What proofs are given against: a fresh checkpoint when this process holds the signing key (the tree caught
    up, signed if it grew, submitted to the configured witnesses), else the latest stored one (None before the
    first)."""
    from caseledger.ledger.transparency.checkpoint_key import load_signer

    signer = load_signer(ledger.settings.transparency)
    if signer is None:
        return (tree.store if tree is not None else ledger.storage.merkle()).latest_checkpoint()
    from caseledger.ledger.transparency.witnesses import witness_now

    with _SIGNING:
        signed = sign_checkpoint(ledger, signer, tree=tree)
    witness_now(ledger, signed)  # the configured witnesses that have not cosigned it yet, now
    return signed


@dataclass
class CheckpointerStats:
    appended: int = 0
    checkpoints: int = 0
    size: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        return f"{self.appended} leaves appended, tree size {self.size}, {self.checkpoints} checkpoints signed"


class Checkpointer:
    """Appends the notification log to the Merkle tree and signs checkpoints while it grows."""

    def __init__(self, ledger: CaseLedger, signer: CheckpointSigner, *, interval_s: float | None = None,
                 batch_size: int = 1000, idle_sleep_s: float = 0.05) -> None:
        self.ledger = ledger
        self.signer = signer
        self.interval_s = checkpoint_interval(interval_s, given=ledger.settings.transparency.checkpoint_interval)
        self.batch_size = batch_size
        self.idle_sleep_s = idle_sleep_s
        self.stats = CheckpointerStats()
        self.witnesses = WitnessSubmitter.configured(ledger)

    def run(self, stop: threading.Event, *, on_batch: Callable[[CheckpointerStats], None] | None = None,
            pacer: object = None) -> CheckpointerStats:
        """Until ``stop``: append each committed batch, sign when due; a last checkpoint on the way out.

        Its batches are a few hashes each: it reports none to the process's ``pacer``."""
        with self.witnesses or contextlib.nullcontext():  # the last checkpoint submitted before it closes
            tree = MerkleLog.of(self.ledger)
            latest = tree.store.latest_checkpoint()
            signed_size = latest.tree_size if latest else -1
            last_signed = -float("inf")
            self.stats.size = tree.size
            while not stop.is_set():
                appended = tree.catch_up(self.ledger, batch=self.batch_size, limit=self.batch_size)
                self.stats.appended += appended
                self.stats.size = tree.size
                due = time.monotonic() - last_signed >= self.interval_s
                if tree.size != signed_size and due:
                    sign_checkpoint(self.ledger, self.signer, tree=tree, catch_up=False, witnesses=self.witnesses)
                    signed_size, last_signed = tree.size, time.monotonic()
                    self.stats.checkpoints += 1
                if appended and on_batch is not None:
                    on_batch(self.stats)
                if appended < self.batch_size:
                    stop.wait(self.idle_sleep_s)
            self.stats.appended += tree.catch_up(self.ledger)  # what committed before the stop, signed too
            self.stats.size = tree.size
            if tree.size != signed_size:
                sign_checkpoint(self.ledger, self.signer, tree=tree, catch_up=False, witnesses=self.witnesses)
                self.stats.checkpoints += 1
        return self.stats
