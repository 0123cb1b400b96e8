"""Verdicts: what the ledger did with each intake record, told to the adapter that sent it.

Every intake record ends as exactly one outcome (``ledger/audit/intake_outcomes.py``). The event that
decides it names the adapter and everything the adapter tells the customer, so the publisher derives a
*verdict* from it and produces it to the outcomes topic in the same Kafka transaction as the event
(:func:`verdict_of_event`): a verdict is on the outcomes topic exactly when its event is on the events
topic. The outcomes topic is keyed by the adapter's name, so each adapter reads its own partition.

======================  =====================================  ==========================================
event                   verdict                                what it carries
======================  =====================================  ==========================================
``MessageRegistered``   :class:`Recorded`                      reference, contact, acknowledgement, customer
``ResubmissionTraced``  :class:`Resubmission`                  the original request's reference …
``MessageIdCollided``   :class:`Collision`                     identity | case | content, how to fix it
``IntakeRejected``      :class:`Rejected`                      code, field, fix (:class:`PublicReason`)
``MessageDelivered``,   :class:`Applied`                       a delivery or read report applied
``MessageRead``
======================  =====================================  ==========================================

A rejection's own reason stays sealed (it may quote the record); its public reason is built from the
error's ``field``, ``code`` and ``fix`` (:func:`public_reason`), which never quote a value.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from io import BytesIO
from typing import Any
from uuid import UUID

from fastavro import parse_schema, schemaless_reader

from caseledger.ledger.avro.codec import HEADER_SIZE, MAGIC, schema_fingerprint
from caseledger.ledger.domain.directory import IntakeSource
from caseledger.ledger.errors import (
    BackendError,
    CaseLedgerError,
    NotFound,
    PermissionDenied,
    RuleViolation,
    SchemaError,
    ValidationError,
)
from caseledger.ledger.intake.verdict_records import (
    OPERATOR,
    VERDICT_EVENTS,
    encode_fields,
    fields_of_bytes,
    fields_of_event,
)
from caseledger.ledger.kafka.ports import PartitionReader

__all__ = [
    "VERDICT_EVENTS",
    "Applied",
    "Collision",
    "PublicReason",
    "Recorded",
    "Rejected",
    "Resubmission",
    "Verdict",
    "VerdictCodec",
    "VerdictTimeout",
    "VerdictWaiter",
    "fields_of_verdict",
    "intake_id",
    "public_reason",
    "verdict_from_fields",
    "verdict_headers",
    "verdict_of_event",
    "verdict_of_notification",
]

_SCHEMA_FILE = "caseledger.intake.IntakeVerdict.avsc"
VERDICT_TYPE = b"caseledger.intake.IntakeVerdict"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PublicReason:
    """Why a record was refused, for its adapter: a code, the field at fault, how to fix it — never a value."""

    code: str
    field: str
    fix: str

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.code}{where}: {self.fix}"


_OPERATOR = OPERATOR
_BY_CLASS: tuple[tuple[type[CaseLedgerError], str, str], ...] = (
    # (class, code, fix); the first that matches, most specific first
    (SchemaError, "schema", "encode the record with the ledger's intake schema (the SDK does: schemas/intake/)"),
    (ValidationError, "invalid", "validate the record as the SDK does before publishing (ContactDraft raises "
                                 f"the same error with the field); {_OPERATOR}"),
    (NotFound, "not-found", "name a case and a message the ledger gave (CL-XXXXX-XXXXX, ACK1 …); " + _OPERATOR),
    (RuleViolation, "refused", f"the case's rules refuse it as sent; {_OPERATOR}"),
    (PermissionDenied, "forbidden", f"this adapter may not send it; {_OPERATOR}"),
)


def public_reason(error: BaseException) -> PublicReason:
    """The reason an adapter may read for ``error``: the error's own field, code and fix when it names them,
    else one by its class (a signature refusal names its code). Never the message: it may quote values."""
    if isinstance(error, CaseLedgerError) and error.code:
        return PublicReason(error.code, error.field, error.fix or _OPERATOR)
    if type(error).__name__ == "SignatureRefused":
        return PublicReason("signature", "", "sign each record with this adapter's registered key, on a channel "
                                             "it may use (`caseledger adapters list` shows both)")
    for kind, code, fix in _BY_CLASS:
        if isinstance(error, kind):
            return PublicReason(code, getattr(error, "field", "") or _field_named(error), fix)
    return PublicReason("refused", "", _OPERATOR)


_FIELD_NAMED = re.compile(r"^field ([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)(?=[:;,\s])")


def _field_named(error: BaseException) -> str:
    """The field a message names in the ledger's own form, ``field attachments.ref: …`` (a name, never a value)."""
    match = _FIELD_NAMED.match(str(error))
    return match.group(1) if match else ""


