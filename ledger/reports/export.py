"""A customer's full history (S11), exported with the audit's verdict: JSON, Avro container file, HTML page.

Every event of the customer, in the store's order (positions), across cases, channels and
directory entries: contacts, acknowledgements, promises, written confirmations, status changes,
handoffs, missed deadlines. Each event carries its position, its SHA-256 and its exact stored
bytes, so the recipient can recompute every chain without the ledger: an event's
``previous_hash`` is the ``event_hash`` of the previous event with the same ``aggregate_id``.

* ``json``: one document, ``{"format": "caseledger.history/1", "verification": …, "events": […]}``.
* ``avro``: an Avro object container file readable by any Avro tool; one ``HistoryEntry`` record
  per event whose ``event`` field is a union of every event schema (the ledger's own schemas,
  self-contained in the file's header); the verification is in the file metadata.
* ``html``: one self-contained page (no script, no external resource) a customer or an auditor
  can be given: the verdict, a summary, and the timeline.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caseledger.ledger.audit import AuditReport, verify
from caseledger.ledger.avro.codec import ENVELOPE, event_hash, schema_files
from caseledger.ledger.errors import ConfigurationError, ValidationError
from caseledger.ledger.private_files import open_private
from caseledger.ledger.reports.describe import occurred_apart, plain

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.kafka.ports import TopicReaders
    from caseledger.ledger.settings import KafkaSettings

__all__ = ["FORMATS", "ExportReport", "OccurredRange", "export_history"]

FORMATS = ("json", "avro", "html")
OUT_OF_RANGE = "(occurred outside the export's range: its hash and stored bytes only)"
JSON_FORMAT = "caseledger.history/1"
EXPORT_NAMESPACE = "caseledger.export"


@dataclass(frozen=True)
class OccurredRange:
    """Which events an export shows: those that *occurred* (on their channel, as the envelope's
    ``occurred_at`` says) from ``start`` (inclusive) until ``end`` (exclusive); either may be open."""

    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValidationError(f"occurred range: {self.end.isoformat()} is not after {self.start.isoformat()}")

    def holds(self, occurred_at: datetime) -> bool:
        return (self.start is None or occurred_at >= self.start) and (self.end is None or occurred_at < self.end)

    def as_dict(self) -> dict[str, Any]:
        return {"occurred_from": self.start.isoformat() if self.start else None,
                "occurred_until": self.end.isoformat() if self.end else None,
                "what": "events that occurred (envelope occurred_at) from occurred_from, inclusive, until "
                        "occurred_until, exclusive, are shown in full; the customer's others are present by "
                        "their hash and stored bytes only (in_range false), so the customer map proves the "
                        "whole set complete and each event's bytes prove on which side of the range it lies"}


@dataclass(frozen=True)
class ExportReport:
    """What was exported, where, and whether the audit verified it."""

    path: Path
    format: str
    customer_id: str
    events: int
    size: int
    verified: bool
    discrepancies: int
    audit: AuditReport
    shown: int = 0  # the events shown in full (all but those outside an occurred range)


@dataclass(frozen=True)
class _Entry:
    position: int
    event_type: str
    data: bytes
    record: dict[str, Any]  # the Avro record, resolved into the current schema
    event: Any  # the domain event
    leaf_index: int | None = None  # its leaf in the checkpoint's tree (None: recorded after it)
    proof: list[bytes] | None = None  # its inclusion proof against the checkpoint
    in_range: bool = True  # occurred inside the export's range (else: its hash and stored bytes only)

    @property
    def envelope(self) -> dict[str, Any]:
        return self.record["envelope"]  # type: ignore[no-any-return]


def export_history(
    ledger: CaseLedger,
    customer: str,
    fmt: str,
    path: str | Path,
    *,
    tz: tzinfo = UTC,
    describe: Callable[[Any], str] | None = None,
    kafka: KafkaSettings | None = None,
    readers: TopicReaders | None = None,
    occurred: OccurredRange | None = None,
    kept: int | None = None,
) -> ExportReport:
    """Write ``customer``'s history as ``fmt`` (json, avro, html) to ``path``, audited on the way.

    The customer's events are read by the audit itself (``verify(customer=…)``), so the file holds
    exactly the events that were verified. ``describe`` turns an event into one readable line
    (the CLI passes its own); ``kafka`` adds the events topic to the audit, read through ``readers``.
    With ``occurred``, only the events that occurred in that range are shown; the others are there
    by their hash and stored bytes alone, so that the customer map still proves the whole set complete.
    ``kept``: the tree size of a checkpoint the reader kept: the export carries the consistency proof from
    it to the export's checkpoint (``python -m caseledger.verify EXPORT --kept KEPT`` checks it offline).
    """
    fmt = fmt.strip().lower()
    if fmt not in FORMATS:
        raise ValidationError(f"export format {fmt!r}: use one of {', '.join(FORMATS)}")
    target = Path(path)
    if not target.parent.exists():
        raise ConfigurationError(f"cannot write {target}: directory {target.parent} does not exist")
    # A sender known only from the requests the ledger kept of theirs (collisions, rejections) has a history too.
    customer_id = ledger.data_subject(customer)
    collected: list[tuple[int, str, bytes]] = []
    # Signed before the events are read: every event it commits to is read after it (none slips between).
    checkpoint = _checkpoint(ledger)
    report = verify(ledger, customer=customer_id, kafka=kafka, readers=readers,
                    collect=lambda position, name, data: collected.append((position, name, data)))
    proofs = {}
    if checkpoint is not None:
        from caseledger.ledger.transparency.proofs import event_proofs

        proofs = {p.position: p for p in event_proofs(ledger, [c[0] for c in collected], checkpoint)}
    entries = []
    # The customer's copy (art. 15 GDPR): personal data opened where it is still readable,
    # ``[erased]`` where it was erased; the stored bytes stay sealed, exactly as verified and proven.
    ledger.preload_keys(data for _p, _n, data in collected)
    try:
        for position, name, data in collected:
            proof = proofs.get(position)
            record, event = ledger.codec.decode_record(name, data), ledger.codec.decode(name, data)
            ledger.sealer.open_state(name, record)
            ledger.sealer.open_state(name, vars(event))
            inside = occurred is None or occurred.holds(record["envelope"]["occurred_at"])
            entries.append(_Entry(position, name, data, record, event, proof.leaf_index if proof else None,
                                  proof.proof if proof else None, inside))
    finally:
        ledger.data_keys.forget()
    note = None
    if checkpoint is not None:
        from caseledger.ledger.transparency.witnesses import cosigned_note

        note = cosigned_note(ledger, checkpoint)  # with the witnesses' cosignatures kept for it
    transparency = _transparency(note, _consistency(ledger, kept, checkpoint))
    transparency.update(completeness(ledger, customer_id, checkpoint, occurred))
    schemas = writer_schemas(ledger, entries)
    describe = describe or _describe
    exported_at = datetime.now(UTC)
    if fmt == "json":
        _write_json(target, customer_id, entries, report, describe, exported_at, transparency, schemas)
    elif fmt == "avro":
        _write_avro(target, customer_id, entries, report, describe, exported_at, transparency, schemas)
    else:
        with os.fdopen(open_private(target), "w", encoding="utf-8") as out:
            out.write(_html_page(customer_id, [e for e in entries if e.in_range], report, describe, exported_at, tz,
                                 transparency["checkpoint"]))
    return ExportReport(
        path=target, format=fmt, customer_id=customer_id, events=len(entries), size=target.stat().st_size,
        verified=report.ok, discrepancies=sum(report.counts.values()) if not report.ok else 0, audit=report,
        shown=sum(e.in_range for e in entries),
    )


def _checkpoint(ledger: CaseLedger) -> Any:
    """The checkpoint the export's proofs are against: a fresh one when the signing key is here (submitted to the
    configured witnesses before the export is written, so that it carries their cosignatures), else the latest."""
    from caseledger.ledger.transparency.checkpoint_key import load_signer

    signer = load_signer(ledger.settings.transparency)
    if signer is not None:
        from caseledger.ledger.transparency.checkpoints import sign_checkpoint
        from caseledger.ledger.transparency.witnesses import witness_now

        checkpoint = sign_checkpoint(ledger, signer)
        witness_now(ledger, checkpoint)
        return checkpoint
    return ledger.storage.merkle().latest_checkpoint()


TRANSPARENCY_HOW = (
    "checkpoint: a C2SP signed checkpoint (origin, tree size, base64 root) signed by the ledger's Ed25519 key; "
    "each event's leaf is SHA-256(0x00 || event_hash) at leaf_index, its inclusion_proof the RFC 9162 audit path "
    "to the checkpoint's root; customer_map: the customer's proof in the map whose root the checkpoint's "
    "'caseledger/customers' line commits (their event count and chain head up to the checkpoint: docs/audit.md, "
    "Completeness); check with `python -m caseledger.verify FILE --key PUBKEY`"
)


def completeness(ledger: CaseLedger, customer_id: str, checkpoint: Any,
                 occurred: OccurredRange | None) -> dict[str, Any]:
    """What the export's ``transparency`` adds for completeness: the customer's map proof against the checkpoint,
    the range shown."""
    from caseledger.verify.completeness import map_root_line
    from caseledger.verify.note import Checkpoint

    found: dict[str, Any] = {}
    if checkpoint is not None:
        text = checkpoint.note.split("\n\n", 1)[0] + "\n"
        if map_root_line(Checkpoint.parse_text(text).extensions) is not None:
            from caseledger.ledger.transparency.tree import MerkleLog

            proof = MerkleLog.of(ledger).customers.proof(customer_id, checkpoint.tree_size)
            found["customer_map"] = {"customer_id": customer_id, "proof": proof.as_dict()}
    if occurred is not None:
        found["occurred_range"] = occurred.as_dict()
    return found


def _transparency(note: str | None, consistency: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"checkpoint": note, "how_to_verify": TRANSPARENCY_HOW}
    if consistency is not None:
        block["consistency"] = consistency
    return block


def _consistency(ledger: CaseLedger, kept: int | None, checkpoint: Any) -> dict[str, Any] | None:
    """The RFC 9162 consistency proof from a kept checkpoint's size to the export's (none when there is nothing to
    prove: no checkpoint, or the kept one is not older)."""
    if kept is None or checkpoint is None:
        return None
    if kept < 0:
        raise ValidationError(f"kept checkpoint size {kept}: a tree size is 0 or more")
    if not 0 < kept < checkpoint.tree_size:
        return None  # equal: the roots are compared; newer: the verifier says to ask again
    from caseledger.ledger.transparency.tree import MerkleLog

    proof = MerkleLog.of(ledger).consistency_proof(kept, checkpoint.tree_size)
    return {"from_size": kept, "to_size": checkpoint.tree_size, "proof": _b64_proof(proof)}


def writer_schemas(ledger: CaseLedger, entries: list[_Entry]) -> dict[str, str]:
    """The schema that wrote each exported event, by fingerprint: the verifier decodes the stored bytes with it and
    checks the readable ``event`` against them (``caseledger.verify.decoded``)."""
    found: dict[str, str] = {}
    for fp in {e.data[2:10] for e in entries}:
        text = ledger.codec.writer_schema_text(fp)
        if text is not None:
            found[fp.hex()] = text
    return dict(sorted(found.items()))


def _b64_proof(proof: list[bytes] | None) -> list[str] | None:
    return [base64.b64encode(h).decode() for h in proof] if proof is not None else None


def verification_summary(report: AuditReport) -> dict[str, Any]:
    """The audit's verdict as exported: what was checked, and every discrepancy named."""
    return {
        "verified": report.ok,
        "checked_at": datetime.now(UTC).isoformat(),
        "store": report.backend.split(" ")[0],
        "events": report.events,
        "checks": report.checks,
        "notes": report.notes,
        "discrepancies": [d.as_dict() for d in report.discrepancies],
        "how_to_verify": "event_hash = SHA-256 of the event's stored bytes; each event's envelope.previous_hash "
        "is the event_hash of the previous event with the same envelope.aggregate_id (none for version 1)",
    }


