"""``audit verify --checkpoint FILE``: the log against a signed checkpoint the auditor kept.

The auditor's checkpoint commits to the first ``size`` events of the log (position order) by
their Merkle root. The audit recomputes that root from the events table itself, in its one pass
(one leaf hash and on average one node hash per event, O(log n) memory), trusting none of the
ledger's Merkle tables. Then:

* ``checkpoint-key`` — the file is not signed by the key given (it names the signers found);
  ``checkpoint-signature`` — signed by it but altered since; ``checkpoint-origin`` — another log's;
* ``witness-policy`` — not cosigned by the witnesses the auditor's policy needs; ``witness-signature`` — a
  cosignature line of one of them does not verify (forged, or another checkpoint's);
* ``checkpoint-mismatch`` — the first ``size`` events no longer have the signed root: one of
  them was altered, deleted, inserted or moved (the first leaf that differs from the ledger's own
  tree is named when that tree still matches the checkpoint);
* ``checkpoint-beyond`` — the log has fewer events than the checkpoint commits to (truncated or
  rolled back);
* ``uncommitted`` (warning) — events after the checkpoint's size: not yet committed by it, so
  not vouched for; a later checkpoint covers them (``audit consistency`` proves it extends this one);
* ``checkpoint-map`` — the customer map the checkpoint commits to (its ``caseledger/customers`` line)
  is not the map of those events: recomputed from them (each customer's count and chain head), the
  root differs, so the completeness its exports prove would be the ledger's word only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from caseledger.ledger.audit.report import WARNING
from caseledger.ledger.transparency.customer_map import event_customer
from caseledger.verify.completeness import (
    CHAIN_START,
    chain_step,
    customer_key,
    map_root_line,
    map_root_of,
    value_hash,
)
from caseledger.verify.cosignatures import PolicyError, WitnessPolicy, check_cosignatures
from caseledger.verify.failures import MalformedInput, SignatureError, WrongKeyError
from caseledger.verify.note import Checkpoint, VerifierKey, open_checkpoint
from caseledger.verify.rfc9162 import EMPTY_ROOT, leaf_hash, node_hash

if TYPE_CHECKING:
    from caseledger.ledger.audit.report import AuditReport

__all__ = ["CheckpointCheck", "HeldCheckpoint"]


@dataclass(frozen=True)
class HeldCheckpoint:
    """A signed checkpoint note the auditor kept, the key it must be signed with, and the witnesses that must
    have cosigned it (``witness-policy``, ``witness-signature``)."""

    note: str
    key: VerifierKey
    origin: str | None = None
    witnesses: WitnessPolicy | None = None

    def open(self, report: AuditReport) -> Checkpoint | None:
        """The verified checkpoint, or None with the reason flagged."""
        try:
            checkpoint = open_checkpoint(self.note, self.key, origin=self.origin)
            if self.witnesses is not None:
                check_cosignatures(self.note, self.key, self.witnesses)
            return checkpoint
        except PolicyError as error:
            report.flag(error.code, f"the checkpoint cannot be trusted: {error}")
        except WrongKeyError as error:
            code = "checkpoint-origin" if "origin" in str(error) else "checkpoint-key"
            report.flag(code, f"the checkpoint cannot be trusted: {error}")
        except SignatureError as error:
            report.flag("checkpoint-signature", f"the checkpoint cannot be trusted: {error}")
        except MalformedInput as error:
            report.flag("checkpoint-signature", f"the checkpoint file is not a signed checkpoint: {error}")
        return None


class CheckpointCheck:
    """Folds every event of the log, in position order, into the Merkle root of the first ``size``."""

    def __init__(self, report: AuditReport, checkpoint: Checkpoint) -> None:
        self.report = report
        self.checkpoint = checkpoint
        self.size = checkpoint.size
        self.count = 0
        self.stack: list[tuple[int, bytes]] = []
        self.root: bytes | None = EMPTY_ROOT if checkpoint.size == 0 else None
        self.last_committed = 0
        self.first_uncommitted = 0
        try:
            self.map_root = map_root_line(checkpoint.extensions)
        except MalformedInput:
            self.map_root = bytes(32) + b"!"  # never a root: flagged as checkpoint-map
        self.customers: dict[bytes, tuple[int, bytes]] | None = {} if self.map_root is not None else None

    def add(self, position: int, digest: bytes, state: bytes = b"") -> None:
        """The next event of the log (its position, event hash and stored bytes)."""
        if self.count >= self.size:
            if not self.first_uncommitted:
                self.first_uncommitted = position
            self.count += 1
            return
        customers = self.customers
        if customers is not None:
            customer = event_customer(state)
            if customer:
                count, head = customers.get(customer) or (0, CHAIN_START)
                customers[customer] = (count + 1, chain_step(head, digest))
        stack = self.stack
        height, h = 0, leaf_hash(digest)
        while stack and stack[-1][0] == height:
            h = node_hash(stack.pop()[1], h)
            height += 1
        stack.append((height, h))
        self.count += 1
        self.last_committed = position
        if self.count == self.size:
            h = stack[-1][1]
            for _, left in reversed(stack[:-1]):
                h = node_hash(left, h)
            self.root = h

    def finish(self) -> bool:
        """Flag what the pass found; True when the checkpoint holds."""
        report, cp = self.report, self.checkpoint
        if self.count < self.size:
            report.flag("checkpoint-beyond", f"the checkpoint commits to {self.size} events but the log has only "
                        f"{self.count}: events were deleted or the log was rolled back")
            return False
        if self.root != cp.root:
            report.flag("checkpoint-mismatch", f"the first {self.size} events of the log (up to position "
                        f"{self.last_committed}) no longer have the root the ledger signed: an event among them was "
                        "altered, deleted, inserted or moved since the checkpoint", position=self.last_committed)
            return False
        if self.customers is not None:
            values = {customer_key(c): value_hash(n, h) for c, (n, h) in self.customers.items()}
            if map_root_of(values) != self.map_root:
                report.flag("checkpoint-map", f"the customer map the checkpoint commits to is not the map of its "
                            f"{self.size} events ({len(values)} customers recomputed): the completeness its exports "
                            "prove does not hold")
                return False
        report.notes.append(f"checkpoint of {cp.origin} holds: {self.size} events up to position "
                            f"{self.last_committed} are exactly those it committed to"
                            + (f", and its customer map is theirs ({len(self.customers)} customers)"
                               if self.customers is not None else ""))
        if self.count > self.size:
            report.flag("uncommitted", f"{self.count - self.size} events from position {self.first_uncommitted} on "
                        "were recorded after the checkpoint: not yet committed by it (verify them against a later "
                        "checkpoint)", severity=WARNING, position=self.first_uncommitted)
        return True
