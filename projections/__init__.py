"""Projections: read models built from the ledger's events, rebuildable from the beginning.

A projection is one class — a name, its tables, one handler per event type — and the
:class:`ProjectionRunner` owns everything else: reading the store's notification log or the
Kafka events topic from the last position, batching, applying a batch and storing the new
position in one transaction, stopping cleanly, and rebuilding into fresh tables swapped in
atomically. See ``docs/projections.md`` for writing one.
"""

from __future__ import annotations

from caseledger.projections.base import Projection, Tx
from caseledger.projections.registry import BUILT_INS, load_projection, load_projections
from caseledger.projections.runner import LIVE, REBUILD, ProjectionRunner, read_status, rebuild
from caseledger.projections.sources import (
    ConfluentKafkaEventSource,
    EventSource,
    KafkaEventSource,
    StoreEventSource,
    kafka_source,
)
from caseledger.projections.tables import COUNTERS, FLOAT, INT, JSON, LOG, ROWS, TEXT, TIME, Table
from caseledger.projections.view_stores import open_views
from caseledger.projections.views import ViewStore

__all__ = [
    "BUILT_INS",
    "COUNTERS",
    "FLOAT",
    "INT",
    "JSON",
    "LIVE",
    "LOG",
    "REBUILD",
    "ROWS",
    "TEXT",
    "TIME",
    "ConfluentKafkaEventSource",
    "EventSource",
    "KafkaEventSource",
    "Projection",
    "ProjectionRunner",
    "StoreEventSource",
    "Table",
    "Tx",
    "ViewStore",
    "kafka_source",
    "load_projection",
    "load_projections",
    "open_views",
    "read_status",
    "rebuild",
]
