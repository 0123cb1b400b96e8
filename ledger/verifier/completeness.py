"""A customer's events are all there: the customer map's hashing, its proofs, and their check.

Each signed checkpoint of size N commits, besides the log's root, to a **verifiable map** from
customer to (how many events, chain head) over the first N leaves, as an extension line::

    caseledger/customers <base64 map root>

The construction is a sparse Merkle tree over 256-bit keys with the single-leaf shortcut of
Dahlberg, Pulls and Peeters, "Efficient Sparse Merkle Trees" (NordSec 2016), as CONIKS (Melara et
al., USENIX Security 2015) places a leaf at its shortest unique prefix and Meta's AKD compresses its
paths; the map's root is committed by the log's signed checkpoint, as Trillian's log-backed map
commits each map revision in a log:

* key ``k`` = SHA-256("caseledger/customers key" ‖ 0x00 ‖ customer id), the envelope's
  ``customer_id`` (a pseudonym ``cus-…``, or an id a channel adapter gave), UTF-8;
* chain head: ``h_0`` = 32 zero bytes, ``h_i`` = SHA-256(0x02 ‖ h_{i-1} ‖ event hash_i) over the
  customer's events in log order (leaf order), an event's hash being SHA-256 of its stored bytes;
* value ``v`` = SHA-256(0x03 ‖ count as 8 bytes big-endian ‖ head);
* a subtree holding no key hashes to 32 zero bytes; one holding exactly one key, at whatever depth,
  to the leaf SHA-256(0x00 ‖ k ‖ v); one holding two or more to SHA-256(0x01 ‖ left ‖ right), its
  children split by the key's next bit (most significant first).

A proof for key ``k`` is the sibling hashes along ``k``'s path from the node where the path ends
up to the root, and what ends it: ``k``'s own leaf (inclusion), nothing (non-inclusion), or
another key's leaf sharing the path's prefix (non-inclusion; that key and its value hash are
shown, never a count or a customer id). Whatever the prover does, only one node ends ``k``'s path
under a given root (a leaf, an empty subtree and an inner node never hash alike), so a root proves
at most one value for a customer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from caseledger.verify.failures import MalformedInput, ProofError
from caseledger.verify.note import Checkpoint

__all__ = ["CHAIN_START", "EMPTY", "EXTENSION", "MapProof", "chain", "chain_step", "check_completeness", "customer_key",
           "map_leaf", "map_node", "map_root_line", "map_root_of", "root_from_proof", "value_hash"]

EXTENSION = "caseledger/customers"
"""The checkpoint's extension line: ``caseledger/customers <base64 root>`` (C2SP tlog-checkpoint extension)."""
EMPTY = bytes(32)
CHAIN_START = bytes(32)
KEY_DOMAIN = b"caseledger/customers key\x00"
LEAF, NODE, LINK, VALUE = b"\x00", b"\x01", b"\x02", b"\x03"
KINDS = ("leaf", "empty", "other")


def customer_key(customer_id: str | bytes) -> bytes:
    """The customer's 256-bit key in the map: a hash of their (pseudonymous) id."""
    raw = customer_id.encode() if isinstance(customer_id, str) else customer_id
    return hashlib.sha256(KEY_DOMAIN + raw).digest()


def chain_step(head: bytes, event_hash: bytes) -> bytes:
    return hashlib.sha256(LINK + head + event_hash).digest()


def chain(event_hashes: Iterable[bytes], head: bytes = CHAIN_START) -> bytes:
    """The chain head after ``event_hashes`` (in log order), from ``head``."""
    sha256 = hashlib.sha256
    for digest in event_hashes:
        head = sha256(LINK + head + digest).digest()
    return head


def value_hash(count: int, head: bytes) -> bytes:
    return hashlib.sha256(VALUE + count.to_bytes(8, "big") + head).digest()


def map_leaf(key: bytes, value: bytes) -> bytes:
    return hashlib.sha256(LEAF + key + value).digest()


def map_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE + left + right).digest()


def bit(key: bytes, depth: int) -> int:
    """The key's bit at ``depth`` (0: the most significant bit of its first byte)."""
    return (key[depth >> 3] >> (7 - (depth & 7))) & 1


