"""Where channel adapters' keys are kept: ``caseledger_adapter_keys`` beside the event store, and its SQL.

One row per adapter: its Ed25519 public key, the channels it may publish for, when it was added and
revoked. A name is never reused. Created on first use in the ledger's own database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from caseledger.ledger.store.sql_dialects import SQLDialect, as_time
from caseledger.ledger.store_ports import AdapterKeyRow

__all__ = ["AdapterKeyTable"]


class AdapterKeyTable:
    """The adapter-key table of one ledger database (a :class:`~caseledger.ledger.store_ports.AdapterKeyStore`)."""

    def __init__(self, dialect: SQLDialect) -> None:
        self.dialect = d = dialect
        p, b, t = d.placeholder, d.blob, d.timestamp
        ak = d.table("caseledger_adapter_keys")
        self.create_statements = [
            f"CREATE TABLE IF NOT EXISTS {ak} (name TEXT PRIMARY KEY, public_key {b} NOT NULL, channels TEXT NOT NULL, "
            f"created_at {t} NOT NULL, revoked_at {t})",
        ]
        columns = "name, public_key, channels, created_at, revoked_at"
        self.insert_adapter_statement = (
            f"INSERT INTO {ak} ({columns}) VALUES ({p}, {p}, {p}, {p}, NULL) ON CONFLICT (name) DO NOTHING")
        self.select_adapter_statement = f"SELECT {columns} FROM {ak} WHERE name = {p}"
        self.select_adapters_statement = f"SELECT {columns} FROM {ak} ORDER BY name"
        self.revoke_adapter_statement = f"UPDATE {ak} SET revoked_at = {p} WHERE name = {p} AND revoked_at IS NULL"
        d.create(self.create_statements)

    def insert_adapter(self, name: str, public_key: bytes, channels: tuple[str, ...], at: datetime) -> bool:
        """Add an adapter's key; False if the name was ever used."""
        d = self.dialect
        return d.run(self.insert_adapter_statement, (name, public_key, ",".join(channels), d.at(at))) == 1

    def select_adapter(self, name: str) -> AdapterKeyRow | None:
        rows = self.dialect.rows(self.select_adapter_statement, (name,))
        return self._adapter(rows[0]) if rows else None

    def select_adapters(self) -> list[AdapterKeyRow]:
        return [self._adapter(row) for row in self.dialect.rows(self.select_adapters_statement)]

    def revoke_adapter(self, name: str, at: datetime) -> bool:
        """Revoke an adapter's key; False if none was active."""
        return self.dialect.run(self.revoke_adapter_statement, (self.dialect.at(at), name)) == 1

    @staticmethod
    def _adapter(row: tuple[Any, ...]) -> AdapterKeyRow:
        channels = tuple(c for c in str(row[2]).split(",") if c)
        return AdapterKeyRow(row[0], bytes(row[1]), channels, as_time(row[3]), as_time(row[4]))  # type: ignore[arg-type]
