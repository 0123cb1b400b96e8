"""eventsourcing's own recorder contract tests, run against the ledger's two recorders.

The library ships one test case per recorder port (``eventsourcing.tests.persistence``); every
backend's tests subclass them. Here they run against ``SQLiteLedgerRecorder`` on a file database
and ``PostgresLedgerRecorder`` on the session's real PostgreSQL (a fresh database per test), the
latter in the three set-ups eventsourcing itself tests: uuid ids in the public schema, another
schema, and text ids. ``LedgerRecorderContract`` adds what the ledger needs beyond them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore
from eventsourcing.tests import persistence as upstream  # a module: its abstract cases are not collected

from caseledger.ledger.settings import StoreSettings
from caseledger.ledger.store.postgres_recorder import PostgresLedgerRecorder
from caseledger.ledger.store.sqlite_recorder import SQLiteLedgerRecorder
from caseledger.ledger.store_ports import LedgerRecorder

# -- the backends ------------------------------------------------------------------------------------


def _join_threads_started_since(before: set[threading.Thread]) -> None:
    """eventsourcing's concurrency tests stop their reader threads without joining them: closing the connections
    under a thread still inside sqlite3 crashed the whole test process (a segfault, seen twice under load)."""
    for thread in set(threading.enumerate()) - before:
        if not thread.daemon:  # the test's own threads; a connection pool's daemon workers live on with it
            thread.join(30)


class SQLiteFileStore:
    """A ``SQLiteLedgerRecorder`` on a new SQLite file for each test."""

    datastore: SQLiteDatastore

    @pytest.fixture(autouse=True)
    def _sqlite_file(self, tmp_path: Path) -> Iterator[None]:
        self.datastore = SQLiteDatastore(str(tmp_path / "store.sqlite"), lock_timeout=30)
        before = set(threading.enumerate())
        yield
        _join_threads_started_since(before)
        self.datastore.close()

    def create_recorder(self) -> SQLiteLedgerRecorder:
        recorder = SQLiteLedgerRecorder(self.datastore)
        recorder.create_table()
        return recorder


class PostgresStore:
    """A ``PostgresLedgerRecorder`` in a new database on the session's PostgreSQL for each test."""

    schema: ClassVar[str] = ""  # eventsourcing's default: public
    originator_id_type: ClassVar[Literal["uuid", "text"]] = "uuid"
    pool_size: ClassVar[int] = 1  # one connection: a test that drops it knows which one it dropped
    datastore: PostgresDatastore
    database_url: str

    @pytest.fixture(autouse=True)
    def _postgres_database(self, postgres: Any) -> Iterator[None]:
        self.database_url = postgres.new_database()
        if self.schema:
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{self.schema}"')
        env = StoreSettings(database=self.database_url).eventsourcing_env()  # the ledger's own URL parsing
        self.datastore = PostgresDatastore(
            env["POSTGRES_DBNAME"], env["POSTGRES_HOST"], env["POSTGRES_PORT"], env["POSTGRES_USER"],
            env["POSTGRES_PASSWORD"], pool_size=self.pool_size, lock_timeout=10, schema=self.schema,
            originator_id_type=self.originator_id_type,
        )
        before = set(threading.enumerate())
        yield
        _join_threads_started_since(before)
        self.datastore.close()

    def create_recorder(self) -> PostgresLedgerRecorder:
        recorder = PostgresLedgerRecorder(self.datastore)
        recorder.create_table()
        return recorder

    def backend_pid(self) -> int:
        with self.datastore.get_connection() as conn:
            row = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()
        assert row is not None
        return int(row["pid"])

    def terminate_connections(self) -> None:
        """What a server restart or a network cut does to the pool: every connection closed under it."""
        with psycopg.connect(self.database_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            deadline = time.monotonic() + 10
            while admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone() != (0,):
                assert time.monotonic() < deadline, "the terminated connections did not go away"
                time.sleep(0.01)

    def new_originator_id(self) -> UUID | str:
        return uuid4() if self.originator_id_type == "uuid" else str(uuid4())


class ReconnectsAfterDroppedConnection(PostgresStore):
    """Upstream's check that a dropped connection is replaced, for the recorder's own insert path."""

    def test_retry_insert_events_after_closing_connection(self) -> None:
        """An insert on a connection the server closed is retried on a new connection, not failed."""
        recorder = self.create_recorder()
        dropped = self.backend_pid()
        self.terminate_connections()
        assert not self.datastore.pool._pool[0].closed  # the pool does not know yet: the insert finds out
        event = StoredEvent(originator_id=self.new_originator_id(), originator_version=1, topic="t", state=b"s")
        assert recorder.insert_events([event], tracking=Tracking("upstream", 1)) == [1]
        assert self.backend_pid() != dropped  # it reconnected
        assert recorder.select_events(event.originator_id) == [event]
        assert recorder.max_tracking_id("upstream") == 1


class PostgresOtherSchema(PostgresStore):
    schema = "ledger_schema"


class PostgresTextIds(PostgresStore):
    originator_id_type = "text"


# -- what the ledger needs beyond eventsourcing's contract -------------------------------------------


class LedgerRecorderContract:
    """The ledger's additions to a process recorder: reading many aggregates, several tracking records.

    A mixin, like the backends: a test class adds a backend and ``upstream.RecorderTestCase``.
    """

    # from the backend and RecorderTestCase (annotations only: a definition here would hide theirs)
    create_recorder: Callable[[], LedgerRecorder]
    new_originator_id: Callable[[], UUID | str]

    def uuid_of(self, originator_id: UUID | str) -> UUID:
        return originator_id if isinstance(originator_id, UUID) else UUID(originator_id)

    def test_select_events_after_reads_many_aggregates_after_known_versions(self) -> None:
        recorder = self.create_recorder()
        ids = [self.new_originator_id() for _ in range(600)]  # more than one SQLite chunk of 250 ids
        events = [StoredEvent(i, v, f"topic{v}", f"{i}:{v}".encode()) for i in ids[:-1] for v in (1, 2, 3)]
        recorder.insert_events(events)
        keys = [self.uuid_of(i) for i in ids]
        everything = recorder.select_events_after(keys)
        assert set(everything) == set(keys[:-1])  # the last id has no events: it is absent, not empty
        assert [e.originator_version for e in everything[keys[0]]] == [1, 2, 3]
        assert [(e.topic, e.state) for e in everything[keys[7]]] == [
            (f"topic{v}", f"{ids[7]}:{v}".encode()) for v in (1, 2, 3)
        ]
        assert all(isinstance(e.originator_id, UUID) for found in everything.values() for e in found)
        after = recorder.select_events_after(keys, after={keys[0]: 2, keys[1]: 3, keys[300]: 0})
        assert [e.originator_version for e in after[keys[0]]] == [3]
        assert keys[1] not in after
        assert [e.originator_version for e in after[keys[300]]] == [1, 2, 3]
        assert len(after) == len(keys) - 2
        assert recorder.select_events_after([]) == {}

    def test_also_tracking_is_written_in_the_same_transaction(self) -> None:
        recorder = self.create_recorder()
        first = StoredEvent(self.new_originator_id(), 1, "topic", b"state")
        recorder.insert_events(
            [first], tracking=Tracking("intake/0", 5), also_tracking=[Tracking("intake/1", 9), Tracking("intake/2", 3)]
        )
        assert [recorder.max_tracking_id(f"intake/{p}") for p in range(3)] == [5, 9, 3]
        # a redelivery on any one of the partitions refuses the whole transaction
        second = StoredEvent(self.new_originator_id(), 1, "topic", b"state")
        with pytest.raises(IntegrityError):
            recorder.insert_events([second], tracking=Tracking("intake/0", 6), also_tracking=[Tracking("intake/1", 9)])
        assert recorder.max_tracking_id("intake/0") == 5
        assert recorder.select_events(second.originator_id) == []
        # positions alone (a poll that brought nothing to record) are kept too
        recorder.insert_events([], tracking=Tracking("intake/0", 7), also_tracking=[Tracking("intake/1", 12)])
        assert [recorder.max_tracking_id(f"intake/{p}") for p in range(2)] == [7, 12]

    def test_a_batch_expecting_positions_is_refused_whole_once_another_moved_them(self) -> None:
        """Issue 29: two intake workers that both believe they own a partition. Before, a batch only had to move the
        tracking record forward: a stale owner's longer batch (0→10) committed after the new owner's (0→4) and
        applied offsets 0–3 again. Now each batch names where it started, and is refused if that moved."""
        recorder = self.create_recorder()
        new_owner = StoredEvent(self.new_originator_id(), 1, "topic", b"new")
        recorder.insert_events([new_owner], tracking=Tracking("intake/0", 4), expect_tracking=[("intake/0", 0)])
        stale = StoredEvent(self.new_originator_id(), 1, "topic", b"stale")
        with pytest.raises(IntegrityError, match="intake/0 is at 4, not 0"):
            recorder.insert_events([stale], tracking=Tracking("intake/1", 3), also_tracking=[Tracking("intake/0", 10)],
                                   expect_tracking=[("intake/1", 0), ("intake/0", 0)])
        assert recorder.select_events(stale.originator_id) == []  # nothing of the refused batch, on any partition
        assert (recorder.max_tracking_id("intake/0"), recorder.max_tracking_id("intake/1")) == (4, None)
        recorder.insert_events([stale], tracking=Tracking("intake/0", 10), expect_tracking=[("intake/0", 4)])
        assert recorder.max_tracking_id("intake/0") == 10

    def test_concurrent_batches_from_one_position_commit_once(self) -> None:
        """Two writers racing from the same position: exactly one commits, whatever the interleaving."""
        recorder = self.create_recorder()
        outcomes: list[str] = []

        def write(end: int) -> None:
            try:
                recorder.insert_events([StoredEvent(self.new_originator_id(), 1, "topic", b"x")],
                                       tracking=Tracking("intake/5", end), expect_tracking=[("intake/5", 0)])
                outcomes.append("saved")
            except IntegrityError:
                outcomes.append("refused")

        threads = [threading.Thread(target=write, args=(end,)) for end in (3, 8, 5, 9)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(outcomes) == ["refused", "refused", "refused", "saved"]


# -- eventsourcing's cases, once per backend -----------------------------------------------------------
# Each recorder is a process recorder, so it is also an aggregate, application and tracking
# recorder: every one of eventsourcing's recorder cases applies, none is skipped.


class AsAggregateRecorder:
    """A process recorder seen through the aggregate recorder's contract, which alone differs on one point.

    ``AggregateRecorderTestCase`` expects ``insert_events`` to return None; an application (so a
    process) recorder returns the notification ids of what it inserted, as eventsourcing's own
    ``SQLiteProcessRecorder`` and ``PostgresProcessRecorder`` do. This view checks those ids
    (one per event, ascending) and returns None, so the rest of that case — selects by version,
    descending, limits, every duplicate it must refuse — runs on the recorder's own SQL.
    """

    def __init__(self, recorder: LedgerRecorder) -> None:
        self.recorder = recorder

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        ids = list(self.recorder.insert_events(stored_events, **kwargs) or [])
        assert len(ids) == len(stored_events) and ids == sorted(set(ids)), ids

    def __getattr__(self, name: str) -> Any:
        return getattr(self.recorder, name)


class TestSQLiteAggregateRecorder(SQLiteFileStore, upstream.AggregateRecorderTestCase):
    def create_recorder(self) -> Any:
        """The recorder as an aggregate recorder (see :class:`AsAggregateRecorder`)."""
        return AsAggregateRecorder(super().create_recorder())


class TestSQLiteApplicationRecorder(SQLiteFileStore, upstream.ApplicationRecorderTestCase[SQLiteLedgerRecorder]):
    pass  # no optional_test_insert_subscribe: eventsourcing's SQLite recorders have no subscriptions


class TestSQLiteTrackingRecorder(SQLiteFileStore, upstream.TrackingRecorderTestCase):
    pass


class TestSQLiteProcessRecorder(SQLiteFileStore, upstream.ProcessRecorderTestCase):
    pass


class TestSQLiteNonInterleavingNotificationIDs(SQLiteFileStore, upstream.NonInterleavingNotificationIDsBaseCase):
    pass


class TestSQLiteLedgerRecorder(SQLiteFileStore, LedgerRecorderContract, upstream.RecorderTestCase):
    pass


class TestPostgresAggregateRecorder(PostgresStore, upstream.AggregateRecorderTestCase):
    def create_recorder(self) -> Any:
        """The recorder as an aggregate recorder (see :class:`AsAggregateRecorder`)."""
        return AsAggregateRecorder(super().create_recorder())


class TestPostgresApplicationRecorder(PostgresStore, upstream.ApplicationRecorderTestCase[PostgresLedgerRecorder]):
    pool_size = 2  # a subscription listens on a connection of its own

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestPostgresTrackingRecorder(PostgresStore, upstream.TrackingRecorderTestCase):
    pass


class TestPostgresProcessRecorder(ReconnectsAfterDroppedConnection, upstream.ProcessRecorderTestCase):
    pass


class TestPostgresNonInterleavingNotificationIDs(PostgresStore, upstream.NonInterleavingNotificationIDsBaseCase):
    pool_size = 2  # two writers at once: the writers' lock, not the pool, must keep them apart


class TestPostgresLedgerRecorder(PostgresStore, LedgerRecorderContract, upstream.RecorderTestCase):
    pass


class TestPostgresProcessRecorderInOtherSchema(
    PostgresOtherSchema, ReconnectsAfterDroppedConnection, upstream.ProcessRecorderTestCase
):
    pass


class TestPostgresApplicationRecorderInOtherSchema(
    PostgresOtherSchema, upstream.ApplicationRecorderTestCase[PostgresLedgerRecorder]
):
    pass


class TestPostgresLedgerRecorderInOtherSchema(PostgresOtherSchema, LedgerRecorderContract, upstream.RecorderTestCase):
    pass


class TestPostgresProcessRecorderWithTextIds(
    PostgresTextIds, ReconnectsAfterDroppedConnection, upstream.ProcessRecorderTestCase
):
    pass


class TestPostgresApplicationRecorderWithTextIds(
    PostgresTextIds, upstream.ApplicationRecorderTestCase[PostgresLedgerRecorder]
):
    pass


class TestPostgresLedgerRecorderWithTextIds(PostgresTextIds, LedgerRecorderContract, upstream.RecorderTestCase):
    pass
