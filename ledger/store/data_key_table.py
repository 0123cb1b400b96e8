"""The key store's SQL: customers' data keys, wrapped, in a table beside the events.

A row is one data key: its id, its subject (the customer id, or ``intake-rejections:YYYY-MM``),
the id of the key-encryption key that wrapped it, the wrapped bytes, when it was made and when it
was destroyed. Lookup secrets (``lookup:`` ids, subject ``ledger:lookup``) are rows too, wrapped alike.
Destroying a key sets its wrapped bytes to NULL and its ``destroyed_at``; the row
stays, so a reader can tell "erased" from "never existed". New keys are inserted in the same
transaction as the first events they encrypt (the recorders call :meth:`KeyTable.insert` from
their insert path), so no stored event ever names a key that was not stored with it.

Destroying is two steps. :meth:`KeyTable.destroy` overwrites the bytes in the table's current rows;
:meth:`KeyTable.forget_destroyed` then removes the copies the database still keeps elsewhere and
says whether it could. On SQLite the table is in the ledger's file: ``secure_delete`` on for the
erasing connection zeroes what the update frees, and a ``wal_checkpoint(TRUNCATE)`` writes the
zeroed pages over the old ones in the main file and empties the WAL, which still holds the pages
as they were; a reader holding an older snapshot makes the checkpoint busy, so it is retried with
backoff for a bounded time, then reported pending. On PostgreSQL the table is in the ledger's
schema; an update leaves the old row version (with the bytes) as a dead tuple, so ``VACUUM FULL``
rewrites the table into new files; a transaction holding the table makes it wait for its lock,
bounded by a lock timeout, then reported pending. What neither can reach is below the database:
PostgreSQL's WAL segments and base backups, blocks the file system freed, copies of the file.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from caseledger.ledger.store_ports import DataKeyRow

TABLE = "caseledger_data_keys"
#: A marker row present while a scrub is owed (an erasure destroyed or deleted rows since the last one that
#: finished); its ``kek_id`` changes with each erasure, so a scrub removes it only if no erasure came meanwhile.
SCRUB_OWED = "marker:ledger:scrub-owed"
#: Present once this table tracks owed scrubs (a table of an earlier release is scrubbed once, then tracked).
SCRUBS_TRACKED = "marker:ledger:scrubs-tracked"
#: How long :meth:`KeyTable.forget_destroyed` waits for readers before it reports the bytes' removal pending.
SETTLE_SECONDS = 5.0
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE when lock_timeout expires
_COLUMNS = "key_id, subject, kek_id, wrapped, created_at, destroyed_at"


class KeyTable:
    """The data keys table of one store (a :class:`~caseledger.ledger.store_ports.DataKeyStore`); each backend
    names its placeholder and types, and how it scrubs erased bytes."""

    p = "?"
    blob, stamp = "BLOB", "TEXT"

    def __init__(self, datastore: Any) -> None:
        self.datastore = datastore
        self.table = self.qualified(TABLE)

    def qualified(self, name: str) -> str:
        """The table's name as the statements write it."""
        return name

    @property
    def create_statements(self) -> list[str]:
        blob, stamp = self.blob, self.stamp
        return [
            f"CREATE TABLE IF NOT EXISTS {self.table} (key_id text PRIMARY KEY, subject text NOT NULL, "
            f"kek_id text NOT NULL, wrapped {blob}, created_at {stamp} NOT NULL, destroyed_at {stamp})",
            f"CREATE INDEX IF NOT EXISTS {TABLE}_by_subject ON {self.table} (subject)",
        ]

    def create(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            for statement in self.create_statements:
                curs.execute(statement)

    # -- inside the recorders' insert transaction --------------------------------------------------

    def insert(self, curs: Any, rows: Sequence[DataKeyRow]) -> None:
        # One statement for the batch (psycopg pipelines it): this runs while the writers' lock is held, and a
        # batch of new customers has a data key and lookup secrets each — one round trip per row was the lock's.
        if not rows:
            return
        p = self.p
        curs.executemany(
            f"INSERT INTO {self.table} ({_COLUMNS}) VALUES ({p}, {p}, {p}, {p}, {p}, {p})",
            [(row.key_id, row.subject, row.kek_id, row.wrapped, row.created_at, row.destroyed_at) for row in rows],
        )

    # -- reads --------------------------------------------------------------------------------------

    def _rows(self, where: str, params: Sequence[Any]) -> list[DataKeyRow]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT {_COLUMNS} FROM {self.table} WHERE {where} ORDER BY created_at, key_id", params)
            return [_row(r) for r in curs.fetchall()]

    def by_subjects(self, subjects: Iterable[str]) -> list[DataKeyRow]:
        return self._where_in("subject", subjects)

    def by_ids(self, key_ids: Iterable[str]) -> list[DataKeyRow]:
        return self._where_in("key_id", key_ids)

    def _where_in(self, column: str, values: Iterable[str]) -> list[DataKeyRow]:
        wanted = list(dict.fromkeys(values))
        found: list[DataKeyRow] = []
        for i in range(0, len(wanted), 200):  # 200 parameters a query at most
            chunk = wanted[i : i + 200]
            found += self._rows(f"{column} IN ({', '.join([self.p] * len(chunk))})", chunk)
        return found

    def live(self) -> list[DataKeyRow]:
        return self._rows("wrapped IS NOT NULL", ())

    def subjects_like(self, prefix: str) -> list[DataKeyRow]:
        return self._rows(f"subject LIKE {self.p} AND wrapped IS NOT NULL", (prefix + "%",))

    def destroyed(self) -> list[DataKeyRow]:
        return self._rows("wrapped IS NULL", ())

    # -- writes -------------------------------------------------------------------------------------

    def mark(self, subject: str, *, at: datetime) -> None:
        """A marker row (no key: wrapped NULL, "destroyed" when made) that says something of the ledger."""
        self.insert_if_absent(DataKeyRow(key_id=f"marker:{subject}", subject=subject, kek_id="-", wrapped=None,
                                         created_at=at.isoformat(), destroyed_at=at.isoformat()))

    def insert_if_absent(self, row: DataKeyRow) -> None:
        """Insert a key with a fixed id in its own transaction, unless another writer did first."""
        p = self.p
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                f"INSERT INTO {self.table} ({_COLUMNS}) VALUES ({p}, {p}, {p}, {p}, {p}, {p}) "
                "ON CONFLICT (key_id) DO NOTHING",
                (row.key_id, row.subject, row.kek_id, row.wrapped, row.created_at, row.destroyed_at),
            )

    def delete(self, key_ids: Sequence[str]) -> None:
        """Delete these rows (lookup secrets, docs/privacy.md); :meth:`forget_destroyed` removes the copies."""
        if not key_ids:
            return
        p = self.p
        with self.datastore.transaction(commit=True) as curs:
            self._before_destroy(curs)
            self._owe_scrub(curs)
            for i in range(0, len(key_ids), 200):
                chunk = list(key_ids[i : i + 200])
                curs.execute(f"DELETE FROM {self.table} WHERE key_id IN ({', '.join([p] * len(chunk))})", chunk)

    def destroy(self, key_ids: Sequence[str], *, at: datetime) -> None:
        """Overwrite the wrapped bytes of these keys in their rows; :meth:`forget_destroyed` removes the copies."""
        if not key_ids:
            return
        p = self.p
        with self.datastore.transaction(commit=True) as curs:
            self._before_destroy(curs)
            self._owe_scrub(curs)
            for key_id in key_ids:
                curs.execute(
                    f"UPDATE {self.table} SET wrapped = NULL, destroyed_at = {p} WHERE key_id = {p}",
                    (at.isoformat(), key_id),
                )

    def _owe_scrub(self, curs: Any) -> None:
        """In an erasing transaction: a scrub is owed (a new token, so a scrub running meanwhile keeps it owed)."""
        p, now = self.p, datetime.now(UTC).isoformat()
        curs.execute(
            f"INSERT INTO {self.table} ({_COLUMNS}) VALUES ({p}, {p}, {p}, NULL, {p}, {p}) "
            "ON CONFLICT (key_id) DO UPDATE SET kek_id = excluded.kek_id",
            (SCRUB_OWED, "ledger:scrub", uuid.uuid4().hex, now, now),
        )

    def _scrub_owed(self) -> str | None:
        """The token of the scrub owed, or None when every erasure's copies are already removed."""
        rows = {r.key_id: r for r in self.by_ids([SCRUB_OWED, SCRUBS_TRACKED])}
        if SCRUB_OWED in rows:
            return rows[SCRUB_OWED].kek_id
        return None if SCRUBS_TRACKED in rows else "untracked"

    def forget_destroyed(self, *, within: float | None = None) -> bool:
        """Remove the copies of destroyed keys' bytes the database keeps (old pages, WAL, dead tuples).

        True once done; False when a reader kept it from finishing for ``within`` seconds (default
        :data:`SETTLE_SECONDS`; tried again with backoff meanwhile): the bytes may still be in the database's files, and a later call finishes.
        Nothing is rewritten when no erasure happened since the last scrub that finished (``tick`` calls this often).
        """
        owed = self._scrub_owed()
        if owed is None:
            return True
        if not self._scrub_until(within):
            return False
        p = self.p
        with self.datastore.transaction(commit=True) as curs:
            if owed == "untracked":
                curs.execute(
                    f"INSERT INTO {self.table} ({_COLUMNS}) VALUES ({p}, {p}, {p}, NULL, {p}, {p}) "
                    "ON CONFLICT (key_id) DO NOTHING",
                    (SCRUBS_TRACKED, "ledger:scrub", "-", *[datetime.now(UTC).isoformat()] * 2),
                )
            curs.execute(f"DELETE FROM {self.table} WHERE key_id = {p} AND kek_id = {p}", (SCRUB_OWED, owed))
        return True

    def _scrub_until(self, within: float | None) -> bool:
        deadline = time.monotonic() + (SETTLE_SECONDS if within is None else within)
        pause = 0.05
        while not self._scrub(wait=min(pause, max(deadline - time.monotonic(), 0.0))):
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
            pause = min(pause * 2, 1.0)
        return True

    def _before_destroy(self, curs: Any) -> None:
        """What the backend does in the destroying transaction before its updates."""

    def _scrub(self, *, wait: float) -> bool:
        """Rewrite what still holds erased bytes, waiting ``wait`` seconds at most for readers; whether it could."""
        with self.datastore.get_connection(commit=False) as conn:  # as a reader: a writer of this process may wait
            curs = conn.cursor()  # outside a transaction: a checkpoint is not part of one
            curs.execute("PRAGMA busy_timeout")
            (timeout_ms,) = tuple(curs.fetchone())
            curs.execute(f"PRAGMA busy_timeout = {max(int(wait * 1000), 1)}")
            try:
                curs.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                busy, log_frames, _ = tuple(curs.fetchone())
            finally:
                curs.execute(f"PRAGMA busy_timeout = {int(timeout_ms)}")
        # busy: a reader's snapshot still needs the WAL; otherwise the WAL is empty (0 frames), or unused (-1)
        return not busy and log_frames <= 0

    def rewrap(self, rows: Sequence[DataKeyRow]) -> None:
        """Store these rows' new wrapping (a key-encryption key rotation), all or none."""
        p = self.p
        with self.datastore.transaction(commit=True) as curs:
            for row in rows:
                curs.execute(
                    f"UPDATE {self.table} SET wrapped = {p}, kek_id = {p} WHERE key_id = {p} AND wrapped IS NOT NULL",
                    (row.wrapped, row.kek_id, row.key_id),
                )
        self.forget_destroyed()


