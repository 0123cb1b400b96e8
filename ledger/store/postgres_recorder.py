"""The PostgreSQL recorder the ledger uses: eventsourcing's, without psycopg pipeline mode.

eventsourcing 9.5 inserts a transaction's events inside a psycopg pipeline. In a process that
also runs a kafka-python 3.0 client (the intake worker), that pipeline was seen to stall for good
in ``pipeline.sync()`` — the server waiting for the rest of a message (``ClientRead``) — after a
few batches of ~1000 events. The same statements sent without pipeline mode never stalled. The
rows, the table lock that keeps positions in commit order, and the tracking record written in
the same transaction are exactly those of eventsourcing's ``PostgresProcessRecorder``.

Writers are serialized (insert order = commit order, so a reader of the notification log never
passes a position that commits later) by a transaction-scoped advisory lock instead of
eventsourcing's ``LOCK TABLE … IN EXCLUSIVE MODE``. Every table lock mode that excludes other
writers also conflicts with the lock VACUUM and ANALYZE take: with a table lock, each autovacuum
of the events table blocked every writer until PostgreSQL's deadlock check cancelled it one
second later (seen as a one-second stall of the whole pipeline under load, and a table that
autovacuum never finishes), and an anti-wraparound vacuum, which cannot be cancelled, would stop
all writes for its whole length. Writers of an older version that still lock the table remain
serialized with these: their EXCLUSIVE lock conflicts with the ROW EXCLUSIVE lock of an insert.

The events are sent as four arrays in binary format (``unnest`` of uuid[], bigint[], text[],
bytea[]) rather than eventsourcing's one array of a composite type, which psycopg dumps as text
with a regular-expression escape of every byte string: ~50 µs of Python per event, a third of
the intake worker's insert time.

A batch that expects its tracking records to hold given positions (``expect_tracking``) takes a
transaction-scoped advisory lock per tracking name, in name order, before anything else, then
reads the position: whoever committed the same partition's batch meanwhile makes this one fail,
so an offset is never applied by two workers. The writers' lock comes after those, and no writer
waits for a tracking lock while holding it: no deadlock.

The events of many aggregates after versions already known (``select_events_after``: the intake
worker's prefetch of each batch) are read in one query, a lateral subquery per id.

The rare kinds read by kind (``kind_indexes.py``) are read through their partial indexes, created when the store
is opened if missing, under a transaction-scoped advisory lock (two processes opening an earlier release's store
together would collide in the catalog creating the same index).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    Notification,
    OperationalError,
    StoredEvent,
    Tracking,
)
from eventsourcing.postgres import PostgresProcessRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier, Literal

from caseledger.ledger.store.bulk_load import copy_into_postgres
from caseledger.ledger.store.data_key_table import PostgresKeyTable
from caseledger.ledger.store.kind_indexes import ReadsByKind, index_name
from caseledger.ledger.store_ports import TOPICS_READ_BY_KIND, DataKeyRow, LedgerRecorder, tracking_moved


class PostgresLedgerRecorder(ReadsByKind, PostgresProcessRecorder, LedgerRecorder):
    """Inserts events (and a tracking record) in one plain transaction."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keys = PostgresKeyTable(self.datastore)
        schema = Identifier(self.datastore.schema)
        events = Identifier(self.events_table_name)
        originator_id_type = Identifier(self.datastore.originator_id_type)
        self.insert_arrays_statement = SQL(
            "INSERT INTO {}.{} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::{}[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id"
        ).format(schema, events, originator_id_type)
        # A lateral subquery per id: always the primary key's index, whatever the statistics
        # say. A join or `= ANY` was planned as a sequential scan of the whole table until the
        # table was first analysed (a new, growing store: seen as half a core of PostgreSQL).
        self.select_events_after_statement = SQL(
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            "FROM unnest(%s::{}[], %s::bigint[]) AS w(id, known) CROSS JOIN LATERAL ("
            "SELECT * FROM {}.{} x WHERE x.originator_id = w.id AND x.originator_version > w.known "
            "ORDER BY x.originator_version) e"
        ).format(originator_id_type, schema, events)
        self.tracking_position_statement = SQL(
            "SELECT MAX(notification_id) AS position FROM {}.{} WHERE application_name = %s"
        ).format(schema, Identifier(self.tracking_table_name))

    def create_table(self) -> None:
        super().create_table()
        self.keys.create()
        self._create_kind_indexes()

    def _create_kind_indexes(self) -> None:
        """The partial index of each kind read by kind, if missing (a store of an earlier release: built once)."""
        wanted = {index_name(self.events_table_name, topic): topic for topic in TOPICS_READ_BY_KIND}
        present = "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s"
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(present, (self.datastore.schema, self.events_table_name))
            if wanted.keys() <= {row["indexname"] for row in curs.fetchall()}:
                return
            key = f"caseledger-indexes:{self.datastore.schema}.{self.events_table_name}".encode()
            curs.execute("SELECT pg_advisory_xact_lock(%s)", (int.from_bytes(hashlib.sha256(key).digest()[:8], "big",
                                                                                signed=True),))
            for name, topic in sorted(wanted.items()):
                curs.execute(SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} (notification_id) WHERE topic = {}").format(
                    Identifier(name), Identifier(self.datastore.schema), Identifier(self.events_table_name),
                    Literal(topic)))

    def _select_kind(self, topic: str, start: int | None, limit: int, stop: int | None,
                     inclusive_of_start: bool) -> Sequence[Notification]:
        # The kind as a literal: a generic plan uses a partial index only for a WHERE clause that implies it.
        statement = SQL("SELECT * FROM {}.{} WHERE topic = {}").format(
            Identifier(self.datastore.schema), Identifier(self.events_table_name), Literal(topic))
        params: list[int] = []
        if start is not None:
            statement += SQL(" AND notification_id >= %s" if inclusive_of_start else " AND notification_id > %s")
            params.append(start)
        if stop is not None:
            statement += SQL(" AND notification_id <= %s")
            params.append(stop)
        params.append(limit)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement + SQL(" ORDER BY notification_id LIMIT %s"), params, prepare=True)
            return [Notification(id=row["notification_id"], originator_id=row["originator_id"],
                                 originator_version=row["originator_version"], topic=row["topic"], state=row["state"])
                    for row in curs.fetchall()]

    @property
    def writers_lock_key(self) -> int:
        """The advisory lock every writer of this events table takes (a signed 64-bit key)."""
        name = f"caseledger-writers:{self.datastore.schema}.{self.events_table_name}".encode()
        return int.from_bytes(hashlib.sha256(name).digest()[:8], "big", signed=True)

    def tracking_lock_key(self, name: str) -> int:
        """The advisory lock a batch takes before checking the tracking record ``name`` (a signed 64-bit key)."""
        key = f"caseledger-tracking:{self.datastore.schema}.{self.tracking_table_name}:{name}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "big", signed=True)

    def _check_tracking(self, curs: Any, expected: Sequence[tuple[str, int]]) -> None:
        """Each tracking record still at its expected position, locked until the transaction ends."""
        for name, position in sorted(expected):
            curs.execute("SELECT pg_advisory_xact_lock(%s)", (self.tracking_lock_key(name),), prepare=True)
            curs.execute(self.tracking_position_statement, (name,), prepare=True)
            row = curs.fetchone()
            found = (row["position"] if row is not None else None) or 0
            if found != position:
                raise IntegrityError(tracking_moved(name, position, found))

    def _lock_table(self, curs: Any) -> None:
        curs.execute(SQL("SET LOCAL lock_timeout = '{}s'").format(self.datastore.lock_timeout), prepare=True)
        curs.execute("SELECT pg_advisory_xact_lock(%s)", (self.writers_lock_key,), prepare=True)

    def _insert_stored_events(self, curs: Any, stored_events: Sequence[StoredEvent], **_: Any) -> None:
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(
            self.insert_arrays_statement,
            (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
            prepare=True,
        )

    # eventsourcing's datastore has already turned psycopg's errors into its own classes by the
    # time they leave the connection: these are the ones a dropped connection raises here. A retry
    # whose first attempt did commit fails on the version or tracking check: nothing is doubled.
    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            self._check_tracking(curs, kwargs.get("expect_tracking", ()))  # first: nothing written if moved
            self.keys.insert(curs, kwargs.get("new_keys", ()))  # the data keys these events are the first to use
            self._insert_events(curs, stored_events, **kwargs)  # the tracking record, if any
            also: Sequence[Tracking] = kwargs.get("also_tracking", ())
            for tracking in also:  # one poll's further partitions (see sqlite_recorder.py)
                self._insert_tracking(curs, tracking)
            for statement, params in kwargs.get("also_execute", ()):  # e.g. the answers of idempotency keys
                curs.execute(statement, params)
            if not stored_events:
                return None
            self._insert_stored_events(curs, stored_events, **kwargs)  # table lock + one INSERT
            return self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _select_events_after(self, ids: list[UUID], known: list[int]) -> dict[UUID, list[StoredEvent]]:
        found: dict[UUID, list[StoredEvent]] = {}
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_events_after_statement, (ids, known))  # one query for all of them
            for row in curs.fetchall():
                originator_id = row["originator_id"]
                if not isinstance(originator_id, UUID):
                    originator_id = UUID(str(originator_id))
                found.setdefault(originator_id, []).append(
                    StoredEvent(originator_id, row["originator_version"], row["topic"], bytes(row["state"]))
                )
        return found

    def load_events(self, rows: Iterable[tuple[UUID, int, str, bytes]], *, new_keys: Sequence[DataKeyRow] = ()
                    ) -> int:
        return copy_into_postgres(self, rows, new_keys=new_keys)
