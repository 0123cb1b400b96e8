"""Checking a history export offline: the checkpoint's signature, every inclusion proof, every hash chain.

What is checked, from the file and the verifier key alone (nothing is taken from the export's
decoded ``event`` fields or its ``verification`` verdict — those are the ledger's word):

1. the checkpoint is a signed note by the key given (``checkpoint-key``, ``checkpoint-signature``);
2. each event's ``event_hash`` is SHA-256 of its stored bytes (``event-hash``);
3. each event's leaf SHA-256(0x00 ‖ event hash) is at ``leaf_index`` in the checkpoint's tree by its
   inclusion proof (``inclusion``); an event without one was recorded after the checkpoint
   (``uncommitted``: not vouched for by the ledger's signature);
4. the aggregate chains, read from the stored bytes' Avro envelope: each event's ``previous_hash`` is
   the hash of the previous event of its aggregate in the file (``chain-broken``), versions follow
   (``version-gap``). An export holds a customer's events only, so an aggregate's chain is checked
   from its first exported event on;
5. each event's readable ``event`` against its stored bytes, decoded with the schema the export
   carries for it (``view-mismatch``; sealed personal fields aside: :mod:`caseledger.verify.decoded`).
   A view that cannot be checked (no schema for it) is counted in ``views_unchecked``, and said;
6. completeness (``caseledger.verify.completeness``): the customer's events up to the checkpoint,
   counted and chained in leaf order, are exactly what the customer map the checkpoint commits to
   holds for them (``incomplete``, ``map-proof``); with an occurred range, each event's bytes say
   it lies on the side of the range the export puts it (``range``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caseledger.verify.completeness import check_completeness
from caseledger.verify.cosignatures import PolicyError, WitnessPolicy, check_cosignatures
from caseledger.verify.decoded import ViewCheck
from caseledger.verify.failures import MalformedInput, ProofError, SignatureError, WrongKeyError
from caseledger.verify.note import Checkpoint, VerifierKey, open_checkpoint
from caseledger.verify.rfc9162 import leaf_hash, verify_inclusion

__all__ = ["EnvelopeFields", "Finding", "HistoryCheck", "check_history", "check_shape", "envelope", "envelope_customer",
           "read_envelope", "read_export"]

MAGIC = b"\xc3\x01"
HEADER = 10


@dataclass(frozen=True)
class Finding:
    """One thing that does not hold: a code, the event's position (0: the file), what is wrong."""

    code: str
    position: int
    message: str

    def line(self) -> str:
        where = f"position {self.position}: " if self.position else ""
        return f"[{self.code}] {where}{self.message}"


@dataclass
class HistoryCheck:
    """The outcome: the checkpoint, how many events were proved, and every finding."""

    checkpoint: Checkpoint | None = None
    events: int = 0
    included: int = 0
    chained: int = 0
    views_checked: int = 0
    views_unchecked: int = 0
    findings: list[Finding] = field(default_factory=list)
    customer: str | None = None
    complete: bool | None = None  # None: the checkpoint commits to no customer map (signed before it)
    counted: int = 0  # the customer's events up to the checkpoint, chained and counted against the map
    in_range: int | None = None  # with an occurred range: how many of the file's events it shows

    @property
    def ok(self) -> bool:
        return not self.findings

    def flag(self, code: str, position: int, message: str) -> None:
        self.findings.append(Finding(code, position, message))


