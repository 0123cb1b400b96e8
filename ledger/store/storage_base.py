"""What both storage providers share: each port's store built once, on the backend's own classes.

A backend's provider (``SQLiteStorage``, ``PostgresStorage``) is an eventsourcing infrastructure factory
that names its classes — dialect, key table, Merkle store, audit snapshot — and how its tables are named;
this mixin builds the ports of :class:`~caseledger.ledger.store_ports.StorageProvider` from them, each on
the datastore (connections, pool, timeouts) of the ledger's own recorder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any

from caseledger.ledger.store.adapter_key_table import AdapterKeyTable
from caseledger.ledger.store.case_snapshot_table import CaseSnapshotTable
from caseledger.ledger.store.cosignature_table import CosignatureTable
from caseledger.ledger.store.data_key_table import KeyTable
from caseledger.ledger.store.idempotency_table import IdempotencyTable
from caseledger.ledger.store.principal_tables import PrincipalTables
from caseledger.ledger.store.sql_dialects import SQLDialect
from caseledger.ledger.store_ports import (
    AdapterKeyStore,
    CaseSnapshotStore,
    CosignatureStore,
    DataKeyStore,
    IdempotencyStore,
    MerkleStore,
    PrincipalStore,
    StoreSnapshot,
)

#: The entry of eventsourcing's environment that names the database for error messages (no password).
STORE_DESCRIPTION = "STORE_DESCRIPTION"


class StorageBase(ABC):
    """The ports of one ledger database; the backend's provider says which classes build them."""

    backend: str
    dialect_class: type[SQLDialect]
    key_table_class: type[KeyTable]
    datastore: Any
    env: Any

    @property
    def where(self) -> str:
        """The database, as error messages name it."""
        return str(self.env.get(STORE_DESCRIPTION) or self.backend)

    @property
    def _dialect(self) -> SQLDialect:
        return self.dialect_class(self.datastore, self.where)

    # Each port's store is built on first use and kept: its statements are written once per provider.
    _data_keys: DataKeyStore | None = None
    _principals: PrincipalStore | None = None
    _adapter_keys: AdapterKeyStore | None = None
    _idempotency: IdempotencyStore | None = None
    _cosignatures: CosignatureStore | None = None
    _case_snapshots: CaseSnapshotStore | None = None

    def data_keys(self) -> DataKeyStore:
        """The data keys table (the recorder inserts new keys into the same table with their first events)."""
        if self._data_keys is None:
            self._data_keys = self.key_table_class(self.datastore)
        return self._data_keys

    def principals(self) -> PrincipalStore:
        """The principal and session tables, created on first use."""
        if self._principals is None:
            self._principals = PrincipalTables(self._dialect)
        return self._principals

    def adapter_keys(self) -> AdapterKeyStore:
        """The adapter-key table, created on first use."""
        if self._adapter_keys is None:
            self._adapter_keys = AdapterKeyTable(self._dialect)
        return self._adapter_keys

    def idempotency(self) -> IdempotencyStore:
        """The idempotency-key table, created on first use."""
        if self._idempotency is None:
            self._idempotency = IdempotencyTable(self._dialect)
        return self._idempotency

    def cosignatures(self) -> CosignatureStore:
        """The witnesses' cosignature table, created on first use."""
        if self._cosignatures is None:
            self._cosignatures = CosignatureTable(self._dialect)
        return self._cosignatures

    def case_snapshots(self) -> CaseSnapshotStore:
        """The case snapshot table (created when a first snapshot is kept)."""
        if self._case_snapshots is None:
            self._case_snapshots = CaseSnapshotTable(self._dialect)
        return self._case_snapshots

    def merkle(self) -> MerkleStore:
        """The Merkle tree and checkpoint tables (created if missing: every call looks)."""
        store = self._merkle_store()
        store.create_tables()
        return store

    @abstractmethod
    def _merkle_store(self) -> MerkleStore:
        """The backend's Merkle store on this database."""

    @abstractmethod
    def audit_snapshot(self) -> AbstractContextManager[StoreSnapshot]:
        """One read transaction over the events and tracking records."""
