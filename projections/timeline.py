"""Customer timeline: every event of a customer as one readable line (``caseledger history``).

The audit trail and the customer-facing history: when, on which channel, who, what, and the
case it belongs to — across all the customer's cases and channels. Each row is keyed by the
event's position in the store's total order, so the timeline is the same whether it was built
from the store or from the events topic.
"""

from __future__ import annotations

from typing import Any

from caseledger.ledger.domain.catalog import CASE_EVENT_NAMES
from caseledger.ledger.reports.describe import describe_event
from caseledger.projections.base import Projection, Tx, aggregate_key
from caseledger.projections.tables import INT, LOG, ROWS, TEXT, TIME, Table


class CustomerTimeline(Projection):
    """Every event of every customer as a readable line: when, channel, who, what, which case."""

    name = "timeline"
    version = 1
    tables = (
        Table(
            "timeline",
            {
                "position": INT, "customer_id": TEXT, "recorded_at": TIME, "occurred_at": TIME,
                "event_type": TEXT, "case_reference": TEXT, "channel": TEXT, "actor": TEXT, "line": TEXT,
                "event_id": TEXT, "aggregate_id": TEXT, "aggregate_version": INT, "previous_hash": TEXT,
            },
            key=("position",),
            kind=LOG,
            indexes=(("customer_id", "recorded_at", "position"),),
        ),
        # Case events do not repeat their case's reference: remember it from CaseOpened.
        Table("timeline_cases", {"case_id": TEXT, "reference": TEXT}, key=("case_id",), kind=ROWS),
    )

    def _reference(self, tx: Tx, event: Any, name: str) -> str | None:
        if name == "CaseOpened":
            opened: str = event.reference
            tx.put("timeline_cases", {"case_id": aggregate_key(event), "reference": opened})
            return opened
        if name in CASE_EVENT_NAMES:
            known = tx.get("timeline_cases", aggregate_key(event))
            return known["reference"] if known else None
        reference: str | None = getattr(event, "reference", None)
        if reference is None and getattr(event, "case_id", None) is not None:
            known = tx.get("timeline_cases", str(event.case_id))
            return known["reference"] if known else None
        return reference

    def on_event(self, tx: Tx, event: Any) -> None:
        name = type(event).__name__
        previous = event.previous_hash
        tx.append("timeline", {
            "position": tx.position,
            "customer_id": event.customer_id,
            "recorded_at": event.timestamp,
            "occurred_at": event.occurred_at,
            "event_type": name,
            "case_reference": self._reference(tx, event, name),
            "channel": event.channel,
            "actor": f"{event.actor_kind}:{event.actor_id}",
            "line": describe_event(event),
            "event_id": str(event.event_id),
            "aggregate_id": aggregate_key(event),
            "aggregate_version": event.originator_version,
            "previous_hash": previous.hex() if previous else None,
        })