def erasures(entries: list[_Entry]) -> list[dict[str, Any]]:
    """When the customer's data was erased, why, and which keys went: where ``[erased]`` comes from."""
    return [
        {"erased_at": e.event.timestamp.isoformat(), "reason": e.event.reason, "key_ids": list(e.event.key_ids),
         "position": e.position,
         "what": "every personal field sealed with these keys now reads [erased] (docs/privacy.md lists the fields)"}
        for e in entries if e.event_type == "CustomerErased"
    ]


# -- JSON ------------------------------------------------------------------------------------------------


def _write_json(path: Path, customer_id: str, entries: list[_Entry], report: AuditReport,
                describe: Callable[[Any], str], exported_at: datetime, transparency: dict[str, Any],
                schemas: dict[str, str]) -> None:
    document = {
        "format": JSON_FORMAT,
        "customer_id": customer_id,
        "exported_at": exported_at.isoformat(),
        "verification": verification_summary(report),
        "erasures": erasures(entries),
        "transparency": transparency,
        "schemas": schemas,
        "events": [
            {
                "position": e.position,
                "event_type": e.event_type,
                "event_hash": event_hash(e.data).hex(),
                **({} if e.in_range else {"in_range": False}),
                "description": describe(e.event) if e.in_range else None,
                "event": plain(e.record) if e.in_range else None,
                "stored_bytes_base64": base64.b64encode(e.data).decode(),
                "leaf_index": e.leaf_index,
                "inclusion_proof": _b64_proof(e.proof),
            }
            for e in entries
        ],
    }
    with os.fdopen(open_private(path), "w", encoding="utf-8") as out:
        out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


