"""Per-aggregate checks: row identity, chains, versions, positions and recorded times.

Each row of the events table must hold the bytes of the event it names (``type-mismatch``,
``row-mismatch``); each event must link to the previous stored event of its aggregate
(``chain-broken``) with the next version (``version-gap``), be recorded no earlier than that
event less the clock tolerance (``backdated``) and not long before an earlier position
(``recorded-out-of-order``, a warning); positions must not skip (``position-gap``).

The conditions are tested inline in verify's loop over the log (the hot path: ~130k events/s);
``ChainCheck`` keeps the per-aggregate map and names what the loop found.

The map holds the heads of the ``CHAIN_HEADS`` aggregates written to most recently, not of every
aggregate: between pages the others are let go (``let_go``), and before a page the heads of its
aggregates that were let go are read back from the store (``recall``: each one's last row before the
page, one query for the page, in the same snapshot). Which aggregates were let go is kept in a Bloom
filter of constant size (``LetGo``): an aggregate it has never seen is new, and costs no query (on a
full ledger most are new); one it may have seen is looked up. An aggregate's events are close
together in positions, so most pages recall few; verify's memory does not grow with the number of
aggregates, and it finds what it would with every head in memory (a recalled head is the row the
loop hashed).

PostgreSQL positions can skip
=============================
Measured on PostgreSQL 16 (pgserver) with eventsourcing 9.5: a save that fails with an
optimistic-concurrency conflict (``ConflictError``) consumes one ``notification_id`` per row it
attempted up to and including the conflicting one, although nothing is committed; the next
committed event then leaves a gap. SQLite never skips (a rolled-back insert frees its rowid). So
on PostgreSQL a position gap alone is a ``position-gap`` *warning* explaining this; with
``--kafka`` a gap at a published position is settled: a record on the topic at that position
means an event was deleted (error), none means the number was never committed.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from itertools import islice
from operator import itemgetter
from typing import TYPE_CHECKING, Any
from uuid import UUID

from caseledger.ledger.audit.report import WARNING, AuditReport, AuditScope
from caseledger.ledger.avro.codec import HEADER_SIZE, MAGIC
from caseledger.ledger.domain.catalog import name_of_topic

if TYPE_CHECKING:
    from collections.abc import Iterable

    from caseledger.ledger.audit.topic import EventsTopicComparison
    from caseledger.ledger.avro.envelope import AvroEnvelopeDecoder
    from caseledger.ledger.store_ports import Row, StoreSnapshot

__all__ = ["CHAIN_HEADS", "COMMIT_TOLERANCE", "COMMIT_TOLERANCE_US", "DEFAULT_CLOCK_TOLERANCE", "ChainCheck",
           "LetGo", "micros_of"]

CHAIN_HEADS = 50_000
"""Aggregates whose head (last version, hash, recorded time) verify keeps in memory (~250 bytes each)."""

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

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros_of(value: datetime) -> int:
    """Microseconds since the epoch (the envelope's ``recorded_at``)."""
    return (value.astimezone(UTC) - _EPOCH) // _MICROSECOND


def _when(micros: int) -> str:
    return (_EPOCH + timedelta(microseconds=micros)).isoformat()


def _dashed(hex32: bytes) -> str:
    try:
        return str(UUID(hex32.decode()))
    except ValueError:
        return hex32.decode(errors="replace")


def _hex(value: bytes | None) -> str:
    return "nothing" if value is None else value.hex()


class ChainCheck:
    """The last version, hash and recorded time of every aggregate, the position gaps, and their findings."""

    def __init__(self, store: StoreSnapshot, report: AuditReport, scope: AuditScope, decoder: AvroEnvelopeDecoder,
                 *, held: int = CHAIN_HEADS) -> None:
        self.store = store
        self.report = report
        self.scope = scope
        self.decoder = decoder
        # One customer's aggregates are few, and the loop skips the other customers' rows, which a recall
        # would have to skip too: a customer's audit keeps every head.
        self.held = held if scope.customer_id is None else None
        self.chains: dict[bytes, tuple[int, bytes, int]] = {}  # aggregate → (version, hash, recorded µs), by recency
        self.let_go_ones: LetGo | None = None
        self.aggregates = 0  # aggregates seen in scope (their first event in scope passed)
        self.gaps: list[tuple[int, int]] = []

    # -- the heads held ---------------------------------------------------------------------------------------

    def let_go(self) -> None:
        """Between pages: keep the heads of the ``held`` aggregates written to most recently."""
        chains = self.chains
        if self.held is None or len(chains) <= self.held:
            return
        if self.let_go_ones is None:
            self.let_go_ones = LetGo()
        gone = list(islice(chains, len(chains) - self.held))
        self.let_go_ones.add(gone)
        for oid in gone:
            del chains[oid]

    def recall(self, page: list[Row], first: int) -> None:
        """Before a page: read back the heads of its aggregates that were let go (their last row in scope)."""
        let_go = self.let_go_ones
        if let_go is None:
            return
        chains = self.chains
        absent = let_go.among(oid for oid in set(map(itemgetter(1), page)) if oid not in chains)
        if not absent:
            return
        by_fp = self.decoder.by_fingerprint
        for _position, oid, version, _topic, state in self.store.heads_before(absent, first - 1, page[0][0]):
            state = bytes(state)
            recorded = 0  # bytes that do not decode: the loop flagged them, and kept no time either
            if state[:2] == MAGIC and by_fp.get(state[2:HEADER_SIZE]) is not None:
                try:
                    recorded = self.decoder.envelope(state)[5]
                except Exception:  # corrupt bytes raise many types
                    recorded = 0
            chains[bytes(oid)] = (version, hashlib.sha256(state).digest(), recorded)

    # -- row identity ---------------------------------------------------------------------------------------

    def undecodable(self, position: int, oid: bytes, version: int, topic_name: str, state: bytes, why: str) -> None:
        """Bytes that are no event of a known schema; the chain goes on from their hash."""
        last = self.chains.pop(oid, None)
        if last is None:
            self.aggregates += 1
        self.chains[oid] = (version, hashlib.sha256(state).digest(), last[2] if last else 0)
        self.report.flag("undecodable", f"the stored bytes do not decode ({why}): the event was altered",
                         position=position, event_type=name_of_topic(topic_name), aggregate_id=_dashed(oid),
                         version=version)

    def type_mismatch(self, position: int, oid: bytes, version: int, topic_name: str, name: str,
                      event_id: bytes) -> None:
        """The row's event type is not the one its bytes were written as."""
        self.report.flag("type-mismatch", f"the row is a {name_of_topic(topic_name)} but its bytes were "
                         f"written with the {name} schema", position=position, event_type=name,
                         event_id=event_id.decode(), aggregate_id=_dashed(oid), version=version)

    def row_mismatch(self, position: int, oid: bytes, version: int, env_version: int, aggregate: bytes,
                     name: str, event_id: bytes) -> None:
        """The row's bytes are another aggregate's or another version's event."""
        self.report.flag("row-mismatch", f"the row is version {version} of aggregate {_dashed(oid)} but "
                         f"its bytes are version {env_version} of aggregate {aggregate.decode()} (event "
                         f"{event_id.decode()}): bytes were moved between rows", position=position,
                         event_type=name, event_id=event_id.decode(), aggregate_id=_dashed(oid),
                         version=version)

    # -- chains and versions -------------------------------------------------------------------------------

    def chain_start(self, position: int, oid: bytes, version: int, prev: bytes | None, digest: bytes, name: str,
                    event_id: bytes) -> None:
        """The first event of an aggregate in scope: version 1 with no link, or (time range) linked to the
        stored event before it."""
        where: dict[str, Any] = {"position": position, "event_type": name, "event_id": event_id.decode(),
                 "aggregate_id": _dashed(oid), "version": version}
        if version == 1:
            self.report.flag("chain-broken", f"version 1 of an aggregate links to {_hex(prev)}; a first event "
                             "links to nothing: forged or altered", **where)
            return
        if self.scope.ranged or self.scope.customer_id is not None:
            before = self.store.event(oid, version - 1)
            if before is None:
                self.report.flag("version-gap", f"version {version - 1} of the aggregate is not in the store",
                                 **where)
            elif hashlib.sha256(bytes(before[4])).digest() != prev:
                self.report.flag("chain-broken", f"previous_hash is {_hex(prev)} but version {version - 1} "
                                 f"(position {before[0]}) hashes to {hashlib.sha256(bytes(before[4])).hexdigest()}",
                                 **where)
            return
        self.report.flag("version-gap", f"the aggregate's first event in the store is version {version}: versions "
                         f"1..{version - 1} are missing (deleted)", **where)

    def chain_broken(self, position: int, oid: bytes, version: int, prev: bytes | None, last_hash: bytes,
                     name: str, event_id: bytes) -> None:
        """``previous_hash`` is not the hash of the aggregate's previous stored event."""
        before = self.store.event(oid, version - 1)
        at = f" (position {before[0]})" if before is not None else ""
        self.report.flag("chain-broken", f"previous_hash is {_hex(prev)} but version {version - 1}{at} of the "
                         f"aggregate hashes to {last_hash.hex()}: that event was altered or replaced, or this one "
                         "forged", position=position, event_type=name, event_id=event_id.decode(),
                         aggregate_id=_dashed(oid), version=version)

    def version_gap(self, position: int, oid: bytes, version: int, last_version: int, name: str,
                    event_id: bytes) -> None:
        """A version that does not follow the aggregate's previous one in position order."""
        if version > last_version + 1:
            what = (f"version {last_version + 1} is missing" if version == last_version + 2
                    else f"versions {last_version + 1}..{version - 1} are missing")
            message = f"{what} (deleted) between position-ordered events of the aggregate"
        else:
            message = (f"version {version} comes after version {last_version} in position order: the "
                       "aggregate's events were reordered or moved")
        self.report.flag("version-gap", message, position=position, event_type=name, event_id=event_id.decode(),
                         aggregate_id=_dashed(oid), version=version)

    # -- recorded times ------------------------------------------------------------------------------------

    def backdated(self, position: int, oid: bytes, version: int, recorded: int, last_recorded: int, name: str,
                  event_id: bytes) -> None:
        """Recorded before the aggregate's previous event by more than the clock tolerance."""
        self.report.flag("backdated", f"recorded at {_when(recorded)}, before the aggregate's previous "
                         f"event (recorded at {_when(last_recorded)}) by more than the clock tolerance: "
                         "an event dated into the aggregate's past was added later", position=position,
                         event_type=name, event_id=event_id.decode(), aggregate_id=_dashed(oid),
                         version=version)

    def recorded_out_of_order(self, position: int, oid: bytes, version: int, recorded: int, latest: int,
                              latest_at: int, name: str, event_id: bytes) -> None:
        """Recorded more than ``COMMIT_TOLERANCE`` before an earlier position (a warning)."""
        self.report.flag("recorded-out-of-order", f"recorded at {_when(recorded)}, more than "
                         f"{COMMIT_TOLERANCE} before position {latest_at} (recorded at {_when(latest)}); "
                         "positions follow commits, so this event was inserted long after it claims",
                         severity=WARNING, position=position, event_type=name, event_id=event_id.decode(),
                         aggregate_id=_dashed(oid), version=version)

    # -- positions -----------------------------------------------------------------------------------------

    def gap(self, first: int, last: int) -> None:
        """Positions ``first..last`` are absent (settled at the end, when the topic has been read)."""
        self.gaps.append((first, last))

    def settle_gaps(self, topic: EventsTopicComparison | None) -> None:
        """Gaps are errors on SQLite; on PostgreSQL warnings unless the topic settles them."""
        for first, last in self.gaps:
            span = f"position {first}" if first == last else f"positions {first}..{last}"
            on_topic = topic.extras_in(first, last) if topic is not None else []
            if on_topic:
                self.report.flag("position-gap", f"{span} absent from the store, but the events topic holds an "
                                 f"event at {', '.join(map(str, on_topic[:10]))}: events were deleted from the "
                                 "store", position=first)
            elif not self.store.positions_may_skip:
                self.report.flag("position-gap", f"{span} absent: SQLite never skips a position (a rolled-back "
                                 "insert frees its rowid), so events were deleted there", position=first)
            elif topic is not None and topic.published_head >= last:
                self.report.flag("position-gap", f"{span} absent and never published: a PostgreSQL sequence "
                                 "number consumed by a rolled-back insert (optimistic-concurrency conflict)",
                                 severity=WARNING, position=first)
            else:
                self.report.flag("position-gap", f"{span} absent: PostgreSQL consumes one sequence number per row "
                                 "a failed insert attempted (a ConflictError leaves such gaps); no chain misses an "
                                 "event there, but only --kafka (or a seal) can prove nothing was deleted at the "
                                 "end of an aggregate", severity=WARNING, position=first)


class LetGo:
    """The aggregates whose chain heads were let go: a Bloom filter (two bits each, 4 MB), never a false "no".

    A false "yes" (about 3 % at three million aggregates let go) costs a lookup that finds nothing.
    """

    BITS = 1 << 25

    def __init__(self) -> None:
        self.bits = bytearray(self.BITS >> 3)

    def add(self, aggregates: list[bytes]) -> None:
        bits, mask = self.bits, self.BITS - 1
        for h in map(hash, aggregates):
            a = h & mask
            bits[a >> 3] |= 1 << (a & 7)
            a = (h >> 25) & mask
            bits[a >> 3] |= 1 << (a & 7)

    def among(self, aggregates: Iterable[bytes]) -> list[bytes]:
        """Those of ``aggregates`` that may have been let go."""
        bits, mask = self.bits, self.BITS - 1
        found = []
        for aggregate in aggregates:
            h = hash(aggregate)
            a, b = h & mask, (h >> 25) & mask
            if bits[a >> 3] >> (a & 7) & 1 and bits[b >> 3] >> (b & 7) & 1:
                found.append(aggregate)
        return found