def map_root_of(values: dict[bytes, bytes], depth: int = 0) -> bytes:
    """The root of the map holding ``values`` (key → value hash), computed from scratch (tests, audits)."""
    if not values:
        return EMPTY
    if len(values) == 1:
        (key, value), = values.items()
        return map_leaf(key, value)
    left = {k: v for k, v in values.items() if not bit(k, depth)}
    right = {k: v for k, v in values.items() if bit(k, depth)}
    return map_node(map_root_of(left, depth + 1), map_root_of(right, depth + 1))


@dataclass(frozen=True)
class MapProof:
    """What ends the customer's path (``leaf``, ``empty``, ``other``) and the siblings up to the root, bottom first."""

    kind: str
    siblings: tuple[bytes, ...]
    other_key: bytes | None = None
    other_value: bytes | None = None

    @property
    def included(self) -> bool:
        return self.kind == "leaf"

    def as_dict(self) -> dict[str, Any]:
        b64 = base64.b64encode
        found: dict[str, Any] = {"kind": self.kind, "siblings": [b64(h).decode() for h in self.siblings]}
        if self.kind == "other":
            assert self.other_key is not None and self.other_value is not None
            found.update(other_key=b64(self.other_key).decode(), other_value=b64(self.other_value).decode())
        return found

    @classmethod
    def from_dict(cls, data: Any) -> MapProof:
        if not isinstance(data, dict) or data.get("kind") not in KINDS or not isinstance(data.get("siblings"), list):
            raise MalformedInput("the customer map proof is not {kind: leaf|empty|other, siblings: [...]}")
        siblings = tuple(_digest(h, "a sibling of the customer map proof") for h in data["siblings"])
        if len(siblings) > 256:
            raise MalformedInput("the customer map proof has more than 256 siblings")
        if data["kind"] == "other":
            return cls("other", siblings, _digest(data.get("other_key"), "other_key"),
                       _digest(data.get("other_value"), "other_value"))
        return cls(str(data["kind"]), siblings)


def _digest(text: Any, what: str) -> bytes:
    try:
        raw = base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raise MalformedInput(f"{what}: not base64") from None
    if len(raw) != 32:
        raise MalformedInput(f"{what}: not 32 bytes")
    return raw


def root_from_proof(customer_id: str, count: int, head: bytes, proof: MapProof) -> bytes:
    """The map root that ``proof`` leads to for a customer with ``count`` events chaining to ``head``.

    ProofError when the proof cannot be for this customer: a non-inclusion proof for a customer with
    events, or another key's leaf that is this customer's or lies off their path.
    """
    key = customer_key(customer_id)
    depth = len(proof.siblings)
    if proof.kind == "leaf":
        node = map_leaf(key, value_hash(count, head))
    else:
        if count:
            raise ProofError(f"the map proof says the customer had no event at the checkpoint, yet the export "
                             f"holds {count} of theirs")
        if proof.kind == "empty":
            node = EMPTY
        else:
            assert proof.other_key is not None and proof.other_value is not None
            other = proof.other_key
            if other == key or any(bit(other, d) != bit(key, d) for d in range(depth)):
                raise ProofError("the map proof ends on a leaf that is not another customer's on this path")
            node = map_leaf(other, proof.other_value)
    return fold_path(key, node, proof.siblings)


def fold_path(key: bytes, node: bytes, siblings: Sequence[bytes]) -> bytes:
    """Up from the node at depth ``len(siblings)`` on ``key``'s path to the root."""
    for i, sibling in enumerate(siblings):
        depth = len(siblings) - 1 - i
        node = map_node(sibling, node) if bit(key, depth) else map_node(node, sibling)
    return node


def map_root_line(extensions: Iterable[str]) -> bytes | None:
    """The map root a checkpoint's extension lines commit to (None: a checkpoint without one)."""
    for line in extensions:
        name, _, value = line.partition(" ")
        if name == EXTENSION:
            return _digest(value, "the checkpoint's caseledger/customers line")
    return None


class EnvelopeFields(Protocol):
    """What completeness reads of an event's envelope (``caseledger.verify.history.read_envelope``)."""

    @property
    def customer(self) -> bytes: ...

    @property
    def occurred_micros(self) -> int: ...


class HistoryCheck(Protocol):
    """The outcome being filled (``caseledger.verify.history.HistoryCheck``)."""

    checkpoint: Checkpoint | None
    customer: str | None
    complete: bool | None
    counted: int
    in_range: int | None

    def flag(self, code: str, position: int, message: str) -> None: ...