# -- Avro ------------------------------------------------------------------------------------------------


def container_schema() -> dict[str, Any]:
    """The export file's schema: one HistoryEntry per event, its event a union of every event schema.

    Self-contained: the first event schema defines ``caseledger.Envelope`` inline, the others
    name it, so any Avro reader resolves it from the file's header alone.
    """
    files = dict(schema_files())
    envelope = json.loads(files.pop(f"{ENVELOPE}.avsc"))
    events: list[Any] = []
    defined: set[str] = set()
    for _name, text in sorted(files.items()):
        schema = json.loads(text)
        if not events:
            schema["fields"] = [
                {**f, "type": envelope} if f["name"] == "envelope" else f for f in schema["fields"]
            ]
        events.append(_define_once(schema, "", defined))
    return {
        "type": "record",
        "name": "HistoryEntry",
        "namespace": EXPORT_NAMESPACE,
        "doc": "One event of a customer's history, exported by caseledger with its position and hash.",
        "fields": [
            {"name": "position", "type": "long", "doc": "The event's position in the ledger's total order."},
            {"name": "event_type", "type": "string"},
            {"name": "event_hash", "type": {"type": "fixed", "name": "Sha256", "size": 32},
             "doc": "SHA-256 of stored_bytes."},
            {"name": "stored_bytes", "type": "bytes",
             "doc": "The event exactly as stored and published (Avro single-object encoding)."},
            {"name": "description", "type": "string"},
            {"name": "event", "type": [*events, "null"],
             "doc": "The event, readable; null for an event outside the export's occurred range."},
            {"name": "leaf_index", "type": ["null", "long"], "default": None,
             "doc": "The event's leaf in the tree of the checkpoint in the file's metadata (null: after it)."},
            {"name": "inclusion_proof", "type": ["null", {"type": "array", "items": "Sha256"}], "default": None,
             "doc": "RFC 9162 inclusion proof of SHA-256(0x00 || event_hash) against the checkpoint's root."},
        ],
    }


