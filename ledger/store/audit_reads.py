"""The audit's reads of the event store: the events table and tracking records as of one moment.

``ledger.storage.audit_snapshot()`` opens one read transaction (SQLite WAL snapshot, PostgreSQL REPEATABLE
READ READ ONLY) and yields the backend's :class:`~caseledger.ledger.store_ports.StoreSnapshot`; every statement is built once, when
the snapshot is made, and the rows come back as plain tuples (the audit reads millions of them).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from caseledger.ledger.store_ports import CaseTally, Row, StoreSnapshot

__all__ = ["PostgresStoreSnapshot", "SQLiteStoreSnapshot", "TemporaryCaseTally"]

_HEADS_AT_ONCE = 500
"""Aggregates looked up per statement by ``heads_before`` (SQLite binds at most 32,766 parameters)."""
_HEADS_STATEMENTS = (1, 8, 64, _HEADS_AT_ONCE)


class SQLiteStoreSnapshot(StoreSnapshot):
    """Raw reads of eventsourcing's SQLite tables (``stored_events``, ``tracking``); rowid = position."""

    backend = "SQLite"

    _TRACKING_EXISTS = "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'tracking'"
    _TRACKING = "SELECT application_name, MAX(notification_id) FROM tracking GROUP BY application_name"

    def __init__(self, cursor: Any, table: str) -> None:
        self.cursor = cursor
        columns = f"SELECT rowid, CAST(originator_id AS BLOB), originator_version, topic, state FROM {table} "
        self._head = f"SELECT MAX(rowid) FROM {table}"
        self._page = columns + "WHERE rowid > ? ORDER BY rowid LIMIT ?"
        self._at = columns + "WHERE rowid >= ? ORDER BY rowid LIMIT 1"
        self._event = columns + "WHERE originator_id = ? AND originator_version = ?"
        self._columns = columns
        self._table = table

    @classmethod
    @contextmanager
    def open(cls, datastore: Any, events_table: str) -> Iterator[SQLiteStoreSnapshot]:
        """A snapshot in one read transaction on the ledger's SQLite file (WAL: writers go on)."""
        with datastore.transaction(commit=False) as wrapped:
            cursor = wrapped.sqlite_cursor
            cursor.row_factory = None  # plain tuples: the audit reads millions of rows
            yield cls(cursor, events_table)

    def head(self) -> int:
        return int(self.cursor.execute(self._head).fetchone()[0] or 0)

    def pages(self, after: int, upto: int, size: int) -> Iterator[list[Row]]:
        statement = self._page
        return _bounded_pages(lambda start: self.cursor.execute(statement, (start, size)).fetchall(), after, upto)

    def row_at_or_after(self, position: int) -> Row | None:
        return self.cursor.execute(self._at, (position,)).fetchone()  # type: ignore[no-any-return]

    def event(self, aggregate_hex: bytes, version: int) -> Row | None:
        return self.cursor.execute(self._event, (aggregate_hex.decode(), version)).fetchone()  # type: ignore[no-any-return]

    def heads_before(self, aggregates: Collection[bytes], after: int, before: int) -> list[Row]:
        ids = [a.decode() for a in aggregates]
        found: list[Row] = []
        for start in range(0, len(ids), _HEADS_AT_ONCE):
            chunk = ids[start : start + _HEADS_AT_ONCE]
            size = next(n for n in _HEADS_STATEMENTS if n >= len(chunk))
            chunk += chunk[-1:] * (size - len(chunk))  # a few statement sizes: each is prepared once
            found.extend(self.cursor.execute(self._heads(size), (*chunk, after, before)).fetchall())
        return found

    def _heads(self, size: int) -> str:
        # The (originator_id, originator_version) key finds each aggregate's rows; rowid is in that index.
        return (f"{self._columns}WHERE rowid IN (SELECT MAX(rowid) FROM {self._table} WHERE originator_id "
                f"IN ({','.join('?' * size)}) AND rowid > ? AND rowid < ? GROUP BY originator_id)")

    def case_tally(self) -> CaseTally:
        return TemporaryCaseTally()

    def tracking(self) -> dict[str, int]:
        if not self.cursor.execute(self._TRACKING_EXISTS).fetchone():
            return {}
        return {str(name): int(n) for name, n in self.cursor.execute(self._TRACKING).fetchall()}


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
        self._heads = columns + SQL(
            "WHERE notification_id IN (SELECT MAX(notification_id) FROM {} WHERE originator_id = ANY(%s) "
            "AND notification_id > %s AND notification_id < %s GROUP BY originator_id)"
        ).format(events)
        self._tracking = (
            SQL("SELECT application_name, MAX(notification_id) FROM {} GROUP BY application_name").format(
                SQL("{}.{}").format(Identifier(schema), Identifier(tracking_table))
            )
            if tracking_table
            else None
        )
        self._tracking_exists = SQL("SELECT to_regclass(%s)")
        self._tracking_regclass = f'"{schema}"."{tracking_table}"'

    @classmethod
    @contextmanager
    def open(cls, datastore: Any, events_table: str, tracking_table: str | None) -> Iterator[PostgresStoreSnapshot]:
        """A snapshot in one REPEATABLE READ READ ONLY transaction on a connection of the ledger's pool."""
        from psycopg.rows import tuple_row

        with datastore.get_connection() as conn:
            conn.rollback()  # start from a clean state: the isolation level applies to the next transaction
            with conn.transaction(force_rollback=True):
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                # Pages are read while the topic is compared: never be cut off as idle.
                conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
                cursor = conn.cursor(row_factory=tuple_row, binary=True)
                yield cls(cursor, datastore.schema, events_table, tracking_table)

    def head(self) -> int:
        row = self.cursor.execute(self._head).fetchone()
        return int(row[0] or 0)

    def pages(self, after: int, upto: int, size: int) -> Iterator[list[Row]]:
        return _bounded_pages(lambda start: self.cursor.execute(self._page, (start, size)).fetchall(), after, upto)

    def row_at_or_after(self, position: int) -> Row | None:
        return self.cursor.execute(self._at, (position,)).fetchone()  # type: ignore[no-any-return]

    def event(self, aggregate_hex: bytes, version: int) -> Row | None:
        return self.cursor.execute(self._event, (str(UUID(aggregate_hex.decode())), version)).fetchone()  # type: ignore[no-any-return]

    def heads_before(self, aggregates: Collection[bytes], after: int, before: int) -> list[Row]:
        ids = [UUID(a.decode()) for a in aggregates]
        found: list[Row] = []
        for start in range(0, len(ids), _HEADS_AT_ONCE):
            found.extend(self.cursor.execute(self._heads, (ids[start : start + _HEADS_AT_ONCE], after, before)).fetchall())
        return found

    def case_tally(self) -> CaseTally:
        return TemporaryCaseTally()

    def tracking(self) -> dict[str, int]:
        if self._tracking is None:
            return {}
        if self.cursor.execute(self._tracking_exists, (self._tracking_regclass,)).fetchone()[0] is None:
            return {}
        return {str(name): int(n) for name, n in self.cursor.execute(self._tracking).fetchall()}


