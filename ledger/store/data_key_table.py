"""The key store's SQL: customers' data keys, wrapped, in a table beside the events.

A row is one data key: its id, its subject (the customer id, or ``intake-rejections:YYYY-MM``),
the id of the key-encryption key that wrapped it, the wrapped bytes, when it was made and when it
was destroyed. Lookup secrets (``lookup:`` ids, subject ``ledger:lookup``) are rows too, wrapped alike.
Destroying a key sets its wrapped bytes to NULL and its ``destroyed_at``; the row
stays, so a reader can tell "erased" from "never existed". New keys are inserted in the same
transaction as the first events they encrypt (the recorders call :meth:`KeyTable.insert` from
their insert path), so no stored event ever names a key that was not stored with it.

On SQLite the table is in the ledger's file (``secure_delete`` on for the erasing connection and a
WAL checkpoint after, so the wrapped bytes do not survive in free pages or the WAL); on PostgreSQL
in the ledger's schema, rewritten by ``VACUUM FULL`` after an erasure for the same reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from caseledger.ledger.store_ports import DataKeyRow

TABLE = "caseledger_data_keys"
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
        p = self.p
        for row in rows:
            curs.execute(
                f"INSERT INTO {self.table} ({_COLUMNS}) VALUES ({p}, {p}, {p}, {p}, {p}, {p})",
                (row.key_id, row.subject, row.kek_id, row.wrapped, row.created_at, row.destroyed_at),
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
        """Delete these rows, for good: no trace of their ids is left (lookup secrets, docs/privacy.md)."""
        if not key_ids:
            return
        p = self.p
        with self.datastore.transaction(commit=True) as curs:
            self._secure_delete(curs)
            for i in range(0, len(key_ids), 200):
                chunk = list(key_ids[i : i + 200])
                curs.execute(f"DELETE FROM {self.table} WHERE key_id IN ({', '.join([p] * len(chunk))})", chunk)
        self._scrub()

    def destroy(self, key_ids: Sequence[str], *, at: datetime) -> None:
        """Forget the wrapped bytes of these keys, for good (see the module docstring)."""
        if not key_ids:
            return
        p = self.p
        with self.datastore.transaction(commit=True) as curs:
            self._secure_delete(curs)
            for key_id in key_ids:
                curs.execute(
                    f"UPDATE {self.table} SET wrapped = NULL, destroyed_at = {p} WHERE key_id = {p}",
                    (at.isoformat(), key_id),
                )
        self._scrub()

    def _secure_delete(self, curs: Any) -> None:
        """Make the erasing transaction overwrite what it frees (SQLite); nothing to do elsewhere."""

    def _scrub(self) -> None:
        """Rewrite what still holds erased bytes (SQLite's WAL, PostgreSQL's dead tuples)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def rewrap(self, rows: Sequence[DataKeyRow]) -> None:
        """Store these rows' new wrapping (a key-encryption key rotation), all or none."""
        p = self.p
        with self.datastore.transaction(commit=True) as curs:
            for row in rows:
                curs.execute(
                    f"UPDATE {self.table} SET wrapped = {p}, kek_id = {p} WHERE key_id = {p} AND wrapped IS NOT NULL",
                    (row.wrapped, row.kek_id, row.key_id),
                )
        self._scrub()


class SQLiteKeyTable(KeyTable):
    """The data keys in the ledger's SQLite file: ``secure_delete`` and a WAL checkpoint after an erasure."""

    def _secure_delete(self, curs: Any) -> None:
        curs.execute("PRAGMA secure_delete = ON")


class PostgresKeyTable(KeyTable):
    """The data keys in the ledger's PostgreSQL schema: ``VACUUM FULL`` after an erasure."""

    p = "%s"
    blob, stamp = "bytea", "text"

    def qualified(self, name: str) -> str:
        schema_name = getattr(self.datastore, "schema", None)
        return f'"{schema_name}".{name}' if schema_name else name

    def _scrub(self) -> None:
        with self.datastore.get_connection() as conn:
            autocommit = conn.autocommit
            conn.autocommit = True
            try:
                conn.execute(f"VACUUM FULL {self.table}")
            finally:
                conn.autocommit = autocommit


def _row(r: Any) -> DataKeyRow:
    if isinstance(r, dict):
        r = (r["key_id"], r["subject"], r["kek_id"], r["wrapped"], r["created_at"], r["destroyed_at"])
    wrapped = bytes(r[3]) if r[3] is not None else None
    return DataKeyRow(key_id=r[0], subject=r[1], kek_id=r[2], wrapped=wrapped, created_at=r[4], destroyed_at=r[5])
