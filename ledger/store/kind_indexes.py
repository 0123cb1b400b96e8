"""The rare kinds of event the ledger reads by kind from the log's start, each under a partial index of its own.

Every case opened, every message-id collision, every rejected intake record and every erasure are read by
kind (a customer's history, ``intake collisions``, an erasure, ``tick``): eventsourcing's read of the log by
topic filters the events table row by row, so each such read scanned every event of the ledger. A partial
index per kind (the kind's rows only, in log order) makes that read touch the kind's rows alone, and costs a
write nothing but for those rows. The kind is written into the statement (a constant of the catalog, checked
here), not bound: neither SQLite nor a generic PostgreSQL plan uses a partial index for a bound value.

Both backends create the indexes when a store is opened, stores of earlier releases too (the first open
after an upgrade builds them: one read of the events table).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from caseledger.ledger.store_ports import TOPICS_READ_BY_KIND

if TYPE_CHECKING:
    from eventsourcing.persistence import Notification

__all__ = ["ReadsByKind", "index_name", "kind_read_alone", "topic_literal"]

_TOPIC = re.compile(r"[A-Za-z][A-Za-z0-9_.]*")


def kind_read_alone(topics: Sequence[str]) -> str | None:
    """The one indexed kind a read of the log asks for, else None (eventsourcing's own read applies)."""
    if len(topics) == 1 and topics[0] in TOPICS_READ_BY_KIND:
        return topics[0]
    return None


def topic_literal(topic: str) -> str:
    """The topic as an SQL string literal (a catalog name: letters, digits, dots)."""
    if _TOPIC.fullmatch(topic) is None:
        raise ValueError(f"not a catalog topic: {topic!r}")
    return f"'{topic}'"


def index_name(table: str, topic: str) -> str:
    """The partial index of one kind on an events table."""
    return f"{table}_{topic.rsplit('.', 1)[-1].lower()}_idx"


class ReadsByKind(ABC):
    """A recorder's read of the log: one indexed kind through its partial index (``_select_kind``, the backend's
    statement), anything else as eventsourcing reads it. Comes before eventsourcing's recorder in the bases."""

    def select_notifications(
        self, start: int | None, limit: int, stop: int | None = None, topics: Sequence[str] = (), *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        topic = kind_read_alone(topics)
        if topic is None:
            parent: Any = super()
            return parent.select_notifications(start, limit, stop, topics, inclusive_of_start=inclusive_of_start)
        return self._select_kind(topic, start, limit, stop, inclusive_of_start)

    @abstractmethod
    def _select_kind(self, topic: str, start: int | None, limit: int, stop: int | None,
                     inclusive_of_start: bool) -> Sequence[Notification]:
        """The events of one indexed kind, in log order, by the backend's statement."""
