"""An export's checkpoint against one the auditor kept: the offline split-view check (``--kept CHECKPOINT``).

A signed checkpoint proves which log the ledger showed *this* reader. Two readers shown different
logs (a split view), or one shown a log rewritten after he kept a checkpoint, find out only by
comparing what they hold. The export carries an RFC 9162 consistency proof from the size of the
checkpoint the auditor kept (asked for with ``history --export … --kept KEPT``, or ``?kept=SIZE``
through the service) to its own checkpoint, so the comparison needs neither the ledger nor the
network:

* same size: the roots must be equal, else ``split-view`` (two signed roots for one size);
* the kept one older: the proof must lead from its root to the export's, else ``rolled-back`` (the
  export's log does not extend what the auditor saw);
* the kept one newer, or the export carries no proof from its size: nothing can be proved from this
  file (exit 3): ask for a new export against the kept checkpoint.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from caseledger.verify.failures import ProofError
from caseledger.verify.note import Checkpoint
from caseledger.verify.rfc9162 import verify_consistency

__all__ = ["KeptCheck", "check_kept"]

HOW = ("ask the ledger for a new export against it: `caseledger history CUSTOMER --export json FILE --kept "
       "KEPT.checkpoint` (through the service: GET /v1/customers/ID/export?kept=SIZE)")


@dataclass(frozen=True)
class KeptCheck:
    """How the export's checkpoint relates to the kept one: ``consistent``, ``split-view``, ``rolled-back`` or
    ``unprovable`` (this export cannot tell; the message says what to do)."""

    code: str
    message: str

    @property
    def ok(self) -> bool:
        return self.code == "consistent"


def _proof(carried: Any, size: int) -> list[bytes] | None:
    """The export's consistency proof from ``size``, if it carries one (None otherwise, or if it is not readable)."""
    if not isinstance(carried, dict) or carried.get("from_size") != size or not isinstance(carried.get("proof"), list):
        return None
    try:
        return [base64.b64decode(str(h), validate=True) for h in carried["proof"]]
    except (binascii.Error, ValueError):
        return []  # present but unreadable: it cannot verify, which names the export, not the auditor's file


def check_kept(kept: Checkpoint, exported: Checkpoint, transparency: dict[str, Any]) -> KeptCheck:
    """Both checkpoints already verified with the ledger's key; ``transparency`` is the export's block."""
    if kept.origin != exported.origin:
        return KeptCheck("split-view", f"the checkpoint you kept is of log {kept.origin!r}, the export's of "
                         f"{exported.origin!r}")
    if kept.size == exported.size:
        if kept.root != exported.root:
            return KeptCheck("split-view", f"split view: the ledger signed two different roots for the tree size "
                             f"{kept.size}, the one you kept and the export's: it showed different logs to different "
                             "readers (keep both notes: together they prove it)")
        return KeptCheck("consistent", f"the export's checkpoint is the one you kept ({kept.size} events)")
    if kept.size > exported.size:
        return KeptCheck("unprovable", f"the checkpoint you kept ({kept.size} events) is newer than the export's "
                         f"({exported.size} events): an export proves only checkpoints up to its own; {HOW}")
    if kept.size == 0:
        return KeptCheck("consistent", f"every log extends the empty one ({exported.size} events in the export's)")
    proof = _proof(transparency.get("consistency"), kept.size)
    if proof is None:
        return KeptCheck("unprovable", f"the export carries no consistency proof from the size of the checkpoint you "
                         f"kept ({kept.size} events) to its own ({exported.size}); {HOW}")
    try:
        verify_consistency(kept.size, exported.size, kept.root, exported.root, proof)
    except (ProofError, ValueError) as error:
        return KeptCheck("rolled-back", f"the export's checkpoint ({exported.size} events) does not extend the one you "
                         f"kept ({kept.size} events): the log was rewritten, or shown differently to you before "
                         f"({error})")
    return KeptCheck("consistent", f"the export's checkpoint ({exported.size} events) extends the one you kept "
                     f"({kept.size} events): proof of {len(proof)} hashes verified")
