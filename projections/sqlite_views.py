"""Views in a SQLite file (the embedded default: the ledger's own file)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from caseledger.ledger.errors import BackendError, ConfigurationError
from caseledger.ledger.private_files import create_private
from caseledger.projections.tables import FLOAT, INT, JSON, TEXT, TIME
from caseledger.projections.views import Encoder, Row, ViewStore, ViewTransaction, encode_json, utc_text

_SQL_TYPES = {TEXT: "TEXT", INT: "INTEGER", FLOAT: "REAL", TIME: "TEXT", JSON: "TEXT"}
_ENCODERS: dict[str, Encoder | None] = {TIME: utc_text, JSON: encode_json}
_DECODERS: dict[str, Encoder | None] = {TIME: datetime.fromisoformat, JSON: json.loads, FLOAT: float}


class SQLiteViewTransaction(ViewTransaction):
    """A transaction on a SQLite view store."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cursor = self.conn.execute(sql, params)
        names = [d[0] for d in cursor.description or ()]
        return [dict(zip(names, row, strict=False)) for row in cursor.fetchall()]  # (every row has every name)

    def encoder(self, kind: str) -> Encoder | None:
        return _ENCODERS.get(kind)

    def decoder(self, kind: str) -> Encoder | None:
        return _DECODERS.get(kind)

    def column_sql(self, kind: str) -> str:
        return _SQL_TYPES[kind]


class SQLiteViewStore(ViewStore):
    """Read models in a SQLite file; write transactions take the file's write lock at once."""

    def __init__(self, path: str, *, lock_timeout_s: float = 30.0) -> None:
        self.url = path
        file = Path(path).expanduser()
        if not file.parent.exists():
            raise ConfigurationError(f"views database {path!r}: directory {file.parent} does not exist")
        create_private(file)  # its -wal and -shm files take its mode
        try:
            self.conn = sqlite3.connect(str(file), isolation_level=None, timeout=lock_timeout_s,
                                        check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as error:
            raise BackendError(f"cannot open views database {path}: {error}") from error

    def describe(self) -> str:
        return f"SQLite {self.url}"

    @contextmanager
    def transaction(self) -> Iterator[ViewTransaction]:
        with _translated(self.url):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield SQLiteViewTransaction(self.conn)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    @contextmanager
    def reader(self) -> Iterator[ViewTransaction]:
        with _translated(self.url):
            self.conn.execute("BEGIN")
            try:
                yield SQLiteViewTransaction(self.conn)
            finally:
                self.conn.execute("ROLLBACK")

    def table_names(self) -> set[str]:
        with _translated(self.url):
            rows = self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {r[0] for r in rows}

    def close(self) -> None:
        self.conn.close()


@contextmanager
def _translated(where: str) -> Iterator[None]:
    """The one place where sqlite3 errors become the ledger's errors."""
    try:
        yield
    except sqlite3.OperationalError as error:
        raise BackendError(f"views database {where}: {error}") from error
    except sqlite3.DatabaseError as error:
        raise BackendError(f"views database {where}: {error}") from error
