"""A contact's receipt: what the ledger signs when it records a contact, and how its holder checks it offline.

Modelled on Certificate Transparency's signed certificate timestamp (RFC 6962 §3.2) and Sigstore
Rekor's signed entry timestamp: a statement signed with the ledger's checkpoint key binding the log
(its origin and key), the time the ledger received the contact (its own clock), the contact's
reference and handle, a digest of its content salted with a secret only this receipt and the sealed
record carry, the hash of its ``ContactReceived`` event (the leaf the log will hold), and the most
seconds before every checkpoint the ledger signs includes that leaf (its *maximum merge delay*).

Encoding, version 1 — compact, canonical, one line (an e-mail footer, a QR code)::

    CLR1.<base64url, unpadded, of: body ‖ Ed25519 signature (64 bytes)>
    body = "CLR" 0x01 ‖ str origin ‖ str key name ‖ key id (4) ‖ str reference ‖ str contact id
           ‖ received_at (8, big-endian microseconds since 1970 UTC) ‖ delay (4, big-endian seconds)
           ‖ salt (16) ‖ content digest (32) ‖ event hash (32)
    str  = length (1 byte) ‖ UTF-8
    signed message = "caseledger receipt v1\\n" ‖ body

Decoding refuses anything that does not re-encode to the same text (padding, trailing bytes,
over-long strings), so a receipt has exactly one form.

The content digest is HMAC-SHA-256 under the salt over the request as the ledger's content digest
frames it (identity, subject, items in order, body with line ends folded, attachments' SHA-256 in
any order), so the holder proves what they sent with :func:`content_digest`; without the salt —
which the ledger keeps only sealed under the customer's key, destroyed by an erasure — the digest
cannot be tried against guesses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from caseledger.verify.failures import MalformedInput, SignatureError, WrongKeyError
from caseledger.verify.note import Checkpoint, VerifierKey

__all__ = ["PREFIX", "PROOF_FORMAT", "SALT_BYTES", "Receipt", "ReceiptCheck", "check_receipt", "content_digest",
           "find_receipt", "read_proof", "receipt_text", "signed_message"]

PREFIX = "CLR1."
PROOF_FORMAT = "caseledger receipt inclusion v1"
"""The ``format`` of a receipt's inclusion proof (``caseledger contact receipt REF --proof``): a JSON object with
``event_hash`` (hex), ``tree_size``, ``leaf_index`` (null: not in that checkpoint's tree), ``inclusion_proof``
(base64 hashes, RFC 9162 order), ``checkpoint`` (the signed note they are against), ``reference``, ``contact_id``."""
MAGIC = b"CLR\x01"
DOMAIN = b"caseledger receipt v1\n"
SALT_BYTES = 16
SIGNATURE_BYTES = 64
_TOKEN = re.compile(r"CLR1\.[A-Za-z0-9_-]+")
_LINE_END_BLANKS = re.compile(r"[ \t]+\n")
_SOFT_BREAK = re.compile(r"=\r?\n")
_CONTENT_PREFIX = b"caseledger receipt content v1\n"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def content_digest(salt: bytes, *, identity: str, subject: str, items: Iterable[str], body: str,
                   attachment_sha256s: Iterable[str] = ()) -> bytes:
    """HMAC-SHA-256 under ``salt`` of the request, each part length-framed (the ledger's content framing)."""
    if "\r" in body:
        body = body.replace("\r\n", "\n").replace("\r", "\n")
    body = _LINE_END_BLANKS.sub("\n", body.strip())
    texts = [i.strip() for i in items]
    mac = hmac.new(salt, _CONTENT_PREFIX, hashlib.sha256)
    for part in (identity, subject.strip(), str(len(texts)), *texts, body,
                 *sorted(a.lower() for a in attachment_sha256s)):
        data = part.encode()
        mac.update(len(data).to_bytes(4, "big"))
        mac.update(data)
    return mac.digest()


def _micros(at: datetime) -> int:
    delta = at.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _str(value: str, what: str) -> bytes:
    data = value.encode()
    if not data or len(data) > 255:
        raise MalformedInput(f"a receipt's {what} has 1 to 255 bytes, not {len(data)}")
    return bytes([len(data)]) + data


@dataclass(frozen=True)
class Receipt:
    """A signed receipt, as decoded (``signature`` empty until signed)."""

    origin: str
    key_name: str
    key_id: bytes
    reference: str
    contact_id: str
    received_at: datetime
    delay_s: int
    salt: bytes
    content_digest: bytes
    event_hash: bytes
    signature: bytes = b""

    @property
    def include_by(self) -> datetime:
        """The latest time a checkpoint may be signed without this contact's leaf."""
        return self.received_at + timedelta(seconds=self.delay_s)

    def body(self) -> bytes:
        """The canonical bytes the signature covers (after the domain prefix)."""
        if len(self.key_id) != 4 or len(self.salt) != SALT_BYTES or len(self.content_digest) != 32 \
                or len(self.event_hash) != 32 or not 0 <= self.delay_s < 2**32:
            raise MalformedInput("a receipt has a 4-byte key id, a 16-byte salt, 32-byte digests and a delay "
                                 "of 0 to 2^32-1 seconds")
        return b"".join((
            MAGIC, _str(self.origin, "origin"), _str(self.key_name, "key name"), self.key_id,
            _str(self.reference, "reference"), _str(self.contact_id, "contact id"),
            _micros(self.received_at).to_bytes(8, "big", signed=True), self.delay_s.to_bytes(4, "big"),
            self.salt, self.content_digest, self.event_hash,
        ))

    def text(self) -> str:
        """The receipt as one line: ``CLR1.`` and base64url (what the customer keeps)."""
        return receipt_text(self.body(), self.signature)

    @classmethod
    def parse(cls, text: str) -> Receipt:
        """The receipt of ``CLR1.…``; MalformedInput unless it is in its one canonical form."""
        text = text.strip()
        if not _TOKEN.fullmatch(text):
            raise MalformedInput("a receipt is CLR1. followed by base64url (A-Z a-z 0-9 - _), on one line")
        encoded = text[len(PREFIX):]
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            raise MalformedInput("the receipt's base64url does not decode") from None
        try:
            receipt = cls._decode(raw)
        except (IndexError, UnicodeDecodeError, ValueError, OverflowError) as error:
            raise MalformedInput(f"the receipt's bytes are not a version 1 receipt: {error}") from None
        if receipt.text() != text:
            raise MalformedInput("the receipt is not in its canonical form (padding or extra bits)")
        return receipt

    @classmethod
    def _decode(cls, raw: bytes) -> Receipt:
        if raw[:4] != MAGIC:
            raise ValueError("it does not start with CLR 0x01")
        p = 4

        def take(n: int) -> bytes:
            nonlocal p
            if p + n > len(raw):
                raise ValueError("it ends too early")
            p += n
            return raw[p - n : p]

        def text() -> str:
            return take(take(1)[0]).decode()

        origin, key_name, key_id = text(), text(), take(4)
        reference, contact_id = text(), text()
        micros = int.from_bytes(take(8), "big", signed=True)
        delay = int.from_bytes(take(4), "big")
        salt, digest, event_hash, signature = take(SALT_BYTES), take(32), take(32), take(SIGNATURE_BYTES)
        if p != len(raw):
            raise ValueError(f"{len(raw) - p} bytes follow the signature")
        received = _EPOCH + timedelta(microseconds=micros)
        return cls(origin, key_name, key_id, reference, contact_id, received, delay, salt, digest, event_hash,
                   signature)

    def check(self, key: VerifierKey) -> None:
        """Raise unless ``key`` signed this receipt: WrongKeyError (another key), SignatureError (altered)."""
        if self.key_name != key.name or self.key_id != key.key_id:
            raise WrongKeyError(f"the receipt names the key {self.key_name}+{self.key_id.hex()}, not "
                                f"{key.name}+{key.key_id.hex()}")
        if not key.verify(signed_message(self.body()), self.signature):
            raise SignatureError(f"the signature of {key.name}+{key.key_id.hex()} is not valid for this receipt: "
                                 "it was altered after it was signed, or forged")

    def proves_content(self, **content: object) -> bool:
        """Whether the request given (``identity``, ``subject``, ``items``, ``body``, ``attachment_sha256s``) is
        the one received."""
        return hmac.compare_digest(content_digest(self.salt, **content), self.content_digest)  # type: ignore[arg-type]

    def lines(self) -> list[str]:
        """What the receipt says, one fact a line."""
        return [
            f"log: {self.origin} (key {self.key_name}+{self.key_id.hex()})",
            f"reference: {self.reference}, contact {self.contact_id}",
            f"received: {self.received_at.isoformat().replace('+00:00', 'Z')} (the ledger's clock)",
            f"event hash (the log's leaf): {self.event_hash.hex()}",
            f"content digest: {self.content_digest.hex()} (salted: only this receipt holds the salt)",
            f"promised: in every checkpoint signed from {self.include_by.isoformat().replace('+00:00', 'Z')} on "
            f"({self.delay_s} s after receipt)",
        ]


def receipt_text(body: bytes, signature: bytes) -> str:
    """``CLR1.`` and the unpadded base64url of a receipt's body and signature."""
    if len(signature) != SIGNATURE_BYTES:
        raise MalformedInput("the receipt is not signed")
    return PREFIX + base64.urlsafe_b64encode(body + signature).decode().rstrip("=")


def signed_message(body: bytes) -> bytes:
    """What the ledger's key signs: a domain prefix (no other signed object starts so) and the body."""
    return DOMAIN + body


def find_receipt(text: str) -> str:
    """The first ``CLR1.…`` token in ``text`` (a saved e-mail, a QR code's content); MalformedInput if none.

    A raw e-mail in quoted-printable cuts long lines with soft breaks (``=`` at a line's end), which base64url
    never holds: they are removed first."""
    found = _TOKEN.search(_SOFT_BREAK.sub("", text))
    if found is None:
        raise MalformedInput("no receipt (a line starting CLR1.) in the text given")
    return found.group(0)


@dataclass
class ReceiptCheck:
    """What a receipt proves: its ``verdict`` and a line for each thing found.

    Verdicts: ``signed`` (the ledger's signature holds; nothing asked of the log), ``included`` (the
    log holds the contact), ``pending`` (not in the export or the proof's checkpoint, signed before the
    promised time: ask again later), ``missing`` (a checkpoint the ledger signed after the promised time
    lacks the contact, as its export or its own proof shows: proof against the operator), ``forged`` (the signature does not hold), ``wrong-key``,
    ``content-differs`` (the request given is not the one received), ``unverified`` (the export, checkpoint
    or proof given does not verify, is of another log or of another event: nothing follows from it).
    """

    receipt: Receipt | None
    verdict: str = "signed"
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict in ("signed", "included")


def check_receipt(text: str, key: VerifierKey, *, export: dict[str, Any] | None = None,
                  content: dict[str, Any] | None = None, proof: dict[str, Any] | None = None,
                  checkpoint: str | None = None) -> ReceiptCheck:
    """Check a receipt with the ledger's key; with ``content`` the request it was for; with ``export`` (a
    history export, :func:`caseledger.verify.history.read_export`), or with ``proof`` (:func:`read_proof`)
    against ``checkpoint`` (a signed note; else the one the proof carries), whether the log holds it."""
    receipt = Receipt.parse(find_receipt(text))
    result = ReceiptCheck(receipt, lines=receipt.lines())
    try:
        receipt.check(key)
    except WrongKeyError as error:
        result.verdict = "wrong-key"
        result.lines.append(str(error))
        return result
    except SignatureError as error:
        result.verdict = "forged"
        result.lines.append(str(error))
        return result
    result.lines.append(f"signature: valid, by {key.name}+{key.key_id.hex()}")
    if content is not None:
        try:
            same = receipt.proves_content(
                identity=str(content["identity"]), subject=str(content.get("subject", "")),
                items=[str(i) for i in content.get("items", [])], body=str(content.get("body", "")),
                attachment_sha256s=[str(a) for a in content.get("attachment_sha256s", [])])
        except (KeyError, TypeError, AttributeError):
            raise MalformedInput("the content is a JSON object with identity (kind:value), subject, items, body "
                                 "and attachment_sha256s") from None
        if not same:
            result.verdict = "content-differs"
            result.lines.append("content: the request given is NOT the one this receipt was issued for")
            return result
        result.lines.append("content: the request given is the one received")
    if export is not None:
        _against_export(receipt, key, export, result)
    if proof is not None:
        _against_proof(receipt, key, proof, checkpoint, result)
    return result


def _against_export(receipt: Receipt, key: VerifierKey, export: dict[str, Any], result: ReceiptCheck) -> None:
    from caseledger.verify.history import check_history
    from caseledger.verify.rfc9162 import leaf_hash, verify_inclusion

    history = check_history(export, key)
    checkpoint = history.checkpoint
    broken = [f for f in history.findings if f.code != "uncommitted"]
    if checkpoint is None or broken:
        result.verdict = "unverified"
        result.lines.append("export: does not verify, nothing follows from it: "
                            + "; ".join(f.line() for f in (broken or history.findings)[:3]))
        return
    if checkpoint.origin != receipt.origin:
        result.verdict = "unverified"
        result.lines.append(f"export: its checkpoint is of the log {checkpoint.origin!r}, the receipt of "
                            f"{receipt.origin!r}")
        return
    signed = checkpoint.timestamp
    when = f"signed {signed.isoformat().replace('+00:00', 'Z')}" if signed else "signed at a time it does not say"
    for event in export.get("events") or []:
        if str(event.get("event_hash", "")).lower() != receipt.event_hash.hex():
            continue
        index, proof = event.get("leaf_index"), event.get("inclusion_proof")
        if index is not None and proof is not None:
            try:
                verify_inclusion(int(index), checkpoint.size, leaf_hash(receipt.event_hash),
                                 [base64.b64decode(h, validate=True) for h in proof], checkpoint.root)
            except (ValueError, binascii.Error) as error:  # ProofError is a ValueError
                result.verdict = "unverified"
                result.lines.append(f"export: the contact's inclusion proof does not hold: {error}")
                return
            result.verdict = "included"
            result.lines.append(f"log: the contact is leaf {index} of the checkpoint of {checkpoint.size} events "
                                f"({when}): proved included")
            return
        break
    _not_held(receipt, checkpoint, result, "the export", "an export")


def _not_held(receipt: Receipt, checkpoint: Checkpoint, result: ReceiptCheck, source: str, ask: str) -> None:
    """The contact is not in ``checkpoint`` as ``source`` shows it: ``missing`` when the checkpoint was signed at
    or after the promised time (proof against the operator), else ``pending``."""
    signed = checkpoint.timestamp
    when = f"signed {_z(signed)}" if signed else "signed at a time it does not say"
    if signed is not None and signed >= receipt.include_by:
        result.verdict = "missing"
        result.lines.append(
            f"MISSING: the ledger signed this receipt, promising the contact in every checkpoint signed from "
            f"{_z(receipt.include_by)} on; {source}'s checkpoint of {checkpoint.size} events, {when} by the same "
            f"key, does not hold it. The receipt and {source} together are proof against the operator of the ledger.")
        return
    result.verdict = "pending"
    result.lines.append(f"log: not in {source}, whose checkpoint of {checkpoint.size} events was {when}, before "
                        f"the promised {_z(receipt.include_by)}: ask for {ask} after that time")


def _z(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def read_proof(text: str) -> dict[str, Any]:
    """A receipt's inclusion proof (:data:`PROOF_FORMAT`) from its JSON text; MalformedInput otherwise."""
    import json

    try:
        proof = json.loads(text)
    except ValueError:
        proof = None
    if not isinstance(proof, dict) or proof.get("format") != PROOF_FORMAT:
        raise MalformedInput(f"the proof is not a JSON object of format {PROOF_FORMAT!r} (as `caseledger contact "
                             "receipt REF --proof` writes it)")
    index, path, size = proof.get("leaf_index"), proof.get("inclusion_proof"), proof.get("tree_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 \
            or not isinstance(proof.get("event_hash"), str) or not re.fullmatch(r"[0-9a-f]{64}", proof["event_hash"]) \
            or (index is None) != (path is None) \
            or (index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0)) \
            or (path is not None and (not isinstance(path, list) or len(path) > 64
                                      or not all(isinstance(h, str) for h in path))) \
            or (proof.get("checkpoint") is not None and not isinstance(proof["checkpoint"], str)):
        raise MalformedInput("the proof has event_hash (64 hex digits), tree_size, and leaf_index with "
                             "inclusion_proof (a list of base64 hashes) or both null")
    return proof


def _against_proof(receipt: Receipt, key: VerifierKey, proof: dict[str, Any], note: str | None,
                   result: ReceiptCheck) -> None:
    from caseledger.verify.note import open_checkpoint
    from caseledger.verify.rfc9162 import leaf_hash, verify_inclusion

    note = note if note is not None else proof.get("checkpoint")
    if not note:
        raise MalformedInput("a proof is checked against a checkpoint: give --checkpoint, or the proof as the ledger "
                             "wrote it (it carries its checkpoint)")
    try:
        checkpoint = open_checkpoint(note, key)
    except (WrongKeyError, SignatureError, MalformedInput) as error:
        result.verdict = "unverified"
        result.lines.append(f"checkpoint: does not verify, nothing follows from it: {error}")
        return
    if checkpoint.origin != receipt.origin:
        result.verdict = "unverified"
        result.lines.append(f"checkpoint: of the log {checkpoint.origin!r}, the receipt of {receipt.origin!r}")
        return
    if proof["event_hash"] != receipt.event_hash.hex():
        result.verdict = "unverified"
        result.lines.append("proof: it is the proof of another event, not of this receipt's contact")
        return
    if proof["tree_size"] != checkpoint.size:
        result.verdict = "unverified"
        result.lines.append(f"proof: it is against a tree of {proof['tree_size']} events, the checkpoint given "
                            f"commits to {checkpoint.size}: ask the ledger for the proof against that checkpoint "
                            f"(`caseledger contact receipt {receipt.reference} --proof --tree-size {checkpoint.size}`)")
        return
    index = proof["leaf_index"]
    if index is None:
        _not_held(receipt, checkpoint, result, "the ledger's proof", "a proof")
        return
    when = f"signed {_z(checkpoint.timestamp)}" if checkpoint.timestamp else "signed at a time it does not say"
    try:
        hashes = [base64.b64decode(h, validate=True) for h in proof["inclusion_proof"]]
        verify_inclusion(index, checkpoint.size, leaf_hash(receipt.event_hash), hashes, checkpoint.root)
    except (ValueError, binascii.Error) as error:  # ProofError is a ValueError
        result.verdict = "unverified"
        result.lines.append(f"proof: the contact's inclusion proof does not hold: {error}")
        return
    result.verdict = "included"
    result.lines.append(f"log: the contact is leaf {index} of the checkpoint of {checkpoint.size} events ({when}): "
                        "proved included")