# -- verdicts ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """What the ledger did with one intake record (a subclass says which)."""

    adapter: str
    intake_id: UUID  # the record's accounting id: IntakeSource(topic, partition, offset).event_id
    intake_topic: str  # "" for a report: match it by intake_id
    intake_partition: int
    intake_offset: int
    event_id: UUID  # the event that decided it
    position: int  # its position in the store's order
    recorded_at: datetime

    outcome = ""

    @property
    def received(self) -> bool:
        """Whether the customer may be told "received" (with the reference): only on a recorded verdict."""
        return False


@dataclass(frozen=True, kw_only=True)
class Recorded(Verdict):
    """The contact is recorded: tell the customer "received", with the reference."""

    reference: str
    contact_id: str
    acknowledgement_id: str
    customer_id: str
    outcome = "recorded"

    @property
    def received(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class Resubmission(Verdict):
    """The same request was recorded before (nothing new recorded): the original reference and acknowledgement."""

    reference: str
    contact_id: str
    acknowledgement_id: str
    customer_id: str
    outcome = "resubmission"

    @property
    def received(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class Collision(Verdict):
    """The channel message id is another request's: kept for an operator, not applied."""

    kind: str  # identity | case | content
    reason: PublicReason
    outcome = "collision"


@dataclass(frozen=True, kw_only=True)
class Rejected(Verdict):
    """The record could not be applied: ``reason`` says which field and how to fix it."""

    reason: PublicReason
    outcome = "rejected"


@dataclass(frozen=True, kw_only=True)
class Applied(Verdict):
    """A delivery or read report was applied."""

    outcome = "applied"


def intake_id(topic: str, partition: int, offset: int) -> UUID:
    """The accounting id of the intake record at ``topic``/``partition``/``offset`` (what verdicts are matched by)."""
    return IntakeSource(topic, partition, offset).event_id


_KINDS: dict[str, type[Verdict]] = {"recorded": Recorded, "resubmission": Resubmission, "collision": Collision,
                                    "rejected": Rejected, "applied": Applied}


def verdict_from_fields(fields: dict[str, Any]) -> Verdict:
    """The verdict an ``IntakeVerdict`` record's fields hold (as :mod:`~.verdict_records` makes them)."""
    kind = _KINDS.get(fields["outcome"])
    if kind is None:
        raise SchemaError(f"unknown verdict outcome {fields['outcome']!r}; upgrade the SDK")
    common: dict[str, Any] = {
        "adapter": fields["adapter"], "intake_id": UUID(fields["intake_id"]), "intake_topic": fields["intake_topic"],
        "intake_partition": fields["intake_partition"], "intake_offset": fields["intake_offset"],
        "event_id": UUID(fields["event_id"]), "position": fields["position"],
        "recorded_at": _EPOCH + timedelta(microseconds=fields["recorded_at"]) if isinstance(fields["recorded_at"], int)
        else fields["recorded_at"].astimezone(UTC),
    }
    given = fields["reason"]
    reason = PublicReason(given["code"], given["field"], given["fix"]) if given else PublicReason("rejected", "",
                                                                                                 OPERATOR)
    if kind in (Recorded, Resubmission):
        return kind(reference=fields["reference"] or "", contact_id=fields["contact_id"] or "",  # type: ignore[call-arg]
                    acknowledgement_id=fields["acknowledgement_id"] or "", customer_id=fields["customer_id"] or "",
                    **common)
    if kind is Collision:
        return Collision(kind=fields["collision_kind"] or "", reason=reason, **common)
    if kind is Rejected:
        return Rejected(reason=reason, **common)
    return Applied(**common)


def fields_of_verdict(verdict: Verdict) -> dict[str, Any]:
    """The ``IntakeVerdict`` record's fields of ``verdict``."""
    reason = getattr(verdict, "reason", None)
    return {
        "adapter": verdict.adapter, "intake_id": str(verdict.intake_id), "intake_topic": verdict.intake_topic,
        "intake_partition": verdict.intake_partition, "intake_offset": verdict.intake_offset,
        "outcome": verdict.outcome, "reference": getattr(verdict, "reference", None),
        "contact_id": getattr(verdict, "contact_id", None),
        "acknowledgement_id": getattr(verdict, "acknowledgement_id", None),
        "customer_id": getattr(verdict, "customer_id", None), "collision_kind": getattr(verdict, "kind", None),
        "reason": {"code": reason.code, "field": reason.field, "fix": reason.fix} if reason else None,
        "event_id": str(verdict.event_id), "position": verdict.position,
        "recorded_at": (verdict.recorded_at - _EPOCH) // timedelta(microseconds=1),
    }


def verdict_of_event(name: str, record: dict[str, Any], position: int) -> Verdict | None:
    """The verdict an event decides (``record``: the event decoded, envelope included); None when it decides none
    (recorded directly, not from the intake topic, or written before its source was kept)."""
    fields = fields_of_event(name, record, position)
    return verdict_from_fields(fields) if fields is not None else None


def verdict_of_notification(codec: Any, notification: Any) -> Verdict | None:
    """The verdict a stored event (a notification of the store's log) decides, if any (``codec``: the ledger's)."""
    name = notification.topic.rsplit(".", 1)[-1]
    fields = fields_of_bytes(codec, name, bytes(notification.state), notification.id)
    return verdict_from_fields(fields) if fields is not None else None


# -- the outcomes topic's records ---------------------------------------------------------------------------------


class VerdictCodec:
    """Verdicts as the outcomes topic's values: Avro single-object encoding of ``IntakeVerdict`` (schemas/intake/)."""

    def __init__(self) -> None:
        text = resources.files("caseledger.schemas").joinpath("intake", _SCHEMA_FILE).read_text(encoding="utf-8")
        self.schema = parse_schema(json.loads(text))
        self.header = MAGIC + schema_fingerprint(self.schema)

    def encode(self, verdict: Verdict) -> bytes:
        return encode_fields(self.header, fields_of_verdict(verdict))

    def encode_fields(self, fields: dict[str, Any]) -> bytes:
        """The record of verdict ``fields`` (the publisher's path: no Verdict object)."""
        return encode_fields(self.header, fields)

    def decode(self, data: bytes) -> Verdict:
        """A verdict from its bytes; SchemaError when they are not one."""
        if data[:HEADER_SIZE] != self.header:
            raise SchemaError("not an intake verdict of this schema (Avro single-object, IntakeVerdict)")
        try:
            record: Any = schemaless_reader(BytesIO(data[HEADER_SIZE:]), self.schema, self.schema)
            return verdict_from_fields(record)
        except (KeyError, TypeError, ValueError, EOFError) as error:
            raise SchemaError(f"corrupt intake verdict: {type(error).__name__}") from None


def verdict_headers(fields: dict[str, Any], source: bytes) -> list[tuple[str, bytes]]:
    """CloudEvents headers of a verdict's record (binary mode, as the events topic's)."""
    return [("ce_sequence", str(fields["position"]).encode()), ("ce_type", VERDICT_TYPE),
            ("ce_specversion", b"1.0"), ("ce_id", fields["intake_id"].encode()), ("ce_source", source),
            ("content-type", b"application/avro; encoding=single-object; schema=caseledger.intake.IntakeVerdict")]


# -- waiting for verdicts (the adapter SDK) -----------------------------------------------------------------------


class VerdictTimeout(BackendError):
    """No verdict came within the wait: the record may or may not be recorded. Resubmit the same draft —
    the ledger traces a resubmission and records nothing twice — and do not tell the customer "received" yet."""

    def __init__(self, message: str, *, pending: Iterable[Any] = (), verdicts: Iterable[Verdict] = ()) -> None:
        super().__init__(message)
        self.pending = list(pending)  # the receipts still without a verdict
        self.verdicts = list(verdicts)  # those that came, in the order submitted


SEEN = 100_000
"""Verdicts of records nobody waits for yet (an adapter's other threads, a later wait) kept at most."""


class VerdictWaiter:
    """One reader of an adapter's partition of the outcomes topic, shared by every wait of its client.

    ``open_reader`` opens a reader of the outcomes topic; ``partition_of`` gives the partition of the adapter's
    key for a partition count. :meth:`start` takes the partition's end *before* a record is sent, so no verdict
    of a record sent afterwards is missed; :meth:`wait` reads until each asked verdict came, or the time is up.
    Thread-safe: one thread reads at a time, the others find their verdicts when it is done.
    """

    def __init__(self, open_reader: Callable[[], PartitionReader], partition_of: Callable[[int], int],
                 *, adapter: str, codec: VerdictCodec | None = None) -> None:
        self._open = open_reader
        self._partition_of = partition_of
        self.adapter = adapter
        self.codec = codec or VerdictCodec()
        self._reader: PartitionReader | None = None
        self._seen: OrderedDict[UUID, Verdict] = OrderedDict()
        self._lock = threading.Lock()
        self._reading = threading.Lock()

    def start(self) -> None:
        """Follow the adapter's partition from its current end (idempotent)."""
        with self._lock:
            if self._reader is not None:
                return
            reader = self._open()
            partitions = reader.partitions()
            if not partitions:
                reader.close()
                raise BackendError(f"outcomes topic {reader.topic} does not exist; create it with "
                                   "`caseledger topics create` (verdicts need it)")
            partition = self._partition_of(len(partitions))
            reader.assign({partition: reader.end_offsets([partition])[partition]})
            self._reader = reader

    def wait(self, ids: Iterable[UUID], timeout_s: float) -> dict[UUID, Verdict]:
        """The verdicts of ``ids`` that came within ``timeout_s`` (all of them unless the time ran out)."""
        wanted = set(ids)
        found: dict[UUID, Verdict] = {}
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            with self._lock:
                for key in wanted & self._seen.keys():
                    found[key] = self._seen.pop(key)
            wanted -= found.keys()
            left = deadline - time.monotonic()
            if not wanted or left <= 0:
                return found
            if self._reading.acquire(timeout=min(left, 0.05)):
                try:
                    self._read(min(left, 0.1))
                finally:
                    self._reading.release()

    def _read(self, timeout_s: float) -> None:
        reader = self._reader
        if reader is None:
            raise BackendError("verdicts are read only after start()")
        for value in reader.fetch(2000, timeout_s, _value):
            if value is None:
                continue
            try:
                verdict = self.codec.decode(value)
            except SchemaError:
                continue  # not a verdict this SDK reads (a newer schema): its record waits until the timeout
            with self._lock:
                self._seen[verdict.intake_id] = verdict
                while len(self._seen) > SEEN:
                    self._seen.popitem(last=False)

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None


def _value(partition: int, offset: int, key: bytes | None, value: bytes | None, headers: Any, ts: int) -> bytes | None:
    return value
