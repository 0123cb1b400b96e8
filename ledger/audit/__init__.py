"""Audit: prove that nothing was lost, altered or reordered — from the store, the events topic and intake.

``verify(ledger, …)`` reads the store's notification log once, in pages, in one consistent read
snapshot, and keeps only small per-aggregate maps (last version and hash of each aggregate, and
three counters per case). Every discrepancy it finds is named: which position, event, aggregate
and version, which topic partition and offset, what differs.

The construction
================
* **Event hash** = SHA-256 over the event's stored bytes, exactly as stored and published (Avro
  single-object encoding: ``C3 01``, 8-byte schema fingerprint, body). It is published in the
  ``event_hash`` header of the event's Kafka record.
* **Aggregate chain**: every event carries, inside its Avro envelope, ``previous_hash`` = the
  hash of the previous stored event of the same aggregate (a case, a customer, a channel message,
  an identity claim, an intake rejection); ``None`` for version 1. The chain is therefore part of
  the hashed bytes: changing any event changes its hash and breaks the link of the next one.
* **Positions**: the store's notification ids, the total order the publisher follows.
* **Seal**: verify also computes ``seal`` = SHA-256 over ``position (8 bytes, big-endian) ‖ event
  hash`` of every event of the log in position order, i.e. a *global chain computed by the
  auditor*. The report prints it as ``POSITION:DIGEST``; an auditor keeps it outside the ledger
  and passes it back with ``--seal`` to prove that nothing up to that position changed since.

No global or per-customer chain is *stored*: whoever can rewrite the events table can rewrite a
stored chain too, and the global predecessor of an event is only known under the store's insert
lock, after the event was encoded. What a chain can add is only a comparison with a copy the
tamperer cannot change: the events topic (continuously), or the seal (at each audit).

What detects each tampering
===========================
=====================================  ===========================================================
tampering                              detected by
=====================================  ===========================================================
a byte of an event altered             its row's bytes no longer decode, or name another
                                       aggregate/version (``row-mismatch``), or the next event of
                                       the aggregate no longer links to it (``chain-broken``); with
                                       ``--kafka`` the topic's bytes differ (``topic-bytes``); with
                                       ``--seal`` the seal differs. The *last* event of an
                                       aggregate that still decodes is only caught by the topic or
                                       a seal: nothing is stored after it to link to it.
an event deleted                       a version gap in its aggregate (``version-gap``); a
                                       position gap (``position-gap``: an error on SQLite, which
                                       never skips positions; on PostgreSQL see below); the
                                       topic still has it (``topic-extra``); cross references
                                       (below); intake accounting when it was an outcome.
a whole case deleted                   its customer's ``CaseLinked`` names a case without events
                                       (``case-missing``), its contacts' ``MessageRegistered``
                                       entries count more messages than contacts
                                       (``contacts-unmatched``), position gaps, intake
                                       accounting, the topic, the seal. Deleting the links too
                                       breaks the customer's and the messages' chains, unless
                                       they were the last events of those aggregates: then the
                                       topic or a seal is needed.
two events' states swapped             each row's bytes name another aggregate/version
                                       (``row-mismatch``); the chains break; the topic differs.
a forged event inserted                a wrong ``previous_hash`` (``chain-broken``); a version
                                       that does not follow (``version-gap``); a recorded time
                                       before the previous event of its aggregate, beyond the
                                       clock tolerance (``backdated``), or long before an earlier
                                       position (``recorded-out-of-order``, a warning); not on the
                                       topic at a published position
                                       (``topic-missing``); an intake outcome twice
                                       (``intake-doubled``) or for no intake record
                                       (``intake-unknown``). A forgery appended after the last
                                       published position, with a correct chain link and a
                                       current time, is indistinguishable from a genuine event
                                       by any unkeyed hash: that needs a key the database
                                       operator does not hold (a MAC in the write path).
a forged record on the events topic    its position is not in the store, or appears twice, or its
                                       bytes, key or headers differ from the store's event
                                       (``topic-extra``, ``topic-duplicate``, ``topic-bytes``,
                                       ``topic-key``, ``topic-header``).
an intake record's outcome dropped     intake accounting: the offset was consumed (tracking
                                       position beyond it) but has no outcome
                                       (``intake-no-outcome``).
the store's tail truncated             the topic has positions the store lacks; a seal taken
                                       before; cross references.
=====================================  ===========================================================

PostgreSQL positions can skip
=============================
Measured on PostgreSQL 16 (pgserver) with eventsourcing 9.5: a save that fails with an
optimistic-concurrency conflict (``ConflictError``) consumes one ``notification_id`` per row it
attempted up to and including the conflicting one, although nothing is committed; the next
committed event then leaves a gap. SQLite never skips (a rolled-back insert frees its rowid). So
on PostgreSQL a position gap alone is a ``position-gap`` *warning* explaining this; with
``--kafka`` a gap at a published position is settled: a record on the topic at that position
means an event was deleted (error), none means the number was never committed.

Intake accounting
=================
Each intake record (topic, partition, offset) has one *outcome* event whose ``causation_id`` is
``IntakeSource.event_id``: ``ContactReceived``, ``ResubmissionTraced``, ``MessageIdCollided``, ``IntakeRejected``,
``MessageDelivered`` or ``MessageRead``. The worker applies a partition in offset order, so the
outcomes of a partition appear in the store in offset order; verify matches them as they stream
past against a window of the next expected offsets of every partition (``INTAKE_WINDOW``). Every
offset below the partition's tracking position (``intake/<topic>/<partition>``) must have exactly
one outcome; offsets from the tracking position to the topic's end (with ``--kafka``) are listed
as not consumed yet (warnings).
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from caseledger.ledger.domain.catalog import EVENT_TYPES, name_of_topic, topic_of
from caseledger.ledger.domain.directory import IntakeSource
from caseledger.ledger.errors import BackendError, ConfigurationError
from caseledger.ledger.store.codec import ENVELOPE, HEADER_SIZE, MAGIC, AvroEventCodec

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.kafka.settings import KafkaSettings

__all__ = [
    "DEFAULT_CLOCK_TOLERANCE",
    "INTAKE_OUTCOMES",
    "AuditReport",
    "Discrepancy",
    "Seal",
    "parse_envelope",
    "store_snapshot",
    "verify",
]

DEFAULT_CLOCK_TOLERANCE = timedelta(minutes=5)
"""How far back in time an event may be recorded relative to the previous event of its aggregate.

An aggregate's events are created in order, but by processes on hosts whose clocks differ a little.
"""

COMMIT_TOLERANCE = timedelta(hours=1)
"""How far back an event may be recorded relative to *any* earlier position (a warning beyond it).

Larger than the clock tolerance: a long batch (``tick`` over many cases, a slow intake batch)
commits events created long before other writers' events that committed first.
"""
COMMIT_TOLERANCE_US = COMMIT_TOLERANCE // timedelta(microseconds=1)

INTAKE_OUTCOMES = frozenset(
    {"ContactReceived", "ResubmissionTraced", "MessageIdCollided", "IntakeRejected", "MessageDelivered",
     "MessageRead"}
)
"""The event types that are the outcome of one intake record (one per record)."""

INTAKE_WINDOW = 5000
"""Offsets of each intake partition looked ahead (and kept behind) when matching outcomes."""

MAX_NAMED = 200
"""Discrepancies named per code in a report; further ones are counted."""

ERROR = "error"
WARNING = "warning"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


# -- report ------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Discrepancy:
    """One thing that does not hold, with where it is and what differs."""

    code: str
    message: str
    severity: str = ERROR
    position: int | None = None
    event_type: str | None = None
    event_id: str | None = None
    aggregate_id: str | None = None
    version: int | None = None
    customer_id: str | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    def where(self) -> str:
        """``position 42 (CaseOpened v1 of aggregate …)`` or ``caseledger.intake/2@17``."""
        parts: list[str] = []
        what = " ".join(x for x in (self.event_type, f"v{self.version}" if self.version else None) if x)
        if self.aggregate_id:
            what = f"{what} of aggregate {self.aggregate_id}" if what else f"aggregate {self.aggregate_id}"
        if self.position is not None:
            parts.append(f"position {self.position}" + (f" ({what})" if what else ""))
        elif what:
            parts.append(what)
        if self.topic is not None and self.partition is not None:
            parts.append(f"{self.topic}/{self.partition}" + (f"@{self.offset}" if self.offset is not None else ""))
        return ", ".join(parts)

    def line(self) -> str:
        where = self.where()
        return f"[{self.code}] {where}: {self.message}" if where else f"[{self.code}] {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass(frozen=True)
class Seal:
    """The auditor's global digest of the log up to ``position`` (see the module docstring)."""

    position: int
    digest: str

    @classmethod
    def parse(cls, text: str) -> Seal:
        """``POSITION:DIGEST`` as printed in a report."""
        position, sep, digest = text.strip().partition(":")
        try:
            value = cls(int(position), digest.lower())
            bytes.fromhex(value.digest)
        except ValueError:
            value = None  # type: ignore[assignment]
        if not sep or value is None or len(value.digest) != 64 or value.position < 1:
            raise ConfigurationError(
                f"seal {text!r} is not POSITION:DIGEST (a position and 64 hex digits), as printed by audit verify"
            )
        return value

    def __str__(self) -> str:
        return f"{self.position}:{self.digest}"


