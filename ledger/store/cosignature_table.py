"""Where witnesses' cosignatures are kept: ``caseledger_cosignatures`` beside the checkpoints, and its SQL.

One row per witness and checkpoint text: the signature line the witness returned (C2SP tlog-witness),
the tree size, and SHA-256 of the note text it cosigned (a checkpoint's text holds its ``Timestamp:``
line, so two checkpoints of one tree are two texts). Nothing personal: sizes, hashes, a witness's name.
Created on first use in the ledger's own database.
"""

from __future__ import annotations

from typing import Any

from caseledger.ledger.store.sql_dialects import SQLDialect, as_time
from caseledger.ledger.store_ports import StoredCosignature

__all__ = ["CosignatureTable"]


class CosignatureTable:
    """The cosignature table of one ledger database (a :class:`~caseledger.ledger.store_ports.CosignatureStore`)."""

    def __init__(self, dialect: SQLDialect) -> None:
        self.dialect = d = dialect
        p, b, t = d.placeholder, d.blob, d.timestamp
        table = d.table("caseledger_cosignatures")
        columns = "witness, key_id, tree_size, text_sha256, line, received_at"
        d.create([
            f"CREATE TABLE IF NOT EXISTS {table} (witness TEXT NOT NULL, key_id TEXT NOT NULL, tree_size BIGINT NOT NULL, "
            f"text_sha256 {b} NOT NULL, line TEXT NOT NULL, received_at {t} NOT NULL, "
            "PRIMARY KEY (witness, key_id, text_sha256))",
            f"CREATE INDEX IF NOT EXISTS caseledger_cosignatures_by_text ON {table} (text_sha256)",
        ])
        self.insert_statement = (f"INSERT INTO {table} ({columns}) VALUES ({p}, {p}, {p}, {p}, {p}, {p}) "
                                 "ON CONFLICT (witness, key_id, text_sha256) DO NOTHING")
        self.select_statement = f"SELECT {columns} FROM {table} WHERE text_sha256 = {p} ORDER BY witness"
        self.latest_statement = (f"SELECT {columns} FROM {table} WHERE witness = {p} AND key_id = {p} "
                                 "ORDER BY tree_size DESC, received_at DESC LIMIT 1")

    def insert_cosignature(self, row: StoredCosignature) -> None:
        d = self.dialect
        d.run(self.insert_statement, (row.witness, row.key_id, row.tree_size, row.text_sha256, row.line,
                                      d.at(row.received_at)))

    def select_cosignatures(self, text_sha256: bytes) -> list[StoredCosignature]:
        return [self._row(r) for r in self.dialect.rows(self.select_statement, (text_sha256,))]

    def latest_cosignature(self, witness: str, key_id: str) -> StoredCosignature | None:
        rows = self.dialect.rows(self.latest_statement, (witness, key_id))
        return self._row(rows[0]) if rows else None

    @staticmethod
    def _row(row: tuple[Any, ...]) -> StoredCosignature:
        return StoredCosignature(str(row[0]), str(row[1]), int(row[2]), bytes(row[3]), str(row[4]),
                                 as_time(row[5]))  # type: ignore[arg-type]
