"""The runner: reads a source from the last positions, applies batches, stores positions with them.

Exactly-once effect: a batch's rows and the projections' new positions are written in one
transaction of the view store. A runner killed at any moment leaves the views as of the last
committed batch, and the next runner reads on from exactly there. Positions are updated only
if they still hold what this runner read (``position = old``), so two runners of the same
projection can never both apply a batch: the second one's transaction fails and it reloads.

Rebuild: the projection is replayed from the beginning into ``<table>__rebuild`` tables in the
``rebuild`` slot (resumable), its indexes are built, and when it has caught up, one transaction
drops the live tables, renames the rebuilt ones and moves the positions over. Readers see the
old view until that commit and the new one after it; the live runner notices that its
positions moved and reloads them.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from caseledger.ledger.avro.codec import AvroEventCodec
from caseledger.ledger.errors import ConfigurationError, ConflictError
from caseledger.ledger.runtime.gc_pacing import NO_PACING, Pacing, SpacedCollections
from caseledger.projections.base import Handler, Projection, RowCache, Tx
from caseledger.projections.registry import command_name
from caseledger.projections.sources import EventSource
from caseledger.projections.views import POSITIONS, STATE, ViewStore, ViewTransaction

log = logging.getLogger("caseledger.projections")

LIVE, REBUILD = "live", "rebuild"
TOUCH_EVERY_S = 5.0  # how often a runner records in projection_state that it is alive
REBUILD_SUFFIX = "__rebuild"
def physical_name(table: str, slot: str) -> str:
    """The table a slot writes: the live table, or its ``__rebuild`` twin."""
    return table if slot == LIVE else f"{table}{REBUILD_SUFFIX}"


@dataclass
class ProjectionStatus:
    """Where a projection stands in one slot."""

    projection: str
    slot: str
    source: str
    version: int
    positions: dict[int, int]
    store_position: int
    updated_at: datetime | None


@dataclass
class BatchReport:
    """What one committed batch did."""

    records: int
    applied: int
    seconds: float
    events: list[Any] = field(default_factory=list)


@dataclass
class RunStats:
    """Totals of a run, for logs and progress bars."""

    records: int = 0
    applied: int = 0
    batches: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        return self.records / max(time.monotonic() - self.started, 1e-9)

    def line(self) -> str:
        return f"{self.records} events read ({self.rate:,.0f}/s), {self.applied} handled, {self.batches} batches"


class _Running:
    """A projection inside a runner: its handlers, its unit of work, its committed positions."""

    def __init__(self, projection: Projection, slot: str, cache: RowCache) -> None:
        self.projection = projection
        self.handlers: dict[str, Handler] = projection.handlers()
        self.tx = Tx(projection, physical={t.name: physical_name(t.name, slot) for t in projection.tables},
                     cache=cache)
        self.cache = cache
        self.positions: dict[int, int] = {}
        self.store_positions: dict[int, int] = {}


def read_status(views: ViewStore, projection: str | None = None, slot: str | None = None) -> list[ProjectionStatus]:
    """Every (projection, slot) the view store knows, with its positions."""
    views.ensure_runner_tables()
    where, params = [], []
    if projection is not None:
        where.append("projection = ?")
        params.append(projection)
    if slot is not None:
        where.append("slot = ?")
        params.append(slot)
    states = views.select(STATE, where=" AND ".join(where), params=params, order_by="projection, slot")
    positions = views.select(POSITIONS, where=" AND ".join(where), params=params)
    out = []
    for state in states:
        mine = [p for p in positions if (p["projection"], p["slot"]) == (state["projection"], state["slot"])]
        out.append(ProjectionStatus(
            projection=state["projection"], slot=state["slot"], source=state["source"], version=state["version"],
            positions={p["part"]: p["position"] for p in mine},
            store_position=max((p["store_position"] for p in mine), default=0),
            updated_at=state["updated_at"],
        ))
    return out


class ProjectionRunner:
    """Applies a source's events to one or more projections, batch by batch, exactly once."""

    def __init__(
        self,
        projections: Sequence[Projection],
        views: ViewStore,
        source: EventSource,
        *,
        codec: AvroEventCodec | None = None,
        slot: str = LIVE,
        batch_size: int = 1000,
        idle_s: float = 0.05,
        cache_rows: int = 20_000,
        keep_events: bool = False,
        follower: bool = True,
    ) -> None:
        if not projections:
            raise ConfigurationError("no projection to run")
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"a projection is named twice: {', '.join(names)}")
        self.views = views
        self.source = source
        self.codec = codec or AvroEventCodec()
        self.slot = slot
        self.batch_size = batch_size
        self.idle_s = idle_s
        self.keep_events = keep_events
        # A follower (a long-lived runner) records in projection_state that it is alive; a reader's catch-up
        # does not, so that readers leave a view a follower keeps to it (projections/catchup.py).
        self.follower = follower
        self.cache = RowCache(cache_rows)
        self.running = [_Running(p, slot, self.cache) for p in projections]
        # Event type → the projections that handle it, in order: one lookup per record.
        self._dispatch: dict[str, list[tuple[_Running, Tx, Handler]]] = {}
        for running in self.running:
            for event_type, handler in running.handlers.items():
                self._dispatch.setdefault(event_type, []).append((running, running.tx, handler))
        self.stats = RunStats()
        self._prepared = False
        self._touched: dict[str, float] = {}

    # -- setup ---------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create missing tables, check source and code version, load positions, seek the source."""
        for running in self.running:
            type(running.projection).check()
        self.views.ensure_runner_tables()
        now = datetime.now(UTC)
        with self.views.transaction() as tx:
            existing = self.views.table_names()
            wanted = {physical_name(t.name, self.slot) for r in self.running for t in r.projection.tables}
            if not wanted <= existing:
                # Runners started together create the tables one at a time; listed again once the one before
                # committed its own. Listed only before, a projection another runner had just made and recorded
                # looked recorded with its tables gone.
                tx.lock_schema()
                existing = self.views.table_names()
            for running in self.running:
                projection = running.projection
                state = tx.select_row(STATE, STATE.name, (projection.name, self.slot))
                if state is not None:
                    self._check_state(projection, state)
                    missing = [t.name for t in projection.tables if physical_name(t.name, self.slot) not in existing]
                    if missing:
                        raise ConfigurationError(
                            f"projection {projection.name} has positions but its tables {', '.join(missing)} are "
                            f"gone; rebuild it: caseledger projections rebuild {command_name(projection)} --restart"
                        )
                else:
                    self._check_no_orphan_tables(projection, existing)
                    tx.upsert_rows(STATE, STATE.name, [{
                        "projection": projection.name, "slot": self.slot, "source": self.source.name,
                        "version": projection.version, "updated_at": now if self.follower else None,
                    }])
                for table in projection.tables:
                    physical = physical_name(table.name, self.slot)
                    if physical not in existing:
                        tx.create_table(table, physical, indexes=self.slot == LIVE)
                rows = tx.select(POSITIONS, POSITIONS.name, "projection = ? AND slot = ?", (projection.name, self.slot))
                running.positions = {r["part"]: r["position"] for r in rows}
                running.store_positions = {r["part"]: r["store_position"] for r in rows}
        self.cache.clear()
        if self.source.shared:
            self.source.share(self._assigned, self._revoked)
        else:
            self.source.start(self._start_positions())
        self._prepared = True

    def _assigned(self, parts: list[int]) -> dict[int, int]:
        """The group handed this runner ``parts``: read each from where the views recorded it (another runner
        may have moved it since this one last held it)."""
        with self.views.transaction() as tx:
            for running in self.running:
                rows = tx.select(POSITIONS, POSITIONS.name, "projection = ? AND slot = ?",
                                 (running.projection.name, self.slot))
                found = {r["part"]: r for r in rows}
                for part in parts:
                    if part in found:
                        running.positions[part] = found[part]["position"]
                        running.store_positions[part] = found[part]["store_position"]
                    else:
                        running.positions.pop(part, None)
                        running.store_positions.pop(part, None)
        self.cache.clear()  # rows of these parts may have been written by another runner meanwhile
        log.info("projections %s assigned partitions %s", ", ".join(r.projection.name for r in self.running), sorted(parts))
        return {part: min(r.positions.get(part, 0) for r in self.running) for part in parts}

    def _revoked(self, parts: list[int]) -> None:
        """``parts`` went to another runner: their rows are its to write now."""
        self.cache.clear()
        log.info("projections %s gave up partitions %s", ", ".join(r.projection.name for r in self.running), sorted(parts))

    def _check_state(self, projection: Projection, state: Mapping[str, Any]) -> None:
        if state["source"] != self.source.name:
            raise ConfigurationError(
                f"projection {projection.name} follows {state['source']}, not {self.source.name}; to switch, "
                f"rebuild it from the other source: caseledger projections rebuild {command_name(projection)} "
                f"--source {self.source.name.split(':')[0]}"
            )
        if state["version"] != projection.version:
            raise ConfigurationError(
                f"the tables of projection {projection.name} were built by version {state['version']} of its "
                f"code, this is version {projection.version}: rebuild it (caseledger projections rebuild "
                f"{command_name(projection)}); the current tables stay readable meanwhile"
            )

    def _check_no_orphan_tables(self, projection: Projection, existing: set[str]) -> None:
        if self.slot != LIVE:
            return
        orphans = [t.name for t in projection.tables if t.name in existing]
        if orphans:
            raise ConfigurationError(
                f"tables {', '.join(orphans)} exist but no runner built them for projection {projection.name}; "
                "drop them or rename the projection's tables"
            )

    def _start_positions(self) -> dict[int, int]:
        parts = set().union(*(r.positions for r in self.running))
        start: dict[int, int] = {}
        for part in parts:
            start[part] = min(r.positions.get(part, 0) for r in self.running)
        return start

    # -- running -------------------------------------------------------------------------------------

    def step(self) -> BatchReport | None:
        """Read one batch and apply it in one transaction; None when there was nothing to read."""
        if not self._prepared:
            self.prepare()
        records = self.source.fetch(self.batch_size, self.idle_s)
        if not records:
            self._skip_markers()
            return None
        started = time.perf_counter()
        applied = 0
        decode = self.codec.decode
        dispatch = self._dispatch
        kept: list[Any] = []
        try:
            with self.views.transaction() as conn:
                for running in self.running:
                    running.tx.begin(conn)
                for record in records:
                    targets = dispatch.get(record.event_type)
                    if targets is None:
                        continue
                    event = None
                    part, next_position = record.part, record.next_position
                    for running, tx, handler in targets:
                        if next_position <= running.positions.get(part, 0):
                            continue  # this projection applied it in an earlier batch
                        if event is None:
                            event = decode(record.event_type, record.data)
                            if self.keep_events:
                                kept.append(event)
                        tx.position = record.store_position
                        handler(tx, event)
                        applied += 1
                new_positions = self._advance(records)
                # Positions first: a competing runner then waits or fails here, before writing rows.
                for running, (positions, store_positions) in zip(self.running, new_positions, strict=True):
                    self._store_positions(conn, running, positions, store_positions)
                for running in self.running:
                    running.tx.flush()
        except BaseException:
            # The transaction rolled back: the cache may hold rows it never committed, and the
            # source has read past the committed positions.
            self.cache.clear()
            self._prepared = False
            raise
        for running, (positions, store_positions) in zip(self.running, new_positions, strict=True):
            running.positions = positions
            running.store_positions = store_positions
        self.cache.trim()
        seconds = time.perf_counter() - started
        self.stats.records += len(records)
        self.stats.applied += applied
        self.stats.batches += 1
        return BatchReport(records=len(records), applied=applied, seconds=seconds, events=kept)

    def _skip_markers(self) -> None:
        """Store positions the source moved past without records (Kafka transaction markers)."""
        new_positions = self._advance([])
        if all(p == r.positions for r, (p, _) in zip(self.running, new_positions, strict=True)):
            return
        try:
            with self.views.transaction() as conn:
                for running, (positions, store_positions) in zip(self.running, new_positions, strict=True):
                    self._store_positions(conn, running, positions, store_positions)
        except BaseException:
            self.cache.clear()
            self._prepared = False
            raise
        for running, (positions, store_positions) in zip(self.running, new_positions, strict=True):
            running.positions = positions
            running.store_positions = store_positions

    def _advance(self, records: Sequence[Any]) -> list[tuple[dict[int, int], dict[int, int]]]:
        last: dict[int, tuple[int, int]] = {}
        for record in records:
            last[record.part] = (record.next_position, record.store_position)
        consumed = self.source.consumed_positions()
        out = []
        for running in self.running:
            positions = dict(running.positions)
            store_positions = dict(running.store_positions)
            for part, (position, store_position) in last.items():
                if position > positions.get(part, 0):
                    positions[part] = position
                    store_positions[part] = store_position
            for part, position in consumed.items():  # past transaction markers, never past a record
                if position > positions.get(part, 0):
                    positions[part] = position
                    store_positions.setdefault(part, 0)
            out.append((positions, store_positions))
        return out

    def _store_positions(
        self, conn: ViewTransaction, running: _Running, positions: dict[int, int], store_positions: dict[int, int]
    ) -> None:
        name = running.projection.name
        if self.follower and time.monotonic() - self._touched.get(name, 0.0) >= TOUCH_EVERY_S:
            # At most every few seconds: parallel runners must not queue on this one row.
            self._touched[name] = time.monotonic()
            conn.execute(
                f"UPDATE {STATE.name} SET updated_at = ? WHERE projection = ? AND slot = ?",
                (conn.param(datetime.now(UTC)), name, self.slot),
            )
        for part, position in positions.items():
            old = running.positions.get(part)
            if old == position:
                continue
            if old is None:
                changed = conn.execute(
                    f"INSERT INTO {POSITIONS.name} (projection, slot, part, position, store_position) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (projection, slot, part) DO NOTHING",
                    (name, self.slot, part, position, store_positions.get(part, 0)),
                )
            else:
                changed = conn.execute(
                    f"UPDATE {POSITIONS.name} SET position = ?, store_position = ? "
                    "WHERE projection = ? AND slot = ? AND part = ? AND position = ?",
                    (position, store_positions.get(part, 0), name, self.slot, part, old),
                )
            if changed != 1:
                raise ConflictError(
                    f"projection {name} ({self.slot}) was moved by another runner or a rebuild; reloading"
                )

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        until_caught_up: bool = False,
        on_batch: Callable[[BatchReport], None] | None = None,
        pacer: Pacing = NO_PACING,
    ) -> RunStats:
        """Apply batches until ``stop`` is set (or, with ``until_caught_up``, until the source's end).

        A follower reports each batch to the process's ``pacer``: no collection pause per batch.

        When a rebuild swapped new tables in or another runner moved the positions, the runner
        reloads them and goes on (or stops, if its code is not the version that built them).
        """
        stop = stop or threading.Event()
        if not self._prepared:
            self.prepare()
        target = self.source.end_positions() if until_caught_up else None
        collections = SpacedCollections(self.stats.records)
        self._run(stop, target, collections, pacer, on_batch)
        return self.stats

    def _run(
        self, stop: threading.Event, target: Mapping[int, int] | None, collections: SpacedCollections,
        pacer: Pacing,
        on_batch: Callable[[BatchReport], None] | None,
    ) -> None:
        while not stop.is_set():
            if not gc.isenabled():
                collections.after(self.stats.records)  # see collecting_between_batches
            if target is not None and self._reached(target):
                target = self.source.end_positions()
                if self._reached(target):
                    break
            try:
                report = self.step()
            except ConflictError as error:
                log.warning("%s", error)
                self.prepare()
                continue
            if report is not None:
                if on_batch is not None:
                    on_batch(report)
                pacer.after_batch()

    def _reached(self, target: Mapping[int, int]) -> bool:
        consumed = self.source.consumed_positions() or self._start_positions()
        return all(consumed.get(part, 0) >= end for part, end in target.items())

    def lag(self) -> int:
        """Records left to read before every projection of this runner is caught up."""
        if not self._prepared:
            self.prepare()
        return self.source.lag(self._start_positions())

    def positions(self, name: str) -> dict[int, int]:
        for running in self.running:
            if running.projection.name == name:
                return dict(running.positions)
        raise KeyError(name)


