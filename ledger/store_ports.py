"""What the ledger asks of its store: one port per kind of row, and the provider that builds them all.

The application, privacy, access, the audit and the transparency log read and write through these ports and
never tell SQLite from PostgreSQL. ``ledger/store/`` holds one implementation of each port per backend and one
:class:`StorageProvider` per backend that builds them (``SQLiteStorage``, ``PostgresStorage``: eventsourcing
infrastructure factories, which also build the events' recorder); the store settings choose the provider, in
one place (``StoreSettings.eventsourcing_env``), and a ledger reaches it as ``ledger.storage``.

==================  =========================================================================================
port                what it keeps
==================  =========================================================================================
LedgerRecorder      the events, their notification log and tracking records (eventsourcing's process recorder)
DataKeyStore        customers' data keys, wrapped (inserted with the events that first use them)
MerkleStore         the transparency log's Merkle tiles, nodes and signed checkpoints
CosignatureStore    witnesses' cosignatures of those checkpoints
PrincipalStore      issued principals (token hashes) and the live page's browser sessions
AdapterKeyStore     channel adapters' public keys and channels
IdempotencyStore    the service's ``Idempotency-Key`` claims and the answers they got
CaseSnapshotStore   replayed cases, sealed under their customers' data keys (never events)
StoreSnapshot       the audit's read of the events table and tracking records, as of one moment
==================  =========================================================================================
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from eventsourcing.persistence import ProcessRecorder, StoredEvent

__all__ = [
    "PROFILE",
    "TILE_HEIGHT",
    "TOPICS_READ_BY_KIND",
    "AdapterKeyRow",
    "AdapterKeyStore",
    "CaseSnapshotRow",
    "CaseSnapshotStore",
    "CosignatureStore",
    "DataKeyRow",
    "DataKeyStore",
    "IdempotencyRow",
    "IdempotencyStore",
    "LedgerRecorder",
    "MapRows",
    "MerkleStore",
    "PrincipalRow",
    "PrincipalStore",
    "Row",
    "SessionRow",
    "StorageProvider",
    "StoreSnapshot",
    "StoredCheckpoint",
    "StoredCosignature",
    "Tile",
]

# -- events ------------------------------------------------------------------------------------------------


def tracking_moved(name: str, expected: int, found: int) -> str:
    """Why a recorder refused a batch: its tracking record moved since the batch read it (``expect_tracking``)."""
    return f"tracking record {name} is at {found}, not {expected}: another worker applied these records meanwhile"


#: The kinds of event the ledger reads by kind from the log's start — every case, every collision, every rejected
#: intake record, every erasure — as the catalog names their topics. Rare among events, each has a partial index of
#: its own in both stores: ``select_notifications`` of one of them alone never reads another event.
TOPICS_READ_BY_KIND: frozenset[str] = frozenset(
    f"caseledger.events.{name}" for name in ("CaseOpened", "MessageIdCollided", "IntakeRejected", "CustomerErased"))


class LedgerRecorder(ProcessRecorder, ABC):
    """A process recorder that also reads many aggregates at once.

    Its ``insert_events`` takes, besides eventsourcing's ``tracking``, ``also_tracking``: further
    tracking records written in the same transaction (one per partition an intake poll read);
    ``new_keys``: the data keys these events are the first to use; ``also_execute``: statements of
    the other ports to run in the same transaction (e.g. the answers of idempotency keys);
    ``expect_tracking``: (name, position) pairs each tracking record must still hold when the transaction
    writes (a missing record holds 0), checked under a lock on that name before anything is written — else
    eventsourcing's IntegrityError and nothing is written. Two intake workers that both believe they own a
    partition (a rebalance, a worker the group thought dead) can then never both apply one offset.
    """

    def select_events_after(
        self, originator_ids: Iterable[UUID], *, after: Mapping[UUID, int] | None = None
    ) -> dict[UUID, list[StoredEvent]]:
        """The stored events of each of ``originator_ids`` that has any, in version order.

        ``after`` gives, for some ids, a version already known: only later events are read for those.
        """
        ordered = list(originator_ids)
        known = [after.get(i, -1) for i in ordered] if after else [-1] * len(ordered)
        return self._select_events_after(ordered, known)

    @abstractmethod
    def _select_events_after(self, ids: list[UUID], known: list[int]) -> dict[UUID, list[StoredEvent]]:
        """The events of ``ids[n]`` after version ``known[n]`` (-1: all of them), grouped by id."""

    @abstractmethod
    def load_events(self, rows: Iterable[tuple[UUID, int, str, bytes]], *, new_keys: Sequence[DataKeyRow] = ()
                    ) -> int:
        """Write many pre-encoded events (originator id, version, topic, state) in order, in few long
        transactions, by the backend's fastest load (a benchmark's full ledger: no tracking, no ids returned);
        ``new_keys``: the data keys they are the first to use. Returns how many."""


# -- data keys ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataKeyRow:
    """One data key as stored: ``wrapped`` is None once destroyed."""

    key_id: str
    subject: str
    kek_id: str
    wrapped: bytes | None
    created_at: str
    destroyed_at: str | None = None


class DataKeyStore(Protocol):
    """Customers' data keys, wrapped; a destroyed key keeps its row (erased ≠ never existed)."""

    def by_subjects(self, subjects: Iterable[str]) -> list[DataKeyRow]:
        """The rows of these subjects (live and destroyed)."""
        ...

    def by_ids(self, key_ids: Iterable[str]) -> list[DataKeyRow]:
        """The rows of these key ids that exist."""
        ...

    def live(self) -> list[DataKeyRow]:
        """Every key not destroyed."""
        ...

    def subjects_like(self, prefix: str) -> list[DataKeyRow]:
        """The live keys whose subject starts with ``prefix``."""
        ...

    def destroyed(self) -> list[DataKeyRow]:
        """Every destroyed key (and marker row)."""
        ...

    def mark(self, subject: str, *, at: datetime) -> None:
        """A marker row (no key) that says something of the ledger."""
        ...

    def insert_if_absent(self, row: DataKeyRow) -> None:
        """Insert a key with a fixed id in its own transaction, unless another writer did first."""
        ...

    def delete(self, key_ids: Sequence[str]) -> None:
        """Delete these rows (lookup secrets of an erased customer); ``forget_destroyed`` removes the copies."""
        ...

    def destroy(self, key_ids: Sequence[str], *, at: datetime) -> None:
        """Overwrite the wrapped bytes of these keys in their rows (and what the update frees)."""
        ...

    def forget_destroyed(self, *, within: float | None = None) -> bool:
        """Remove every copy of destroyed keys' bytes the database still keeps (old pages, log, dead row
        versions); False when readers kept it from finishing for ``within`` seconds (a later call finishes)."""
        ...

    def rewrap(self, rows: Sequence[DataKeyRow]) -> None:
        """Store these rows' new wrapping (a key-encryption key rotation), all or none."""
        ...


