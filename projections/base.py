"""What a projection is: a name, its tables, one handler per event type.

A projection never opens a connection, starts a transaction or stores a position: the runner
(:mod:`projections.runner`) does all of that and hands each handler a :class:`Tx`, the unit
of work of the current batch. Handlers read and write rows through it; the rows are kept in
memory during the batch and written in bulk when the batch commits, together with the new
position of the projection, so a batch is applied completely or not at all.

A projection's tables (their columns, key and kind: rows, counters or log) are described in
:mod:`projections.tables`.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from operator import itemgetter
from typing import TYPE_CHECKING, Any, ClassVar

from caseledger.ledger.domain.catalog import EVENT_TYPES
from caseledger.ledger.errors import ConfigurationError
from caseledger.projections.tables import COUNTERS, LOG, ROWS, Table

if TYPE_CHECKING:
    from caseledger.projections.views import ViewTransaction

Handler = Callable[["Tx", Any], None]


class Projection:
    """Base class of every projection: subclass it, name it, list its tables, write handlers.

    A handler is a method ``on_<EventType>(self, tx, event)``; ``on_event(self, tx, event)``, if
    defined, receives every event that has no handler of its own. ``before_flush(self, table, row)``,
    if defined, is called once per changed row of a rows table when the batch is written: the
    place for columns computed from others (handlers must then not read those columns). ``event`` is the domain event
    decoded from its Avro bytes — the same object whether it came from the store or from Kafka —
    and must not be changed. ``tx.position`` is the event's position in the store's total order.

    Raise ``version`` whenever a handler or a table changes: the runner then refuses to apply the
    new code to tables the old code built, and ``caseledger projections rebuild NAME`` builds new
    tables beside the old ones and swaps them in when caught up.
    """

    name: ClassVar[str] = ""
    tables: ClassVar[tuple[Table, ...]] = ()
    version: ClassVar[int] = 1

    @classmethod
    def description(cls) -> str:
        """The first line of the class docstring."""
        return (inspect.getdoc(cls) or "").strip().splitlines()[0] if cls.__doc__ else ""

    def handlers(self) -> dict[str, Handler]:
        """Event type name → bound handler; a handler named after no event type is an error."""
        found: dict[str, Handler] = {}
        for attr in dir(type(self)):
            if not attr.startswith("on_") or attr == "on_event":
                continue
            event_name = attr[3:]
            if event_name not in EVENT_TYPES:
                raise ConfigurationError(
                    f"{type(self).__name__}.{attr}: there is no event type {event_name!r}; "
                    f"known event types: {', '.join(sorted(EVENT_TYPES))}"
                )
            found[event_name] = getattr(self, attr)
        catch_all = getattr(self, "on_event", None)
        if catch_all is not None:
            for event_name in EVENT_TYPES:
                found.setdefault(event_name, catch_all)
        return found

    def table(self, name: str) -> Table:
        for table in self.tables:
            if table.name == name:
                return table
        raise ConfigurationError(f"projection {self.name} has no table {name!r}")

    @classmethod
    def check(cls) -> None:
        """Refuse a projection that cannot be run (no name, no tables, reused table names)."""
        if not cls.name or not cls.name.isidentifier() or "__" in cls.name:
            raise ConfigurationError(f"{cls.__name__}: set `name` to a lower_case identifier without '__'")
        if not cls.tables:
            raise ConfigurationError(f"projection {cls.name} declares no tables")
        names = [t.name for t in cls.tables]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"projection {cls.name} declares a table twice")


_ABSENT = object()


class RowCache:
    """Rows of ROWS tables as last committed, kept between batches (bounded, least recently used out).

    Safe because the runner is the only writer of its tables; it is dropped whenever a batch
    fails, since the database then holds something else than what was cached.
    """

    def __init__(self, max_rows: int = 20_000) -> None:
        self.max_rows = max_rows
        self._rows: OrderedDict[tuple[str, tuple[Any, ...]], dict[str, Any] | None] = OrderedDict()

    def get(self, key: tuple[str, tuple[Any, ...]]) -> Any:
        row = self._rows.get(key, _ABSENT)
        if row is not _ABSENT:
            self._rows.move_to_end(key)
        return row

    def set(self, key: tuple[str, tuple[Any, ...]], row: dict[str, Any] | None) -> None:
        self._rows[key] = row
        self._rows.move_to_end(key)

    def trim(self) -> None:
        while len(self._rows) > self.max_rows:
            self._rows.popitem(last=False)

    def clear(self) -> None:
        self._rows.clear()

    def __len__(self) -> int:
        return len(self._rows)


class Tx:
    """The unit of work handlers write through: one projection, one batch, one transaction.

    Reads see the batch's own writes. Nothing reaches the database before :meth:`flush`, which
    the runner calls once per batch inside the transaction that also stores the new position.
    """

    def __init__(
        self,
        projection: Projection,
        *,
        physical: Mapping[str, str],
        cache: RowCache,
    ) -> None:
        self.projection = projection
        self.position = 0
        self._tables = {t.name: t for t in projection.tables}
        self._row_keys = {t.name: _key_of(t) for t in projection.tables if t.kind == ROWS}
        self._physical = dict(physical)
        self._cache = cache
        self._conn: ViewTransaction | None = None
        self._dirty: dict[str, dict[tuple[Any, ...], dict[str, Any] | None]] = {}
        self._counters: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
        self._log: dict[str, list[dict[str, Any]]] = {}

    def begin(self, conn: ViewTransaction) -> None:
        """Start a batch on an open transaction."""
        self._conn = conn
        self._dirty.clear()
        self._counters.clear()
        self._log.clear()

    # -- ROWS tables -----------------------------------------------------------------------------------

    def get(self, table: str, *key: Any) -> dict[str, Any] | None:
        """The row with this key (values in key-column order), or None.

        The dict returned is the row itself: after changing it, ``put`` it to save the change.
        """
        dirty = self._dirty.get(table)
        if dirty is not None:
            row = dirty.get(key, _ABSENT)
            if row is not _ABSENT:
                return row  # type: ignore[return-value]
        cached = self._cache.get((table, key))
        if cached is not _ABSENT:
            return cached  # type: ignore[no-any-return]
        spec = self._rows_table(table)
        assert self._conn is not None, "Tx used outside a batch"
        row = self._conn.select_row(spec, self._physical[table], key)
        self._cache.set((table, key), row)
        return row

    def put(self, table: str, row: dict[str, Any]) -> None:
        """Insert the row, or replace the row with the same key; every column must be given."""
        key_of = self._row_keys.get(table)
        if key_of is None:
            self._rows_table(table)  # raises, naming the rows tables
            return
        dirty = self._dirty.get(table)
        if dirty is None:
            dirty = self._dirty[table] = {}
        dirty[key_of(row)] = row

    def delete(self, table: str, *key: Any) -> None:
        """Delete the row with this key, if there is one."""
        self._rows_table(table)
        self._dirty.setdefault(table, {})[key] = None

    # -- COUNTERS and LOG tables ------------------------------------------------------------------------

    def add(self, table: str, *key: Any, **amounts: float) -> None:
        """Add ``amounts`` to the counters of the row with this key (created at zero)."""
        spec = self._tables.get(table)
        if spec is None or spec.kind != COUNTERS:
            raise ConfigurationError(f"tx.add needs a counters table; {table!r} is not one of {self._names(COUNTERS)}")
        pending = self._counters.setdefault(table, {})
        row = pending.get(key)
        if row is None:
            row = pending[key] = {c: 0 for c in spec.value_columns}
        for column, amount in amounts.items():
            row[column] += amount

    def append(self, table: str, row: dict[str, Any]) -> None:
        """Insert a row into a log table (rows there are never changed)."""
        spec = self._tables.get(table)
        if spec is None or spec.kind != LOG:
            raise ConfigurationError(f"tx.append needs a log table; {table!r} is not one of {self._names(LOG)}")
        self._log.setdefault(table, []).append(row)

    # -- reading with SQL ------------------------------------------------------------------------------

    def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Rows of a read-only SQL query; write table names as ``{table}``, parameters as ``?``.

        The batch's pending writes are flushed first, so the query sees them.
        """
        assert self._conn is not None, "Tx used outside a batch"
        self.flush()
        return self._conn.fetch(sql.format(**self._physical), params)

    # -- the runner's side -----------------------------------------------------------------------------

    def flush(self) -> int:
        """Write the batch's changes in bulk; returns how many rows were written."""
        conn = self._conn
        assert conn is not None
        written = 0
        before_flush = getattr(self.projection, "before_flush", None)
        for name, rows in self._dirty.items():
            spec = self._tables[name]
            physical = self._physical[name]
            upserts = [row for row in rows.values() if row is not None]
            if before_flush is not None:
                for row in upserts:
                    before_flush(name, row)
            deletes = [key for key, row in rows.items() if row is None]
            if deletes:
                conn.delete_rows(spec, physical, sorted(deletes))
            if upserts:
                conn.upsert_rows(spec, physical, sorted(upserts, key=_key_of(spec)))
            for key, kept in rows.items():
                self._cache.set((name, key), kept)
            written += len(rows)
        for name, counters in self._counters.items():
            spec = self._tables[name]
            rows_out = [dict(zip(spec.key, key, strict=True), **values) for key, values in sorted(counters.items())]
            conn.add_to_counters(spec, self._physical[name], rows_out)
            written += len(rows_out)
        for name, log_rows in self._log.items():
            conn.insert_rows(self._tables[name], self._physical[name], log_rows)
            written += len(log_rows)
        self._dirty.clear()
        self._counters.clear()
        self._log.clear()
        return written

    def _rows_table(self, table: str) -> Table:
        spec = self._tables.get(table)
        if spec is None or spec.kind != ROWS:
            raise ConfigurationError(
                f"get, put and delete need a rows table; {table!r} is not one of {self._names(ROWS)}"
            )
        return spec

    def _names(self, kind: str) -> str:
        names = [t.name for t in self._tables.values() if t.kind == kind]
        return f"{self.projection.name}'s {kind} tables ({', '.join(names) or 'none'})"


def _key_of(spec: Table) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A fast function from a row to its key tuple."""
    if len(spec.key) == 1:
        (column,) = spec.key
        return lambda row: (row[column],)
    return itemgetter(*spec.key)  # type: ignore[return-value]


_KEYS: dict[Any, str] = {}  # recent aggregates' ids as text: a case's events come close together


def aggregate_key(event: Any) -> str:
    """``str(event.originator_id)``, computed once per event however many projections ask."""
    state = event.__dict__
    key: str | None = state.get("_aggregate_key")
    if key is None:
        originator_id = state["originator_id"]
        key = _KEYS.get(originator_id)
        if key is None:
            if len(_KEYS) >= 20_000:
                _KEYS.clear()
            key = _KEYS[originator_id] = str(originator_id)
        state["_aggregate_key"] = key
    return key


def iter_tables(projections: list[Projection]) -> Iterator[Table]:
    for projection in projections:
        yield from projection.tables