# -- rebuild -------------------------------------------------------------------------------------------


@contextmanager
def collecting_between_batches() -> Iterator[None]:
    """Hold off Python's automatic garbage collection; runners collect themselves (SpacedCollections).

    A replay keeps thousands of rows, events and cached rows alive across collections, which
    the collector then traverses again and again (about a quarter of a rebuild's CPU), while
    the replay makes almost no reference cycles. For rebuilds only: a batch job of its own.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class RebuildResult:
    """How a rebuild ended."""

    projections: list[str]
    records: int
    seconds: float
    swapped: bool

    @property
    def rate(self) -> float:
        return self.records / max(self.seconds, 1e-9)


def discard_rebuild(views: ViewStore, projection: Projection) -> None:
    """Drop a projection's rebuild tables and forget the rebuild's positions."""
    views.ensure_runner_tables()
    with views.transaction() as tx:
        for table in projection.tables:
            tx.drop_table(physical_name(table.name, REBUILD))
        for spec in (STATE, POSITIONS):
            tx.execute(f"DELETE FROM {spec.name} WHERE projection = ? AND slot = ?", (projection.name, REBUILD))


def rebuild(
    projections: Projection | Sequence[Projection],
    views: ViewStore,
    source: EventSource,
    *,
    codec: AvroEventCodec | None = None,
    batch_size: int = 5000,
    restart: bool = False,
    stop: threading.Event | None = None,
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> RebuildResult:
    """Replay everything into fresh tables and swap them in atomically once caught up.

    Several projections are rebuilt in one pass over the source (each event decoded once) and
    swapped in together. An interrupted rebuild (``stop``, a crash) is resumed by the next call
    with the same source and code versions, unless ``restart``.
    """
    chosen = [projections] if isinstance(projections, Projection) else list(projections)
    stop = stop or threading.Event()
    started = time.monotonic()
    for projection in chosen:
        previous = read_status(views, projection.name, REBUILD)
        stale = previous and (previous[0].source != source.name or previous[0].version != projection.version)
        if restart or stale:
            discard_rebuild(views, projection)
    runner = ProjectionRunner(chosen, views, source, codec=codec, slot=REBUILD, batch_size=batch_size, idle_s=0.2)
    runner.prepare()
    if on_start is not None:
        on_start(runner.lag())
    with collecting_between_batches():
        runner.run(stop, until_caught_up=True, on_batch=on_batch)
    names = [p.name for p in chosen]
    if stop.is_set():
        return RebuildResult(names, runner.stats.records, time.monotonic() - started, swapped=False)
    with views.transaction() as tx:
        for projection in chosen:
            for table in projection.tables:
                tx.create_indexes(table, physical_name(table.name, REBUILD))
    with collecting_between_batches():
        runner.run(stop, until_caught_up=True, on_batch=on_batch)  # what arrived while indexing
    swap_in(views, chosen)
    return RebuildResult(names, runner.stats.records, time.monotonic() - started, swapped=True)


def swap_in(views: ViewStore, projections: Sequence[Projection]) -> None:
    """One transaction: the rebuilt tables and positions replace the live ones."""
    with views.transaction() as tx:
        for projection in projections:
            for table in projection.tables:
                tx.drop_table(table.name)
                tx.rename_table(physical_name(table.name, REBUILD), table.name)
            for spec in (STATE, POSITIONS):
                tx.execute(f"DELETE FROM {spec.name} WHERE projection = ? AND slot = ?", (projection.name, LIVE))
                tx.execute(f"UPDATE {spec.name} SET slot = ? WHERE projection = ? AND slot = ?",
                           (LIVE, projection.name, REBUILD))