@dataclass
class AuditReport:
    """What verify checked and every discrepancy it found."""

    backend: str
    scope: dict[str, Any]
    head_position: int = 0
    first_position: int | None = None
    last_position: int | None = None
    events: int = 0
    aggregates: int = 0
    cases: int = 0
    topic_records: int = 0
    intake_offsets: int = 0
    intake_outcomes: int = 0
    seal: Seal | None = None
    seconds: float = 0.0
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    discrepancies: list[Discrepancy] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    severities: dict[str, str] = field(default_factory=dict)

    def add(self, discrepancy: Discrepancy) -> None:
        code = discrepancy.code
        self.counts[code] += 1
        self.severities.setdefault(code, discrepancy.severity)
        if discrepancy.severity == ERROR:
            self.severities[code] = ERROR
        if self.counts[code] <= MAX_NAMED:
            self.discrepancies.append(discrepancy)

    @property
    def errors(self) -> list[Discrepancy]:
        return [d for d in self.discrepancies if d.severity == ERROR]

    @property
    def warnings(self) -> list[Discrepancy]:
        return [d for d in self.discrepancies if d.severity == WARNING]

    @property
    def ok(self) -> bool:
        """True when nothing but warnings was found."""
        return not any(d.severity == ERROR for d in self.discrepancies)

    def omitted(self) -> dict[str, int]:
        """Codes with more discrepancies than the report names, and how many were not named."""
        return {code: n - MAX_NAMED for code, n in sorted(self.counts.items()) if n > MAX_NAMED}

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "backend": self.backend,
            "scope": self.scope,
            "head_position": self.head_position,
            "first_position": self.first_position,
            "last_position": self.last_position,
            "events": self.events,
            "aggregates": self.aggregates,
            "cases": self.cases,
            "topic_records": self.topic_records,
            "intake_offsets": self.intake_offsets,
            "intake_outcomes": self.intake_outcomes,
            "seal": str(self.seal) if self.seal else None,
            "seconds": round(self.seconds, 3),
            "checks": self.checks,
            "notes": self.notes,
            "counts": dict(sorted(self.counts.items())),
            "omitted": self.omitted(),
            "discrepancies": [d.as_dict() for d in self.discrepancies],
        }


# -- reading the store in one consistent snapshot --------------------------------------------------------

Row = tuple[int, bytes, int, str, bytes]
"""(position, aggregate id as 32 lowercase hex digits, version, topic, stored bytes)."""


class StoreSnapshot(ABC):
    """Reads the events table and tracking records as of one moment (one read transaction)."""

    backend = "store"
    positions_may_skip = False

    @abstractmethod
    def head(self) -> int:
        """The highest position in the snapshot (0 when empty)."""

    @abstractmethod
    def pages(self, after: int, upto: int, size: int) -> Iterator[list[Row]]:
        """Rows with ``after < position <= upto`` in position order, ``size`` at a time."""

    @abstractmethod
    def row_at_or_after(self, position: int) -> Row | None:
        """The first row at ``position`` or after it (None past the end)."""

    @abstractmethod
    def event(self, aggregate_hex: bytes, version: int) -> Row | None:
        """The row of one aggregate version (position 0: not looked up)."""

    @abstractmethod
    def tracking(self) -> dict[str, int]:
        """Every tracking record: name → highest tracked id."""


class SQLiteStoreSnapshot(StoreSnapshot):
    """Raw reads of eventsourcing's SQLite tables (``stored_events``, ``tracking``); rowid = position."""

    backend = "SQLite"

    def __init__(self, cursor: Any, table: str) -> None:
        self.cursor = cursor
        self.table = table

    def head(self) -> int:
        return int(self.cursor.execute(f"SELECT MAX(rowid) FROM {self.table}").fetchone()[0] or 0)

    def pages(self, after: int, upto: int, size: int) -> Iterator[list[Row]]:
        statement = (
            f"SELECT rowid, CAST(originator_id AS BLOB), originator_version, topic, state FROM {self.table} "
            "WHERE rowid > ? ORDER BY rowid LIMIT ?"
        )
        return _bounded_pages(lambda start: self.cursor.execute(statement, (start, size)).fetchall(), after, upto)

    def row_at_or_after(self, position: int) -> Row | None:
        return self.cursor.execute(  # type: ignore[no-any-return]
            f"SELECT rowid, CAST(originator_id AS BLOB), originator_version, topic, state FROM {self.table} "
            "WHERE rowid >= ? ORDER BY rowid LIMIT 1",
            (position,),
        ).fetchone()

    def event(self, aggregate_hex: bytes, version: int) -> Row | None:
        return self.cursor.execute(  # type: ignore[no-any-return]
            f"SELECT rowid, CAST(originator_id AS BLOB), originator_version, topic, state FROM {self.table} "
            "WHERE originator_id = ? AND originator_version = ?",
            (aggregate_hex.decode(), version),
        ).fetchone()

    def tracking(self) -> dict[str, int]:
        exists = self.cursor.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'tracking'"
        ).fetchone()
        if not exists:
            return {}
        rows = self.cursor.execute(
            "SELECT application_name, MAX(notification_id) FROM tracking GROUP BY application_name"
        ).fetchall()
        return {str(name): int(n) for name, n in rows}


class PostgresStoreSnapshot(StoreSnapshot):
    """Raw reads of eventsourcing's PostgreSQL tables (``<app>_events``, ``<app>_tracking``)."""

    backend = "PostgreSQL"
    positions_may_skip = True

    def __init__(self, cursor: Any, schema: str, table: str, tracking_table: str | None) -> None:
        from psycopg.sql import SQL, Identifier

        self.cursor = cursor
        events = SQL("{}.{}").format(Identifier(schema), Identifier(table))
        columns = SQL(
            "SELECT notification_id, convert_to(replace(originator_id::text, '-', ''), 'UTF8'), "
            "originator_version, topic, state FROM {} "
        ).format(events)
        self._head = SQL("SELECT MAX(notification_id) FROM {}").format(events)
        self._page = columns + SQL("WHERE notification_id > %s ORDER BY notification_id LIMIT %s")
        self._at = columns + SQL("WHERE notification_id >= %s ORDER BY notification_id LIMIT 1")
        self._event = columns + SQL("WHERE originator_id::text = %s AND originator_version = %s")
        self._tracking = (
            SQL("SELECT application_name, MAX(notification_id) FROM {} GROUP BY application_name").format(
                SQL("{}.{}").format(Identifier(schema), Identifier(tracking_table))
            )
            if tracking_table
            else None
        )
        self._tracking_name = (schema, tracking_table)

    def head(self) -> int:
        row = self.cursor.execute(self._head).fetchone()
        return int(row[0] or 0)

    def pages(self, after: int, upto: int, size: int) -> Iterator[list[Row]]:
        return _bounded_pages(lambda start: self.cursor.execute(self._page, (start, size)).fetchall(), after, upto)

    def row_at_or_after(self, position: int) -> Row | None:
        return self.cursor.execute(self._at, (position,)).fetchone()  # type: ignore[no-any-return]

    def event(self, aggregate_hex: bytes, version: int) -> Row | None:
        return self.cursor.execute(self._event, (str(UUID(aggregate_hex.decode())), version)).fetchone()  # type: ignore[no-any-return]

    def tracking(self) -> dict[str, int]:
        if self._tracking is None:
            return {}
        schema, table = self._tracking_name
        exists = self.cursor.execute("SELECT to_regclass(%s)", (f'"{schema}"."{table}"',)).fetchone()[0]
        if exists is None:
            return {}
        return {str(name): int(n) for name, n in self.cursor.execute(self._tracking).fetchall()}