def _micros(text: Any, what: str) -> int | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(str(text))
    except ValueError:
        raise MalformedInput(f"the export's occurred range: {what} {str(text)[:40]!r} is not an ISO-8601 time") from None
    if value.tzinfo is None:
        raise MalformedInput(f"the export's occurred range: {what} has no time zone")
    return (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def check_completeness(document: dict[str, Any], result: HistoryCheck,
                       read: list[tuple[dict[str, Any], bytes, EnvelopeFields]]) -> None:
    """The export holds every event of its customer up to its checkpoint, and shows the range it says.

    ``read``: each event of the file whose bytes decoded, with its hash and envelope. The customer's
    events are those whose envelope names the export's customer; those the checkpoint commits to
    (a leaf below its size, proved included) are counted and chained in leaf order and must lead,
    with the export's map proof, to the map root of the checkpoint's ``caseledger/customers`` line.
    """
    transparency = document.get("transparency") or {}
    customer = str(document.get("customer_id") or "")
    result.customer = customer or None
    _check_range(transparency.get("occurred_range"), result, read)
    cp = result.checkpoint
    if cp is None:
        return
    root = None
    try:
        root = map_root_line(cp.extensions)
    except MalformedInput as error:
        result.flag("map-proof", 0, str(error))
        return
    if root is None:  # a checkpoint signed before the map: completeness is not provable, and said so
        return
    entry = transparency.get("customer_map")
    if not isinstance(entry, dict):
        result.complete = False
        result.flag("map-proof", 0, "the checkpoint commits to the customer map but the export carries no proof "
                    "for its customer: it cannot show it holds all of their events")
        return
    if not customer or str(entry.get("customer_id") or "") != customer:
        result.complete = False
        result.flag("map-proof", 0, "the customer map proof is for another customer than the export's "
                    f"({str(entry.get('customer_id'))[:40]!r})")
        return
    mine = sorted((int(event.get("leaf_index")), digest) for event, digest, fields in read
                  if fields.customer == customer.encode() and event.get("leaf_index") is not None
                  and event.get("inclusion_proof") is not None and 0 <= int(event.get("leaf_index")) < cp.size)
    if len({index for index, _ in mine}) != len(mine):
        result.complete = False
        result.flag("incomplete", 0, "the export holds two events at one leaf")
        return
    result.counted = len(mine)
    try:
        proof = MapProof.from_dict(entry.get("proof"))
        found = root_from_proof(customer, len(mine), chain(d for _, d in mine), proof)
    except (MalformedInput, ProofError) as error:
        result.complete = False
        result.flag("map-proof", 0, f"customer map: {error}")
        return
    if found == root:
        result.complete = True
        return
    result.complete = False
    if proof.included:
        result.flag("incomplete", 0, f"the export does not hold every event of {customer} up to the checkpoint: "
                    f"its {len(mine)} events of theirs are not the count and chain the signed customer map holds "
                    "(an event, a case or more is missing or added)")
    else:
        result.flag("map-proof", 0, f"the export claims {customer} had no event at the checkpoint, and the signed "
                    "customer map does not say so")


def _check_range(spec: Any, result: HistoryCheck, read: list[tuple[dict[str, Any], bytes, EnvelopeFields]]) -> None:
    """Each event shown is inside the export's occurred range, each one hidden outside it (from its bytes)."""
    if spec is None:
        return
    if not isinstance(spec, dict):
        result.flag("range", 0, "the export's occurred range is not {occurred_from, occurred_until}")
        return
    try:
        start, end = _micros(spec.get("occurred_from"), "occurred_from"), _micros(spec.get("occurred_until"),
                                                                                  "occurred_until")
    except MalformedInput as error:
        result.flag("range", 0, str(error))
        return
    result.in_range = 0
    for event, _digest, fields in read:
        inside = (start is None or fields.occurred_micros >= start) and (end is None or fields.occurred_micros < end)
        shown = event.get("in_range", True) is not False
        position = int(event.get("position") or 0)
        if shown and not inside:
            result.flag("range", position, "shown as inside the export's occurred range, but its bytes say it "
                        "occurred outside it")
        elif inside and not shown:
            result.flag("range", position, "its bytes say it occurred inside the export's range, yet the export "
                        "shows it by its hash only")
        result.in_range += shown
