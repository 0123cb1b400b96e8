"""Customer timeline: every event of a customer as one readable line (``caseledger history``).

The audit trail and the customer-facing history: when, on which channel, who, what, and the
case it belongs to — across all the customer's cases and channels. Each row is keyed by the
event's position in the store's total order, so the timeline is the same whether it was built
from the store or from the events topic.

Beside the readable ``line``, typed columns carry what an analyst filters and counts on, each set
by the event types that have it and null for the others (:data:`TYPED_COLUMNS`). They hold only
what the events carry in clear (handles, times, codes, statuses): never a customer's text, so
never a sealed token. The ``line`` quotes the customer's texts as the events carry them, sealed;
the ledger's reads (``history``, ``projections query``) open them on the way out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from caseledger.ledger.domain.case_parts import Status
from caseledger.ledger.domain.catalog import CASE_EVENT_NAMES
from caseledger.ledger.reports.describe import describe_event
from caseledger.projections.base import Projection, Tx, aggregate_key
from caseledger.projections.tables import INT, JSON, LOG, ROWS, TEXT, TIME, Table

TYPED_COLUMNS = {
    "contact_id": TEXT,  # ContactReceived, AcknowledgementIssued: the contact (C1)
    "items": JSON,  # the item handles a contact brings, a response answers, a waiver waives (["Q1", "Q2"])
    "follow_up": INT,  # ContactReceived: 1 for a follow-up on an existing case
    "category": TEXT,  # ContactReceived: the request's category
    "message_id": TEXT,  # the message issued (ACK1, R1, W1, N1) or reported on (delivered, failed, read)
    "promise_id": TEXT,  # Promise*, WrittenConfirmationIssued (P1)
    "promise_kind": TEXT,  # PromiseMade
    "due_at": TIME,  # PromiseMade: due; AcknowledgementIssued: respond by; DeadlineMissed: was due
    "deadline_kind": TEXT,  # DeadlineMissed: acknowledgement, response, promise …
    "case_status": TEXT,  # StatusChanged, CaseClosed, CaseCancelled, CaseReopened: the case's status after it
    "assignee": TEXT,  # CaseAssigned, HandedOff: the agent the case went to
    "wait_seconds": INT,  # EscalatedToHuman: the customer's wait for a human
    "failure": TEXT,  # MessageDeliveryFailed: the failure's code
}
"""The timeline's typed columns: name → column type (null where the event type has no such value)."""

_NOTHING: dict[str, Any] = dict.fromkeys(TYPED_COLUMNS)
_Typed = Callable[[Any], dict[str, Any]]


def _notice(status: str) -> _Typed:
    return lambda e: {"case_status": status, "message_id": e.notice_id}


_TYPED: dict[str, _Typed] = {
    "ContactReceived": lambda e: {"contact_id": e.contact_id, "items": [i["item_id"] for i in e.items],
                                  "follow_up": int(e.follow_up), "category": e.category},
    "AcknowledgementIssued": lambda e: {"contact_id": e.contact_id, "message_id": e.acknowledgement_id,
                                        "due_at": e.respond_by},
    "ResponseSent": lambda e: {"message_id": e.response_id, "items": list(e.answers)},
    "ItemWaived": lambda e: {"items": [e.item_id]},
    "PromiseMade": lambda e: {"promise_id": e.promise_id, "promise_kind": e.kind, "due_at": e.due_at},
    "WrittenConfirmationIssued": lambda e: {"promise_id": e.promise_id, "message_id": e.confirmation_id},
    "PromiseKept": lambda e: {"promise_id": e.promise_id},
    "PromiseBroken": lambda e: {"promise_id": e.promise_id},
    "PromiseWaived": lambda e: {"promise_id": e.promise_id},
    "PromiseWithdrawn": lambda e: {"promise_id": e.promise_id, "message_id": e.notice_id},
    "StatusChanged": lambda e: {"case_status": e.to_status, "message_id": e.notice_id},
    "CaseClosed": _notice(Status.CLOSED),
    "CaseCancelled": _notice(Status.CANCELLED),
    "CaseReopened": _notice(Status.OPEN),
    "CaseAssigned": lambda e: {"assignee": e.assignee},
    "HandedOff": lambda e: {"assignee": e.to_assignee},
    "EscalatedToHuman": lambda e: {"wait_seconds": e.wait_seconds},
    "DeadlineMissed": lambda e: {"deadline_kind": e.deadline_kind, "due_at": e.due_at},
    "MessageDelivered": lambda e: {"message_id": e.message_id},
    "MessageDeliveryFailed": lambda e: {"message_id": e.message_id, "failure": e.reason},
    "MessageRead": lambda e: {"message_id": e.message_id},
}


class CustomerTimeline(Projection):
    """Every event of every customer as a readable line and typed columns: when, channel, who, what, which case."""

    name = "timeline"
    version = 2  # 2: typed columns
    tables = (
        Table(
            "timeline",
            {
                "position": INT, "customer_id": TEXT, "recorded_at": TIME, "occurred_at": TIME,
                "event_type": TEXT, "case_reference": TEXT, "channel": TEXT, "actor": TEXT, "line": TEXT,
                "event_id": TEXT, "aggregate_id": TEXT, "aggregate_version": INT, "previous_hash": TEXT,
                **TYPED_COLUMNS,
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
        typed = _TYPED.get(name)
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
            **_NOTHING,
            **(typed(event) if typed is not None else {}),
        })