def _define_once(schema: Any, namespace: str, defined: set[str]) -> Any:
    """``schema`` with every named type already in ``defined`` replaced by its full name.

    Several event schemas define the same small types (``Identity`` …) inline; one file's schema
    may define each name only once.
    """
    if isinstance(schema, list):
        return [_define_once(s, namespace, defined) for s in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        name = schema["name"]
        full = name if "." in name else f"{schema.get('namespace', namespace)}.{name}".lstrip(".")
        if full in defined:
            return full
        defined.add(full)
        inner = full.rpartition(".")[0]
        if kind in ("record", "error"):
            return {**schema, "fields": [{**f, "type": _define_once(f["type"], inner, defined)}
                                         for f in schema["fields"]]}
        return schema
    if kind == "array":
        return {**schema, "items": _define_once(schema["items"], namespace, defined)}
    if kind == "map":
        return {**schema, "values": _define_once(schema["values"], namespace, defined)}
    if isinstance(kind, dict | list):
        return {**schema, "type": _define_once(kind, namespace, defined)}
    return schema


def _write_avro(path: Path, customer_id: str, entries: list[_Entry], report: AuditReport,
                describe: Callable[[Any], str], exported_at: datetime, transparency: dict[str, Any],
                schemas: dict[str, str]) -> None:
    from fastavro import parse_schema, writer

    schema = parse_schema(container_schema())
    records = (
        {
            "position": e.position,
            "event_type": e.event_type,
            "event_hash": event_hash(e.data),
            "stored_bytes": e.data,
            "description": describe(e.event) if e.in_range else OUT_OF_RANGE,
            "event": (f"caseledger.events.{e.event_type}", e.record) if e.in_range else None,
            "leaf_index": e.leaf_index,
            "inclusion_proof": e.proof,
        }
        for e in entries
    )
    metadata = {
        "caseledger.format": JSON_FORMAT,
        "caseledger.customer_id": customer_id,
        "caseledger.exported_at": exported_at.isoformat(),
        "caseledger.verification": json.dumps(plain(verification_summary(report)), ensure_ascii=False),
        "caseledger.erasures": json.dumps(erasures(entries), ensure_ascii=False),
        "caseledger.transparency": json.dumps(transparency, ensure_ascii=False),
        "caseledger.schemas": json.dumps(schemas),
    }
    with os.fdopen(open_private(path), "wb") as out:
        writer(out, schema, records, codec="deflate", metadata=metadata)


# -- HTML ------------------------------------------------------------------------------------------------

_CATEGORY = {
    "ContactReceived": "contact", "ResubmissionTraced": "contact", "MessageIdCollided": "contact",
    "AcknowledgementIssued": "ack", "MessageDelivered": "message", "MessageDeliveryFailed": "message",
    "MessageRead": "message",
    "ResponseSent": "response", "ItemWaived": "response",
    "PromiseMade": "promise", "PromiseKept": "promise", "PromiseWithdrawn": "promise", "PromiseBroken": "promise",
    "PromiseWaived": "promise", "WrittenConfirmationIssued": "promise",
    "CaseOpened": "status", "StatusChanged": "status", "CaseClosed": "status", "CaseCancelled": "status",
    "CaseReopened": "status", "CaseAssigned": "handoff", "HandedOff": "handoff", "EscalatedToHuman": "handoff",
    "DeadlineMissed": "deadline", "ActionProposed": "action", "ActionApproved": "action",
    "ActionRejected": "action", "ActionExecuted": "action",
    "CustomerErased": "privacy", "LegalHoldPlaced": "privacy", "LegalHoldReleased": "privacy",
}
_LEGEND = {
    "contact": "contacts", "ack": "acknowledgements", "message": "deliveries and reads", "response": "responses",
    "promise": "promises",
    "status": "status changes", "handoff": "handoffs", "deadline": "missed deadlines",
    "action": "automated actions", "privacy": "erasures and legal holds", "directory": "directory entries",
}
_CSS = """
:root { --ink:#1d2430; --muted:#5b6576; --line:#d9dee7; --bg:#f6f7f9; --ok:#17803d; --bad:#b42318; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
  color:var(--ink); background:var(--bg); }
main { max-width:920px; margin:0 auto; padding:32px 20px 48px; }
h1 { font-size:26px; margin:0 0 4px; } h2 { font-size:18px; margin:32px 0 12px; }
.sub { color:var(--muted); margin:0 0 20px; }
.verdict { border-radius:10px; padding:14px 18px; margin:0 0 20px; border:1px solid; }
.verdict.ok { background:#ecfdf3; border-color:#abefc6; color:var(--ok); }
.verdict.bad { background:#fef3f2; border-color:#fecdca; color:var(--bad); }
.verdict strong { font-size:17px; display:block; } .verdict ul { margin:8px 0 0; padding-left:20px; }
.summary { display:flex; flex-wrap:wrap; gap:10px; margin:0; padding:0; list-style:none; }
.summary li { background:#fff; border:1px solid var(--line); border-radius:8px; padding:8px 14px; }
.summary b { font-size:20px; display:block; }
ol.timeline { list-style:none; margin:0; padding:0 0 0 22px; border-left:3px solid var(--line); }
.timeline li { position:relative; margin:0 0 14px; background:#fff; border:1px solid var(--line);
  border-radius:8px; padding:10px 14px; }
.timeline li::before { content:""; position:absolute; left:-32px; top:16px; width:14px; height:14px;
  border-radius:50%; background:var(--dot,#98a2b3); border:3px solid var(--bg); }
.meta { color:var(--muted); font-size:13px; display:flex; flex-wrap:wrap; gap:4px 14px; }
.kind { font-weight:600; } .ref { font-family:ui-monospace,Menlo,Consolas,monospace; font-size:13px; }
.what { margin:4px 0 0; white-space:pre-wrap; overflow-wrap:anywhere; }
details { margin-top:6px; font-size:13px; color:var(--muted); }
details table { border-collapse:collapse; width:100%; margin-top:6px; }
details td { border-top:1px solid var(--line); padding:3px 6px; vertical-align:top; overflow-wrap:anywhere; }
details td:first-child { white-space:nowrap; color:var(--ink); width:1%; }
.c-contact { --dot:#2563eb; } .c-ack { --dot:#0891b2; } .c-message { --dot:#67b7c9; } .c-response { --dot:#16a34a; }
.c-promise { --dot:#d97706; } .c-status { --dot:#7c3aed; } .c-handoff { --dot:#db2777; }
.c-privacy { --dot:#111827; } .c-deadline { --dot:#dc2626; } .c-action { --dot:#4b5563; } .c-directory { --dot:#c0c6d0; }
.c-directory .what { color:var(--muted); }
footer { margin-top:36px; color:var(--muted); font-size:13px; }
@media print { body { background:#fff; } .timeline li { break-inside:avoid; } }
"""


def _title(event_type: str) -> str:
    """``PromiseMade`` → ``Promise made``."""
    words = re.findall(r"[A-Z][a-z]*", event_type)
    return " ".join([words[0], *(w.lower() for w in words[1:])]) if words else event_type


def _time(value: datetime, tz: tzinfo) -> str:
    shown = value.astimezone(tz)
    return shown.strftime("%Y-%m-%d %H:%M:%S ") + (shown.strftime("%Z") or shown.strftime("%z"))


def _describe(event: Any) -> str:
    """A plain description when the caller gives none: the event's own fields."""
    skip = {"originator_id", "originator_version", "timestamp", "event_id", "customer_id", "occurred_at",
            "actor_kind", "actor_id", "actor_authentication", "actor_principal", "channel", "correlation_id", "causation_id", "previous_hash",
            "originator_topic"}
    fields = {k: v for k, v in vars(event).items() if not k.startswith("_") and k not in skip}
    return "; ".join(f"{k.replace('_', ' ')}: {plain(v)}" for k, v in fields.items())


def _references(entries: list[_Entry]) -> dict[str, str]:
    refs: dict[str, str] = {}
    for e in entries:
        if e.event_type == "CaseOpened":
            refs[str(e.envelope["aggregate_id"])] = e.record["reference"]
        elif e.event_type in ("CaseLinked", "MessageRegistered"):
            refs[str(e.envelope["case_id"])] = e.record["reference"]
    return refs


def _html_page(customer_id: str, entries: list[_Entry], report: AuditReport, describe: Callable[[Any], str],
               exported_at: datetime, tz: tzinfo, note: str | None) -> str:
    esc = html.escape
    refs = _references(entries)
    cases = sorted({refs[str(e.envelope["case_id"])] for e in entries if str(e.envelope["case_id"]) in refs})
    categories = Counter(_CATEGORY.get(e.event_type, "directory") for e in entries)
    channels = sorted({str(e.envelope["channel"]) for e in entries if e.envelope["channel"]})
    if report.ok:
        verdict = (f'<section class="verdict ok" id="verdict"><strong>&#10003; Verified</strong>'
                   f"All {len(entries)} events were checked against the ledger's hash chains "
                   f"({esc(', '.join(report.checks))}): none is missing, altered or out of order.</section>")
    else:
        items = "".join(f"<li>{esc(d.line())}</li>" for d in report.errors[:50])
        verdict = (f'<section class="verdict bad" id="verdict"><strong>&#10007; Not verified</strong>'
                   f"The audit found discrepancies in this history:<ul>{items}</ul></section>")
    erased = "".join(
        f'<section class="verdict bad" id="erasures"><strong>Personal data erased {esc(_time(e.event.timestamp, tz))}'
        f"</strong>{esc(e.event.reason)} — {len(e.event.key_ids)} data key(s) destroyed; what was personal reads "
        "[erased] below, every other fact and every hash stays.</section>"
        for e in entries if e.event_type == "CustomerErased"
    )
    summary = [("events", len(entries)), ("cases", len(cases))]
    summary += [(label, categories[key]) for key, label in _LEGEND.items() if categories[key]]
    summary_html = "".join(f"<li><b>{n}</b>{esc(label)}</li>" for label, n in summary)
    rows = []
    for e in entries:
        env = e.envelope
        category = _CATEGORY.get(e.event_type, "directory")
        ref = refs.get(str(env["case_id"]))
        actor = f"{env['actor']['kind']}:{env['actor']['id']}"
        details = {
            "position": e.position, "event id": env["event_id"], "aggregate": f"{env['aggregate_id']} "
            f"v{env['aggregate_version']}", "recorded at": _time(env["recorded_at"], tz),
            "occurred at": _time(env["occurred_at"], tz),
            "event hash": event_hash(e.data).hex(),
            "previous hash": env["previous_hash"].hex() if env["previous_hash"] else "— (first event)",
            "leaf index": e.leaf_index if e.proof is not None else "— (recorded after the checkpoint)",
            "inclusion proof": " ".join(_b64_proof(e.proof) or []) or "—",
        }
        details.update({k: v for k, v in e.record.items() if k != "envelope"})
        table = "".join(f"<tr><td>{esc(str(k))}</td><td>{esc(_cell(v))}</td></tr>" for k, v in details.items())
        meta = [f'<span class="kind">{esc(_title(e.event_type))}</span>']
        if occurred_apart(env["recorded_at"], env["occurred_at"]):
            meta.append(f"<span>recorded <time>{esc(_time(env['recorded_at'], tz))}</time></span>")
            meta.append(f"<span>occurred <time>{esc(_time(env['occurred_at'], tz))}</time></span>")
        else:
            meta.append(f"<time>{esc(_time(env['recorded_at'], tz))}</time>")
        if ref:
            meta.append(f'<span class="ref">{esc(ref)}</span>')
        if env["channel"]:
            meta.append(f"<span>via {esc(str(env['channel']))}</span>")
        meta.append(f"<span>by {esc(actor)}</span>")
        rows.append(
            f'<li class="c-{category}" id="p{e.position}"><div class="meta">{"".join(meta)}</div>'
            f'<p class="what">{esc(describe(e.event))}</p>'
            f"<details><summary>Details and hashes</summary><table>{table}</table></details></li>"
        )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="caseledger">
<title>History of {esc(customer_id)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>History of {esc(customer_id)}</h1>
<p class="sub">Every contact, acknowledgement, promise, confirmation, status change, handoff and deadline,
in the order the ledger recorded them. Exported {esc(_time(exported_at, tz))}.</p>
{verdict}
{erased}
<ul class="summary" id="summary">{summary_html}</ul>
<p class="sub">Cases: {esc(", ".join(cases) or "none")} · Channels: {esc(", ".join(channels) or "none")}</p>
<h2>Signed checkpoint</h2>
<p class="sub">The ledger's signed commitment to its whole log; each event's details give its leaf index and
inclusion proof against it ({esc(TRANSPARENCY_HOW)}).</p>
<pre id="checkpoint">{esc(note or "no checkpoint signed yet: these events are not yet committed")}</pre>
<h2>Timeline</h2>
<ol class="timeline" id="timeline">
{"".join(rows)}
</ol>
<footer>Each event's hash is the SHA-256 of the bytes the ledger stored; each event names the hash of the event
before it in the same case or directory entry, so removing, changing or reordering any event breaks the chain.
Exported by caseledger.</footer>
</main>
</body>
</html>
"""


def _cell(value: Any) -> str:
    value = plain(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else str(value)
