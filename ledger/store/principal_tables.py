"""Where principals, adapter keys and idempotency keys are kept: tables beside the event store, and their SQL.

Four tables, created on first use in the ledger's own database (SQLite file or PostgreSQL schema):

- ``caseledger_principals``: name, role, the SHA-256 of the bearer token the ledger issued (never the
  token), when it was created and revoked. A name is never reused, so an actor id names one principal.
- ``caseledger_adapter_keys``: a channel adapter's Ed25519 public key and the channels it may publish for.
- ``caseledger_idempotency``: for each (principal, ``Idempotency-Key``) the SHA-256 of the request and,
  once done, the response it got (what a retry is answered with).
- ``caseledger_sessions``: the live page's browser sessions (``/login``): the SHA-256 of the session id
  (never the id), whose principal, until when. A revoked principal's sessions are deleted with its token.

The statements run on the connections of the ledger's own recorder (its datastore), so they share
its configuration, pool and timeouts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from caseledger.ledger.db_errors import translate_errors
from caseledger.ledger.store.recorder import LedgerRecorder

__all__ = [
    "AdapterKeyRow",
    "IdempotencyRow",
    "PrincipalRecorder",
    "PrincipalRow",
    "SessionRow",
    "principal_recorder",
]


@dataclass(frozen=True)
class PrincipalRow:
    name: str
    role: str
    token_sha256: bytes | None
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class AdapterKeyRow:
    name: str
    public_key: bytes
    channels: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class IdempotencyRow:
    key_id: str
    request_sha256: bytes
    status: int | None  # None: the first request is still running (or died before it answered)
    response: str | None
    created_at: datetime


@dataclass(frozen=True)
class SessionRow:
    name: str
    role: str
    authentication: str
    expires_at: datetime
    principal_active: bool  # an issued principal of that name exists and is not revoked


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


class PrincipalRecorder(ABC):
    """The principal, adapter-key and idempotency tables of one ledger database."""

    placeholder = "?"
    blob = "BLOB"
    timestamp = "TEXT"

    def __init__(self, recorder: LedgerRecorder, where: str) -> None:
        self.datastore: Any = recorder.datastore  # type: ignore[attr-defined]
        self.where = where
        p, b, t = self.placeholder, self.blob, self.timestamp
        pr, ak, ik = self.table("caseledger_principals"), self.table("caseledger_adapter_keys"), self.table(
            "caseledger_idempotency")
        se = self.table("caseledger_sessions")
        self.create_statements = [
            f"CREATE TABLE IF NOT EXISTS {pr} (name TEXT PRIMARY KEY, role TEXT NOT NULL, token_sha256 {b} UNIQUE, "
            f"created_at {t} NOT NULL, revoked_at {t})",
            f"CREATE TABLE IF NOT EXISTS {ak} (name TEXT PRIMARY KEY, public_key {b} NOT NULL, channels TEXT NOT NULL, "
            f"created_at {t} NOT NULL, revoked_at {t})",
            f"CREATE TABLE IF NOT EXISTS {ik} (key_id TEXT PRIMARY KEY, request_sha256 {b} NOT NULL, status INTEGER, "
            f"response TEXT, created_at {t} NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {se} (session_sha256 {b} PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, "
            f"authentication TEXT NOT NULL, created_at {t} NOT NULL, expires_at {t} NOT NULL)",
        ]
        columns = "name, role, token_sha256, created_at, revoked_at"
        self.insert_principal_statement = (
            f"INSERT INTO {pr} ({columns}) VALUES ({p}, {p}, {p}, {p}, NULL) ON CONFLICT (name) DO NOTHING")
        self.select_principal_by_token_statement = f"SELECT {columns} FROM {pr} WHERE token_sha256 = {p}"
        self.select_principal_statement = f"SELECT {columns} FROM {pr} WHERE name = {p}"
        self.select_principals_statement = f"SELECT {columns} FROM {pr} ORDER BY name"
        self.revoke_principal_statement = (
            f"UPDATE {pr} SET revoked_at = {p}, token_sha256 = NULL WHERE name = {p} AND revoked_at IS NULL")
        akc = "name, public_key, channels, created_at, revoked_at"
        self.insert_adapter_statement = (
            f"INSERT INTO {ak} ({akc}) VALUES ({p}, {p}, {p}, {p}, NULL) ON CONFLICT (name) DO NOTHING")
        self.select_adapter_statement = f"SELECT {akc} FROM {ak} WHERE name = {p}"
        self.select_adapters_statement = f"SELECT {akc} FROM {ak} ORDER BY name"
        self.revoke_adapter_statement = f"UPDATE {ak} SET revoked_at = {p} WHERE name = {p} AND revoked_at IS NULL"
        ikc = "key_id, request_sha256, status, response, created_at"
        self.insert_idempotency_statement = (
            f"INSERT INTO {ik} ({ikc}) VALUES ({p}, {p}, NULL, NULL, {p}) ON CONFLICT (key_id) DO NOTHING")
        self.select_idempotency_statement = f"SELECT {ikc} FROM {ik} WHERE key_id = {p}"
        self.select_idempotency_many_statement = f"SELECT {ikc} FROM {ik} WHERE key_id IN " + "({})"
        # No ON CONFLICT: a key answered meanwhile fails the whole transaction (its events included).
        self.insert_answered_idempotency_statement = f"INSERT INTO {ik} ({ikc}) VALUES ({p}, {p}, {p}, {p}, {p})"
        self.update_idempotency_statement = (
            f"UPDATE {ik} SET status = {p}, response = {p} WHERE key_id = {p} AND status IS NULL")
        self.restart_idempotency_statement = (
            f"UPDATE {ik} SET created_at = {p} WHERE key_id = {p} AND status IS NULL AND created_at = {p}")
        self.delete_idempotency_statement = f"DELETE FROM {ik} WHERE key_id = {p} AND status IS NULL"
        self.insert_session_statement = (
            f"INSERT INTO {se} (session_sha256, name, role, authentication, created_at, expires_at) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, {p})")
        self.select_session_statement = (
            f"SELECT s.name, s.role, s.authentication, s.expires_at, p.name IS NOT NULL AND p.revoked_at IS NULL "
            f"FROM {se} s LEFT JOIN {pr} p ON p.name = s.name WHERE s.session_sha256 = {p}")
        self.delete_session_statement = f"DELETE FROM {se} WHERE session_sha256 = {p}"
        self.delete_expired_sessions_statement = f"DELETE FROM {se} WHERE expires_at < {p}"
        self.delete_principal_sessions_statement = f"DELETE FROM {se} WHERE name = {p} AND authentication = 'token'"
        self.create_tables()

    @abstractmethod
    def table(self, name: str) -> str:
        """The table's name as the statements write it (schema-qualified on PostgreSQL)."""

    @abstractmethod
    @contextmanager
    def cursor(self, *, write: bool = True) -> Iterator[Any]:
        """A DB-API cursor in one transaction: committed when ``write``, else a read (which on SQLite
        does not queue behind the one writer: every request's authentication is such a read)."""

    def _at(self, value: datetime) -> Any:
        return value.isoformat()

    def _run(self, statement: str, params: tuple[Any, ...] = ()) -> int:
        with translate_errors(self.where), self.cursor() as cursor:
            cursor.execute(statement, params)
            return int(cursor.rowcount)

    def _rows(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with translate_errors(self.where), self.cursor(write=False) as cursor:
            cursor.execute(statement, params)
            return [tuple(row.values()) if isinstance(row, dict) else tuple(row) for row in cursor.fetchall()]

    def create_tables(self) -> None:
        with translate_errors(self.where), self.cursor() as cursor:
            for statement in self.create_statements:
                cursor.execute(statement)

    # -- principals -----------------------------------------------------------------------------------

    def insert_principal(self, name: str, role: str, token_sha256: bytes, at: datetime) -> bool:
        """Add a principal; False if the name was ever used."""
        return self._run(self.insert_principal_statement, (name, role, token_sha256, self._at(at))) == 1

    def select_principal_by_token(self, token_sha256: bytes) -> PrincipalRow | None:
        rows = self._rows(self.select_principal_by_token_statement, (token_sha256,))
        return self._principal(rows[0]) if rows else None

    def select_principal(self, name: str) -> PrincipalRow | None:
        rows = self._rows(self.select_principal_statement, (name,))
        return self._principal(rows[0]) if rows else None

    def select_principals(self) -> list[PrincipalRow]:
        return [self._principal(row) for row in self._rows(self.select_principals_statement)]

    def revoke_principal(self, name: str, at: datetime) -> bool:
        """Revoke a principal's token (forgotten: its hash is cleared) and end its browser sessions, in one
        transaction; False if none was active."""
        with translate_errors(self.where), self.cursor() as cursor:
            cursor.execute(self.revoke_principal_statement, (self._at(at), name))
            revoked = int(cursor.rowcount) == 1
            cursor.execute(self.delete_principal_sessions_statement, (name,))
        return revoked

    @staticmethod
    def _principal(row: tuple[Any, ...]) -> PrincipalRow:
        token = bytes(row[2]) if row[2] is not None else None
        return PrincipalRow(row[0], row[1], token, _time(row[3]), _time(row[4]))  # type: ignore[arg-type]

    # -- browser sessions -----------------------------------------------------------------------------

    def insert_session(self, session_sha256: bytes, name: str, role: str, authentication: str, at: datetime,
                       expires_at: datetime) -> None:
        """Open a session (and forget the sessions expired by now)."""
        with translate_errors(self.where), self.cursor() as cursor:
            cursor.execute(self.delete_expired_sessions_statement, (self._at(at),))
            cursor.execute(self.insert_session_statement, (session_sha256, name, role, authentication, self._at(at),
                                                           self._at(expires_at)))

    def select_session(self, session_sha256: bytes) -> SessionRow | None:
        rows = self._rows(self.select_session_statement, (session_sha256,))
        if not rows:
            return None
        r = rows[0]
        return SessionRow(r[0], r[1], r[2], _time(r[3]), bool(r[4]))  # type: ignore[arg-type]

    def delete_session(self, session_sha256: bytes) -> None:
        self._run(self.delete_session_statement, (session_sha256,))

    # -- adapter keys ---------------------------------------------------------------------------------

    def insert_adapter(self, name: str, public_key: bytes, channels: tuple[str, ...], at: datetime) -> bool:
        return self._run(self.insert_adapter_statement, (name, public_key, ",".join(channels), self._at(at))) == 1

    def select_adapter(self, name: str) -> AdapterKeyRow | None:
        rows = self._rows(self.select_adapter_statement, (name,))
        return self._adapter(rows[0]) if rows else None

    def select_adapters(self) -> list[AdapterKeyRow]:
        return [self._adapter(row) for row in self._rows(self.select_adapters_statement)]

    def revoke_adapter(self, name: str, at: datetime) -> bool:
        return self._run(self.revoke_adapter_statement, (self._at(at), name)) == 1

    @staticmethod
    def _adapter(row: tuple[Any, ...]) -> AdapterKeyRow:
        channels = tuple(c for c in str(row[2]).split(",") if c)
        return AdapterKeyRow(row[0], bytes(row[1]), channels, _time(row[3]), _time(row[4]))  # type: ignore[arg-type]

    # -- idempotency keys -----------------------------------------------------------------------------

    def insert_idempotency(self, key_id: str, request_sha256: bytes, at: datetime) -> bool:
        """Claim a key for a request; False if it is already claimed."""
        return self._run(self.insert_idempotency_statement, (key_id, request_sha256, self._at(at))) == 1

    def select_idempotency(self, key_id: str) -> IdempotencyRow | None:
        rows = self._rows(self.select_idempotency_statement, (key_id,))
        if not rows:
            return None
        r = rows[0]
        return IdempotencyRow(r[0], bytes(r[1]), r[2], r[3], _time(r[4]))  # type: ignore[arg-type]

    def select_idempotency_many(self, key_ids: list[str]) -> dict[str, IdempotencyRow]:
        """The rows of these keys that exist, by key id (one query per 200 keys)."""
        found: dict[str, IdempotencyRow] = {}
        for i in range(0, len(key_ids), 200):
            chunk = key_ids[i : i + 200]
            statement = self.select_idempotency_many_statement.format(", ".join([self.placeholder] * len(chunk)))
            for r in self._rows(statement, tuple(chunk)):
                found[r[0]] = IdempotencyRow(r[0], bytes(r[1]), r[2], r[3], _time(r[4]))  # type: ignore[arg-type]
        return found

    def answered_idempotency(self, key_id: str, request_sha256: bytes, status: int, response: str,
                             at: datetime) -> tuple[str, tuple[Any, ...]]:
        """The statement that stores a key with its answer, to run in the transaction of the key's events."""
        return self.insert_answered_idempotency_statement, (key_id, request_sha256, status, response, self._at(at))

    def complete_idempotency(self, key_id: str, status: int, response: str) -> None:
        self._run(self.update_idempotency_statement, (status, response, key_id))

    def restart_idempotency(self, key_id: str, claimed_at: datetime, at: datetime) -> bool:
        """Take over a claim whose request died before it answered; False if another caller did first."""
        return self._run(self.restart_idempotency_statement, (self._at(at), key_id, self._at(claimed_at))) == 1

    def release_idempotency(self, key_id: str) -> None:
        """Forget a claim whose request recorded nothing (it failed): a retry runs afresh."""
        self._run(self.delete_idempotency_statement, (key_id,))


class SQLitePrincipalRecorder(PrincipalRecorder):
    def table(self, name: str) -> str:
        return name

    @contextmanager
    def cursor(self, *, write: bool = True) -> Iterator[Any]:
        with self.datastore.transaction(commit=write) as wrapped:
            yield wrapped.sqlite_cursor


class PostgresPrincipalRecorder(PrincipalRecorder):
    placeholder = "%s"
    blob = "BYTEA"
    timestamp = "TIMESTAMPTZ"

    def table(self, name: str) -> str:
        schema = str(self.datastore.schema or "public").replace('"', '""')
        return f'"{schema}"."{name}"'

    def _at(self, value: datetime) -> Any:
        return value

    @contextmanager
    def cursor(self, *, write: bool = True) -> Iterator[Any]:
        with self.datastore.transaction(commit=write) as cursor:
            yield cursor


def principal_recorder(recorder: LedgerRecorder, where: str) -> PrincipalRecorder:
    """The principal tables beside the ledger's event store, created if missing."""
    from caseledger.ledger.store.sqlite_recorder import SQLiteLedgerRecorder

    if isinstance(recorder, SQLiteLedgerRecorder):
        return SQLitePrincipalRecorder(recorder, where)
    return PostgresPrincipalRecorder(recorder, where)
