"""What the auditor's commands ask of the tree: a customer's inclusion proofs, consistency with a kept checkpoint.

Every proof is against a *signed* checkpoint (the ledger's latest): an auditor checks it with the
ledger's public key alone, with ``caseledger.verify``'s functions, and keeps the checkpoint.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from caseledger.ledger.store_ports import StoredCheckpoint
from caseledger.ledger.transparency.tree import MerkleLog
from caseledger.verify.cosignatures import PolicyError, WitnessPolicy, check_cosignatures
from caseledger.verify.failures import MalformedInput, ProofError, SignatureError, WrongKeyError
from caseledger.verify.note import Checkpoint, VerifierKey, open_checkpoint
from caseledger.verify.rfc9162 import verify_consistency

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger

__all__ = ["Consistency", "EventProof", "SignedLog", "StoredLog", "check_consistency", "check_consistency_of",
           "customer_event_hashes", "customer_inclusion", "event_proofs"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class EventProof:
    """One event's place in the tree of a checkpoint: its leaf index and audit path (None: after the checkpoint)."""

    position: int
    leaf_index: int | None
    proof: list[bytes] | None

    def as_dict(self) -> dict[str, Any]:
        return {"position": self.position, "leaf_index": self.leaf_index,
                "inclusion_proof": [b64(h) for h in self.proof] if self.proof is not None else None}


def event_proofs(ledger: CaseLedger, positions: Sequence[int], checkpoint: StoredCheckpoint,
                 *, tree: MerkleLog | None = None) -> list[EventProof]:
    """Inclusion proofs of the events at ``positions`` against ``checkpoint`` (O(log n) nodes each)."""
    tree = tree or MerkleLog.of(ledger)
    indexes = tree.store.leaf_indexes(positions)
    inside = [indexes[p] for p in positions if p in indexes and indexes[p] < checkpoint.tree_size]
    proofs = tree.inclusion_proofs(inside, checkpoint.tree_size)
    found = []
    for p in positions:
        index = indexes.get(p)
        if index is not None and index < checkpoint.tree_size:
            found.append(EventProof(p, index, proofs[index]))
        else:
            found.append(EventProof(p, index, None))
    return found


def customer_event_hashes(ledger: CaseLedger, customer_id: str) -> list[tuple[int, bytes]]:
    """(position, event hash) of every event of the customer, read by the audit itself (its customer scope)."""
    import hashlib

    from caseledger.ledger.audit import verify

    found: list[tuple[int, bytes]] = []
    verify(ledger, customer=customer_id,
           collect=lambda position, _name, data: found.append((position, hashlib.sha256(data).digest())))
    return found


def customer_inclusion(ledger: CaseLedger, customer_id: str, checkpoint: StoredCheckpoint,
                       *, tree: MerkleLog | None = None) -> dict[str, Any]:
    """What ``audit prove`` verifies, locally or as ``GET /v1/audit/proofs/inclusion`` answers it: the checkpoint's
    note with the cosignatures kept for it, and each of the customer's events with its hash, its leaf and its
    inclusion proof (``leaf_index`` and ``inclusion_proof`` null for events after the checkpoint)."""
    from caseledger.ledger.transparency.witnesses import cosigned_note

    events = customer_event_hashes(ledger, customer_id)
    proofs = event_proofs(ledger, [p for p, _ in events], checkpoint, tree=tree)
    return {"customer_id": customer_id, "checkpoint": cosigned_note(ledger, checkpoint),
            "events": [{**proof.as_dict(), "event_hash": digest.hex()}
                       for (_, digest), proof in zip(events, proofs, strict=True)]}


@dataclass
class Consistency:
    """How a checkpoint the auditor kept relates to the ledger's latest one."""

    held: Checkpoint | None
    latest: str | None  # the ledger's latest signed note
    code: str  # consistent | checkpoint-key | checkpoint-signature | rolled-back | split-view | no-checkpoint
    #            | witness-policy | witness-signature
    message: str
    proof: list[bytes] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.code == "consistent"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "code": self.code, "message": self.message,
            "held": {"tree_size": self.held.size, "root": b64(self.held.root)} if self.held else None,
            "latest_checkpoint": self.latest,
            "consistency_proof": [b64(h) for h in self.proof],
        }


class SignedLog(Protocol):
    """What a consistency check reads of the ledger: its own store (:class:`StoredLog`), or the ledger service."""

    def latest_note(self) -> str | None:
        """The latest signed checkpoint's note, with the cosignatures kept for it (None before the first)."""
        ...

    def notes_of_size(self, size: int) -> list[tuple[str, str]]:
        """Every signed checkpoint of this tree size it shows: (note, when it was signed)."""
        ...

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """The proof that the tree of ``new`` leaves extends that of ``old`` (LookupError if it cannot be read)."""
        ...


class StoredLog:
    """The signed log as the ledger's own store holds it."""

    def __init__(self, ledger: CaseLedger) -> None:
        self.ledger = ledger
        self.tree = MerkleLog.of(ledger)

    def latest_note(self) -> str | None:
        """With the witnesses' cosignatures kept for it."""
        from caseledger.ledger.transparency.witnesses import cosigned_note

        latest = self.tree.store.latest_checkpoint()
        return cosigned_note(self.ledger, latest) if latest is not None else None

    def notes_of_size(self, size: int) -> list[tuple[str, str]]:
        return [(c.note, c.signed_at.isoformat()) for c in self.tree.store.checkpoints(size=size, limit=1000)]

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        return self.tree.consistency_proof(old, new) if self.tree.size >= new else []


def check_consistency(ledger: CaseLedger, held_note: str, key: VerifierKey,
                      policy: WitnessPolicy | None = None) -> Consistency:
    """:func:`check_consistency_of` the ledger's own store."""
    return check_consistency_of(StoredLog(ledger), held_note, key, policy)


def check_consistency_of(log: SignedLog, held_note: str, key: VerifierKey,
                         policy: WitnessPolicy | None = None) -> Consistency:
    """Does the ledger's latest signed checkpoint extend the one the auditor kept?

    Named outcomes: ``checkpoint-key`` (kept checkpoint or the ledger's latest signed by another
    key), ``checkpoint-signature`` (altered), ``split-view`` (the ledger signed another root for the
    same size: two signed, contradictory views of one log), ``rolled-back`` (the ledger's log is
    shorter than the kept checkpoint, or its first events differ from those it committed to). With a witness
    ``policy``, the ledger's latest checkpoint must carry the cosignatures it needs (``witness-policy``,
    ``witness-signature``): a ledger whose witnesses refused its latest checkpoints — a rewritten log, a
    view shown to one reader only — cannot pass, whatever its own tables say.
    Every signature and proof is checked here, with the auditor's key: ``log`` only hands them out.
    """
    try:
        held = open_checkpoint(held_note, key)
    except WrongKeyError as error:
        return Consistency(None, None, "checkpoint-key", f"the checkpoint you hold: {error}")
    except (SignatureError, MalformedInput) as error:
        return Consistency(None, None, "checkpoint-signature", f"the checkpoint you hold: {error}")
    latest = log.latest_note()
    if latest is None:
        return Consistency(held, None, "no-checkpoint", "the ledger has signed no checkpoint yet: run "
                           "`caseledger audit checkpoint` (with its signing key)")
    try:
        current = open_checkpoint(latest, key)
    except (SignatureError, MalformedInput) as error:
        return Consistency(held, latest, "checkpoint-key", f"the ledger's latest checkpoint: {error}; if the "
                           "key was rotated, check the new key's first checkpoint against this one (docs/audit.md)")
    if policy is not None and policy.needs_cosignatures:
        try:
            check_cosignatures(latest, key, policy)
        except PolicyError as error:
            return Consistency(held, latest, error.code, f"the ledger's latest checkpoint: {error}; its witnesses "
                               "refused it or were not reached (the ledger's log names which)")
    for note, signed_at in log.notes_of_size(held.size):
        try:
            signed = open_checkpoint(note, key)
        except (SignatureError, MalformedInput):
            continue
        if signed.root != held.root:
            return Consistency(held, latest, "split-view", f"split view: the ledger signed two different roots for "
                               f"the same tree size {held.size} ({b64(held.root)[:12]}… which you hold, and "
                               f"{b64(signed.root)[:12]}… signed {signed_at}): it showed different "
                               "logs to different readers")
    if held.size > current.size:
        return Consistency(held, latest, "rolled-back", f"rolled back: the checkpoint you hold commits to "
                           f"{held.size} events, the ledger's latest only to {current.size}")
    if held.size == current.size:
        if held.root != current.root:
            return Consistency(held, latest, "split-view", f"split view: the ledger's latest checkpoint has another "
                               f"root for the same tree size {held.size}")
        return Consistency(held, latest, "consistent", f"the ledger's latest checkpoint is the one you hold "
                           f"({held.size} events)")
    if held.size == 0:
        return Consistency(held, latest, "consistent", f"every log extends the empty one ({current.size} events now)")
    try:
        proof = log.consistency_proof(held.size, current.size)
        verify_consistency(held.size, current.size, held.root, current.root, proof)
    except (ProofError, LookupError, ValueError) as error:
        return Consistency(held, latest, "rolled-back", f"rolled back or rewritten: the ledger's latest checkpoint "
                           f"({current.size} events) does not extend the one you hold ({held.size} events): "
                           f"{error}")
    return Consistency(held, latest, "consistent", f"the ledger's latest checkpoint ({current.size} events) extends "
                       f"the one you hold ({held.size} events): proof of {len(proof)} hashes verified", proof)
