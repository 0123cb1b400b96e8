"""caseledger's standalone verifier: ``python -m caseledger.verify EXPORT --key PUBKEY``.

It checks, offline, what a customer or a court was given — a history export, a contact's receipt — without trusting
caseledger's code paths: it imports nothing of ``caseledger.ledger`` (a test checks), only the
standard library and ``cryptography`` (Ed25519). Its modules:

* ``merkle`` — the RFC 6962 / RFC 9162 tree hashes, inclusion and consistency proofs and verifiers;
* ``note`` — C2SP signed notes and tlog checkpoints, verifier keys;
* ``history`` — an export's checkpoint signature, every event's inclusion proof, every hash chain;
* ``avro`` — a small Avro container reader, for the Avro form of the export;
* ``receipts`` — a contact's signed receipt: its one-line format, its signature, the log against it;
* ``errors`` — what does not hold.

The ledger uses ``merkle`` and ``note`` to build what this package checks.
"""

from __future__ import annotations

from caseledger.verify.failures import (
    MalformedInput,
    ProofError,
    SignatureError,
    VerificationError,
    WrongKeyError,
)

__all__ = ["MalformedInput", "ProofError", "SignatureError", "VerificationError", "WrongKeyError"]
