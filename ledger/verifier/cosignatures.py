"""Witness cosignatures (https://c2sp.org/tlog-cosignature) and the policy a checkpoint must meet.

A witness that verified a checkpoint extends the one it cosigned before (https://c2sp.org/tlog-witness)
adds a signature line to the note::

    — <witness name> base64(key id ‖ timestamp ‖ Ed25519 signature)

where the key id is SHA-256(name ‖ 0x0A ‖ 0x04 ‖ public key)[:4] (type 0x04: ``cosignature/v1``), the
timestamp is 8 bytes big-endian (POSIX seconds), and the signature is over::

    cosignature/v1
    time <timestamp>
    <the checkpoint's note text, extension lines included>

A v1 cosignature states that, at that time, this was the largest consistent tree the witness had
seen for the origin. A checkpoint cosigned by enough independent witnesses cannot be one of two
split views: a witness refuses a second root for a size, or a tree that does not extend its own.

The *policy* is which witnesses an auditor trusts and how many of them must have cosigned:
``--witness KEY`` (repeatable) with ``--witnesses-needed K``, or a C2SP tlog-policy file
(https://c2sp.org/tlog-policy: ``witness NAME VKEY [URL]``, ``group NAME K|all|any MEMBER…``,
``quorum NAME|none``; ``log`` lines are read and ignored: the log's key is ``--key``).

Failures: ``witness-policy`` — fewer valid cosignatures than the policy needs;
``witness-signature`` — a line in the name and key id of a policy witness that does not verify (a
forged line, another checkpoint's cosignature, an old one replayed for a new size): the whole
note is refused, as signed-note asks of a failing signature by a known key; ``split-view`` — two
checkpoints signed by the log for one size with different roots.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from caseledger.verify.failures import MalformedInput, VerificationError
from caseledger.verify.note import Checkpoint, VerifierKey, open_checkpoint, split_note

__all__ = ["ALG_COSIGNATURE_V1", "Cosigned", "PolicyError", "WitnessKey", "WitnessPolicy", "check_cosignatures",
           "cosigned_message", "split_view"]

ALG_COSIGNATURE_V1 = 0x04
MAX_CLOCK_SKEW_S = 600
"""A cosignature dated further in the future than this is refused (the spec lets verifiers do so)."""
_NAME = re.compile(r"^[^\s+]+$")


class PolicyError(VerificationError):
    """A checkpoint does not meet the witness policy (``code``: witness-policy, witness-signature, split-view)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class WitnessKey:
    """A witness's Ed25519 cosigning key, written ``name+keyid+base64(0x04 ‖ key)`` (a signed-note vkey)."""

    name: str
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return hashlib.sha256(self.name.encode() + b"\n" + bytes([ALG_COSIGNATURE_V1]) + self.public_key).digest()[:4]

    @classmethod
    def parse(cls, text: str) -> WitnessKey:
        """Read ``name+hex keyid+base64(0x04 ‖ key)``; the key id must match the name and key."""
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or not _NAME.match(parts[0]) or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
            raise MalformedInput(f"witness key {text.strip()[:60]!r} is not NAME+KEYID+BASE64 (the witness's "
                                 "verifier key, of type cosignature/v1)")
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except ValueError:
            raise MalformedInput(f"witness key {parts[0]}: its key is not base64") from None
        if len(raw) != 33 or raw[0] != ALG_COSIGNATURE_V1:
            kind = "a signed-note Ed25519 key (type 0x01), not a witness's" if raw[:1] == b"\x01" else "not"
            raise MalformedInput(f"witness key {parts[0]}: {kind} an Ed25519 cosignature/v1 key (0x04 followed "
                                 "by 32 bytes)")
        key = cls(parts[0], raw[1:])
        if key.key_id.hex() != parts[1]:
            raise MalformedInput(f"witness key {parts[0]}+{parts[1]}: its key id does not match its name and key")
        return key

    def __str__(self) -> str:
        encoded = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def verify(self, text: str, signature: bytes) -> int | None:
        """The timestamp of a valid cosignature of the note ``text`` (``signature``: timestamp ‖ Ed25519), else None."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        if len(signature) != 8 + 64:
            return None
        stamp = int.from_bytes(signature[:8], "big")
        if stamp >= 1 << 63:
            return None
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature[8:], cosigned_message(text, stamp))
        except InvalidSignature:
            return None
        return stamp


def cosigned_message(text: str, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: its header and time lines, then the checkpoint's note text."""
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


