"""How the side tables' statements run on each backend: placeholders, column types, table names, cursors.

The principal, adapter-key and idempotency tables write one statement for both backends; a
:class:`SQLDialect` fills in what differs, and runs the statements on the connections of the ledger's
own recorder (its datastore), so they share its configuration, pool and timeouts. Every statement
runs inside :func:`~caseledger.ledger.db_errors.translate_errors`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from caseledger.ledger.db_errors import created_despite_races, translate_errors

__all__ = ["PostgresDialect", "SQLDialect", "SQLiteDialect", "as_time"]


def as_time(value: Any) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite keeps ISO text, PostgreSQL ``timestamptz``)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


class SQLDialect:
    """One backend's way of writing and running the side tables' statements (SQLite's by default)."""

    placeholder = "?"
    blob = "BLOB"
    timestamp = "TEXT"
    if_absent = ""  # SQLite has no ADD COLUMN IF NOT EXISTS

    def __init__(self, datastore: Any, where: str) -> None:
        self.datastore = datastore
        self.where = where  # names the database in error messages

    def table(self, name: str) -> str:
        """The table's name as the statements write it (schema-qualified on PostgreSQL)."""
        return name

    @contextmanager
    def cursor(self, *, write: bool = True) -> Iterator[Any]:
        """A DB-API cursor in one transaction: committed when ``write``, else a read (which on SQLite
        does not queue behind the one writer: every request's authentication is such a read)."""
        with self.datastore.transaction(commit=write) as wrapped:
            yield wrapped.sqlite_cursor

    def at(self, value: datetime) -> Any:
        """A time as the backend stores it."""
        return value.isoformat()

    def run(self, statement: str, params: tuple[Any, ...] = ()) -> int:
        """Run one write; the number of rows it changed."""
        with translate_errors(self.where), self.cursor() as cursor:
            cursor.execute(statement, params)
            return int(cursor.rowcount)

    def exists(self, name: str) -> bool:
        """Whether the table ``name`` is in the ledger's database, asked of the catalog (no failed statement)."""
        return bool(self.rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))

    def rows(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one read; its rows as tuples."""
        with translate_errors(self.where), self.cursor(write=False) as cursor:
            cursor.execute(statement, params)
            return [tuple(row.values()) if isinstance(row, dict) else tuple(row) for row in cursor.fetchall()]

    def create(self, statements: list[str]) -> None:
        """Run these ``CREATE … IF NOT EXISTS`` statements in one transaction (again if another process creating
        the same side table at the same moment made them fail: processes started together on a new database)."""

        def run() -> None:
            with translate_errors(self.where), self.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)

        created_despite_races(run)

    def add_columns(self, table: str, columns: dict[str, str]) -> None:
        """Add the ``columns`` (name → type, nullable) a table made by an earlier release lacks."""
        present = self._columns(table)
        for name, kind in columns.items():
            if name in present:  # only a missing one: an ALTER locks the table
                continue
            try:
                with translate_errors(self.where), self.cursor() as cursor:
                    cursor.execute(f"ALTER TABLE {table} ADD COLUMN {self.if_absent}{name} {kind}")
            except Exception:
                if name not in self._columns(table):  # else another process added it just now
                    raise

    def _columns(self, table: str) -> set[str]:
        with translate_errors(self.where), self.cursor(write=False) as cursor:
            cursor.execute(f"SELECT * FROM {table} LIMIT 0")
            return {str(c[0]) for c in cursor.description}


class SQLiteDialect(SQLDialect):
    """The tables in the ledger's SQLite file."""


class PostgresDialect(SQLDialect):
    """The tables in the ledger's PostgreSQL schema."""

    placeholder = "%s"
    blob = "BYTEA"
    timestamp = "TIMESTAMPTZ"
    if_absent = "IF NOT EXISTS "  # two processes opening an older database at once both succeed

    def table(self, name: str) -> str:
        schema = str(self.datastore.schema or "public").replace('"', '""')
        return f'"{schema}"."{name}"'

    def at(self, value: datetime) -> Any:
        return value

    def exists(self, name: str) -> bool:
        """Whether the table is there, asked of the catalog (no failed statement in the server's log)."""
        return self.rows("SELECT to_regclass(%s) IS NOT NULL", (self.table(name),))[0][0] is True

    @contextmanager
    def cursor(self, *, write: bool = True) -> Iterator[Any]:
        with self.datastore.transaction(commit=write) as cursor:
            yield cursor