def _bounded_pages(select: Callable[[int], list[Row]], after: int, upto: int) -> Iterator[list[Row]]:
    """Keyset pages after ``after`` up to ``upto``.

    The upper bound is applied here, not in SQL: with a range condition and stale statistics
    (a table just filled) PostgreSQL plans a bitmap scan and sorts the whole remaining range
    for every page; ``> after ORDER BY … LIMIT`` always walks the index.
    """
    while after < upto:
        rows = select(after)
        if not rows:
            return
        if rows[-1][0] > upto:
            rows = [row for row in rows if row[0] <= upto]
            if rows:
                yield rows
            return
        yield rows
        after = rows[-1][0]


@contextmanager
def store_snapshot(ledger: CaseLedger) -> Iterator[StoreSnapshot]:
    """One read transaction over the ledger's store (SQLite WAL snapshot or PostgreSQL REPEATABLE READ)."""
    recorder: Any = ledger.recorder
    datastore = recorder.datastore
    if ledger.settings.store.is_postgres:
        from psycopg.rows import tuple_row

        with datastore.get_connection() as conn:
            conn.rollback()  # start from a clean state: the isolation level applies to the next transaction
            with conn.transaction(force_rollback=True):
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                # Pages are read while the topic is compared: never be cut off as idle.
                conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
                cursor = conn.cursor(row_factory=tuple_row, binary=True)
                yield PostgresStoreSnapshot(
                    cursor, datastore.schema, recorder.events_table_name, getattr(recorder, "tracking_table_name", None)
                )
        return
    with datastore.transaction(commit=False) as wrapped:
        cursor = wrapped.sqlite_cursor
        cursor.row_factory = None  # plain tuples: the audit reads millions of rows
        yield SQLiteStoreSnapshot(cursor, recorder.events_table_name)


# -- decoding envelopes fast --------------------------------------------------------------------------------

Envelope = tuple[bytes, bytes, int, bytes, bytes, int, bytes | None, bytes | None, int]
"""(event id, aggregate id, version, case id, customer id, recorded_at µs, causation id, previous hash,
offset of the first byte after the envelope). Ids are the ASCII bytes of their canonical text."""


def _long(b: bytes, p: int) -> tuple[int, int]:
    """An Avro long (zig-zag varint) at ``p``; returns (value, next offset)."""
    c = b[p]
    p += 1
    if c < 0x80:
        return (c >> 1) ^ -(c & 1), p
    r = c & 0x7F
    s = 7
    while True:
        c = b[p]
        p += 1
        r |= (c & 0x7F) << s
        if c < 0x80:
            return (r >> 1) ^ -(r & 1), p
        s += 7


def _length(b: bytes, p: int) -> tuple[int, int]:
    """A string or bytes length at ``p`` (never negative)."""
    n, p = _long(b, p)
    if n < 0:
        raise ValueError("negative length in the event")
    return n, p


def _string(b: bytes, p: int) -> tuple[bytes, int]:
    n, p = _length(b, p)
    if p + n > len(b):
        raise ValueError("string runs past the end of the event")
    return b[p : p + n], p + n


def parse_envelope(b: bytes) -> Envelope:
    """The envelope of an event whose writer schema starts with the current ``caseledger.Envelope``.

    Hand-decoded from the Avro binary encoding, straight-line with the common one-byte lengths
    inlined: over twice as fast as fastavro on the same bytes, and the audit reads every event. Raises
    ValueError or IndexError on bytes that do not decode.
    """
    p = HEADER_SIZE
    # event_id
    n = b[p]
    if n < 0x80:
        p += 1
        n >>= 1
    else:
        n, p = _length(b, p)
    event_id = b[p : p + n]
    p += n
    # aggregate_id
    n = b[p]
    if n < 0x80:
        p += 1
        n >>= 1
    else:
        n, p = _length(b, p)
    aggregate_id = b[p : p + n]
    p += n
    version, p = _long(b, p)
    # case_id
    n = b[p]
    if n < 0x80:
        p += 1
        n >>= 1
    else:
        n, p = _length(b, p)
    case_id = b[p : p + n]
    p += n
    # customer_id
    n = b[p]
    if n < 0x80:
        p += 1
        n >>= 1
    else:
        n, p = _length(b, p)
    customer_id = b[p : p + n]
    p += n
    while b[p] & 0x80:  # occurred_at: skipped
        p += 1
    recorded_at, p = _long(b, p + 1)
    for _ in (0, 1):  # actor kind and id: skipped
        n = b[p]
        if n < 0x80:
            p += 1 + (n >> 1)
        else:
            n, p = _length(b, p)
            p += n
    for _ in (0, 1):  # channel and correlation_id, unions with null: skipped
        branch = b[p]
        p += 1
        if branch == 2:
            n = b[p]
            if n < 0x80:
                p += 1 + (n >> 1)
            else:
                n, p = _length(b, p)
                p += n
        elif branch:
            raise ValueError(f"bad union branch {branch} in the envelope")
    causation: bytes | None = None
    branch = b[p]
    p += 1
    if branch == 2:
        n = b[p]
        if n < 0x80:
            p += 1
            n >>= 1
        else:
            n, p = _length(b, p)
        causation = b[p : p + n]
        p += n
    elif branch:
        raise ValueError(f"bad union branch {branch} for causation_id")
    previous: bytes | None = None
    branch = b[p]
    p += 1
    if branch == 2:
        n = b[p]
        if n < 0x80:
            p += 1
            n >>= 1
        else:
            n, p = _length(b, p)
        previous = b[p : p + n]
        p += n
    elif branch:
        raise ValueError(f"bad union branch {branch} for previous_hash")
    if p > len(b):
        raise ValueError("the envelope runs past the end of the event")
    return event_id, aggregate_id, version, case_id, customer_id, recorded_at, causation, previous, p


@dataclass(frozen=True)
class _WriterSchema:
    name: str
    topic: str
    fast: bool  # starts with the current envelope: parse_envelope applies


class _Decoder:
    """Which event type and envelope each stored event carries, from its schema fingerprint."""

    def __init__(self, codec: AvroEventCodec) -> None:
        self.codec = codec
        self.by_fingerprint: dict[bytes, _WriterSchema] = {}
        for fp, parsed in codec._writers.items():
            name = str(parsed["name"]).rsplit(".", 1)[-1]
            if name not in EVENT_TYPES:
                continue
            first = parsed["fields"][0] if parsed.get("fields") else {}
            # Every schema, current or retired, is parsed against the current envelope and names it;
            # a retired schema that embedded an envelope of its own goes through the codec.
            fast = first.get("name") == "envelope" and first.get("type") == f"{ENVELOPE}"
            self.by_fingerprint[fp] = _WriterSchema(name, topic_of(name), fast)

    def slow_envelope(self, name: str, data: bytes) -> Envelope:
        """The envelope through the codec (retired schema versions)."""
        env = self.codec.decode_record(name, data)["envelope"]

        def text(value: Any) -> bytes | None:
            return None if value is None else str(value).encode()

        recorded = env["recorded_at"]
        micros = recorded if isinstance(recorded, int) else (recorded - _EPOCH) // _MICROSECOND
        return (
            str(env["event_id"]).encode(), str(env["aggregate_id"]).encode(), int(env["aggregate_version"]),
            str(env["case_id"]).encode(), str(env["customer_id"]).encode(), micros,
            text(env["causation_id"]), env["previous_hash"], 0,
        )

    def source(self, name: str, data: bytes, end: int, fast: bool) -> tuple[str, int, int] | None:
        """The intake record an IntakeRejected, ResubmissionTraced or MessageIdCollided names."""
        try:
            if fast and name == "IntakeRejected":
                topic_bytes, p = _string(data, end)
                partition, p = _long(data, p)
                offset, _ = _long(data, p)
                return topic_bytes.decode(), partition, offset
            if fast and name in _SOURCE_FIRST:
                return _source(_string(data, end)[0].decode())
            record = self.codec.decode_record(name, data)
            if name == "IntakeRejected":
                return str(record["source_topic"]), int(record["source_partition"]), int(record["source_offset"])
            if name in _SOURCE_FIRST:
                return _source(str(record["source"]))
        except (ValueError, IndexError, UnicodeDecodeError, KeyError):
            return None
        return None


_SOURCE_FIRST = frozenset({"ResubmissionTraced", "MessageIdCollided"})
"""Outcomes whose first field after the envelope is the intake record they follow from (``source``)."""


def _source(text: str) -> tuple[str, int, int]:
    """``topic/partition/offset`` (as ``IntakeSource`` prints it) → its parts."""
    rest, _, offset = text.rpartition("/")
    topic, _, partition = rest.rpartition("/")
    return topic, int(partition), int(offset)


def _micros(value: datetime) -> int:
    return (value.astimezone(UTC) - _EPOCH) // _MICROSECOND


def _when(micros: int) -> str:
    return (_EPOCH + timedelta(microseconds=micros)).isoformat()