def _long(b: bytes, p: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        c = b[p]
        p += 1
        result |= (c & 0x7F) << shift
        if c < 0x80:
            return (result >> 1) ^ -(result & 1), p
        shift += 7


def _str(b: bytes, p: int) -> tuple[bytes, int]:
    n, p = _long(b, p)
    if n < 0 or p + n > len(b):
        raise ValueError("a string runs past the end of the event")
    return b[p : p + n], p + n


AUTHENTICATIONS = (b"none", b"token", b"oidc", b"adapter-signature", b"simulated-clock")
"""How an actor was authenticated: the envelope's actor record has said it since the ledger service (and
``simulated-clock`` since ``--now`` and the demo marked their events: without it, their chains read as broken)."""


def _skip_authentication(data: bytes, p: int) -> int:
    """Past the actor's ``authentication`` and ``principal`` if the envelope has them (written since the
    ledger service), else where it was: in the older envelope a one-byte union index of the channel follows
    the actor, which never reads as one of the four authentication words."""
    try:
        word, q = _str(data, p)
    except (ValueError, IndexError):
        return p
    if word not in AUTHENTICATIONS:
        return p
    branch, q = _long(data, q)  # principal: null or string
    if branch == 1:
        _, q = _str(data, q)
    return q


@dataclass(frozen=True)
class EnvelopeFields:
    """What the verifier reads of an event's envelope (caseledger.Envelope, the first field of every event)."""

    aggregate: str
    version: int
    previous: bytes | None
    customer: bytes
    occurred_micros: int


def read_envelope(data: bytes) -> EnvelopeFields:
    """The envelope's fields from an event's stored bytes; ValueError or IndexError when they do not decode."""
    if data[:2] != MAGIC:
        raise ValueError("not Avro single-object encoding (no C3 01)")
    p = HEADER
    _, p = _str(data, p)  # event_id
    aggregate, p = _str(data, p)
    version, p = _long(data, p)
    _, p = _str(data, p)  # case_id
    customer, p = _str(data, p)
    occurred, p = _long(data, p)
    _, p = _long(data, p)  # recorded_at
    for _ in range(2):  # actor.kind, actor.id
        _, p = _str(data, p)
    p = _skip_authentication(data, p)
    for _ in range(3):  # channel, correlation_id, causation_id: union of null and string
        branch, p = _long(data, p)
        if branch == 1:
            _, p = _str(data, p)
    branch, p = _long(data, p)
    previous = None
    if branch == 1:
        previous, p = _str(data, p)
    return EnvelopeFields(aggregate.decode(), version, previous, customer, occurred)


def envelope(data: bytes) -> tuple[str, int, bytes | None]:
    """(aggregate id, version, previous hash) from an event's stored bytes (caseledger.Envelope, first field)."""
    fields = read_envelope(data)
    return fields.aggregate, fields.version, fields.previous


def envelope_customer(data: bytes) -> bytes:
    """The envelope's ``customer_id`` (b"" when the bytes do not decode: counted in no customer's history)."""
    try:
        return read_envelope(data).customer
    except (ValueError, IndexError):
        return b""


def read_export(path: str | Path) -> dict[str, Any]:
    """A JSON or Avro history export (``caseledger history CUSTOMER --export json|avro FILE``), as the JSON's shape.

    MalformedInput when the file cannot be read (missing, unreadable) or is not an export of that shape."""
    try:
        with Path(path).open("rb") as head:
            avro = head.read(4) == b"Obj\x01"
        if avro:
            try:
                return check_shape(_avro_export(path), str(path))
            except MalformedInput:
                raise
            except (KeyError, TypeError, AttributeError, ValueError, zlib.error) as error:
                raise MalformedInput(f"{path}: not a readable Avro export ({type(error).__name__}: {error})") from None
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise MalformedInput(f"{path}: cannot be read ({error.strerror or type(error).__name__})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedInput(f"{path}: not a readable JSON export ({error})") from None
    if not isinstance(document, dict) or document.get("format") != "caseledger.history/1":
        raise MalformedInput(f"{path}: not a caseledger history export (format caseledger.history/1)")
    return check_shape(document, str(path))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_shape(document: Any, where: str = "the export") -> dict[str, Any]:
    """``document`` if it has the export's shape (the fields the checks read, of their types), else MalformedInput:
    an export edited into another shape is unreadable input (exit 2), never a crash."""
    if not isinstance(document, dict):
        raise MalformedInput(f"{where}: not a caseledger history export (a JSON object)")
    transparency = document.get("transparency")
    if transparency is not None and not isinstance(transparency, dict):
        raise MalformedInput(f"{where}: 'transparency' is not an object")
    for name in ("checkpoint",):
        if transparency and transparency.get(name) is not None and not isinstance(transparency[name], str):
            raise MalformedInput(f"{where}: transparency.{name} is not a signed note (text)")
    events = document.get("events")
    if events is None:
        events = []
    if not isinstance(events, list):
        raise MalformedInput(f"{where}: 'events' is not a list")
    for n, event in enumerate(events):
        what = f"{where}: events[{n}]"
        if not isinstance(event, dict):
            raise MalformedInput(f"{what} is not an object")
        if not _is_int(event.get("position")):
            raise MalformedInput(f"{what}.position is not a position (a whole number)")
        for name in ("event_hash", "stored_bytes_base64"):
            if not isinstance(event.get(name), str):
                raise MalformedInput(f"{what}.{name} is not text")
        if event.get("leaf_index") is not None and not _is_int(event["leaf_index"]):
            raise MalformedInput(f"{what}.leaf_index is not a leaf index (a whole number or null)")
        proof = event.get("inclusion_proof")
        if proof is not None and not (isinstance(proof, list) and all(isinstance(h, str) for h in proof)):
            raise MalformedInput(f"{what}.inclusion_proof is not a list of base64 hashes (or null)")
    return document


def _avro_export(path: str | Path) -> dict[str, Any]:
    """The Avro container export: HistoryEntry records and the checkpoint in the file's metadata."""
    from caseledger.verify.avro import read_container

    metadata, records = read_container(path)
    if metadata.get("caseledger.format") != b"caseledger.history/1":
        raise MalformedInput(f"{path}: not a caseledger history export (caseledger.format metadata)")
    try:
        transparency = json.loads(metadata.get("caseledger.transparency", b"{}"))
    except ValueError:
        raise MalformedInput(f"{path}: its caseledger.transparency metadata is not JSON") from None
    try:
        schemas = json.loads(metadata.get("caseledger.schemas", b"{}"))
    except ValueError:
        raise MalformedInput(f"{path}: its caseledger.schemas metadata is not JSON") from None
    b64 = base64.b64encode
    return {
        "format": "caseledger.history/1",
        "customer_id": metadata.get("caseledger.customer_id", b"").decode("utf-8", "replace"),
        "transparency": transparency,
        "schemas": schemas,
        "views": "avro",  # each event's view as the container holds it (Avro values), not as JSON shows it
        "events": [{
            "position": r["position"], "event_type": r["event_type"], "event_hash": r["event_hash"].hex(),
            "stored_bytes_base64": b64(r["stored_bytes"]).decode(), "leaf_index": r.get("leaf_index"),
            "inclusion_proof": [b64(h).decode() for h in r["inclusion_proof"]]
            if r.get("inclusion_proof") is not None else None,
            **({"in_range": False} if r.get("event") is None else {}),
            **({"event": r["event"]} if "event" in r else {}),
        } for r in records],
    }


def _b64(text: Any) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raise MalformedInput(f"not base64: {str(text)[:40]!r}") from None


def check_history(document: dict[str, Any], key: VerifierKey, policy: WitnessPolicy | None = None) -> HistoryCheck:
    """Every check of the module docstring over one export (MalformedInput when it is not of an export's shape);
    with a witness ``policy``, the checkpoint's cosignatures too (``witness-policy``, ``witness-signature``)."""
    check_shape(document)
    result = HistoryCheck()
    note = (document.get("transparency") or {}).get("checkpoint")
    if not note:
        result.flag("uncommitted", 0, "the export carries no signed checkpoint: none of its events is committed")
    else:
        try:
            result.checkpoint = open_checkpoint(str(note), key)
            if policy is not None:
                check_cosignatures(str(note), key, policy)
        except PolicyError as error:
            result.flag(error.code, 0, f"the checkpoint cannot be trusted: {error}")
        except WrongKeyError as error:
            result.flag("checkpoint-key", 0, str(error))
        except (SignatureError, MalformedInput) as error:
            result.flag("checkpoint-signature", 0, f"the checkpoint cannot be trusted: {error}")
    cp = result.checkpoint
    views = ViewCheck(document.get("schemas"), json_view=document.get("views") != "avro")
    chains: dict[str, tuple[int, bytes]] = {}
    read: list[tuple[dict[str, Any], bytes, EnvelopeFields]] = []
    for event in document.get("events") or []:
        result.events += 1
        position = int(event.get("position") or 0)
        try:
            data = _b64(event.get("stored_bytes_base64"))
        except MalformedInput as error:
            result.flag("undecodable", position, f"stored bytes: {error}")
            continue
        digest = hashlib.sha256(data).digest()
        if str(event.get("event_hash", "")).lower() != digest.hex():
            result.flag("event-hash", position, "event_hash is not the SHA-256 of the event's stored bytes")
        if cp is not None:
            index, proof = event.get("leaf_index"), event.get("inclusion_proof")
            if proof is None or index is None:
                result.flag("uncommitted", position, f"recorded after the checkpoint ({cp.size} events): not "
                            "committed by it")
            else:
                try:
                    verify_inclusion(int(index), cp.size, leaf_hash(digest), [_b64(h) for h in proof], cp.root)
                    result.included += 1
                except (ProofError, MalformedInput, ValueError) as error:
                    result.flag("inclusion", position, f"not in the signed log: {error}")
        if "event" in event and not (event["event"] is None and event.get("in_range", True) is False):
            differences = views.differences(data, event["event"])
            if differences is None:
                result.views_unchecked += 1
            elif differences:
                result.flag("view-mismatch", position, "the readable event is not what its stored bytes say: "
                            + "; ".join(differences[:5]))
            else:
                result.views_checked += 1
        try:
            fields = read_envelope(data)
        except (ValueError, IndexError) as error:
            result.flag("undecodable", position, f"the envelope cannot be read from the stored bytes: {error}")
            continue
        aggregate, version, previous = fields.aggregate, fields.version, fields.previous
        read.append((event, digest, fields))
        last = chains.get(aggregate)
        if last is not None:
            if version != last[0] + 1:
                result.flag("version-gap", position, f"aggregate {aggregate} version {version} after {last[0]}")
            elif previous != last[1]:
                result.flag("chain-broken", position, f"aggregate {aggregate} v{version}: previous_hash is not "
                            "the hash of the previous event of its aggregate")
            else:
                result.chained += 1
        elif version == 1 and previous is not None:
            result.flag("chain-broken", position, f"aggregate {aggregate} v1 has a previous_hash")
        chains[aggregate] = (version, digest)
    check_completeness(document, result, read)
    return result