class SQLiteKeyTable(KeyTable):
    """The data keys in the ledger's SQLite file: ``secure_delete`` and a WAL checkpoint after an erasure."""

    def _before_destroy(self, curs: Any) -> None:
        curs.execute("PRAGMA secure_delete = ON")  # what the updates free is zeroed, not left in the page


class PostgresKeyTable(KeyTable):
    """The data keys in the ledger's PostgreSQL schema: ``VACUUM FULL`` after an erasure."""

    p = "%s"
    blob, stamp = "bytea", "text"

    def qualified(self, name: str) -> str:
        schema_name = getattr(self.datastore, "schema", None)
        return f'"{schema_name}".{name}' if schema_name else name

    _destroyed_by: str | None = None  # this process's last destroying transaction (its 64-bit xid)

    def _before_destroy(self, curs: Any) -> None:
        curs.execute("SELECT pg_current_xact_id()::text AS xid")
        self._destroyed_by = str(_first(curs.fetchone()))

    def _scrub(self, *, wait: float) -> bool:
        with self.datastore.get_connection() as conn:
            autocommit = conn.autocommit
            conn.autocommit = True
            try:
                # The destroying transaction; from another process, any before now (a tick finishing a pending one).
                horizon = self._destroyed_by or str(_first(conn.execute("SELECT pg_current_xact_id()::text").fetchone()))
                conn.execute(f"SET lock_timeout = {max(int(wait * 1000), 1)}")
                try:
                    conn.execute(f"VACUUM FULL {self.table}")
                except Exception as e:
                    if LOCK_NOT_AVAILABLE in (getattr(e, "sqlstate", None), getattr(e.__cause__, "sqlstate", None)):
                        # a transaction holds the table
                        return False
                    raise
                finally:
                    conn.execute("RESET lock_timeout")
                # VACUUM FULL copies live row versions, and dead ones a snapshot older than the destroying
                # transaction may still see: none may be left (sessions of other roles are not visible here).
                older = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_xmin IS NOT NULL "
                    "AND age(backend_xmin) >= age(((%s::bigint) %% 4294967296)::text::xid)", (horizon,),
                ).fetchone()
                left = conn.execute(
                    f"SELECT count(*) FROM {self.table} WHERE destroyed_at IS NOT NULL AND wrapped IS NOT NULL"
                ).fetchone()
                return _first(older) == 0 and _first(left) == 0
            finally:
                conn.autocommit = autocommit


def _first(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def _row(r: Any) -> DataKeyRow:
    if isinstance(r, dict):
        r = (r["key_id"], r["subject"], r["kek_id"], r["wrapped"], r["created_at"], r["destroyed_at"])
    wrapped = bytes(r[3]) if r[3] is not None else None
    return DataKeyRow(key_id=r[0], subject=r[1], kek_id=r[2], wrapped=wrapped, created_at=r[4], destroyed_at=r[5])
