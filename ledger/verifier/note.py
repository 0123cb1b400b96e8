"""C2SP signed notes (https://c2sp.org/signed-note) and tlog checkpoints (https://c2sp.org/tlog-checkpoint).

A checkpoint is the note text::

    <origin>
    <tree size, decimal>
    <root hash, base64>
    [extension lines]  (the ledger's: ``Timestamp: <unix nanoseconds>``, when it signed)

followed by a blank line and one signature line per signer, ``— <name> <base64(key id ‖ signature)>``.
For an Ed25519 key the key id is the first 4 bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key), the
signature is Ed25519 over the note text (up to and including its last newline), and the verifier
key is written ``<name>+<key id, 8 hex digits>+<base64(0x01 ‖ public key)>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from caseledger.verify.failures import MalformedInput, SignatureError, WrongKeyError

__all__ = ["ALG_ED25519", "Checkpoint", "NoteSignature", "VerifierKey", "key_id", "open_checkpoint", "split_note"]

ALG_ED25519 = 0x01
_DASH = "\u2014 "
_NAME = re.compile(r"^[^\s+]+$")
MAX_SIGNATURES = 100


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key id of an Ed25519 key: SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedInput(f"{what} is not base64: {text[:40]!r}") from None


@dataclass(frozen=True)
class VerifierKey:
    """A public key in the signed-note verifier-key format ``name+keyid+base64(0x01 ‖ key)``."""

    name: str
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        """Read ``name+hex keyid+base64 key``; the key id must match the name and key."""
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or not _NAME.match(parts[0]) or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
            raise MalformedInput(
                f"verifier key {text.strip()[:60]!r} is not NAME+KEYID+BASE64 (as printed by `caseledger audit key`)")
        raw = _b64(parts[2], "the verifier key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise MalformedInput("the verifier key is not an Ed25519 key (0x01 followed by 32 bytes)")
        key = cls(parts[0], raw[1:])
        if key.key_id.hex() != parts[1]:
            raise MalformedInput(f"verifier key {parts[0]}+{parts[1]}: its key id does not match its name and key")
        return key

    def __str__(self) -> str:
        encoded = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: the signer's name, its key id, the signature bytes."""

    name: str
    key_id: bytes
    signature: bytes


def split_note(note: str) -> tuple[str, list[NoteSignature]]:
    """A signed note's text (ending in a newline) and its signature lines; MalformedInput otherwise."""
    if not note.endswith("\n"):
        raise MalformedInput("a signed note ends with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise MalformedInput("a signed note has no control characters but newlines")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise MalformedInput("a signed note has a blank line between its text and its signatures")
    text, lines = note[: cut + 1], note[cut + 2 :].splitlines()
    if not lines:
        raise MalformedInput("a signed note has at least one signature line")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedInput(f"a signed note has at most {MAX_SIGNATURES} signatures")
    signatures = []
    for line in lines:
        name, _, encoded = line.removeprefix(_DASH).rpartition(" ")
        if not line.startswith(_DASH) or not _NAME.match(name):
            raise MalformedInput(f"signature line {line[:60]!r} is not '— NAME BASE64'")
        raw = _b64(encoded, "a signature")
        if len(raw) < 5:
            raise MalformedInput(f"signature line {line[:60]!r} is too short for a key id and a signature")
        signatures.append(NoteSignature(name, raw[:4], raw[4:]))
    return text, signatures


def verified_text(note: str, key: VerifierKey) -> str:
    """The text of ``note`` once a valid signature by ``key`` is found in it.

    WrongKeyError when no signature line has the key's name and id (the signers found are named);
    SignatureError when the line is there but the signature is not valid for the text.
    """
    text, signatures = split_note(note)
    # C2SP signed-note: signatures of unknown keys are ignored, even when they share the name or the id (not both);
    # every signature of the known key is verified, and one that fails rejects the whole note (a valid one beside
    # it does not save it: whoever added the failing line tampered with the note).
    mine = [s for s in signatures if s.name == key.name and s.key_id == key.key_id]
    if not mine:
        found = ", ".join(f"{s.name}+{s.key_id.hex()}" for s in signatures)
        raise WrongKeyError(f"not signed by the key {key.name}+{key.key_id.hex()}: signed by {found}")
    failing = sum(not key.verify(text.encode(), s.signature) for s in mine)
    if failing == len(mine):
        raise SignatureError(f"the signature of {key.name}+{key.key_id.hex()} is not valid for this text: "
                             "the note was altered after it was signed")
    if failing:
        raise SignatureError(f"{failing} of the {len(mine)} signature lines of {key.name}+{key.key_id.hex()} are not "
                             "valid for this text: a note with a failing signature of the key is refused whole "
                             "(C2SP signed-note)")
    return text


@dataclass(frozen=True)
class Checkpoint:
    """A tlog checkpoint: the log's origin, a tree size and its root hash (and any extension lines)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = field(default=())

    @property
    def timestamp(self) -> datetime | None:
        """When the ledger signed it, from its ``Timestamp: <unix nanoseconds>`` extension line (as Rekor's
        checkpoints carry it); None for a checkpoint without one (signed before receipts)."""
        for line in self.extensions:
            name, _, value = line.partition(": ")
            if name == "Timestamp" and re.fullmatch(r"[0-9]{1,20}", value):
                return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(value) // 1000)
        return None

    def text(self) -> str:
        """The note text to sign."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse_text(cls, text: str) -> Checkpoint:
        """The checkpoint of a note text (unverified)."""
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise MalformedInput("a checkpoint has an origin line, a tree size line and a root hash line")
        origin, size, root = lines[0], lines[1], lines[2]
        if not origin or not re.fullmatch(r"0|[1-9][0-9]{0,19}", size):
            raise MalformedInput(f"checkpoint origin {origin!r} / tree size {size!r}: the size is a decimal integer")
        digest = _b64(root, "the checkpoint's root hash")
        if len(digest) != 32:
            raise MalformedInput("the checkpoint's root hash is not 32 bytes")
        extensions = tuple(lines[3:-1])
        if "" in extensions:  # C2SP tlog-checkpoint: extension lines, if any, MUST be non-empty
            raise MalformedInput(f"extension line {extensions.index('') + 1} of the checkpoint is empty: a "
                                 "checkpoint's lines after the root hash are non-empty (C2SP tlog-checkpoint)")
        return cls(origin, int(size), digest, extensions)


def open_checkpoint(note: str, key: VerifierKey, *, origin: str | None = None) -> Checkpoint:
    """The checkpoint in a signed note, verified with ``key`` (and its origin checked when given)."""
    checkpoint = Checkpoint.parse_text(verified_text(note, key))
    if origin is not None and checkpoint.origin != origin:
        raise WrongKeyError(f"checkpoint of origin {checkpoint.origin!r}, expected {origin!r}")
    return checkpoint