# -- principals, adapter keys, idempotency -----------------------------------------------------------------


@dataclass(frozen=True)
class PrincipalRow:
    name: str
    role: str
    token_sha256: bytes | None
    created_at: datetime
    revoked_at: datetime | None
    team: str | None = None  # an organisation unit, e.g. billing
    zone: str | None = None  # an IANA time zone, e.g. Europe/Paris
    locale: str | None = None  # a BCP 47 tag, e.g. fr-FR


PROFILE = ("team", "zone", "locale")
"""What a principal says of itself besides its role (each optional): columns of the principal and session tables."""


@dataclass(frozen=True)
class SessionRow:
    name: str
    role: str
    authentication: str
    expires_at: datetime
    principal_active: bool  # an issued principal of that name exists and is not revoked
    team: str | None = None  # an issued principal's as it is now; an OIDC principal's as its token said at sign-in
    zone: str | None = None
    locale: str | None = None


@dataclass(frozen=True)
class AdapterKeyRow:
    name: str
    public_key: bytes
    channels: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None


IDEMPOTENCY_WINDOW = timedelta(hours=24)
"""How long the answer of an ``Idempotency-Key`` is kept (docs/api.md); ``tick`` and the service delete older rows."""


@dataclass(frozen=True)
class IdempotencyRow:
    key_id: str
    request_sha256: bytes
    status: int | None  # None: the first request is still running (or died before it answered)
    response: str | None
    created_at: datetime


@dataclass(frozen=True)
class CaseSnapshotRow:
    case_id: UUID
    version: int
    format: str  # which state encoding and which replay code wrote it: another is ignored
    sealed_by: tuple[str, ...]  # the live data keys it is sealed under, innermost first
    key_ids: tuple[str, ...]  # every data key its events were sealed under (destroyed ones included)
    sealed: bytes


class CaseSnapshotStore(Protocol):
    """One sealed snapshot per case: its state as replayed to a version (``ledger/case_snapshots.py``)."""

    def select_snapshot(self, case_id: UUID) -> CaseSnapshotRow | None: ...

    def save_snapshot(self, row: CaseSnapshotRow) -> None:
        """Keep ``row`` unless the case's kept snapshot is of a later version (and the same format)."""
        ...

    def delete_snapshots(self, case_ids: list[UUID]) -> int: ...