def _dashed(hex32: bytes) -> str:
    try:
        return str(UUID(hex32.decode()))
    except ValueError:
        return hex32.decode(errors="replace")


# -- the verification ----------------------------------------------------------------------------------------


def verify(
    ledger: CaseLedger,
    *,
    customer: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    kafka: KafkaSettings | None = None,
    seal: Seal | None = None,
    clock_tolerance: timedelta = DEFAULT_CLOCK_TOLERANCE,
    page_size: int = 5000,
    progress: Callable[[int, int], None] | None = None,
    collect: Callable[[int, str, bytes], None] | None = None,
) -> AuditReport:
    """Check the ledger's chains, positions, cross references, events topic and intake accounting.

    ``customer`` (an id or identity) limits the audit to that customer's events; ``since`` and
    ``until`` to the positions recorded in that time range. ``kafka`` adds the events topic and
    the intake topic. ``seal`` (from an earlier report) must still hold. ``progress`` is called
    with (positions done, positions to do); ``collect`` with (position, event type, bytes) of
    each event in scope, in order (the history export uses it).
    """
    started = time.monotonic()
    customer_id = ledger.resolve_customer(customer) if customer else None
    if since is not None and until is not None and until <= since:
        raise ConfigurationError(f"--until {until.isoformat()} is not after --since {since.isoformat()}")
    with store_snapshot(ledger) as store:
        audit = _Audit(
            ledger, store, customer_id=customer_id, since=since, until=until, kafka=kafka, seal=seal,
            tolerance=clock_tolerance, page_size=page_size, progress=progress, collect=collect,
        )
        try:
            report = audit.run()
        finally:
            if audit.topic is not None:
                audit.topic.close()
    if audit.topic is not None:
        audit.topic.check_beyond_snapshot(ledger)
    report.seconds = time.monotonic() - started
    return report


