"""What the standalone verifier reports when something does not hold.

VerificationError
 ├── MalformedInput        the note, checkpoint, key or export is not in its format
 ├── SignatureError        no valid signature by the key you gave
 │    └── WrongKeyError    signed, but by another key (or another name)
 └── ProofError            an inclusion or consistency proof does not lead to the signed root
"""

from __future__ import annotations

__all__ = ["MalformedInput", "ProofError", "SignatureError", "VerificationError", "WrongKeyError"]


class VerificationError(ValueError):
    """Something an auditor relies on does not hold; the message says what."""


class MalformedInput(VerificationError):
    """The input is not in its format (a signed note, a checkpoint, a verifier key, an export)."""


class SignatureError(VerificationError):
    """No valid signature by the expected key."""


class WrongKeyError(SignatureError):
    """The note is signed, but by a key other than the one the auditor trusts."""


class ProofError(VerificationError):
    """A Merkle proof does not verify."""