class PrincipalStore(Protocol):
    """Issued principals (the SHA-256 of their token, never the token) and their browser sessions."""

    def insert_principal(self, name: str, role: str, token_sha256: bytes, at: datetime, *,
                         profile: Mapping[str, str | None] | None = None) -> bool:
        """Add a principal (``profile``: its team, zone and locale, each optional); False if the name was ever used."""
        ...

    def update_principal(self, name: str, profile: Mapping[str, str | None]) -> bool:
        """Change an active principal's team, zone or locale (the keys given; None clears); False if none is active."""
        ...

    def select_principal_by_token(self, token_sha256: bytes) -> PrincipalRow | None: ...

    def select_principal(self, name: str) -> PrincipalRow | None: ...

    def select_principals(self) -> list[PrincipalRow]: ...

    def revoke_principal(self, name: str, at: datetime) -> bool:
        """Revoke a principal's token and end its browser sessions, in one transaction; False if none was active."""
        ...

    def insert_session(self, session_sha256: bytes, name: str, role: str, authentication: str, at: datetime,
                       expires_at: datetime, *, profile: Mapping[str, str | None] | None = None) -> None:
        """Open a session (and forget the sessions expired by now); ``profile``: the principal's team, zone, locale."""
        ...

    def select_session(self, session_sha256: bytes) -> SessionRow | None: ...

    def delete_session(self, session_sha256: bytes) -> None: ...


class AdapterKeyStore(Protocol):
    """Channel adapters' Ed25519 public keys and the channels each may publish for."""

    def insert_adapter(self, name: str, public_key: bytes, channels: tuple[str, ...], at: datetime) -> bool:
        """Add an adapter's key; False if the name was ever used."""
        ...

    def select_adapter(self, name: str) -> AdapterKeyRow | None: ...

    def select_adapters(self) -> list[AdapterKeyRow]: ...

    def revoke_adapter(self, name: str, at: datetime) -> bool:
        """Revoke an adapter's key; False if none was active."""
        ...


class IdempotencyStore(Protocol):
    """For each (principal, ``Idempotency-Key``): a keyed digest of the request and, once done, its sealed answer."""

    def insert_idempotency(self, key_id: str, request_sha256: bytes, at: datetime) -> bool:
        """Claim a key for a request; False if it is already claimed."""
        ...

    def select_idempotency(self, key_id: str) -> IdempotencyRow | None: ...

    def select_idempotency_many(self, key_ids: list[str]) -> dict[str, IdempotencyRow]:
        """The rows of these keys that exist, by key id."""
        ...

    def answered_idempotency(self, key_id: str, request_sha256: bytes, status: int, response: str,
                             at: datetime) -> tuple[str, tuple[Any, ...]]:
        """The statement that stores a key with its answer, for the recorder's ``also_execute``."""
        ...

    def complete_idempotency(self, key_id: str, status: int, response: str) -> None: ...

    def restart_idempotency(self, key_id: str, claimed_at: datetime, at: datetime) -> bool:
        """Take over a claim whose request died before it answered; False if another caller did first."""
        ...

    def release_idempotency(self, key_id: str) -> None:
        """Forget a claim whose request recorded nothing (it failed): a retry runs afresh."""
        ...

    def purge_idempotency(self, before: datetime) -> int:
        """Delete every row claimed before ``before`` (its window passed); how many."""
        ...


# -- the transparency log's Merkle tree ----------------------------------------------------------------------

Node = tuple[int, int]  # (level, index)
TILE_HEIGHT = 8
"""A tile holds 2^8 = 256 leaves; nodes of this level and above are rows of their own."""


