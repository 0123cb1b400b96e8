"""Where principals and their browser sessions are kept: two tables beside the event store, and their SQL.

Created on first use in the ledger's own database (SQLite file or PostgreSQL schema):

- ``caseledger_principals``: name, role, the SHA-256 of the bearer token the ledger issued (never the
  token), when it was created and revoked, and the principal's team, time zone and locale (each optional).
  A name is never reused, so an actor id names one principal.
- ``caseledger_sessions``: the live page's browser sessions (``/login``): the SHA-256 of the session id
  (never the id), whose principal, until when, and its team, zone and locale at sign-in (an OIDC
  principal's come from its token; an issued principal's are read from its row at each use).
  A revoked principal's sessions are deleted with its token.

A database made before the team, zone and locale existed gets their columns when it is next opened
(:meth:`~caseledger.ledger.store.sql_dialects.SQLDialect.add_columns`): its principals have none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from caseledger.ledger.db_errors import translate_errors
from caseledger.ledger.store.sql_dialects import SQLDialect, as_time
from caseledger.ledger.store_ports import PROFILE, PrincipalRow, SessionRow

__all__ = ["PrincipalTables"]


class PrincipalTables:
    """The principal and session tables of one ledger database (a :class:`~caseledger.ledger.store_ports.PrincipalStore`)."""

    def __init__(self, dialect: SQLDialect) -> None:
        self.dialect = d = dialect
        p, b, t = d.placeholder, d.blob, d.timestamp
        pr, se = d.table("caseledger_principals"), d.table("caseledger_sessions")
        self.create_statements = [
            f"CREATE TABLE IF NOT EXISTS {pr} (name TEXT PRIMARY KEY, role TEXT NOT NULL, token_sha256 {b} UNIQUE, "
            f"created_at {t} NOT NULL, revoked_at {t})",
            f"CREATE TABLE IF NOT EXISTS {se} (session_sha256 {b} PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, "
            f"authentication TEXT NOT NULL, created_at {t} NOT NULL, expires_at {t} NOT NULL)",
        ]
        columns = "name, role, token_sha256, created_at, revoked_at, " + ", ".join(PROFILE)
        self.insert_principal_statement = (
            f"INSERT INTO {pr} ({columns}) VALUES ({p}, {p}, {p}, {p}, NULL, {p}, {p}, {p}) "
            "ON CONFLICT (name) DO NOTHING")
        self.select_principal_by_token_statement = f"SELECT {columns} FROM {pr} WHERE token_sha256 = {p}"
        self.select_principal_statement = f"SELECT {columns} FROM {pr} WHERE name = {p}"
        self.select_principals_statement = f"SELECT {columns} FROM {pr} ORDER BY name"
        self.revoke_principal_statement = (
            f"UPDATE {pr} SET revoked_at = {p}, token_sha256 = NULL WHERE name = {p} AND revoked_at IS NULL")
        self.insert_session_statement = (
            f"INSERT INTO {se} (session_sha256, name, role, authentication, created_at, expires_at, "
            f"{', '.join(PROFILE)}) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})")
        # An issued principal's team, zone and locale as they are now (`principals set` holds at the next page);
        # an OIDC principal has no row: its session keeps what its token said.
        profile = ", ".join(f"CASE WHEN s.authentication = 'token' THEN p.{c} ELSE s.{c} END" for c in PROFILE)
        self.select_session_statement = (
            f"SELECT s.name, s.role, s.authentication, s.expires_at, p.name IS NOT NULL AND p.revoked_at IS NULL, "
            f"{profile} FROM {se} s LEFT JOIN {pr} p ON p.name = s.name WHERE s.session_sha256 = {p}")
        self.delete_session_statement = f"DELETE FROM {se} WHERE session_sha256 = {p}"
        self.delete_expired_sessions_statement = f"DELETE FROM {se} WHERE expires_at < {p}"
        self.delete_principal_sessions_statement = f"DELETE FROM {se} WHERE name = {p} AND authentication = 'token'"
        d.create(self.create_statements)
        for table in (pr, se):
            d.add_columns(table, {column: "TEXT" for column in PROFILE})
        self.update_principal_statements = {
            column: f"UPDATE {pr} SET {column} = {p} WHERE name = {p} AND revoked_at IS NULL" for column in PROFILE}

    # -- principals -----------------------------------------------------------------------------------

    def insert_principal(self, name: str, role: str, token_sha256: bytes, at: datetime, *,
                         profile: Mapping[str, str | None] | None = None) -> bool:
        """Add a principal (``profile``: its team, zone and locale, each optional); False if the name was ever used."""
        d = self.dialect
        given = profile or {}
        return d.run(self.insert_principal_statement,
                     (name, role, token_sha256, d.at(at), *(given.get(c) for c in PROFILE))) == 1

    def update_principal(self, name: str, profile: Mapping[str, str | None]) -> bool:
        """Change an active principal's team, zone or locale (the keys given; None clears), in one transaction;
        False if no active principal has that name."""
        d = self.dialect
        found = self.select_principal(name)
        if found is None or found.revoked_at is not None:
            return False
        with translate_errors(d.where), d.cursor() as cursor:
            for column in PROFILE:
                if column in profile:
                    cursor.execute(self.update_principal_statements[column], (profile[column], name))
        return True

    def select_principal_by_token(self, token_sha256: bytes) -> PrincipalRow | None:
        rows = self.dialect.rows(self.select_principal_by_token_statement, (token_sha256,))
        return self._principal(rows[0]) if rows else None

    def select_principal(self, name: str) -> PrincipalRow | None:
        rows = self.dialect.rows(self.select_principal_statement, (name,))
        return self._principal(rows[0]) if rows else None

    def select_principals(self) -> list[PrincipalRow]:
        return [self._principal(row) for row in self.dialect.rows(self.select_principals_statement)]

    def revoke_principal(self, name: str, at: datetime) -> bool:
        """Revoke a principal's token (forgotten: its hash is cleared) and end its browser sessions, in one
        transaction; False if none was active."""
        d = self.dialect
        with translate_errors(d.where), d.cursor() as cursor:
            cursor.execute(self.revoke_principal_statement, (d.at(at), name))
            revoked = int(cursor.rowcount) == 1
            cursor.execute(self.delete_principal_sessions_statement, (name,))
        return revoked

    @staticmethod
    def _principal(row: tuple[Any, ...]) -> PrincipalRow:
        token = bytes(row[2]) if row[2] is not None else None
        return PrincipalRow(row[0], row[1], token, as_time(row[3]), as_time(row[4]),  # type: ignore[arg-type]
                            team=row[5], zone=row[6], locale=row[7])

    # -- browser sessions -----------------------------------------------------------------------------

    def insert_session(self, session_sha256: bytes, name: str, role: str, authentication: str, at: datetime,
                       expires_at: datetime, *, profile: Mapping[str, str | None] | None = None) -> None:
        """Open a session (and forget the sessions expired by now); ``profile``: the principal's team, zone, locale."""
        d = self.dialect
        given = profile or {}
        with translate_errors(d.where), d.cursor() as cursor:
            cursor.execute(self.delete_expired_sessions_statement, (d.at(at),))
            cursor.execute(self.insert_session_statement, (session_sha256, name, role, authentication, d.at(at),
                                                           d.at(expires_at), *(given.get(c) for c in PROFILE)))

    def select_session(self, session_sha256: bytes) -> SessionRow | None:
        rows = self.dialect.rows(self.select_session_statement, (session_sha256,))
        if not rows:
            return None
        r = rows[0]
        return SessionRow(r[0], r[1], r[2], as_time(r[3]), bool(r[4]),  # type: ignore[arg-type]
                          team=r[5], zone=r[6], locale=r[7])

    def delete_session(self, session_sha256: bytes) -> None:
        self.dialect.run(self.delete_session_statement, (session_sha256,))
