"""Where replayed cases are kept sealed: ``caseledger_case_snapshots`` beside the event store, and its SQL.

One row per case: the version it was replayed to, the data keys it is sealed under and the ones its events
name, and the sealed state (``ledger/case_snapshots.py`` seals and opens it; nothing here is in clear but
ids). Never an event: the events table, the notification log and whatever reads them never see it.
Created when the first snapshot is kept, in the ledger's own database.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from caseledger.ledger.store.sql_dialects import SQLDialect
from caseledger.ledger.store_ports import CaseSnapshotRow

__all__ = ["TABLE", "CaseSnapshotTable"]

TABLE = "caseledger_case_snapshots"


class CaseSnapshotTable:
    """The case snapshot table of one ledger database (a :class:`~caseledger.ledger.store_ports.CaseSnapshotStore`)."""

    def __init__(self, dialect: SQLDialect) -> None:
        self.dialect = d = dialect
        p, b = d.placeholder, d.blob
        t = d.table(TABLE)
        # Made by the first snapshot kept, not by the first read: a reader takes no write lock to find none.
        self.create_statements = [
            f"CREATE TABLE IF NOT EXISTS {t} (case_id TEXT PRIMARY KEY, version INTEGER NOT NULL, "
            f"format TEXT NOT NULL, sealed_by TEXT NOT NULL, key_ids TEXT NOT NULL, sealed {b} NOT NULL)",
        ]
        self._created = False
        columns = "case_id, version, format, sealed_by, key_ids, sealed"
        self.select_statement = f"SELECT {columns} FROM {t} WHERE case_id = {p}"
        # The same version or a later one: two readers taking the same case at once keep the furthest, and a row
        # that did not open (damaged, or sealed under a key destroyed since) is replaced by the replay that followed.
        self.upsert_statement = (
            f"INSERT INTO {t} ({columns}) VALUES ({p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (case_id) DO UPDATE SET "
            "version = excluded.version, format = excluded.format, sealed_by = excluded.sealed_by, "
            f"key_ids = excluded.key_ids, sealed = excluded.sealed WHERE excluded.version >= {t}.version "
            f"OR excluded.format <> {t}.format")
        self.delete_statement = f"DELETE FROM {t} WHERE case_id IN " + "({})"

    def _there(self) -> bool:
        """Whether the table exists: made by the first snapshot kept, asked of the catalog until then (a SELECT on a
        table not there fails, on PostgreSQL an ERROR line in the server's log)."""
        if not self._created:
            self._created = self.dialect.exists(TABLE)
        return self._created

    def select_snapshot(self, case_id: UUID) -> CaseSnapshotRow | None:
        if not self._there():
            return None  # no snapshot was ever kept in this database
        rows = self.dialect.rows(self.select_statement, (str(case_id),))
        return self._row(rows[0]) if rows else None

    def save_snapshot(self, row: CaseSnapshotRow) -> None:
        if not self._created:
            self.dialect.create(self.create_statements)
            self._created = True
        self.dialect.run(self.upsert_statement, (str(row.case_id), row.version, row.format, ",".join(row.sealed_by),
                                                 ",".join(row.key_ids), row.sealed))

    def delete_snapshots(self, case_ids: list[UUID]) -> int:
        if not case_ids or not self._there():
            return 0  # no snapshot was ever kept in this database: no table to make just to delete nothing
        deleted = 0
        for i in range(0, len(case_ids), 200):
            chunk = case_ids[i : i + 200]
            statement = self.delete_statement.format(", ".join([self.dialect.placeholder] * len(chunk)))
            deleted += self.dialect.run(statement, tuple(str(c) for c in chunk))
        return deleted

    @staticmethod
    def _row(r: tuple[Any, ...]) -> CaseSnapshotRow:
        return CaseSnapshotRow(
            case_id=UUID(str(r[0])), version=int(r[1]), format=str(r[2]),
            sealed_by=tuple(k for k in str(r[3]).split(",") if k), key_ids=tuple(k for k in str(r[4]).split(",") if k),
            sealed=bytes(r[5]),
        )
