"""Every store of a ledger kept in one SQLite file: the provider eventsourcing builds for a SQLite database.

``StoreSettings`` names this class to eventsourcing (its ``PERSISTENCE_MODULE``) for a file path; as
eventsourcing's own ``SQLiteFactory`` it opens the file and builds the events' recorder, and it builds
every other port of :class:`~caseledger.ledger.store_ports.StorageProvider` on the same connections.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from eventsourcing.sqlite import SQLiteFactory

from caseledger.ledger.private_files import create_private
from caseledger.ledger.store.audit_reads import SQLiteStoreSnapshot
from caseledger.ledger.store.data_key_table import SQLiteKeyTable
from caseledger.ledger.store.merkle_tables import SQLiteMerkleStore
from caseledger.ledger.store.sql_dialects import SQLiteDialect
from caseledger.ledger.store.sqlite_recorder import SQLiteLedgerRecorder
from caseledger.ledger.store.storage_base import StorageBase
from caseledger.ledger.store_ports import MerkleStore, StoreSnapshot

__all__ = ["SQLiteStorage"]


class SQLiteStorage(StorageBase, SQLiteFactory):
    """The events, data keys, Merkle tiles, principals, adapter keys, idempotency keys and the audit's read,
    in one SQLite file."""

    backend = "SQLite"
    process_recorder_class = SQLiteLedgerRecorder
    dialect_class = SQLiteDialect
    key_table_class = SQLiteKeyTable
    events_table = "stored_events"  # eventsourcing's SQLite table names

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        file = self.database_file
        if file is not None and file.parent.is_dir() and not file.name.startswith(":memory:"):
            create_private(file)  # its -wal and -shm files take its mode

    @property
    def database_file(self) -> Path | None:
        """The ledger's file (its key-encryption key may sit beside it)."""
        return Path(str(self.env.get(self.SQLITE_DBNAME)))

    def _merkle_store(self) -> MerkleStore:
        return SQLiteMerkleStore(self.datastore)

    def audit_snapshot(self) -> AbstractContextManager[StoreSnapshot]:
        return SQLiteStoreSnapshot.open(self.datastore, self.events_table)
