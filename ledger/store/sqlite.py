"""The SQLite recorder the ledger uses: eventsourcing's, plus more than one tracking record per transaction.

An intake worker that reads several partitions applies what one poll brought from all of them in
one transaction; each partition's position is its own tracking record, written with the events
(``also_tracking``), so a redelivered record is still never applied twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent, Tracking
from eventsourcing.sqlite import SQLiteCursor, SQLiteProcessRecorder


class SQLiteLedgerRecorder(SQLiteProcessRecorder):
    """Events, their tracking record and any further ones (``also_tracking``) in one transaction."""

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        returning = super()._insert_events(c, stored_events, **kwargs)
        also: Sequence[Tracking] = kwargs.get("also_tracking", ())
        for tracking in also:
            self._insert_tracking(c, tracking)
        return returning