@dataclass(frozen=True)
class Tile:
    """Up to 256 consecutive leaves: their hashes (32 bytes each) and store positions (8 bytes each)."""

    index: int
    first_position: int
    leaves: bytes
    positions: bytes
    inner: bytes = b""  # a full tile's 255 inner nodes, level 1 to 8, left to right (empty while partial)

    def __len__(self) -> int:
        return len(self.leaves) // 32

    def leaf(self, k: int) -> bytes:
        return self.leaves[32 * k : 32 * k + 32]

    def position(self, k: int) -> int:
        return int.from_bytes(self.positions[8 * k : 8 * k + 8], "big")


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint as stored: its tree size and root, the signed note, when it was signed, by which key."""

    tree_size: int
    root: bytes
    note: str
    signed_at: datetime
    key_id: str
    last_position: int = 0  # the store position of its last leaf (the publisher waits for it)


@dataclass(frozen=True)
class MapRows:
    """One step of the customer map (``ledger/transparency/customer_map.py``): from ``old_size`` leaves to ``new_size``.

    ``nodes`` are its changed nodes ``(node id, value)``, a version valid from ``new_size`` on (value: an inner
    node's 32-byte hash, or a leaf's key ‖ value hash); ``customers`` each changed customer's
    ``(key, count, chain head)``.
    """

    old_size: int
    new_size: int
    last_position: int
    nodes: Sequence[tuple[bytes, bytes]]
    customers: Sequence[tuple[bytes, int, bytes]]


@dataclass(frozen=True)
class StoredCosignature:
    """A witness's cosignature of one checkpoint text: its signature line as the witness returned it."""

    witness: str  # the witness key's name
    key_id: str  # its key id, hex
    tree_size: int
    text_sha256: bytes  # SHA-256 of the checkpoint's note text (signatures excluded): what it cosigned
    line: str
    received_at: datetime


class CosignatureStore(Protocol):
    """Witnesses' cosignatures (``ledger/store/cosignature_table.py``)."""

    def insert_cosignature(self, row: StoredCosignature) -> None:
        """Keep a cosignature (a second one of the same witness for the same text is not kept)."""
        ...

    def select_cosignatures(self, text_sha256: bytes) -> list[StoredCosignature]: ...

    def latest_cosignature(self, witness: str, key_id: str) -> StoredCosignature | None:
        """The witness's cosignature of the largest tree."""
        ...


class MerkleStore(ABC):
    """The Merkle tree's tiles and nodes and the signed checkpoints (rows laid out in ``ledger/store/merkle_tables.py``)."""

    @abstractmethod
    def create_tables(self) -> None:
        """Create the tables when missing."""

    @abstractmethod
    def state(self) -> tuple[int, int]:
        """(tree size, last position appended); (0, 0) for an empty tree."""

    @abstractmethod
    def append(self, old_size: int, new_size: int, last_position: int, tiles: Sequence[Tile],
               nodes: Sequence[tuple[int, int, bytes]]) -> None:
        """Tiles (written whole, replacing a partial one) and nodes ``(level ≥ 8, index, hash)`` in one transaction.

        :class:`~caseledger.ledger.errors.TreeMoved` when the stored size is no longer ``old_size``.
        """

    @abstractmethod
    def append_map(self, rows: MapRows) -> None:
        """The customer map's step, in one transaction; TreeMoved when the size it covers is no longer ``old_size``."""

    @abstractmethod
    def map_state(self) -> tuple[int, int]:
        """(leaves the customer map covers, the position of the last); (0, 0) for an empty map."""

    @abstractmethod
    def map_nodes(self, wanted: Iterable[bytes], size: int | None = None) -> dict[bytes, bytes]:
        """The value of each map node that exists at ``size`` leaves (None: now): its latest version up to it."""

    @abstractmethod
    def map_customers(self, keys: Iterable[bytes]) -> dict[bytes, tuple[int, bytes]]:
        """The (count, chain head) of each customer key in the map now."""

    @abstractmethod
    def nodes(self, wanted: Iterable[Node]) -> dict[Node, bytes]:
        """The hashes of the stored complete subtrees ``(level ≥ 8, index)`` that exist."""

    @abstractmethod
    def tiles(self, indexes: Iterable[int]) -> dict[int, Tile]:
        """The tiles of these indexes that exist."""

    @abstractmethod
    def tile_of_position(self, position: int) -> Tile | None:
        """The tile whose leaves may include ``position`` (the last one starting at or before it)."""

    def leaf_indexes(self, positions: Sequence[int]) -> dict[int, int]:
        """position → leaf index, for the positions that are leaves."""
        found: dict[int, int] = {}
        cache: dict[int, tuple[Tile, list[int]]] = {}
        for p in sorted(set(positions)):
            tile = self.tile_of_position(p)
            if tile is None:
                continue
            if tile.index not in cache:
                cache[tile.index] = (tile, [tile.position(k) for k in range(len(tile))])
            _, ordered = cache[tile.index]
            k = bisect.bisect_left(ordered, p)
            if k < len(ordered) and ordered[k] == p:
                found[p] = (tile.index << TILE_HEIGHT) + k
        return found

    def leaves(self, start: int, end: int) -> list[tuple[int, int, bytes]]:
        """Leaves ``(index, position, hash)`` with ``start <= index < end``."""
        found = []
        tiles = self.tiles(range(start >> TILE_HEIGHT, ((max(end, 1) - 1) >> TILE_HEIGHT) + 1))
        for t in sorted(tiles):
            tile = tiles[t]
            for k in range(len(tile)):
                index = (t << TILE_HEIGHT) + k
                if start <= index < end:
                    found.append((index, tile.position(k), tile.leaf(k)))
        return found

    @abstractmethod
    def insert_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        """Store a signed checkpoint."""

    @abstractmethod
    def checkpoints(self, *, after_size: int = -1, size: int | None = None, limit: int = 100) -> list[StoredCheckpoint]:
        """Checkpoints in signing order: those above ``after_size``, or of exactly ``size``."""

    @abstractmethod
    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The checkpoint signed last."""


# -- the audit's read --------------------------------------------------------------------------------------

Row = tuple[int, bytes, int, str, bytes]
"""(position, aggregate id as 32 lowercase hex digits, version, topic, stored bytes)."""


class StoreSnapshot(ABC):
    """Reads the events table and tracking records as of one moment (one read transaction)."""

    backend = "store"
    positions_may_skip = False

    @abstractmethod
    def head(self) -> int:
        """The highest position in the snapshot (0 when empty)."""

    @abstractmethod
    def pages(self, after: int, upto: int, size: int) -> Iterator[list[Row]]:
        """Rows with ``after < position <= upto`` in position order, ``size`` at a time."""

    @abstractmethod
    def row_at_or_after(self, position: int) -> Row | None:
        """The first row at ``position`` or after it (None past the end)."""

    @abstractmethod
    def event(self, aggregate_hex: bytes, version: int) -> Row | None:
        """The row of one aggregate version (position 0: not looked up)."""

    @abstractmethod
    def heads_before(self, aggregates: Collection[bytes], after: int, before: int) -> list[Row]:
        """The last row of each of ``aggregates`` with ``after < position < before`` (none for those without)."""

    @abstractmethod
    def tracking(self) -> dict[str, int]:
        """Every tracking record: name → highest tracked id."""

    @abstractmethod
    def case_tally(self) -> CaseTally:
        """Counters per case kept on disk, outside the store (a temporary file), for the audit's cross references."""


