"""The SQLite recorder the ledger uses: eventsourcing's, plus more than one tracking record per
transaction, and a read of many aggregates at once.

An intake worker that reads several partitions applies what one poll brought from all of them in
one transaction; each partition's position is its own tracking record, written with the events
(``also_tracking``), so a redelivered record is still never applied twice. A batch may expect each
tracking record at a position (``expect_tracking``): checked first, after a no-op write that takes
the database's write lock, so no other writer commits between the check and this transaction's end.
The rare kinds read by kind (``kind_indexes.py``) are read through their partial indexes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, Notification, StoredEvent, Tracking
from eventsourcing.sqlite import SQLiteCursor, SQLiteDatastore, SQLiteProcessRecorder

from caseledger.ledger.store.bulk_load import insert_into_sqlite
from caseledger.ledger.store.data_key_table import SQLiteKeyTable
from caseledger.ledger.store.kind_indexes import ReadsByKind, index_name, topic_literal
from caseledger.ledger.store_ports import TOPICS_READ_BY_KIND, DataKeyRow, LedgerRecorder, tracking_moved

# Two parameters an id; SQLite allows 999 parameters at least.
SELECT_CHUNK = 250


class SQLiteLedgerRecorder(ReadsByKind, SQLiteProcessRecorder, LedgerRecorder):
    """Events, their tracking record and any further ones (``also_tracking``) in one transaction."""

    def __init__(self, datastore: SQLiteDatastore, *, events_table_name: str = "stored_events") -> None:
        self.keys = SQLiteKeyTable(datastore)
        super().__init__(datastore, events_table_name=events_table_name)
        # One statement per number of ids in a chunk: every full chunk shares the first.
        self._select_events_after_statements: dict[int, str] = {}
        self._select_events_after_statement(SELECT_CHUNK)

    def _select_events_after_statement(self, count: int) -> str:
        statement = self._select_events_after_statements.get(count)
        if statement is None:
            # The same join as on PostgreSQL: only the events after a known version are read.
            statement = self._select_events_after_statements[count] = (
                f"WITH w(id, known) AS (VALUES {','.join(['(?, ?)'] * count)}) "
                "SELECT e.originator_id, e.originator_version, e.topic, e.state FROM w "
                f"JOIN {self.events_table_name} e ON e.originator_id = w.id AND e.originator_version > w.known "
                "ORDER BY e.originator_id, e.originator_version"
            )
        return statement

    def _select_events_after(self, ids: list[UUID], known: list[int]) -> dict[UUID, list[StoredEvent]]:
        found: dict[UUID, list[StoredEvent]] = {}
        with self.datastore.transaction(commit=False) as curs:
            for i in range(0, len(ids), SELECT_CHUNK):  # one query per 250 ids
                chunk = ids[i : i + SELECT_CHUNK]
                curs.execute(
                    self._select_events_after_statement(len(chunk)),
                    [value for u, v in zip(chunk, known[i : i + SELECT_CHUNK], strict=True) for value in (u.hex, v)],
                )
                for row in curs.fetchall():
                    originator_id = UUID(row[0])
                    found.setdefault(originator_id, []).append(
                        StoredEvent(originator_id, row[1], row[2], bytes(row[3]))
                    )
        return found

    def _check_tracking(self, c: SQLiteCursor, expected: Sequence[tuple[str, int]]) -> None:
        """Each tracking record still at its expected position (the write lock held from here on)."""
        for name, position in expected:
            # A write, even of no row, takes SQLite's write lock: nobody commits after the read below.
            c.execute("UPDATE tracking SET notification_id = notification_id WHERE application_name = ?", (name,))
            c.execute("SELECT MAX(notification_id) FROM tracking WHERE application_name = ?", (name,))
            row = c.fetchone()
            found = (row[0] if row is not None else None) or 0
            if found != position:
                raise IntegrityError(tracking_moved(name, position, found))

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), *self.keys.create_statements]

    def create_table(self) -> None:
        super().create_table()
        # What an earlier release's store lacks, in a transaction of its own whose first statement writes: one that
        # read first would fail at once ("database is locked") when another process built the same index meanwhile.
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (self.events_table_name,))
            present = {row[0] for row in c.fetchall()}
        for topic in sorted(TOPICS_READ_BY_KIND):
            if index_name(self.events_table_name, topic) in present:
                continue
            with self.datastore.transaction(commit=True) as c:
                c.execute(f"CREATE INDEX IF NOT EXISTS {index_name(self.events_table_name, topic)} "
                          f"ON {self.events_table_name} (topic) WHERE topic = {topic_literal(topic)}")

    def _select_kind(self, topic: str, start: int | None, limit: int, stop: int | None,
                     inclusive_of_start: bool) -> Sequence[Notification]:
        # The kind as a literal: SQLite uses a partial index only for a WHERE clause it can see implies it.
        statement = f"SELECT rowid, * FROM {self.events_table_name} WHERE topic = {topic_literal(topic)}"
        params: list[int] = []
        if start is not None:
            statement += " AND rowid >= ?" if inclusive_of_start else " AND rowid > ?"
            params.append(start)
        if stop is not None:
            statement += " AND rowid <= ?"
            params.append(stop)
        params.append(limit)
        with self.datastore.transaction(commit=False) as c:
            c.execute(statement + " ORDER BY rowid LIMIT ?", params)
            return [Notification(id=row["rowid"], originator_id=self.convert_originator_id(row["originator_id"]),
                                 originator_version=row["originator_version"], topic=row["topic"], state=row["state"])
                    for row in c.fetchall()]

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        self._check_tracking(c, kwargs.get("expect_tracking", ()))  # first: nothing written if moved
        self.keys.insert(c, kwargs.get("new_keys", ()))  # the data keys these events are the first to use
        returning = super()._insert_events(c, stored_events, **kwargs)
        also: Sequence[Tracking] = kwargs.get("also_tracking", ())
        for tracking in also:
            self._insert_tracking(c, tracking)
        for statement, params in kwargs.get("also_execute", ()):  # e.g. the answers of idempotency keys
            c.execute(statement, params)
        return returning

    def load_events(self, rows: Iterable[tuple[UUID, int, str, bytes]], *, new_keys: Sequence[DataKeyRow] = ()
                    ) -> int:
        return insert_into_sqlite(self, rows, new_keys=new_keys)
