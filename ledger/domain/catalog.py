"""Every event type the ledger records, under a stable name.

The name is the event's Avro schema name (``schemas/<Name>.avsc``) and the topic the store
keeps with each event, so moving or renaming a Python class never orphans stored history.
"""

from __future__ import annotations

from eventsourcing.domain import Aggregate

from caseledger.ledger.domain.case import Case
from caseledger.ledger.domain.directory import (
    ChannelMessage,
    Customer,
    IdentityClaim,
    IntakeRejection,
    MessageCollision,
)
from caseledger.ledger.domain.events import LedgerEvent

NAMESPACE = "caseledger.events"
AGGREGATES: tuple[type[Aggregate], ...] = (
    Case, ChannelMessage, Customer, IdentityClaim, IntakeRejection, MessageCollision,
)


def _collect() -> dict[str, type[LedgerEvent]]:
    found: dict[str, type[LedgerEvent]] = {}
    for aggregate in AGGREGATES:
        base = vars(aggregate).get("Event")  # the aggregate's base event class, no event type of its own
        for value in vars(aggregate).values():
            if (
                isinstance(value, type)
                and issubclass(value, LedgerEvent)
                and value is not base
                and value.__name__ not in ("Event", "Created")
            ):
                if value.__name__ in found:
                    raise RuntimeError(f"two event types are named {value.__name__}")
                found[value.__name__] = value
    return found


EVENT_TYPES: dict[str, type[LedgerEvent]] = _collect()
"""Event types by schema name (``ContactReceived``, ``CaseClosed`` …)."""

for _name, _cls in EVENT_TYPES.items():
    # eventsourcing stores get_topic(cls) with each event; TOPIC makes it our stable name.
    _cls.TOPIC = f"{NAMESPACE}.{_name}"  # type: ignore[attr-defined]


def topic_of(name: str) -> str:
    return f"{NAMESPACE}.{name}"


def name_of_topic(topic: str) -> str:
    return topic.rsplit(".", 1)[-1]


CASE_EVENT_NAMES = frozenset(n for n, c in EVENT_TYPES.items() if issubclass(c, Case.Event))