class CaseTally(ABC):
    """Per case id: [CaseLinked seen, contacts, messages registered, position opened at], summed on disk.

    The audit adds its counters a window at a time (``add``) and reads back, in the order the cases
    were first added, those that break a cross reference (``broken``); its memory stays the window's.
    """

    @abstractmethod
    def add(self, counts: dict[bytes, list[int]]) -> None:
        """Add a window's counters (positions opened at: the later one is kept)."""

    @abstractmethod
    def broken(self) -> Iterator[tuple[bytes, int, int, int, int]]:
        """(case id, links, contacts, messages, opened) of the cases not opened, not linked once or unmatched."""

    @abstractmethod
    def opened(self) -> int:
        """How many cases have their CaseOpened in the counters."""

    @abstractmethod
    def close(self) -> None:
        """Delete the counters."""


# -- the provider ------------------------------------------------------------------------------------------


@runtime_checkable
class StorageProvider(Protocol):
    """Every store of one ledger database, on one backend; built by eventsourcing from the store settings."""

    backend: str
    """The backend's name as status lines and the audit print it ("SQLite", "PostgreSQL")."""

    @property
    def database_file(self) -> Path | None:
        """The SQLite file the ledger lives in (its key-encryption key may sit beside it); None on a server."""
        ...

    def process_recorder(self) -> Any:
        """The events' recorder (a :class:`LedgerRecorder`; typed as eventsourcing's factory types it)."""
        ...

    def data_keys(self) -> DataKeyStore:
        """The data keys, in the table the recorder inserts new keys into with their first events."""
        ...

    def principals(self) -> PrincipalStore:
        """The principal and session tables, created if missing."""
        ...

    def adapter_keys(self) -> AdapterKeyStore:
        """The adapter-key table, created if missing."""
        ...

    def idempotency(self) -> IdempotencyStore:
        """The idempotency-key table, created if missing."""
        ...

    def merkle(self) -> MerkleStore:
        """The Merkle tree and checkpoint tables, created if missing."""
        ...

    def case_snapshots(self) -> CaseSnapshotStore:
        """The case snapshot table, created when a first snapshot is kept."""
        ...

    def cosignatures(self) -> CosignatureStore:
        """The witnesses' cosignature table, created if missing."""
        ...

    def audit_snapshot(self) -> AbstractContextManager[StoreSnapshot]:
        """One read transaction over the events and tracking records (SQLite WAL snapshot, PostgreSQL
        REPEATABLE READ READ ONLY)."""
        ...

    def close(self) -> None:
        """Close the database connections."""
        ...