@dataclass(frozen=True)
class Group:
    """``needed`` of ``members`` (witness names or other groups) must have cosigned."""

    needed: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class WitnessPolicy:
    """The witnesses an auditor trusts and the quorum a checkpoint needs (None: no cosignature needed)."""

    witnesses: dict[str, WitnessKey]
    groups: dict[str, Group] = field(default_factory=dict)
    quorum: str | None = None

    @classmethod
    def k_of(cls, needed: int, keys: Sequence[WitnessKey], names: Sequence[str] | None = None) -> WitnessPolicy:
        """``needed`` of these witnesses (``--witness KEY`` … ``--witnesses-needed K``), named by their keys'
        names unless ``names`` are given."""
        if not keys:
            raise MalformedInput("a witness policy names at least one witness key")
        names = list(names) if names is not None else [k.name for k in keys]
        if len(set(names)) != len(names) or len({k.public_key for k in keys}) != len(keys):
            raise MalformedInput("a witness policy names each witness once")
        if not 1 <= needed <= len(keys):
            raise MalformedInput(f"{needed} witnesses needed of {len(keys)} given: give 1 to {len(keys)}")
        group = "\x00k-of-n"
        return cls(dict(zip(names, keys, strict=True)), {group: Group(needed, tuple(names))}, group)

    @classmethod
    def parse(cls, text: str) -> WitnessPolicy:
        """A C2SP tlog-policy file (``log`` lines ignored: the log's key is given apart)."""
        witnesses: dict[str, WitnessKey] = {}
        groups: dict[str, Group] = {}
        quorum: str | None = None
        seen_quorum = False
        for number, raw in enumerate(text.split("\n"), 1):
            words = raw.replace("\t", " ").split()
            if not words or words[0].startswith("#"):
                continue
            where = f"policy line {number}"
            kind = words[0]
            if kind == "log":
                continue
            if kind == "witness" and len(words) in (3, 4):
                name = words[1]
                if name == "none" or name in witnesses or name in groups:
                    raise MalformedInput(f"{where}: the name {name!r} is already defined (or reserved)")
                key = WitnessKey.parse(words[2])
                if any(k.public_key == key.public_key for k in witnesses.values()):
                    raise MalformedInput(f"{where}: witness {name} has the key of another witness")
                witnesses[name] = key
            elif kind == "group" and len(words) >= 4:
                name, threshold, members = words[1], words[2], tuple(words[3:])
                if name == "none" or name in witnesses or name in groups:
                    raise MalformedInput(f"{where}: the name {name!r} is already defined (or reserved)")
                unknown = [m for m in members if m not in witnesses and m not in groups]
                if unknown or len(set(members)) != len(members):
                    raise MalformedInput(f"{where}: a group's members are defined above it, each once "
                                         f"({', '.join(unknown) or 'a member listed twice'})")
                needed = {"all": len(members), "any": 1}.get(threshold)
                if needed is None:
                    if not re.fullmatch(r"[1-9][0-9]{0,5}", threshold) or int(threshold) > len(members):
                        raise MalformedInput(f"{where}: the threshold is all, any or 1 to {len(members)}")
                    needed = int(threshold)
                groups[name] = Group(needed, members)
            elif kind == "quorum" and len(words) == 2:
                if seen_quorum:
                    raise MalformedInput(f"{where}: a policy has exactly one quorum line")
                seen_quorum = True
                if words[1] != "none" and words[1] not in witnesses and words[1] not in groups:
                    raise MalformedInput(f"{where}: the quorum names a witness or group defined above it")
                quorum = None if words[1] == "none" else words[1]
            else:
                raise MalformedInput(f"{where}: expected log, witness NAME VKEY [URL], group NAME K|all|any "
                                     "MEMBER…, or quorum NAME (https://c2sp.org/tlog-policy)")
        if not seen_quorum:
            raise MalformedInput("the witness policy has no quorum line (quorum NAME, or quorum none)")
        return cls(witnesses, groups, quorum)

    @property
    def needs_cosignatures(self) -> bool:
        return self.quorum is not None

    def met_by(self, names: Iterable[str]) -> bool:
        """Whether cosignatures by these witnesses meet the quorum."""
        have = set(names)

        def holds(name: str) -> bool:
            group = self.groups.get(name)
            if group is None:
                return name in have
            return sum(holds(m) for m in group.members) >= group.needed

        return self.quorum is None or holds(self.quorum)

    def describe(self) -> str:
        """The quorum in words: ``2 of w1, w2, w3``."""
        if self.quorum is None:
            return "no cosignature"

        def words(name: str) -> str:
            group = self.groups.get(name)
            if group is None:
                return name
            return f"{group.needed} of ({', '.join(words(m) for m in group.members)})"

        return words(self.quorum).removeprefix("(").removesuffix(")") if self.quorum in self.groups else self.quorum


