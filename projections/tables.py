"""What a projection's table is: its columns and their portable types, its key, its kind and indexes.

Three kinds of tables, because each kind has one safe way to be written:

=============  ===========================  ===============================================
``ROWS``       ``tx.get`` / ``put`` /       one row per key (a case, a deadline); the runner
               ``delete``                   is the only writer, so it may cache them
``COUNTERS``   ``tx.add``                   numbers added to, never read in a handler; adds
                                            commute, so any order of events gives one result
``LOG``        ``tx.append``                rows only ever inserted (one per event)
=============  ===========================  ===============================================

Column types are portable: ``text``, ``int``, ``float``, ``time`` (a timezone-aware UTC
datetime) and ``json`` (lists, dicts, strings, numbers — JSON values only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from caseledger.ledger.errors import ConfigurationError

__all__ = ["COLUMN_TYPES", "COUNTERS", "FLOAT", "INT", "JSON", "LOG", "ROWS", "TEXT", "TIME", "Table"]

TEXT, INT, FLOAT, TIME, JSON = "text", "int", "float", "time", "json"
COLUMN_TYPES = (TEXT, INT, FLOAT, TIME, JSON)
ROWS, COUNTERS, LOG = "rows", "counters", "log"

@dataclass(frozen=True)
class Table:
    """A table of a projection: its columns (name → type), key columns, kind and indexes."""

    name: str
    columns: Mapping[str, str]
    key: tuple[str, ...]
    kind: str = ROWS
    indexes: tuple[tuple[str, ...], ...] = ()
    value_columns: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise ConfigurationError(f"table name {self.name!r}: use lower_case letters, digits and _")
        if "__" in self.name:
            raise ConfigurationError(f"table name {self.name!r}: '__' is reserved for rebuild tables")
        for column, kind in self.columns.items():
            if kind not in COLUMN_TYPES:
                raise ConfigurationError(
                    f"table {self.name}: column {column} has type {kind!r}; use one of {', '.join(COLUMN_TYPES)}"
                )
        missing = [c for c in (*self.key, *(c for i in self.indexes for c in i)) if c not in self.columns]
        if missing:
            raise ConfigurationError(f"table {self.name}: key or index names unknown columns {missing}")
        if not self.key:
            raise ConfigurationError(f"table {self.name} needs key columns")
        if self.kind not in (ROWS, COUNTERS, LOG):
            raise ConfigurationError(f"table {self.name}: kind {self.kind!r} is not rows, counters or log")
        values = tuple(c for c in self.columns if c not in self.key)
        if self.kind == COUNTERS and any(self.columns[c] not in (INT, FLOAT) for c in values):
            raise ConfigurationError(f"counters table {self.name}: every column but the key must be int or float")
        object.__setattr__(self, "value_columns", values)
