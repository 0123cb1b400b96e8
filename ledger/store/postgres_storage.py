"""Every store of a ledger kept in one PostgreSQL schema: the provider eventsourcing builds for a PostgreSQL URL.

``StoreSettings`` names this class to eventsourcing (its ``PERSISTENCE_MODULE``) for a ``postgresql://``
URL; as eventsourcing's own ``PostgresFactory`` it opens the connection pool and builds the events'
recorder, and it builds every other port of :class:`~caseledger.ledger.store_ports.StorageProvider` on the
same pool. Only this module (and the SQL beside it) imports psycopg: a SQLite ledger never loads it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from eventsourcing.postgres import PostgresFactory

from caseledger.ledger.store.audit_reads import PostgresStoreSnapshot
from caseledger.ledger.store.data_key_table import PostgresKeyTable
from caseledger.ledger.store.merkle_tables import PostgresMerkleStore
from caseledger.ledger.store.postgres_recorder import PostgresLedgerRecorder
from caseledger.ledger.store.sql_dialects import PostgresDialect
from caseledger.ledger.store.storage_base import StorageBase
from caseledger.ledger.store_ports import MerkleStore, StoreSnapshot

__all__ = ["PostgresStorage"]


class PostgresStorage(StorageBase, PostgresFactory):
    """The events, data keys, Merkle tiles, principals, adapter keys, idempotency keys and the audit's read,
    in one PostgreSQL schema."""

    backend = "PostgreSQL"
    process_recorder_class = PostgresLedgerRecorder
    dialect_class = PostgresDialect
    key_table_class = PostgresKeyTable

    @property
    def database_file(self) -> Path | None:
        """None: the database is a server's (the key-encryption key must be given)."""
        return None

    @property
    def events_table(self) -> str:
        """The events table, named as eventsourcing's factory names it (``<app>_events``)."""
        return (self.env.name.lower() or "stored") + "_events"

    @property
    def tracking_table(self) -> str:
        return (self.env.name.lower() or "notification") + "_tracking"

    def _merkle_store(self) -> MerkleStore:
        return PostgresMerkleStore(self.datastore, self.events_table)

    def audit_snapshot(self) -> AbstractContextManager[StoreSnapshot]:
        return PostgresStoreSnapshot.open(self.datastore, self.events_table, self.tracking_table)
