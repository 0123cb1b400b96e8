"""The PostgreSQL recorder the ledger uses: eventsourcing's, without psycopg pipeline mode.

eventsourcing 9.5 inserts a transaction's events inside a psycopg pipeline. In a process that
also runs a kafka-python 3.0 client (the intake worker), that pipeline was seen to stall for good
in ``pipeline.sync()`` — the server waiting for the rest of a message (``ClientRead``) — after a
few batches of ~1000 events. The same statements sent without pipeline mode never stalled. The
rows, the table lock that keeps positions in commit order, and the tracking record written in
the same transaction are exactly those of eventsourcing's ``PostgresProcessRecorder``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresProcessRecorder
from eventsourcing.utils import retry
from psycopg.errors import InterfaceError, OperationalError


class PostgresLedgerRecorder(PostgresProcessRecorder):
    """Inserts events (and a tracking record) in one plain transaction."""

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            self._insert_events(curs, stored_events, **kwargs)  # the tracking record, if any
            if not stored_events:
                return None
            self._insert_stored_events(curs, stored_events, **kwargs)  # table lock + one INSERT
            return self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