class _Audit:
    """One run of verify: the streaming loop and the per-aggregate maps."""

    def __init__(
        self, ledger: CaseLedger, store: StoreSnapshot, *, customer_id: str | None, since: datetime | None,
        until: datetime | None, kafka: KafkaSettings | None, seal: Seal | None, tolerance: timedelta,
        page_size: int, progress: Callable[[int, int], None] | None,
        collect: Callable[[int, str, bytes], None] | None,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.customer_id = customer_id
        self.since = since
        self.until = until
        self.kafka = kafka
        self.seal_in = seal
        self.tolerance = tolerance // _MICROSECOND
        self.page_size = page_size
        self.progress = progress
        self.collect = collect
        self.decoder = _Decoder(ledger.codec)
        scope: dict[str, Any] = {"customer": customer_id, "since": since, "until": until,
                                 "kafka": bool(kafka)}
        if kafka is not None:
            scope.update(events_topic=kafka.events_topic, intake_topic=kafka.intake_topic)
        self.report = AuditReport(
            backend=ledger.settings.store.describe(),
            scope={k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in scope.items()},
        )
        self.topic: _TopicComparison | None = None
        self.intake: _IntakeAccounting | None = None
        self.chains: dict[bytes, tuple[int, bytes, int]] = {}  # aggregate → (version, hash, recorded µs)
        # Per case (keyed by the case id's text): [CaseLinked seen, contacts, messages registered, opened].
        self.cases: dict[bytes, list[int]] = {}
        self.gaps: list[tuple[int, int]] = []

    # -- reporting helpers --------------------------------------------------------------------------------

    def flag(self, code: str, message: str, *, severity: str = ERROR, **where: Any) -> None:
        self.report.add(Discrepancy(code=code, message=message, severity=severity, **where))

    # -- the run --------------------------------------------------------------------------------------------

    def run(self) -> AuditReport:
        report = self.report
        store = self.store
        head = store.head()
        report.head_position = head
        first, last = self._range(head)
        full = self.customer_id is None and self.since is None and self.until is None
        ranged = self.since is not None or self.until is not None
        report.checks = ["positions", "chains", "row identity", "recorded times"]
        if not ranged:
            report.checks.append("cross references")
        else:
            report.notes.append("cross references (case links, contact registrations) are checked on whole "
                                "histories only: run without --since/--until for them")
        if self.kafka is not None:
            self.topic = _TopicComparison(self, head=head, first=first, last=last)
            report.checks.append("events topic")
        if self.customer_id is None and (self.kafka is not None or not ranged):
            self.intake = _IntakeAccounting.start(self, store.tracking())
            if self.intake is not None:
                report.checks.append("intake accounting")
            else:
                report.notes.append("intake accounting: no intake tracking record in the store and no "
                                    "--kafka: nothing came through an intake topic")
        elif self.customer_id is not None:
            report.notes.append("intake accounting is ledger-wide: run without --customer for it")
        else:
            report.notes.append("intake accounting over a time range needs --kafka (the intake topic's "
                                "record times)")
        if full:
            report.checks.append("seal")
        elif self.seal_in is not None:
            report.notes.append("--seal is checked by a whole-ledger audit only (no --customer, --since, --until)")
        self._scan(first, last, full=full)
        if self.intake is not None:
            self._scan_outcomes_after(last, head)
            self.intake.finish()
        if self.topic is not None:
            self.topic.finish()
        if not ranged:
            self._check_cross_references()
        self._settle_gaps()
        report.aggregates = len(self.chains)
        report.cases = sum(1 for c in self.cases.values() if c[3])
        return report

    def _range(self, head: int) -> tuple[int, int]:
        """First and last positions in scope (time range: by binary search on recorded times)."""
        first, last = 1, head
        if self.since is not None:
            first = self._first_recorded_at_or_after(_micros(self.since), head)
        if self.until is not None:
            last = self._first_recorded_at_or_after(_micros(self.until), head) - 1
        self.report.first_position = first if first <= last else None
        self.report.last_position = last if first <= last else None
        return first, last

    def _first_recorded_at_or_after(self, micros: int, head: int) -> int:
        lo, hi = 1, head + 1  # answer in [lo, hi]
        while lo < hi:
            mid = (lo + hi) // 2
            row = self.store.row_at_or_after(mid)
            if row is None:
                hi = mid
                continue
            try:
                recorded = self._envelope_of(row)[5]
            except Exception:  # undecodable: the scan reports it; treat it as in range
                recorded = micros
            if recorded >= micros:
                hi = mid
            else:
                lo = row[0] + 1
        return lo

    def _envelope_of(self, row: Row) -> Envelope:
        state = bytes(row[4])
        schema = self.decoder.by_fingerprint[state[2:HEADER_SIZE]]
        return parse_envelope(state) if schema.fast else self.decoder.slow_envelope(schema.name, state)

    def _scan(self, first: int, last: int, *, full: bool) -> None:
        """The streaming loop: every position in [first, last], one page at a time."""
        report = self.report
        chains = self.chains
        by_fp = self.decoder.by_fingerprint
        sha256 = hashlib.sha256
        seal = hashlib.sha256() if full else None
        seal_at = self.seal_in.position if (self.seal_in and full) else None
        customer = self.customer_id.encode() if self.customer_id is not None else None
        tolerance = self.tolerance
        topic = self.topic
        intake = self.intake
        collect = self.collect
        cases = self.cases
        ranged = self.since is not None or self.until is not None
        latest = -(1 << 62)  # highest recorded time so far, µs
        latest_at = 0
        previous_position = first - 1
        total = max(0, last - first + 1)
        events = 0
        for page in self.store.pages(first - 1, last, self.page_size):
            for position, oid, version, topic_name, state in page:
                if position != previous_position + 1:
                    self._gap(previous_position + 1, position - 1)
                previous_position = position
                if type(state) is not bytes:
                    state = bytes(state)
                if customer is not None and customer not in state:
                    continue
                digest = sha256(state).digest()
                if seal is not None:
                    if seal_at is not None and position > seal_at:  # the sealed position is gone
                        self._check_seal(seal.copy().hexdigest(), seal_at)
                        seal_at = None
                    seal.update(position.to_bytes(8, "big") + digest)
                    if position == seal_at:
                        self._check_seal(seal.copy().hexdigest(), position)
                        seal_at = None
                schema = by_fp.get(state[2:HEADER_SIZE])
                if schema is None or state[:2] != MAGIC:
                    self._undecodable(position, oid, version, topic_name, state, "unknown schema fingerprint"
                                      if state[:2] == MAGIC else "no Avro single-object marker (C3 01)")
                    if topic is not None:
                        topic.match(position, None, state, digest, None, None)
                    continue
                name = schema.name
                try:
                    env = parse_envelope(state) if schema.fast else self.decoder.slow_envelope(name, state)
                except Exception as error:  # corrupt bytes raise many types
                    self._undecodable(position, oid, version, topic_name, state, f"{type(error).__name__}: {error}")
                    if topic is not None:
                        topic.match(position, None, state, digest, name, None)
                    continue
                event_id, aggregate, env_version, case_id, env_customer, recorded, causation, prev, end = env
                if customer is not None and env_customer != customer:
                    continue
                events += 1
                if topic_name != schema.topic:
                    self.flag("type-mismatch", f"the row is a {name_of_topic(topic_name)} but its bytes were "
                              f"written with the {name} schema", position=position, event_type=name,
                              event_id=event_id.decode(), aggregate_id=_dashed(oid), version=version)
                if env_version != version or aggregate.replace(b"-", b"") != oid:
                    self.flag("row-mismatch", f"the row is version {version} of aggregate {_dashed(oid)} but "
                              f"its bytes are version {env_version} of aggregate {aggregate.decode()} (event "
                              f"{event_id.decode()}): bytes were moved between rows", position=position,
                              event_type=name, event_id=event_id.decode(), aggregate_id=_dashed(oid),
                              version=version)
                # The aggregate chain, keyed by the row's identity (what the application loads).
                last_link = chains.get(oid)
                if last_link is None:
                    if version != 1 or prev is not None:
                        self._chain_start(position, oid, version, prev, digest, name, event_id, ranged)
                else:
                    last_version, last_hash, last_recorded = last_link
                    if version != last_version + 1:
                        self._version_gap(position, oid, version, last_version, name, event_id)
                    elif prev != last_hash:
                        self._chain_broken(position, oid, version, prev, last_hash, name, event_id)
                    if recorded < last_recorded - tolerance:
                        self.flag("backdated", f"recorded at {_when(recorded)}, before the aggregate's previous "
                                  f"event (recorded at {_when(last_recorded)}) by more than the clock tolerance: "
                                  "an event dated into the aggregate's past was added later", position=position,
                                  event_type=name, event_id=event_id.decode(), aggregate_id=_dashed(oid),
                                  version=version)
                chains[oid] = (version, digest, recorded)
                if recorded < latest - COMMIT_TOLERANCE_US:
                    self.flag("recorded-out-of-order", f"recorded at {_when(recorded)}, more than "
                              f"{COMMIT_TOLERANCE} before position {latest_at} (recorded at {_when(latest)}); "
                              "positions follow commits, so this event was inserted long after it claims",
                              severity=WARNING, position=position, event_type=name, event_id=event_id.decode(),
                              aggregate_id=_dashed(oid), version=version)
                elif recorded > latest:
                    latest = recorded
                    latest_at = position
                if name in _CASE_COUNTED:
                    entry = cases.get(case_id)
                    if entry is None:
                        entry = cases[case_id] = [0, 0, 0, 0]
                    if name == "ContactReceived":
                        entry[1] += 1
                    elif name == "MessageRegistered":
                        entry[2] += 1
                    elif name == "CaseLinked":
                        entry[0] += 1
                    else:
                        entry[3] = position
                if intake is not None and causation is not None and name in INTAKE_OUTCOMES:
                    intake.outcome(causation, position, name, state, end, schema.fast, event_id)
                if topic is not None:
                    topic.match(position, env_customer, state, digest, name, event_id)
                if collect is not None:
                    collect(position, name, state)
            events_done = previous_position - first + 1
            if self.progress is not None:
                self.progress(events_done, total)
        if previous_position < last:
            self._gap(previous_position + 1, last)
        report.events = events
        if seal is not None and last >= 1:
            report.seal = Seal(last, seal.hexdigest())
            if seal_at is not None:
                self.flag("seal-mismatch", f"the seal covers position {seal_at} but the store ends at {last}: events "
                          "at the end of the log were deleted", position=seal_at)

    def _scan_outcomes_after(self, last: int, head: int) -> None:
        """Intake outcomes recorded after the time range still account for records inside it."""
        intake = self.intake
        assert intake is not None
        by_fp = self.decoder.by_fingerprint
        for page in self.store.pages(last, head, self.page_size):
            for position, _oid, _version, _topic, state in page:
                state = bytes(state)
                schema = by_fp.get(state[2:HEADER_SIZE])
                if schema is None or schema.name not in INTAKE_OUTCOMES:
                    continue
                try:
                    env = parse_envelope(state) if schema.fast else self.decoder.slow_envelope(schema.name, state)
                except Exception:
                    continue
                if env[6] is not None:
                    intake.outcome(env[6], position, schema.name, state, env[8], schema.fast, env[0])

    # -- slow paths ------------------------------------------------------------------------------------------

    def _gap(self, first: int, last: int) -> None:
        self.gaps.append((first, last))

    def _settle_gaps(self) -> None:
        """Gaps are errors on SQLite; on PostgreSQL warnings unless the topic settles them."""
        for first, last in self.gaps:
            span = f"position {first}" if first == last else f"positions {first}..{last}"
            on_topic = self.topic.extras_in(first, last) if self.topic is not None else []
            if on_topic:
                self.flag("position-gap", f"{span} absent from the store, but the events topic holds an event "
                          f"at {', '.join(map(str, on_topic[:10]))}: events were deleted from the store",
                          position=first)
            elif not self.store.positions_may_skip:
                self.flag("position-gap", f"{span} absent: SQLite never skips a position (a rolled-back insert "
                          "frees its rowid), so events were deleted there", position=first)
            elif self.topic is not None and self.topic.published_head >= last:
                self.flag("position-gap", f"{span} absent and never published: a PostgreSQL sequence number "
                          "consumed by a rolled-back insert (optimistic-concurrency conflict)", severity=WARNING,
                          position=first)
            else:
                self.flag("position-gap", f"{span} absent: PostgreSQL consumes one sequence number per row a "
                          "failed insert attempted (a ConflictError leaves such gaps); no chain misses an "
                          "event there, but only --kafka (or a seal) can prove nothing was deleted at the end "
                          "of an aggregate", severity=WARNING, position=first)

    def _check_seal(self, digest: str, position: int) -> None:
        assert self.seal_in is not None
        if digest != self.seal_in.digest:
            self.flag("seal-mismatch", f"the log up to position {position} no longer matches the seal taken earlier "
                      f"({self.seal_in.digest[:16]}…, now {digest[:16]}…): an event at or before it was altered, "
                      "deleted or inserted since", position=position)
        else:
            self.report.notes.append(f"seal {self.seal_in.position}:{self.seal_in.digest[:16]}… holds")

    def _undecodable(self, position: int, oid: bytes, version: int, topic_name: str, state: bytes, why: str) -> None:
        last = self.chains.get(oid)
        self.chains[oid] = (version, hashlib.sha256(state).digest(), last[2] if last else 0)
        self.flag("undecodable", f"the stored bytes do not decode ({why}): the event was altered",
                  position=position, event_type=name_of_topic(topic_name), aggregate_id=_dashed(oid),
                  version=version)

    def _chain_start(self, position: int, oid: bytes, version: int, prev: bytes | None, digest: bytes, name: str,
                     event_id: bytes, ranged: bool) -> None:
        """The first event of an aggregate in scope: version 1 with no link, or (time range) linked to the
        stored event before it."""
        where: dict[str, Any] = {"position": position, "event_type": name, "event_id": event_id.decode(),
                 "aggregate_id": _dashed(oid), "version": version}
        if version == 1:
            self.flag("chain-broken", f"version 1 of an aggregate links to {_hex(prev)}; a first event links to "
                      "nothing: forged or altered", **where)
            return
        if ranged or self.customer_id is not None:
            before = self.store.event(oid, version - 1)
            if before is None:
                self.flag("version-gap", f"version {version - 1} of the aggregate is not in the store", **where)
            elif hashlib.sha256(bytes(before[4])).digest() != prev:
                self.flag("chain-broken", f"previous_hash is {_hex(prev)} but version {version - 1} (position "
                          f"{before[0]}) hashes to {hashlib.sha256(bytes(before[4])).hexdigest()}", **where)
            return
        self.flag("version-gap", f"the aggregate's first event in the store is version {version}: versions "
                  f"1..{version - 1} are missing (deleted)", **where)

    def _chain_broken(self, position: int, oid: bytes, version: int, prev: bytes | None, last_hash: bytes,
                      name: str, event_id: bytes) -> None:
        before = self.store.event(oid, version - 1)
        at = f" (position {before[0]})" if before is not None else ""
        self.flag("chain-broken", f"previous_hash is {_hex(prev)} but version {version - 1}{at} of the aggregate "
                  f"hashes to {last_hash.hex()}: that event was altered or replaced, or this one forged",
                  position=position, event_type=name, event_id=event_id.decode(), aggregate_id=_dashed(oid),
                  version=version)

    def _version_gap(self, position: int, oid: bytes, version: int, last_version: int, name: str,
                     event_id: bytes) -> None:
        if version > last_version + 1:
            what = (f"version {last_version + 1} is missing" if version == last_version + 2
                    else f"versions {last_version + 1}..{version - 1} are missing")
            message = f"{what} (deleted) between position-ordered events of the aggregate"
        else:
            message = (f"version {version} comes after version {last_version} in position order: the "
                       "aggregate's events were reordered or moved")
        self.flag("version-gap", message, position=position, event_type=name, event_id=event_id.decode(),
                  aggregate_id=_dashed(oid), version=version)

    def _check_cross_references(self) -> None:
        """Every case is linked once to its customer, every contact has its registered channel message."""
        for case_id, (links, contacts, messages, opened) in self.cases.items():
            case = case_id.decode(errors="replace")
            if opened and (links != 1 or contacts != messages):
                case = f"{self._reference_at(opened)} ({case})"
            if not opened:
                if links:
                    self.flag("case-missing", f"a CaseLinked names case {case} but the store holds no CaseOpened "
                              "for it: the case's events were deleted", aggregate_id=case)
                else:
                    self.flag("case-missing", f"{messages} MessageRegistered entries name case {case} but the "
                              "store holds no CaseOpened for it: the case's events were deleted",
                              aggregate_id=case)
                continue
            if links != 1:
                self.flag("case-unlinked", f"case {case} (opened at position {opened}) is linked to its customer "
                          f"{links} times (CaseLinked), not once: the customer's case list was altered",
                          aggregate_id=case_id.decode(errors="replace"), position=opened, event_type="CaseOpened")
            if contacts != messages:
                self.flag("contacts-unmatched", f"case {case} has {contacts} ContactReceived but {messages} "
                          "MessageRegistered: contacts or their channel messages were deleted",
                          aggregate_id=case_id.decode(errors="replace"), position=opened, event_type="CaseOpened")

    def _reference_at(self, position: int) -> str:
        """The reference in the CaseOpened at ``position`` (for naming a case in the report)."""
        row = self.store.row_at_or_after(position)
        try:
            return str(self.ledger.codec.decode_record("CaseOpened", bytes(row[4]))["reference"])  # type: ignore[index]
        except Exception:
            return "?"


_CASE_COUNTED = frozenset({"CaseOpened", "ContactReceived", "MessageRegistered", "CaseLinked"})


def _hex(value: bytes | None) -> str:
    return "nothing" if value is None else value.hex()


# -- the events topic ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Record:
    position: int | None
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


class _TopicComparison:
    """Merges the events topic (one ordered stream per partition) with the store's positions.

    Memory stays flat: one consumer per partition, polled only when the store's positions need
    its next record, so at most one poll (``BUFFER`` records) is buffered per partition. (Pausing
    partitions of a single consumer instead can park a resumed partition's records for good in
    kafka-python 3.0.)
    """

    BUFFER = 2000
    STALL_S = 60.0

    def __init__(self, audit: _Audit, *, head: int, first: int, last: int) -> None:
        from kafka import TopicPartition
        from kafka.partitioner.default import murmur2

        self.audit = audit
        assert audit.kafka is not None
        self.settings: KafkaSettings = audit.kafka
        self.topic = self.settings.events_topic
        self.head = head
        self.first = first
        self.last = last
        self.murmur2 = murmur2
        self.partitions: dict[bytes, int] = {}
        self.consumers: dict[int, Any] = {}
        admin = self._consumer()
        try:
            partitions = admin.partitions_for_topic(self.topic)
            if not partitions:
                raise BackendError(f"events topic {self.topic} does not exist on {self.settings.bootstrap_servers}")
            self.count = len(partitions)
            wanted = sorted(partitions)
            if audit.customer_id is not None:
                wanted = [self.partition_of(audit.customer_id.encode())]
            self.tps = {p: TopicPartition(self.topic, p) for p in wanted}
            every = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            self.ends = {tp.partition: n for tp, n in admin.end_offsets(every).items()}
            starts = {tp.partition: n for tp, n in admin.beginning_offsets(list(self.tps.values())).items()}
            if audit.since is not None:
                # Records are published after their events were recorded: none in range is older than
                # since (less the hosts' clock difference).
                at = int((audit.since - timedelta(microseconds=audit.tolerance)).timestamp() * 1000)
                found = admin.offsets_for_times({tp: at for tp in self.tps.values()})
                for tp, hit in found.items():
                    starts[tp.partition] = hit.offset if hit is not None else self.ends[tp.partition]
            self.published_head = self._published_head(admin, every)
        finally:
            admin.close()
        for p, tp in self.tps.items():
            consumer = self.consumers[p] = self._consumer()
            consumer.assign([tp])
            consumer.seek(tp, starts[p])
        self.buffers: dict[int, deque[_Record]] = {p: deque() for p in self.tps}
        self.exhausted = {p: starts[p] >= self.ends[p] for p in self.tps}
        self.last_matched: dict[int, tuple[int, int]] = {}
        self.extras: dict[int, list[int]] = {}
        self.unreadable: set[int] = set()
        # Store events whose record was not next on their customer's partition, by position.
        self.misplaced: dict[int, tuple[bytes, bytes, bytes, str | None, bytes | None]] = {}
        self.missing_partition: dict[int, int] = {}
        self.beyond: list[_Record] = []
        self.unpublished: list[list[int]] = []
        self.records = 0
        self.only_key = audit.customer_id.encode() if audit.customer_id is not None else None

    def _consumer(self) -> Any:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        try:
            return KafkaConsumer(**self.settings.client_options(), group_id=None, enable_auto_commit=False,
                                 isolation_level="read_committed", max_poll_records=self.BUFFER,
                                 fetch_max_wait_ms=100)
        except KafkaError as error:
            raise BackendError(f"cannot read the events topic {self.topic}: {error}") from error

    def close(self) -> None:
        for consumer in self.consumers.values():
            consumer.close()
        self.consumers = {}

    def partition_of(self, key: bytes) -> int:
        """The partition the publisher's producer chose for ``key`` (murmur2, like the Java client)."""
        partition = self.partitions.get(key)
        if partition is None:
            if len(self.partitions) > 100_000:  # pure-Python murmur2 is slow; keep a bounded cache
                self.partitions.clear()
            partition = self.partitions[key] = (self.murmur2(key) & 0x7FFFFFFF) % self.count
        return partition

    def _published_head(self, consumer: Any, tps: list[Any]) -> int:
        """The highest position on the topic within the captured end offsets (all partitions)."""
        best = 0
        for tp in tps:
            end = self.ends[tp.partition]
            window = 16
            while end > 0:
                start = max(0, end - window)
                consumer.assign([tp])
                consumer.seek(tp, start)
                found = 0
                deadline = time.monotonic() + self.STALL_S
                while consumer.position(tp) < end and time.monotonic() < deadline:
                    for record in consumer.poll(timeout_ms=200).get(tp, []):
                        if record.offset < end:
                            found = max(found, _position_of(record) or 0)
                if found or start == 0:
                    best = max(best, found)
                    break
                window *= 8  # only transaction markers or aborted records at the tail
        return best

    # -- reading ----------------------------------------------------------------------------------------------

    def _peek(self, partition: int) -> _Record | None:
        buffer = self.buffers[partition]
        deadline = time.monotonic() + self.STALL_S
        while not buffer and not self.exhausted[partition]:
            self._fill(partition)
            if not buffer and time.monotonic() > deadline:
                raise BackendError(f"events topic {self.topic} partition {partition} stalled below offset "
                                   f"{self.ends[partition]}; is the broker up?")
        return buffer[0] if buffer else None

    def _fill(self, partition: int) -> None:
        consumer = self.consumers[partition]
        tp = self.tps[partition]
        end = self.ends[partition]
        buffer = self.buffers[partition]
        for record in consumer.poll(timeout_ms=200, max_records=self.BUFFER).get(tp, []):
            if record.offset >= end:
                break
            self.records += 1
            headers = dict(record.headers or ())
            position = headers.get("position")
            try:
                at = int(position) if position is not None else None
            except ValueError:
                at = None
            buffer.append(_Record(at, partition, record.offset, record.key, record.value, headers))
        if consumer.position(tp) >= end:
            self.exhausted[partition] = True

    # -- merging ----------------------------------------------------------------------------------------------

    def match(self, position: int, customer: bytes | None, state: bytes, digest: bytes, name: str | None,
              event_id: bytes | None) -> None:
        """The store's event at ``position``: its record must be next on its customer's partition."""
        if customer is None:
            self.unreadable.add(position)  # undecodable in the store: its record is named when it comes by
            return
        partition = self.partition_of(customer)
        if partition not in self.buffers:
            return
        record = self._peek(partition)
        while record is not None and (record.position is None or record.position < position
                                      or (self.only_key is not None and record.key != self.only_key)):
            self.buffers[partition].popleft()
            if self._in_scope(record):
                self._extra(record)
            record = self._peek(partition)
        if record is None or record.position != position:
            self._missing(position, partition, name, event_id, customer, state, digest)
            return
        self.buffers[partition].popleft()
        self.last_matched[partition] = (position, record.offset)
        self._compare(record, position, customer, state, digest, name, event_id)

    def _compare(self, record: _Record, position: int, customer: bytes, state: bytes, digest: bytes,
                 name: str | None, event_id: bytes | None) -> None:
        """The record published for ``position`` against the store's event there."""
        partition = record.partition
        headers = record.headers
        hash_hex = digest.hex().encode()
        if (record.value == state and record.key == customer and headers.get("event_hash") == hash_hex
                and headers.get("event_id") == event_id and headers.get("event_type") == (name or "").encode()
                and headers.get("schema_fingerprint") == state[2:HEADER_SIZE].hex().encode()):
            return  # the common case, checked without building anything
        where: dict[str, Any] = {"position": position, "event_type": name,
                                 "event_id": event_id.decode() if event_id else None, "topic": self.topic,
                                 "partition": partition, "offset": record.offset}
        if record.value != state:
            self._bytes_differ(record, state, where)
        if record.key != customer:
            self.audit.flag("topic-key", f"keyed {_text(record.key)} but the event's customer is "
                            f"{customer.decode(errors='replace')}: the customer id of the store's event, or the "
                            "record's key, was altered", **where)
        expected = {
            "event_type": name.encode() if name else None,
            "event_hash": hash_hex,
            "schema_fingerprint": state[2:HEADER_SIZE].hex().encode(),
            "event_id": event_id,
        }
        for header, value in expected.items():
            if value is not None and headers.get(header) != value:
                self.audit.flag("topic-header", f"header {header} is {_text(headers.get(header))}, expected "
                                f"{value.decode()}", **where)

    def _bytes_differ(self, record: _Record, state: bytes, where: dict[str, Any]) -> None:
        value = record.value or b""
        at = next((i for i, (a, b) in enumerate(zip(value, state, strict=False)) if a != b), min(len(value), len(state)))
        claimed = record.headers.get("event_hash")
        own = hashlib.sha256(value).hexdigest().encode()
        forged = "" if claimed == own else " (and its event_hash header does not match its own bytes)"
        self.audit.flag("topic-bytes", f"the record's bytes differ from the store's from byte {at} on "
                        f"({len(value)} vs {len(state)} bytes){forged}: the store's event or the record was "
                        "altered", **where)

    def _extra(self, record: _Record) -> None:
        where: dict[str, Any] = {"topic": self.topic, "partition": record.partition, "offset": record.offset,
                 "position": record.position}
        if record.position is None:
            self.audit.flag("topic-extra", "a record without a valid position header: not published by the "
                            "ledger's publisher", **where)
            return
        last = self.last_matched.get(record.partition)
        if last is not None and record.position <= last[0]:
            self.audit.flag("topic-duplicate", f"position {record.position} again after position {last[0]} "
                            f"(offset {last[1]}): published twice, out of order, or forged", **where)
            return
        if record.position in self.unreadable:
            self.audit.flag("topic-bytes", "the store's event at this position no longer decodes; the topic still "
                            "holds the event as it was published", **where)
            return
        moved = self.misplaced.pop(record.position, None)
        if moved is not None:
            # The store's event now names a customer of another partition: the same event, altered
            # (its customer id, or its bytes with it) — not a deletion plus an insertion.
            self._compare(record, record.position, *moved)
            return
        self.extras.setdefault(record.position, []).append(record.offset)
        self.audit.flag("topic-extra", f"on the topic but the store has no event at position {record.position} "
                        "(in scope): deleted from the store, or a forged record", **where)

    def _missing(self, position: int, partition: int, name: str | None, event_id: bytes | None,
                 customer: bytes, state: bytes, digest: bytes) -> None:
        if position > self.published_head:
            if self.unpublished and self.unpublished[-1][1] == position - 1:
                self.unpublished[-1][1] = position
            else:
                self.unpublished.append([position, position])
            return
        # Its record may sit on another partition (the event's customer id was altered): decided when
        # that partition's records go past, or at the end.
        self.misplaced[position] = (customer, state, digest, name, event_id)
        self.missing_partition[position] = partition

    def _flag_missing(self, position: int, name: str | None, event_id: bytes | None) -> None:
        where: dict[str, Any] = {"position": position, "event_type": name, "event_id": event_id.decode() if event_id else None,
                 "topic": self.topic, "partition": self.missing_partition[position]}
        self.audit.flag("topic-missing", f"not on the events topic although position {self.published_head} is "
                        "published (the publisher publishes positions in order): the record was lost, or this "
                        "event was inserted into the store afterwards", **where)

    def _in_scope(self, record: _Record) -> bool:
        """Records of other customers (--customer) or before the time range are none of this audit's business."""
        if self.only_key is not None and record.key != self.only_key:
            return False
        return record.position is None or record.position >= self.first

    def extras_in(self, first: int, last: int) -> list[int]:
        return sorted(p for p in self.extras if first <= p <= last)

    def finish(self) -> None:
        """Records left after the store's last position in scope."""
        for partition in self.buffers:
            while True:
                record = self._peek(partition)
                if record is None:
                    break
                self.buffers[partition].popleft()
                if not self._in_scope(record):
                    continue
                if record.position is not None and record.position > self.last:
                    whole = self.audit.since is None and self.audit.until is None
                    if record.position > self.head and whole and len(self.beyond) < 10_000:
                        self.beyond.append(record)
                    continue
                self._extra(record)
        for position, (_customer, _state, _digest, name, event_id) in sorted(self.misplaced.items()):
            self._flag_missing(position, name, event_id)
        self.misplaced.clear()
        self.close()
        self.audit.report.topic_records = self.records
        for first, last in self.unpublished:
            span = f"position {first}" if first == last else f"positions {first}..{last}"
            self.audit.flag("topic-unpublished", f"{span} not on the events topic yet (the topic holds positions "
                            f"up to {self.published_head}): the publisher is behind", severity=WARNING,
                            position=first, topic=self.topic)

    def check_beyond_snapshot(self, ledger: CaseLedger) -> None:
        """Records published after the store snapshot must still match the store (read afresh)."""
        if not self.beyond:
            return
        with store_snapshot(ledger) as store:
            for record in self.beyond:
                row = store.row_at_or_after(record.position or 0)
                where: dict[str, Any] = {"topic": self.topic, "partition": record.partition, "offset": record.offset,
                         "position": record.position}
                if row is None or row[0] != record.position:
                    self.audit.flag("topic-extra", f"on the topic but the store has no event at position "
                                    f"{record.position} (its last is {store.head()}): deleted from the store's "
                                    "end, or a forged record", **where)
                elif bytes(row[4]) != record.value:
                    self.audit.flag("topic-bytes", "the record's bytes differ from the store's event at its "
                                    "position (published after the audit started)", **where)


def _position_of(record: Any) -> int | None:
    for key, value in record.headers or ():
        if key == "position":
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None


def _text(value: bytes | None) -> str:
    return "nothing" if value is None else repr(value.decode(errors="replace"))


# -- intake accounting ---------------------------------------------------------------------------------------


@dataclass
class _IntakePartition:
    partition: int
    start: int  # first offset accounted
    stop: int  # offsets below this are accounted
    tracked: int  # the worker's tracking position: offsets below it were consumed
    next: int = 0  # lowest offset without a matched outcome yet
    ahead: int = 0  # offsets [next, ahead) are in the window
    recent: deque[bytes] = field(default_factory=deque)


class _IntakeAccounting:
    """Matches intake outcomes, as they stream past in position order, with intake offsets."""

    def __init__(self, audit: _Audit, topic: str, books: dict[int, _IntakePartition]) -> None:
        self.audit = audit
        self.topic = topic
        self.books = books
        self.ahead: dict[bytes, tuple[int, int]] = {}  # causation → (partition, offset) expected
        self.done: dict[bytes, tuple[int, int, int]] = {}  # causation → (partition, offset, position)
        self.skipped: dict[bytes, tuple[int, int]] = {}  # passed over: no outcome seen (yet)
        self.outside: set[bytes] = set()  # offsets just before the range (time range)
        for book in books.values():
            book.next = book.ahead = book.start
            self._refill(book)
            for offset in range(max(0, book.start - INTAKE_WINDOW), book.start):
                self.outside.add(self._id(book.partition, offset))

    @classmethod
    def start(cls, audit: _Audit, tracking: dict[str, int]) -> _IntakeAccounting | None:
        prefix = "intake/"
        tracked: dict[str, dict[int, int]] = {}
        for name, offset in tracking.items():
            if name.startswith(prefix):
                topic, _, partition = name[len(prefix):].rpartition("/")
                if partition.isdigit():
                    tracked.setdefault(topic, {})[int(partition)] = offset
        kafka = audit.kafka
        if kafka is None:
            if not tracked:
                return None
            if len(tracked) > 1:
                audit.report.notes.append("intake tracking records of several topics: "
                                          + ", ".join(sorted(tracked)) + "; accounting the first (pass --kafka "
                                          "to choose the configured one)")
            topic = sorted(tracked)[0]
            positions = tracked[topic]
            books = {p: _IntakePartition(p, 0, n, n) for p, n in sorted(positions.items())}
            audit.report.notes.append(f"intake accounting from the tracking records of {topic} only: offsets "
                                      "not consumed yet are listed with --kafka")
            return cls(audit, topic, books)
        topic = kafka.intake_topic
        positions = tracked.get(topic, {})
        ends, starts, stops = _intake_offsets(kafka, audit.since, audit.until)
        books = {}
        for p, end in sorted(ends.items()):
            books[p] = _IntakePartition(p, starts.get(p, 0), stops.get(p, end), positions.get(p, 0))
            if positions.get(p, 0) > end:
                audit.flag("intake-tracking", f"the tracking position {positions[p]} is beyond the topic's end "
                           f"{end}: the intake topic was recreated or truncated", topic=topic, partition=p)
        for p in sorted(set(positions) - set(ends)):
            audit.flag("intake-tracking", f"tracking record for partition {p}, which the intake topic does not "
                       "have", topic=topic, partition=p)
        return cls(audit, topic, books)

    def _id(self, partition: int, offset: int) -> bytes:
        return str(IntakeSource(self.topic, partition, offset).event_id).encode()

    def _refill(self, book: _IntakePartition) -> None:
        until = min(book.stop, book.next + INTAKE_WINDOW)
        while book.ahead < until:
            self.ahead[self._id(book.partition, book.ahead)] = (book.partition, book.ahead)
            book.ahead += 1

    def outcome(self, causation: bytes, position: int, name: str, state: bytes, end: int, fast: bool,
                event_id: bytes) -> None:
        """An outcome event streams past."""
        audit = self.audit
        audit.report.intake_outcomes += 1
        hit = self.ahead.pop(causation, None)
        where: dict[str, Any] = {"position": position, "event_type": name, "event_id": event_id.decode(),
                                 "topic": self.topic}
        if hit is not None:
            partition, offset = hit
            book = self.books[partition]
            for skipped in range(book.next, offset):
                key = self._id(partition, skipped)
                self.ahead.pop(key, None)
                self.skipped[key] = (partition, skipped)
            book.next = offset + 1
            self.done[causation] = (partition, offset, position)
            book.recent.append(causation)
            if len(book.recent) > INTAKE_WINDOW:
                self.done.pop(book.recent.popleft(), None)
            self._refill(book)
            if offset >= book.tracked:
                audit.flag("intake-beyond-tracking", f"outcome of offset {offset}, but the tracking position is "
                           f"{book.tracked}: the worker's position was rolled back or the outcome forged",
                           partition=partition, offset=offset, **where)
            self._check_source(name, state, end, fast, partition, offset, where)
            return
        first = self.done.get(causation)
        if first is not None:
            partition, offset, at = first
            audit.flag("intake-doubled", f"a second outcome of intake offset {offset} (the first is at position "
                       f"{at}): recorded twice, or forged", partition=partition, offset=offset, **where)
            return
        late = self.skipped.pop(causation, None)
        if late is not None:
            partition, offset = late
            audit.flag("intake-out-of-order", f"outcome of offset {offset} recorded after outcomes of later "
                       "offsets of its partition: the worker applies offsets in order, so it was moved or forged",
                       partition=partition, offset=offset, **where)
            return
        if causation in self.outside:
            return
        source = audit.decoder.source(name, state, end, fast)
        if source is not None:
            topic, partition, offset = source
            if topic != self.topic:
                audit.flag("intake-unknown", f"outcome of a record of another intake topic ({topic}/{partition}/"
                           f"{offset})", severity=WARNING, **where)
                return
            known = self.books.get(partition)
            if known is not None and offset < known.start:
                return  # a record before the time range
            audit.flag("intake-unknown", f"outcome of intake offset {offset}, which is not on the intake topic "
                       "(or lies beyond the accounting window): forged, or the topic was truncated",
                       partition=partition, offset=offset, **where)
            return
        audit.flag("intake-unknown", f"causation id {causation.decode(errors='replace')} matches no intake offset "
                   f"expected next (up to {INTAKE_WINDOW} ahead per partition): an outcome of no intake record, "
                   "or of one whose outcomes were reordered", **where)

    def _check_source(self, name: str, state: bytes, end: int, fast: bool, partition: int, offset: int,
                      where: dict[str, Any]) -> None:
        if name != "IntakeRejected" and name not in _SOURCE_FIRST:
            return
        source = self.audit.decoder.source(name, state, end, fast)
        if source != (self.topic, partition, offset):
            self.audit.flag("intake-source", f"names intake record {source} but its causation id is that of "
                            f"{self.topic}/{partition}/{offset}", partition=partition, offset=offset, **where)

    def finish(self) -> None:
        report = self.audit.report
        missing: dict[int, list[int]] = {}
        for partition, offset in self.skipped.values():
            missing.setdefault(partition, []).append(offset)
        for book in self.books.values():
            report.intake_offsets += max(0, book.stop - book.start)
            missing.setdefault(book.partition, []).extend(range(book.next, book.stop))
        for partition, offsets in sorted(missing.items()):
            book = self.books[partition]
            consumed = [o for o in offsets if o < book.tracked]
            waiting = [o for o in offsets if o >= book.tracked]
            for first, last in _ranges(sorted(consumed)):
                span = f"offset {first}" if first == last else f"offsets {first}..{last}"
                self.audit.flag("intake-no-outcome", f"{span} consumed (tracking position {book.tracked}) but "
                                "without any outcome in the ledger: the record's events were deleted",
                                topic=self.topic, partition=partition, offset=first)
            for first, last in _ranges(sorted(waiting)):
                span = f"offset {first}" if first == last else f"offsets {first}..{last}"
                self.audit.flag("intake-unconsumed", f"{span} not consumed yet (tracking position "
                                f"{book.tracked}): the intake worker is behind or stopped", severity=WARNING,
                                topic=self.topic, partition=partition, offset=first)


def _ranges(values: list[int]) -> Iterator[tuple[int, int]]:
    """Consecutive runs of sorted integers as (first, last)."""
    start = previous = None
    for value in values:
        if start is None:
            start = previous = value
        elif value == previous + 1:  # type: ignore[operator]
            previous = value
        else:
            yield start, previous  # type: ignore[misc]
            start = previous = value
    if start is not None:
        yield start, previous  # type: ignore[misc]


def _intake_offsets(
    settings: KafkaSettings, since: datetime | None, until: datetime | None
) -> tuple[dict[int, int], dict[int, int], dict[int, int]]:
    """(end offsets, first offsets in range, stop offsets in range) of every intake partition."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(**settings.client_options(), group_id=None, enable_auto_commit=False)
    except KafkaError as error:
        raise BackendError(f"cannot reach Kafka at {settings.bootstrap_servers}: {error}") from error
    try:
        partitions = consumer.partitions_for_topic(settings.intake_topic)
        if not partitions:
            raise BackendError(f"intake topic {settings.intake_topic} does not exist on {settings.bootstrap_servers}")
        tps = [TopicPartition(settings.intake_topic, p) for p in sorted(partitions)]
        ends = {tp.partition: n for tp, n in consumer.end_offsets(tps).items()}
        starts = {tp.partition: n for tp, n in consumer.beginning_offsets(tps).items()}
        stops = dict(ends)
        for bound, target in ((since, starts), (until, stops)):
            if bound is None:
                continue
            found = consumer.offsets_for_times({tp: int(bound.timestamp() * 1000) for tp in tps})
            for tp, hit in found.items():
                target[tp.partition] = hit.offset if hit is not None else ends[tp.partition]
        return ends, starts, stops
    finally:
        consumer.close()

