"""Where the service's idempotency keys are kept: ``caseledger_idempotency`` beside the event store, and its SQL.

One row for each (principal, ``Idempotency-Key``): a keyed digest of the request and, once done, the
response it got, sealed (what a retry is answered with; ``ledger/service/idempotency.py`` keys and
seals them). Rows older than the service's window are deleted. Created on first use in the ledger's
own database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from caseledger.ledger.store.sql_dialects import SQLDialect, as_time
from caseledger.ledger.store_ports import IdempotencyRow

__all__ = ["IdempotencyTable"]


class IdempotencyTable:
    """The idempotency-key table of one ledger database (a :class:`~caseledger.ledger.store_ports.IdempotencyStore`)."""

    def __init__(self, dialect: SQLDialect) -> None:
        self.dialect = d = dialect
        p, b, t = d.placeholder, d.blob, d.timestamp
        ik = d.table("caseledger_idempotency")
        self.create_statements = [
            f"CREATE TABLE IF NOT EXISTS {ik} (key_id TEXT PRIMARY KEY, request_sha256 {b} NOT NULL, status INTEGER, "
            f"response TEXT, created_at {t} NOT NULL)",
        ]
        columns = "key_id, request_sha256, status, response, created_at"
        self.insert_idempotency_statement = (
            f"INSERT INTO {ik} ({columns}) VALUES ({p}, {p}, NULL, NULL, {p}) ON CONFLICT (key_id) DO NOTHING")
        self.select_idempotency_statement = f"SELECT {columns} FROM {ik} WHERE key_id = {p}"
        self.select_idempotency_many_statement = f"SELECT {columns} FROM {ik} WHERE key_id IN " + "({})"
        # No ON CONFLICT: a key answered meanwhile fails the whole transaction (its events included).
        self.insert_answered_idempotency_statement = f"INSERT INTO {ik} ({columns}) VALUES ({p}, {p}, {p}, {p}, {p})"
        self.update_idempotency_statement = (
            f"UPDATE {ik} SET status = {p}, response = {p} WHERE key_id = {p} AND status IS NULL")
        self.restart_idempotency_statement = (
            f"UPDATE {ik} SET created_at = {p} WHERE key_id = {p} AND status IS NULL AND created_at = {p}")
        self.delete_idempotency_statement = f"DELETE FROM {ik} WHERE key_id = {p} AND status IS NULL"
        self.purge_idempotency_statement = f"DELETE FROM {ik} WHERE created_at < {p}"
        d.create(self.create_statements)

    def insert_idempotency(self, key_id: str, request_sha256: bytes, at: datetime) -> bool:
        """Claim a key for a request; False if it is already claimed."""
        d = self.dialect
        return d.run(self.insert_idempotency_statement, (key_id, request_sha256, d.at(at))) == 1

    def select_idempotency(self, key_id: str) -> IdempotencyRow | None:
        rows = self.dialect.rows(self.select_idempotency_statement, (key_id,))
        return self._row(rows[0]) if rows else None

    def select_idempotency_many(self, key_ids: list[str]) -> dict[str, IdempotencyRow]:
        """The rows of these keys that exist, by key id (one query per 200 keys)."""
        found: dict[str, IdempotencyRow] = {}
        for i in range(0, len(key_ids), 200):
            chunk = key_ids[i : i + 200]
            statement = self.select_idempotency_many_statement.format(", ".join([self.dialect.placeholder] * len(chunk)))
            for r in self.dialect.rows(statement, tuple(chunk)):
                found[r[0]] = self._row(r)
        return found

    def answered_idempotency(self, key_id: str, request_sha256: bytes, status: int, response: str,
                             at: datetime) -> tuple[str, tuple[Any, ...]]:
        """The statement that stores a key with its answer, to run in the transaction of the key's events."""
        return self.insert_answered_idempotency_statement, (key_id, request_sha256, status, response,
                                                            self.dialect.at(at))

    def complete_idempotency(self, key_id: str, status: int, response: str) -> None:
        self.dialect.run(self.update_idempotency_statement, (status, response, key_id))

    def restart_idempotency(self, key_id: str, claimed_at: datetime, at: datetime) -> bool:
        """Take over a claim whose request died before it answered; False if another caller did first."""
        d = self.dialect
        return d.run(self.restart_idempotency_statement, (d.at(at), key_id, d.at(claimed_at))) == 1

    def release_idempotency(self, key_id: str) -> None:
        """Forget a claim whose request recorded nothing (it failed): a retry runs afresh."""
        self.dialect.run(self.delete_idempotency_statement, (key_id,))

    def purge_idempotency(self, before: datetime) -> int:
        """Delete every row claimed before ``before``; how many."""
        return self.dialect.run(self.purge_idempotency_statement, (self.dialect.at(before),))

    @staticmethod
    def _row(r: tuple[Any, ...]) -> IdempotencyRow:
        return IdempotencyRow(r[0], bytes(r[1]), r[2], r[3], as_time(r[4]))  # type: ignore[arg-type]
