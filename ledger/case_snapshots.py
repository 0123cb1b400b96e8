"""A case read from its last snapshot and the events after it: sealed under its customer's keys, so erasure reaches it.

Replaying a case opens (AES-GCM) every sealed text of every event it has: at a hundred and fifty events that
was most of ``case show``'s time. A read that replayed more than :data:`SNAPSHOT_AFTER` events keeps the
case's state as replayed, in ``caseledger_case_snapshots`` (one row per case, never an event); the next read
opens it and replays only the events recorded after it.

What a snapshot holds is the case's state with its texts opened, so it is sealed, once under each live data
key its events were sealed under (nested AES-256-GCM; the associated data binds the case, the version, the
format and the keys). Destroying any of those keys (an erasure, a retention sweep, in any process) makes it
unreadable for good: the read then replays the events, whose texts read ``[erased]``. A customer back after
an erasure has a new key, which never opens a snapshot sealed under the old one. A key destroyed while a
snapshot is being taken makes that snapshot unreadable too: it was sealed under the key being destroyed.

A snapshot is trusted only as far as the events agree: the stored event at its version must hash to the
chain head it holds (else the events changed under it, or it is ahead of them), its format must be this
release's (the state encoding and a digest of the code that replays a case), and it must open and unpickle
into the state's own types only (the unpickler builds nothing else, :class:`_StateUnpickler`; pickle, as
it reads back three to four times faster than a tagged JSON walk). Anything else is ignored and the case replayed; a snapshot that cannot be
kept (a read-only database, a writer holding the lock) is not kept, and the read answers all the same.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import logging
import os
import pickle
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import StoredEvent

from caseledger.ledger.avro import codec
from caseledger.ledger.avro.codec import event_hash, history_files, schema_files
from caseledger.ledger.core import LedgerCore, replay
from caseledger.ledger.domain import case as case_module
from caseledger.ledger.domain import case_events, case_parts, events, personal, values
from caseledger.ledger.domain.case import Case
from caseledger.ledger.domain.case_parts import (
    ContactState,
    Handoff,
    ItemState,
    MessageState,
    PromiseState,
    ProposalState,
)
from caseledger.ledger.domain.personal import Erased
from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.store_ports import CaseSnapshotRow, CaseSnapshotStore

__all__ = ["SNAPSHOT_AFTER", "CaseSnapshots", "decode_state", "encode_state", "snapshot_format"]

log = logging.getLogger("caseledger.ledger")

SNAPSHOT_AFTER = 16
"""A read that replayed more events than this keeps a snapshot of the case."""

_ENCODING = "pickle5"
_NONCE = 12
_ATTRIBUTES = frozenset(case_parts.CaseState.__annotations__) | {"_id", "_version", "_created_on", "_modified_on"}


@cache
def snapshot_format() -> str:
    """The encoding and a digest of the code a case is replayed with: a release that changes either ignores
    every snapshot an earlier one kept (its state could differ from a replay by this one). Empty, and no
    snapshot kept or read, where that code's source cannot be read (an install without its ``.py`` files)."""
    digest = hashlib.sha256()
    try:
        # The case and its events, what opens their personal fields, the values they hold, how stored bytes
        # become events (the codec and every schema, old versions too) and the replay itself.
        for source in (events, case_events, case_parts, case_module, personal, values, codec, replay):
            digest.update(inspect.getsource(source).encode())
        for name, text in (*schema_files(), *history_files()):
            digest.update(name.encode() + b"\0" + text.encode())
    except (OSError, TypeError):
        return ""
    return f"{_ENCODING}:{digest.hexdigest()[:16]}"


# -- the state as bytes ----------------------------------------------------------------------------------


def encode_state(case: Case) -> bytes:
    """The case's attributes, pickled (no pending events: only a case as stored is kept)."""
    if case.pending_events:
        raise ValueError("a case with events not yet saved is never kept as a snapshot")
    return pickle.dumps({name: value for name, value in vars(case).items() if name != "_pending_events"},
                        protocol=5)


class _StateUnpickler(pickle.Unpickler):
    """Builds only what a case's state is made of: no other class, no function, whatever the bytes ask.

    The bytes were authenticated (AES-GCM under the customer's keys) before they get here; this is the
    second wall: a pickle naming anything else is refused, never imported or called. A pickle that would
    set the attributes of one of these classes (BUILD on the class object) fails on the class's own
    ``__setstate__`` (:class:`~caseledger.ledger.domain.case_parts.Restored`, ``Erased``, ``UUID``); the
    others are immutable built-in types.
    """

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"a case's state holds no {module}.{name}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("a case's state holds no persistent id")


_ALLOWED: dict[tuple[str, str], Any] = {
    (t.__module__, t.__qualname__): t
    for t in (ContactState, Handoff, ItemState, MessageState, PromiseState, ProposalState, Erased,
              datetime, timezone, timedelta, UUID)
}