@dataclass(frozen=True)
class Cosigned:
    """A checkpoint verified with the log's key, and the policy's witnesses whose cosignatures verify (name → time)."""

    checkpoint: Checkpoint
    witnesses: dict[str, int]


def check_cosignatures(note: str, key: VerifierKey, policy: WitnessPolicy, *, now: float | None = None) -> Cosigned:
    """The checkpoint in ``note`` once signed by ``key`` and cosigned as ``policy`` needs; PolicyError otherwise.

    The log's signature is checked first (its errors are :func:`open_checkpoint`'s); lines of keys the
    policy does not name are ignored, as tlog-cosignature asks.
    """
    checkpoint = open_checkpoint(note, key)
    text, signatures = split_note(note)
    by_id = {(k.name, k.key_id): name for name, k in policy.witnesses.items()}
    valid: dict[str, int] = {}
    latest = (time.time() if now is None else now) + MAX_CLOCK_SKEW_S
    for line in signatures:
        name = by_id.get((line.name, line.key_id))
        if name is None:
            continue
        stamp = policy.witnesses[name].verify(text, line.signature)
        if stamp is None:
            raise PolicyError("witness-signature", f"the cosignature of witness {name} ({line.name}+"
                              f"{line.key_id.hex()}) does not verify for this checkpoint: forged, or copied from "
                              "another checkpoint")
        if stamp > latest:
            raise PolicyError("witness-signature", f"the cosignature of witness {name} is dated {stamp}, in the "
                              "future: refused")
        valid[name] = stamp
    if not policy.met_by(valid):
        got = ", ".join(sorted(valid)) or "none"
        raise PolicyError("witness-policy", f"the checkpoint ({checkpoint.size} events) is not cosigned as the "
                          f"witness policy needs ({policy.describe()}): valid cosignatures from {got}")
    return Cosigned(checkpoint, valid)


def split_view(first: Checkpoint, second: Checkpoint) -> str | None:
    """Why two checkpoints the log signed are a split view (one size, two roots), or None."""
    if first.origin == second.origin and first.size == second.size and first.root != second.root:
        return (f"split view: the log signed two different roots for tree size {first.size} "
                f"({base64.b64encode(first.root).decode()[:12]}… and {base64.b64encode(second.root).decode()[:12]}…): "
                "it showed different logs to different readers")
    return None
