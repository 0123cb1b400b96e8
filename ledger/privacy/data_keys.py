"""Customers' data keys: made on first use, cached for one batch, destroyed by an erasure.

A subject (a customer id, or a month of intake rejections) has one live data key at a time; an
erasure destroys all of its keys, and a later event of the same subject gets a new one. Keys are
kept in memory only between two saves (:meth:`DataKeys.forget`, called by the application after
each transaction and by every reader when it is done), so an erasure made by another process is
in force for every process from its next batch on. A new key is stored in the same transaction
as the first events it encrypts (:meth:`DataKeys.unsaved`).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable
from datetime import datetime

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.privacy.kek import KeyEncryptionKey
from caseledger.ledger.store_ports import DataKeyRow, DataKeyStore

LOOKUP_SUBJECT = "ledger:lookup"
"""The key store's subject of lookup secrets (one per identity or channel message, deleted by an erasure)."""


class DataKeys:
    """The data keys of one key store, unwrapped on demand with the key-encryption key."""

    def __init__(self, table: DataKeyStore, kek: KeyEncryptionKey, *, clock: Callable[[], datetime]) -> None:
        self.table = table
        self.kek = kek
        self.clock = clock
        self._ciphers: dict[str, AESGCM | None] = {}  # key id → cipher, None once destroyed
        self._current: dict[str, str] = {}  # subject → its live key id
        self._unsaved: dict[str, DataKeyRow] = {}
        self._new: set[str] = set()  # subjects known to have no key yet (a new customer): no lookup
        self._lookups: dict[str, bytes] = {}  # lookup id → its secret, for one batch like the keys
        self._no_lookup: set[str] = set()  # lookup ids known to have no secret, for one batch too
        self._unsaved_lookups: dict[str, DataKeyRow] = {}  # made in this batch, saved with its events or dropped

    def __repr__(self) -> str:
        return f"DataKeys({len(self._ciphers)} cached, key-encryption key {self.kek.key_id})"

    # -- writing ------------------------------------------------------------------------------------

    def key_for(self, subject: str) -> tuple[str, AESGCM]:
        """The live key of ``subject`` (made if it has none), as (key id, cipher)."""
        key_id = self._current.get(subject)
        if key_id is None:
            if subject not in self._new:
                self.prefetch([subject])
            key_id = self._current.get(subject)
            if key_id is None:
                key_id = self._make(subject)
        cipher = self._ciphers[key_id]
        assert cipher is not None
        return key_id, cipher

    def prefetch(self, subjects: Iterable[str]) -> None:
        """Load the live keys of these subjects in one query (a batch's customers); those found to have none
        are made one without another query, as :meth:`expect_new` says."""
        wanted = [s for s in dict.fromkeys(subjects) if s not in self._current and s not in self._new]
        if not wanted:
            return
        for row in self.table.by_subjects(wanted):
            self._learn(row)
        self._new.update(s for s in wanted if s not in self._current)

    def expect_new(self, subject: str) -> None:
        """``subject`` is known to have no key (a customer registered in this batch): make one without a lookup.

        Should it have one after all (e.g. from a kept collision), it gets a second: an erasure destroys all.
        """
        if subject not in self._current:
            self._new.add(subject)

    def _make(self, subject: str) -> str:
        key_id = secrets.token_hex(8)
        data_key = AESGCM.generate_key(bit_length=256)
        row = DataKeyRow(
            key_id=key_id, subject=subject, kek_id=self.kek.key_id,
            wrapped=self.kek.wrap(data_key, key_id=key_id, subject=subject),
            created_at=self.clock().isoformat(),
        )
        self._unsaved[key_id] = row
        self._ciphers[key_id] = AESGCM(data_key)
        self._current[subject] = key_id
        return key_id

    def unsaved(self) -> list[DataKeyRow]:
        """Keys and lookup secrets made since the last save: the recorder stores them with the events."""
        return [*self._unsaved.values(), *self._unsaved_lookups.values()]

    def saved(self, rows: Iterable[DataKeyRow]) -> None:
        for row in rows:
            self._unsaved.pop(row.key_id, None)
            self._unsaved_lookups.pop(row.key_id, None)

    def ledger_secret(self, subject: str) -> bytes:
        """The ledger's own never-erased key for ``subject`` (e.g. its pseudonyms), made once for good.

        Its id is fixed by the subject, so processes starting together all end up with the same key.
        """
        key_id = hashlib.sha256(subject.encode()).digest()[:8].hex()
        rows = self.table.by_ids([key_id])
        if not rows:
            secret = AESGCM.generate_key(bit_length=256)
            self.table.insert_if_absent(DataKeyRow(
                key_id=key_id, subject=subject, kek_id=self.kek.key_id,
                wrapped=self.kek.wrap(secret, key_id=key_id, subject=subject), created_at=self.clock().isoformat(),
            ))
            rows = self.table.by_ids([key_id])
        row = rows[0]
        if row.wrapped is None:
            raise ConfigurationError(f"the ledger's key {subject} was destroyed; it is never erased — restore it")
        if row.kek_id != self.kek.key_id:
            raise ConfigurationError(
                f"the ledger's key {subject} is wrapped by key-encryption key {row.kek_id}, but the configured one is "
                f"{self.kek.key_id}: give the ledger its key-encryption key (CASELEDGER_KEK_FILE), or finish a "
                "rotation with `caseledger keys rotate-kek`"
            )
        return self.kek.unwrap(row.wrapped, key_id=key_id, subject=subject)

    # -- lookup secrets (:mod:`caseledger.ledger.privacy.pseudonyms`) -------------------------------------

    def lookup_secrets(self, lookup_ids: Iterable[str], *, make: bool = False) -> dict[str, bytes]:
        """The secrets stored under these lookup ids, in one query; with ``make``, a new one where none is.

        A new secret is stored with the transaction's events, like a new key (:meth:`unsaved`): should
        another writer store one under the same id first, that transaction fails with a conflict, and
        its retry reads theirs, so nothing is ever recorded under a secret that was not kept.
        """
        ids = list(dict.fromkeys(lookup_ids))
        wanted = [i for i in ids if i not in self._lookups and i not in self._no_lookup]
        if wanted:
            self._learn_lookups(self.table.by_ids(wanted))
            self._no_lookup.update(i for i in wanted if i not in self._lookups)
        if make:
            created = self.clock().isoformat()
            for i in ids:
                if i not in self._lookups:
                    secret = secrets.token_bytes(32)
                    self._unsaved_lookups[i] = DataKeyRow(
                        key_id=i, subject=LOOKUP_SUBJECT, kek_id=self.kek.key_id, created_at=created,
                        wrapped=self.kek.wrap(secret, key_id=i, subject=LOOKUP_SUBJECT),
                    )
                    self._lookups[i] = secret
                    self._no_lookup.discard(i)
        return {i: self._lookups[i] for i in ids if i in self._lookups}

    def lookup_secret_in_memory(self, lookup_id: str) -> bytes | None:
        """The secret under ``lookup_id`` if this batch read or made it already (no query)."""
        return self._lookups.get(lookup_id)

    def _learn_lookups(self, rows: Iterable[DataKeyRow]) -> None:
        for row in rows:
            if row.wrapped is not None and row.subject == LOOKUP_SUBJECT:
                self._check_kek(row)
                self._lookups[row.key_id] = self.kek.unwrap(row.wrapped, key_id=row.key_id, subject=row.subject)

    def delete_lookups(self, lookup_ids: Iterable[str]) -> None:
        """Delete these lookup secrets for good: nothing derived from them can be found again."""
        ids = list(dict.fromkeys(lookup_ids))
        self.table.delete(ids)
        for lookup_id in ids:
            self._lookups.pop(lookup_id, None)
            self._unsaved_lookups.pop(lookup_id, None)
        self._no_lookup.update(ids)

    # -- reading ------------------------------------------------------------------------------------

    def cipher(self, key_id: str) -> AESGCM | None:
        """The cipher of a key, None when it was destroyed; an unknown key is a configuration error."""
        if key_id not in self._ciphers:
            rows = self.table.by_ids([key_id])
            if not rows:
                raise ConfigurationError(
                    f"data key {key_id} is not in the key store: the key store in use is not this ledger's "
                    "(check CASELEDGER_KEYSTORE and the database)"
                )
            self._learn(rows[0])
        return self._ciphers[key_id]

    def load(self, key_ids: Iterable[str]) -> None:
        """Load these keys in one query (a page of events or views to read)."""
        wanted = [k for k in key_ids if k not in self._ciphers]
        if wanted:
            for row in self.table.by_ids(wanted):
                self._learn(row)

    def _learn(self, row: DataKeyRow) -> None:
        if row.wrapped is None:
            self._ciphers[row.key_id] = None
            return
        self._check_kek(row)
        data_key = self.kek.unwrap(row.wrapped, key_id=row.key_id, subject=row.subject)
        self._ciphers[row.key_id] = AESGCM(data_key)
        self._current[row.subject] = row.key_id

    def _check_kek(self, row: DataKeyRow) -> None:
        if row.kek_id != self.kek.key_id:
            raise ConfigurationError(
                f"data key {row.key_id} is wrapped by key-encryption key {row.kek_id}, but the configured one is "
                f"{self.kek.key_id}: give the ledger its key-encryption key (CASELEDGER_KEK_FILE), or finish a "
                "rotation with `caseledger keys rotate-kek`"
            )

    def forget(self) -> None:
        """Drop every unwrapped key and lookup secret from memory (kept: keys and secrets made but not yet saved)."""
        self._ciphers = {k: v for k, v in self._ciphers.items() if k in self._unsaved}
        self._current = {r.subject: k for k, r in self._unsaved.items()}
        self._new = set()
        # A lookup secret made but not yet saved stays, like a key: the events it names are still to be saved.
        self._lookups = {i: self._lookups[i] for i in self._unsaved_lookups if i in self._lookups}
        self._no_lookup = set()

    # -- erasing and rotating -----------------------------------------------------------------------

    def live_keys_of(self, subject: str) -> list[str]:
        return [r.key_id for r in self.table.by_subjects([subject]) if r.wrapped is not None]

    def destroy(self, key_ids: list[str]) -> None:
        """Destroy these keys for good: nothing they encrypted can be read any more."""
        self.table.destroy(key_ids, at=self.clock())
        for key_id in key_ids:
            self._ciphers[key_id] = None
            self._unsaved.pop(key_id, None)
        self._current = {s: k for s, k in self._current.items() if k not in key_ids}

    def forget_destroyed(self) -> bool:
        """Remove the copies of destroyed keys the database keeps; False while a reader keeps them (retry later)."""
        return self.table.forget_destroyed()

    def rotate(self, new: KeyEncryptionKey) -> int:
        """Rewrap every live data key with ``new``, in one transaction; how many were rewrapped."""
        rows = []
        for row in self.table.live():
            if row.kek_id not in (self.kek.key_id, new.key_id):
                raise ConfigurationError(
                    f"data key {row.key_id} is wrapped by key-encryption key {row.kek_id}, neither the configured "
                    f"one ({self.kek.key_id}) nor the new one ({new.key_id}); nothing was rewrapped"
                )
            if row.kek_id == new.key_id:
                continue
            assert row.wrapped is not None
            data_key = self.kek.unwrap(row.wrapped, key_id=row.key_id, subject=row.subject)
            rows.append(DataKeyRow(
                key_id=row.key_id, subject=row.subject, kek_id=new.key_id,
                wrapped=new.wrap(data_key, key_id=row.key_id, subject=row.subject), created_at=row.created_at,
            ))
        self.table.rewrap(rows)
        self.kek = new
        self.forget()
        return len(rows)
