"""Many pre-encoded events written at once into the store's own events table: a benchmark's full ledger.

The recorders' ``insert_events`` is the ledger's write path: a batch, its tracking records, the writers'
lock, the notification ids returned. A generated ledger of millions of events needs none of that per
batch: these write the same rows (same table, same columns, same bytes, notification ids from the same
sequence in the order given) with each backend's fastest load — PostgreSQL's binary ``COPY``, SQLite's
``executemany`` in long transactions without a sync per commit — under the same writers' lock, so what
they write is what the ledger would have written, and ``audit verify`` reads it as such.

Only for a store nobody else writes meanwhile in ways that depend on the load's progress: a load
commits every ``per_transaction`` events, so a crash leaves a ledger cut at a transaction's end (valid).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, islice
from typing import Any
from uuid import UUID

from caseledger.ledger.store_ports import DataKeyRow

__all__ = ["EventRow", "copy_into_postgres", "insert_into_sqlite"]

# ``recorder`` below is the backend's ledger recorder (its datastore, key table, writers' lock), typed loosely:
# the recorders import this module.
EventRow = tuple[UUID, int, str, bytes]
"""One event as stored: originator id, version, topic, the encoded state."""

PER_TRANSACTION = 200_000
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
_COPY_TRAILER = b"\xff\xff"
_UUID_AND_VERSION = struct.Struct("!hi16siq")  # 4 fields; uuid (16 bytes); bigint (8 bytes)
_TEXT_ID_AND_VERSION = "!hi{}siq"
_LENGTH = struct.Struct("!i")
_COPY_BUFFER = 2_000


def _transactions(rows: Iterable[EventRow], size: int) -> Iterator[Iterator[EventRow]]:
    """The rows, ``size`` a transaction, each transaction's rows read lazily (memory: one write buffer)."""
    it = iter(rows)
    for first in it:
        yield chain((first,), islice(it, size - 1))


def _copy_buffers(rows: Iterator[EventRow], text_ids: bool, counted: list[int]) -> Iterator[bytes]:
    """The binary COPY stream of ``rows``, ~``_COPY_BUFFER`` rows a buffer; ``counted[0]`` counts them."""
    topics: dict[str, bytes] = {}
    pack_head, pack_length = _UUID_AND_VERSION.pack, _LENGTH.pack
    parts: list[bytes] = [_COPY_HEADER]
    for originator_id, version, topic, state in rows:
        if text_ids:
            text = str(originator_id).encode()
            parts.append(struct.pack(_TEXT_ID_AND_VERSION.format(len(text)), 4, len(text), text, 8, version))
        else:
            parts.append(pack_head(4, 16, originator_id.bytes, 8, version))
        encoded = topics.get(topic)
        if encoded is None:
            encoded = topics[topic] = pack_length(len(topic.encode())) + topic.encode()
        parts += (encoded, pack_length(len(state)), state)
        counted[0] += 1
        if len(parts) >= 4 * _COPY_BUFFER:
            yield b"".join(parts)
            parts = []
    parts.append(_COPY_TRAILER)
    yield b"".join(parts)


def copy_into_postgres(recorder: Any, rows: Iterable[EventRow], *,
                       new_keys: Sequence[DataKeyRow] = (), per_transaction: int | None = None) -> int:
    """Write ``rows`` in order by binary ``COPY``, ``per_transaction`` a transaction, each under the writers'
    lock (positions in commit order, as every writer's); ``new_keys`` with the first. Returns how many."""
    from psycopg.sql import SQL, Identifier

    statement = SQL("COPY {}.{} (originator_id, originator_version, topic, state) FROM STDIN (FORMAT BINARY)").format(
        Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
    text_ids = recorder.datastore.originator_id_type != "uuid"
    counted = [0]
    keys = list(new_keys)
    for transaction in _transactions(rows, per_transaction or PER_TRANSACTION):
        with recorder.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            recorder.keys.insert(curs, keys)
            recorder._lock_table(curs)
            recorder._notify_channel(curs)
            with curs.copy(statement) as copy:
                for buffer in _copy_buffers(transaction, text_ids, counted):
                    copy.write(buffer)
        keys = []
    if counted[0]:
        _vacuum(recorder, SQL("VACUUM (ANALYZE) {}.{}").format(Identifier(recorder.datastore.schema),
                                                               Identifier(recorder.events_table_name)))
    return counted[0]


def _vacuum(recorder: Any, statement: Any) -> None:
    """VACUUM and ANALYZE the loaded table, as after any bulk load: otherwise autovacuum starts on it (its insert
    threshold) while the ledger is being measured, and the first reads of each page write its hint bits."""
    with recorder.datastore.get_connection() as conn:
        conn.autocommit = True  # VACUUM runs outside a transaction
        try:
            conn.execute(statement)
        finally:
            conn.autocommit = False


def insert_into_sqlite(recorder: Any, rows: Iterable[EventRow], *,
                       new_keys: Sequence[DataKeyRow] = (), per_transaction: int | None = None) -> int:
    """Write ``rows`` in order, one ``executemany`` per ``per_transaction`` events in one write transaction,
    without a sync at each commit (``synchronous = OFF`` on this connection while it loads: a crash of the
    machine may lose the last transactions, not corrupt the file — WAL) and a larger page cache for the
    primary key's index; ``new_keys`` with the first. Returns how many."""
    counted = [0]
    keys = list(new_keys)
    with recorder.datastore.get_connection(commit=True) as conn:
        settings = conn.cursor()
        settings.execute("PRAGMA synchronous")
        synchronous = int(settings.fetchone()[0])
        settings.execute("PRAGMA cache_size")
        cache_size = int(settings.fetchone()[0])
        settings.execute("PRAGMA synchronous = OFF")
        settings.execute("PRAGMA cache_size = -262144")  # 256 MB
        try:
            for transaction in _transactions(rows, per_transaction or PER_TRANSACTION):
                with conn.transaction(commit=True) as curs:
                    recorder.keys.insert(curs, keys)
                    curs.executemany(recorder.insert_events_statement, _sqlite_rows(transaction, counted))
                keys = []
        finally:
            settings.execute(f"PRAGMA cache_size = {cache_size}")
            settings.execute(f"PRAGMA synchronous = {synchronous}")
    return counted[0]


def _sqlite_rows(rows: Iterator[EventRow], counted: list[int]) -> Iterator[tuple[Any, ...]]:
    for originator_id, version, topic, state in rows:
        counted[0] += 1
        yield originator_id.hex, version, topic, state