class TemporaryCaseTally(CaseTally):
    """The audit's counters per case in a private temporary SQLite file (deleted when closed), whatever the store.

    Case ids and counts only (no personal data); the file lives as long as one audit.
    """

    def __init__(self) -> None:
        self.db = sqlite3.connect("")  # "": a private temporary file, removed on close
        self.db.execute("PRAGMA journal_mode = OFF")
        self.db.execute("PRAGMA synchronous = OFF")
        # Appended as they come (no key to keep up: a window's rows are written in one go), summed when read.
        self.db.execute("CREATE TABLE counts (case_id BLOB, links INTEGER, contacts INTEGER, messages INTEGER, "
                        "opened INTEGER)")

    def add(self, counts: dict[bytes, list[int]]) -> None:
        self.db.executemany("INSERT INTO counts VALUES (?, ?, ?, ?, ?)",
                            [(case_id, *entry) for case_id, entry in counts.items()])

    _SUMMED = ("SELECT case_id, SUM(links) AS links, SUM(contacts) AS contacts, SUM(messages) AS messages, "
               "MAX(opened) AS opened, MIN(rowid) AS first FROM counts GROUP BY case_id")

    def broken(self) -> Iterator[tuple[bytes, int, int, int, int]]:
        # MIN(rowid): the order cases were first added, the order an audit in memory names them.
        yield from self.db.execute(f"SELECT case_id, links, contacts, messages, opened FROM ({self._SUMMED}) "
                                   "WHERE opened = 0 OR links != 1 OR contacts != messages ORDER BY first")

    def opened(self) -> int:
        return int(self.db.execute(f"SELECT COUNT(*) FROM ({self._SUMMED}) WHERE opened != 0").fetchone()[0])

    def close(self) -> None:
        self.db.close()


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
