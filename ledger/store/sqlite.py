"""The SQLite recorder the ledger uses: eventsourcing's, plus more than one tracking record per
transaction, and a read of many aggregates at once.

An intake worker that reads several partitions applies what one poll brought from all of them in
one transaction; each partition's position is its own tracking record, written with the events
(``also_tracking``), so a redelivered record is still never applied twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent, Tracking
from eventsourcing.sqlite import SQLiteCursor, SQLiteDatastore, SQLiteProcessRecorder

from caseledger.ledger.store.recorder import LedgerRecorder

# Two parameters an id; SQLite allows 999 parameters at least.
SELECT_CHUNK = 250


class SQLiteLedgerRecorder(SQLiteProcessRecorder, LedgerRecorder):
    """Events, their tracking record and any further ones (``also_tracking``) in one transaction."""

    def __init__(self, datastore: SQLiteDatastore, *, events_table_name: str = "stored_events") -> None:
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

    def select_events_after(
        self, originator_ids: Iterable[UUID], *, after: Mapping[UUID, int] | None = None
    ) -> dict[UUID, list[StoredEvent]]:
        """The stored events of each id that has any, in version order; one query per 250 ids."""
        after = after or {}
        found: dict[UUID, list[StoredEvent]] = {}
        ordered = list(originator_ids)
        with self.datastore.transaction(commit=False) as curs:
            for i in range(0, len(ordered), SELECT_CHUNK):
                chunk = ordered[i : i + SELECT_CHUNK]
                curs.execute(
                    self._select_events_after_statement(len(chunk)),
                    [value for u in chunk for value in (u.hex, after.get(u, -1))],
                )
                for row in curs.fetchall():
                    originator_id = UUID(row[0])
                    found.setdefault(originator_id, []).append(
                        StoredEvent(originator_id, row[1], row[2], bytes(row[3]))
                    )
        return found

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        returning = super()._insert_events(c, stored_events, **kwargs)
        also: Sequence[Tracking] = kwargs.get("also_tracking", ())
        for tracking in also:
            self._insert_tracking(c, tracking)
        return returning
