"""Views in a PostgreSQL database; large batches are written with COPY.

``?schema=NAME`` in the URL keeps the views in that schema (created when missing), the same
query parameter the ledger's store understands.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from caseledger.ledger.errors import BackendError, ConfigurationError
from caseledger.projections.tables import FLOAT, INT, JSON, TEXT, TIME, Table
from caseledger.projections.views import Encoder, Row, ViewStore, ViewTransaction, encode_json

_SQL_TYPES = {TEXT: "TEXT", INT: "BIGINT", FLOAT: "DOUBLE PRECISION", TIME: "TIMESTAMPTZ", JSON: "TEXT"}
_ENCODERS: dict[str, Encoder | None] = {JSON: encode_json}
_COPY_TYPES = {TEXT: "text", INT: "int8", FLOAT: "float8", TIME: "timestamptz", JSON: "text"}


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


_DECODERS: dict[str, Encoder | None] = {TIME: _utc, JSON: json.loads}
COPY_THRESHOLD = 64  # rows; below it one pipelined executemany is cheaper than a staging table


def _adapt(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresViewTransaction(ViewTransaction):
    """A transaction on a PostgreSQL view store."""

    def __init__(self, store: PostgresViewStore) -> None:
        self.store = store
        self.conn = store.conn
        self._filled: set[str] = set()  # staging tables holding rows of this transaction

    def lock_schema(self) -> None:
        # Runners started together (a consumer group's members) create the same tables: two concurrent CREATE TABLE
        # IF NOT EXISTS collide in PostgreSQL's catalog (pg_type's unique index), so one at a time per schema.
        self.execute("SELECT pg_advisory_xact_lock(hashtext('caseledger.views.' || current_schema()))")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self.conn.cursor() as cursor:
            cursor.execute(_adapt(sql), params)
            return cursor.rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self.conn.cursor() as cursor:
                cursor.executemany(_adapt(sql), rows)

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self.conn.cursor() as cursor:
            cursor.execute(_adapt(sql), params)
            names = [d.name for d in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def encoder(self, kind: str) -> Encoder | None:
        return _ENCODERS.get(kind)

    def decoder(self, kind: str) -> Encoder | None:
        return _DECODERS.get(kind)

    def column_sql(self, kind: str) -> str:
        return _SQL_TYPES[kind]

    # -- bulk paths ----------------------------------------------------------------------------------

    def _copy(self, spec: Table, physical: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        # Binary: the server reads values instead of parsing text, and psycopg dumps them in C.
        sql = f"COPY {physical} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
        with self.conn.cursor() as cursor, cursor.copy(sql) as copy:
            copy.set_types([_COPY_TYPES[spec.columns[c]] for c in columns])
            for row in rows:
                copy.write_row(row)

    def insert_rows(self, spec: Table, physical: str, rows: Sequence[Row]) -> None:
        if len(rows) < COPY_THRESHOLD:
            super().insert_rows(spec, physical, rows)
            return
        columns = list(spec.columns)
        self._copy(spec, physical, columns, self.encode_rows(spec, columns, rows))

    def upsert_rows(self, spec: Table, physical: str, rows: Sequence[Row]) -> None:
        if len(rows) < COPY_THRESHOLD:
            super().upsert_rows(spec, physical, rows)
            return
        columns = list(spec.columns)
        stage = self.store.stage_for(self, physical, columns)
        if stage in self._filled:  # a second upsert in one transaction (after tx.query); else commit empties it
            self.execute(f"TRUNCATE {stage}")
        self._copy(spec, stage, columns, self.encode_rows(spec, columns, rows))
        self._filled.add(stage)
        self.execute(self._upsert_sql(spec, physical, columns, source=f"SELECT {', '.join(columns)} FROM {stage}"))


class PostgresViewStore(ViewStore):
    """Read models in a PostgreSQL database (one connection; transactions are explicit)."""

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigurationError("PostgreSQL views need psycopg: pip install 'psycopg[binary]'") from None
        self.url = url
        conninfo, schema = _split_schema(url)
        self.schema = schema
        self._stages: dict[tuple[str, tuple[str, ...]], str] = {}
        try:
            self.conn = psycopg.connect(conninfo, autocommit=True)
            self.conn.execute("SET TIME ZONE 'UTC'")
            if schema:
                self.conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                self.conn.execute(f'SET search_path TO "{schema}"')
        except psycopg.Error as error:
            raise BackendError(f"cannot open views database {self.describe()}: {error}") from error

    def describe(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or "localhost"
        return f"PostgreSQL {parts.username or ''}@{host}:{parts.port or 5432}{parts.path}"

    def stage_for(self, tx: PostgresViewTransaction, physical: str, columns: Sequence[str]) -> str:
        """A temporary staging table shaped like ``physical`` for COPY-then-upsert."""
        key = (physical, tuple(columns))
        stage = self._stages.get(key)
        if stage is None:
            stage = f"stage_{len(self._stages)}_{physical}"
            tx.execute(f"CREATE TEMP TABLE {stage} (LIKE {physical}) ON COMMIT DELETE ROWS")
            self._stages[key] = stage
        return stage

    @contextmanager
    def transaction(self) -> Iterator[ViewTransaction]:
        import psycopg

        try:
            with self.conn.transaction():
                yield PostgresViewTransaction(self)
        except psycopg.Error as error:
            # A rolled-back transaction may have taken the creation of a staging table with it.
            self._stages.clear()
            raise BackendError(f"views database {self.describe()}: {error}") from error
        except BaseException:
            self._stages.clear()
            raise

    @contextmanager
    def reader(self) -> Iterator[ViewTransaction]:
        import psycopg

        try:
            with self.conn.transaction(force_rollback=True):
                yield PostgresViewTransaction(self)
        except psycopg.Error as error:
            raise BackendError(f"views database {self.describe()}: {error}") from error

    def table_names(self) -> set[str]:
        rows = self.conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall()
        return {r[0] for r in rows}

    def close(self) -> None:
        self.conn.close()


def _split_schema(url: str) -> tuple[str, str | None]:
    """(libpq URL without ``schema=``, the schema) — libpq refuses unknown URL parameters."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema
