"""The port to the database that holds read models (the *views*), and what both backends share.

A view store is a SQLite file or a PostgreSQL database — by default the ledger's own. Each
backend module (:mod:`projections.sqlite`, :mod:`projections.postgres`) implements
:class:`ViewStore` and :class:`ViewTransaction`; SQL here is written once with ``?``
placeholders and the backend adapts it. Beside the views live two tables of the runner:
``projection_state`` (which source a projection follows, which code version built its tables)
and ``projection_positions`` (how far it got, per source partition).
"""

from __future__ import annotations

import json
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from caseledger.ledger.errors import ConfigurationError
from caseledger.projections.tables import COUNTERS, INT, TEXT, TIME, Table

Row = dict[str, Any]
Encoder = Callable[[Any], Any]

STATE = Table(
    "projection_state",
    {"projection": TEXT, "slot": TEXT, "source": TEXT, "version": INT, "updated_at": TIME},
    key=("projection", "slot"),
)
POSITIONS = Table(
    "projection_positions",
    {"projection": TEXT, "slot": TEXT, "part": INT, "position": INT, "store_position": INT},
    key=("projection", "slot", "part"),
)
RUNNER_TABLES = (STATE, POSITIONS)


# One encoder for every value: json.dumps with options builds a new encoder per call.
_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def encode_json(value: Any) -> str:
    """JSON text of a column value: keys sorted, so equal values are equal text on every backend."""
    return _JSON.encode(value)


_LAST_TEXT: tuple[datetime, str] = (datetime(1970, 1, 1, tzinfo=UTC), "1970-01-01T00:00:00.000000+00:00")


def utc_text(value: datetime) -> str:
    """A fixed-width ISO-8601 UTC text: such texts sort and compare like the instants they name."""
    global _LAST_TEXT
    if value.tzinfo is not UTC:  # (in a zone with folds, two instants may compare equal: no memo)
        if value.tzinfo is None:
            raise ConfigurationError(f"naive datetime {value.isoformat()} in a view: use timezone-aware UTC datetimes")
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    last = _LAST_TEXT  # a command's events share their recording time, often their occurrence: one text
    if value == last[0]:
        return last[1]
    text = value.isoformat(timespec="microseconds")
    _LAST_TEXT = (value, text)
    return text


def index_name(table: str, n: int) -> str:
    """A fresh index name: random, so a rebuilt table's indexes never collide with the live ones."""
    return f"ix_{table}_{n}_{secrets.token_hex(3)}"


class ViewTransaction(ABC):
    """One open transaction on the view store: the bulk writes a batch needs, and reads."""

    placeholder = "?"

    # -- backend specifics -------------------------------------------------------------------------

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""

    @abstractmethod
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement once per parameter row."""

    @abstractmethod
    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Rows of a query as dicts, values as the driver returns them."""

    @abstractmethod
    def encoder(self, kind: str) -> Encoder | None:
        """How a Python value of a column type is given to the driver (None: as it is)."""

    @abstractmethod
    def decoder(self, kind: str) -> Encoder | None:
        """How a driver value of a column type becomes a Python value (None: as it is)."""

    @abstractmethod
    def column_sql(self, kind: str) -> str:
        """The SQL type of a column type."""

    # -- shared SQL ----------------------------------------------------------------------------------

    def encode_rows(self, spec: Table, columns: Sequence[str], rows: Sequence[Row]) -> list[tuple[Any, ...]]:
        getter = itemgetter(*columns)
        encoders = [(i, enc) for i, c in enumerate(columns) if (enc := self.encoder(spec.columns[c])) is not None]
        out: list[tuple[Any, ...]] = []
        try:
            for row in rows:
                values = getter(row)
                if len(columns) == 1:
                    values = (values,)
                if encoders:
                    changed = list(values)
                    for i, enc in encoders:
                        if changed[i] is not None:
                            changed[i] = enc(changed[i])
                    values = tuple(changed)
                out.append(values)
        except KeyError as missing:
            raise ConfigurationError(
                f"a row of {spec.name} has no value for column {missing}; put gives every column"
            ) from None
        return out

    def select(self, spec: Table, physical: str, where: str = "", params: Sequence[Any] = (),
               order_by: str = "") -> list[Row]:
        """Rows of a view, decoded into Python values (``where`` uses ``?`` placeholders)."""
        sql = f"SELECT {', '.join(spec.columns)} FROM {physical}"
        if where:
            sql += f" WHERE {where}"
        if order_by:
            sql += f" ORDER BY {order_by}"
        encoded = [self.param(p) for p in params]
        rows = self.fetch(sql, encoded)
        # Each column's decoder looked up once per query, and run down its column: no inner loop per row.
        for column, kind in spec.columns.items():
            decode = self.decoder(kind)
            if decode is not None:
                for row in rows:
                    value = row[column]
                    if value is not None:
                        row[column] = decode(value)
        return rows

    def param(self, value: Any) -> Any:
        """A query parameter as the driver takes it (datetimes as the backend stores them)."""
        if isinstance(value, datetime):
            enc = self.encoder(TIME)
            return enc(value) if enc else value
        return value

    def select_row(self, spec: Table, physical: str, key: tuple[Any, ...]) -> Row | None:
        where = " AND ".join(f"{c} = ?" for c in spec.key)
        rows = self.select(spec, physical, where, key)
        return rows[0] if rows else None

    def upsert_rows(self, spec: Table, physical: str, rows: Sequence[Row]) -> None:
        columns = list(spec.columns)
        self.executemany(self._upsert_sql(spec, physical, columns), self.encode_rows(spec, columns, rows))

    def _upsert_sql(self, spec: Table, physical: str, columns: Sequence[str], source: str = "") -> str:
        cols = ", ".join(columns)
        values = source or f"VALUES ({', '.join('?' for _ in columns)})"
        conflict = f"ON CONFLICT ({', '.join(spec.key)})"
        if spec.value_columns:
            sets = ", ".join(f"{c} = excluded.{c}" for c in spec.value_columns)
            return f"INSERT INTO {physical} ({cols}) {values} {conflict} DO UPDATE SET {sets}"
        return f"INSERT INTO {physical} ({cols}) {values} {conflict} DO NOTHING"

    def delete_rows(self, spec: Table, physical: str, keys: Sequence[tuple[Any, ...]]) -> None:
        where = " AND ".join(f"{c} = ?" for c in spec.key)
        self.executemany(f"DELETE FROM {physical} WHERE {where}", keys)

    def add_to_counters(self, spec: Table, physical: str, rows: Sequence[Row]) -> None:
        columns = list(spec.columns)
        sets = ", ".join(f"{c} = {physical}.{c} + excluded.{c}" for c in spec.value_columns)
        sql = (
            f"INSERT INTO {physical} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
            f"ON CONFLICT ({', '.join(spec.key)}) DO UPDATE SET {sets}"
        )
        self.executemany(sql, self.encode_rows(spec, columns, rows))

    def insert_rows(self, spec: Table, physical: str, rows: Sequence[Row]) -> None:
        columns = list(spec.columns)
        sql = f"INSERT INTO {physical} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
        self.executemany(sql, self.encode_rows(spec, columns, rows))

    # -- schema --------------------------------------------------------------------------------------

    def create_table(self, spec: Table, physical: str, *, indexes: bool = True) -> None:
        columns = []
        for column, kind in spec.columns.items():
            default = " DEFAULT 0 NOT NULL" if spec.kind == COUNTERS and column in spec.value_columns else ""
            not_null = " NOT NULL" if column in spec.key else ""
            columns.append(f"{column} {self.column_sql(kind)}{not_null}{default}")
        token = secrets.token_hex(3)
        columns.append(f"CONSTRAINT pk_{physical}_{token} PRIMARY KEY ({', '.join(spec.key)})")
        self.lock_schema()
        self.execute(f"CREATE TABLE IF NOT EXISTS {physical} ({', '.join(columns)})")
        if indexes:
            self.create_indexes(spec, physical)

    def lock_schema(self) -> None:
        """Serialise schema changes with other runners starting on the same database until this transaction ends
        (SQLite's write lock does it already)."""
        return None

    def create_indexes(self, spec: Table, physical: str) -> None:
        self.lock_schema()
        for n, index in enumerate(spec.indexes, 1):
            self.execute(f"CREATE INDEX IF NOT EXISTS {index_name(spec.name, n)} ON {physical} ({', '.join(index)})")

    def drop_table(self, physical: str) -> None:
        self.execute(f"DROP TABLE IF EXISTS {physical}")

    def rename_table(self, old: str, new: str) -> None:
        self.execute(f"ALTER TABLE {old} RENAME TO {new}")


class ViewStore(ABC):
    """A database holding read models; hands out transactions and answers reads."""

    url: str

    @abstractmethod
    def describe(self) -> str:
        """The database without any password, for status lines."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[ViewTransaction]:
        """A write transaction: committed when the block ends, rolled back if it raises."""

    @abstractmethod
    def reader(self) -> AbstractContextManager[ViewTransaction]:
        """A read-only view of the committed state (nothing written through it is kept)."""

    @abstractmethod
    def table_names(self) -> set[str]:
        """Every table in the store."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection."""

    def __enter__(self) -> ViewStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def select(self, spec: Table, physical: str | None = None, where: str = "", params: Sequence[Any] = (),
               order_by: str = "") -> list[Row]:
        """Decoded rows of a view (``physical`` defaults to the live table of ``spec``)."""
        if (physical or spec.name) not in self.table_names():
            return []
        with self.reader() as tx:
            return tx.select(spec, physical or spec.name, where, params, order_by)

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Rows of any read-only SQL (``?`` placeholders), values as the driver returns them."""
        with self.reader() as tx:
            return tx.fetch(sql, [tx.param(p) for p in params])

    def snapshot(self, tables: Sequence[Table]) -> dict[str, list[Row]]:
        """Every row of these (live) tables, decoded and in key order: for comparing views."""
        return {t.name: self.select(t, order_by=", ".join(t.key)) for t in tables}

    def ensure_runner_tables(self) -> None:
        existing = self.table_names()
        missing = [t for t in RUNNER_TABLES if t.name not in existing]
        if missing:
            with self.transaction() as tx:
                for table in missing:
                    tx.create_table(table, table.name)


def iter_batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