def decode_state(data: bytes, case_id: UUID, version: int) -> Case | None:
    """The case a snapshot's bytes hold; None if they are not a state of this case at this version."""
    try:
        state = _StateUnpickler(io.BytesIO(data)).load()
    except Exception:  # whatever a damaged or foreign pickle raises: the snapshot is ignored, the case replayed
        return None
    if type(state) is not dict or state.keys() != _ATTRIBUTES or state["_id"] != case_id or \
            state["_version"] != version:
        return None
    case: Case = object.__new__(Case)
    vars(case).update(state)
    vars(case)["_pending_events"] = []
    return case


# -- sealed under the customer's keys --------------------------------------------------------------------


def _aad(case_id: UUID, version: int, form: str, key_ids: Iterable[str], key_id: str) -> bytes:
    return f"caseledger case snapshot\n{case_id}\n{version}\n{form}\n{','.join(key_ids)}\n{key_id}".encode()


class CaseSnapshots:
    """Cases read from their snapshots (kept in the ledger's case snapshot table) and the events after them."""

    def __init__(self, core: LedgerCore, *, snapshot_after: int = SNAPSHOT_AFTER) -> None:
        self.core = core
        self.snapshot_after = snapshot_after
        self._table: CaseSnapshotStore | None = None

    @property
    def table(self) -> CaseSnapshotStore:
        if self._table is None:
            self._table = self.core.storage.case_snapshots()
        return self._table

    def load(self, case_id: UUID) -> Case:
        """The case as of its last stored event (AggregateNotFoundError if none), read from its snapshot if one
        opens and agrees with the events; keeps a new one if this read replayed many events."""
        if self.core.in_unit_of_work:
            return self.core.load(case_id)  # type: ignore[no-any-return]
        try:
            return self._load(case_id)
        finally:
            self.core.data_keys.forget()  # as every read: another's erasure holds at the next

    def _load(self, case_id: UUID) -> Case:
        recorder = self.core.recorder
        table = self.table
        row = table.select_snapshot(case_id)
        case = self._opened(row) if row is not None else None
        key_ids: set[str] = set(row.key_ids) if case is not None and row is not None else set()
        stored: Sequence[StoredEvent] = ()
        if case is not None:
            stored = recorder.select_events(case_id, gt=case.version - 1)
            if stored and stored[0].originator_version == case.version and \
                    event_hash(bytes(stored[0].state)) == case.chain_head:
                stored = stored[1:]
            else:  # the events are not those it was taken from (or it is ahead of them)
                case, key_ids, stored = None, set(), ()
        if case is None:
            stored = recorder.select_events(case_id)
            if not stored:
                raise AggregateNotFoundError(case_id)
        new_keys = self.core.preload_keys(bytes(e.state) for e in stored)
        to_event = self.core.mapper.to_domain_event
        case = replay(case, [to_event(e) for e in stored])
        if len(stored) > self.snapshot_after:
            self._keep(table, case, key_ids | new_keys)
        return case

    def _opened(self, row: CaseSnapshotRow) -> Case | None:
        """The case ``row`` holds, or None if it does not open (a key destroyed, another format, forged)."""
        form = snapshot_format()
        if not form or row.format != form or not row.sealed_by or not set(row.sealed_by) <= set(row.key_ids):
            return None
        keys = self.core.data_keys
        try:
            keys.load(row.sealed_by)
            data = row.sealed
            for key_id in reversed(row.sealed_by):
                cipher = keys.cipher(key_id)
                if cipher is None:
                    return None  # destroyed: what it sealed is erased
                data = cipher.decrypt(data[:_NONCE], data[_NONCE:],
                                      _aad(row.case_id, row.version, form, row.key_ids, key_id))
            case = decode_state(data, row.case_id, row.version)
            if case is not None:
                return case
        except (InvalidTag, ConfigurationError, ValueError):
            pass
        log.warning("a case snapshot (version %d) is unreadable: the case is replayed", row.version)
        return None

    def _keep(self, table: CaseSnapshotStore, case: Case, key_ids: set[str]) -> None:
        """Keep ``case`` sealed under each live key of ``key_ids``; not at all if none is live."""
        keys = self.core.data_keys
        ordered = tuple(sorted(key_ids))
        try:
            ciphers: list[tuple[str, AESGCM]] = []
            for key_id in ordered:
                cipher = keys.cipher(key_id)
                if cipher is not None:
                    ciphers.append((key_id, cipher))
            form = snapshot_format()
            if not ciphers or not form:
                return  # nothing of the customer's is left to seal it under (or no format to name)
            data = encode_state(case)
            for key_id, cipher in ciphers:
                nonce = os.urandom(_NONCE)
                data = nonce + cipher.encrypt(nonce, data, _aad(case.id, case.version, form, ordered, key_id))
            sealed_by = tuple(k for k, _ in ciphers)
            table.save_snapshot(CaseSnapshotRow(
                case_id=case.id, version=case.version, format=form, sealed_by=sealed_by, key_ids=ordered, sealed=data,
            ))
            # Destroyed meanwhile by another process (its erasure deleted her snapshots before this one was saved):
            # this one never opens, and goes too. An erasure after the save finds and deletes it itself.
            if any(row.wrapped is None for row in keys.table.by_ids(sealed_by)):
                table.delete_snapshots([case.id])
        except Exception as error:  # a snapshot is an optimisation: never the read's failure
            log.warning("a case snapshot was not kept (%s)", type(error).__name__)  # no case id: it names the case
