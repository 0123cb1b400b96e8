"""What every event of the ledger carries, and the context a command gives it.

``LedgerEvent`` is the envelope (its Avro ``caseledger.Envelope``): who acted, when it happened
and was recorded, on which channel, which contact started it and what caused it, and the hash
of the previous event of its aggregate. ``Context`` is what a command knows of that; ``envelope``
turns one into the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate

from caseledger.ledger.domain.values import Actor, Channel, require_utc


@dataclass(frozen=True, kw_only=True)
class Context:
    """Who is acting, when it happened on the channel, when the ledger records it, and what it follows from.

    ``recorded_at`` is the ledger's clock (every event's ``timestamp``); ``occurred_at`` is when it
    happened as the client claims it, bounded by :mod:`~caseledger.ledger.domain.claimed_times`, and
    the same instant when nobody claimed one. Left out, ``recorded_at`` is ``occurred_at``.
    """

    actor: Actor
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    recorded_at: datetime = None  # type: ignore[assignment]  # None: occurred_at
    channel: Channel | None = None
    correlation_id: UUID | None = None
    causation_id: UUID | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "occurred_at", require_utc(self.occurred_at, "occurred_at"))
        recorded = self.recorded_at if self.recorded_at is not None else self.occurred_at
        object.__setattr__(self, "recorded_at", require_utc(recorded, "recorded_at"))
        if self.channel is not None:
            object.__setattr__(self, "channel", Channel.parse(self.channel))


class LedgerEvent(Aggregate.Event):
    """The envelope every event of the ledger carries (its Avro ``Envelope``).

    ``timestamp`` is when the ledger recorded the event, on the ledger's clock (the context's
    ``recorded_at``), ``occurred_at`` when it happened on the channel, as claimed. ``previous_hash``
    chains the event to the one before it in its aggregate; the store fills it in when it encodes
    the event.
    """

    event_id: UUID
    customer_id: str
    occurred_at: datetime
    actor_kind: str
    actor_id: str
    actor_authentication: str
    actor_principal: str | None
    channel: str | None
    correlation_id: UUID | None
    causation_id: UUID | None
    previous_hash: bytes | None

    def mutate(self, aggregate: Any) -> Any:
        aggregate = super().mutate(aggregate)
        # Events loaded from the store carry the hash of their stored bytes (set by the
        # mapper); the last one is the head the next new event chains to.
        stored_hash = self.__dict__.get("_stored_hash")
        if stored_hash is not None:
            aggregate.chain_head = stored_hash
        return aggregate


def envelope(
    ctx: Context, *, customer_id: str, channel: Channel | None = None
) -> dict[str, Any]:
    """The envelope fields of a new event, from the command's context."""
    chosen = channel or ctx.channel
    return {
        "timestamp": ctx.recorded_at,
        "event_id": uuid4(),
        "customer_id": customer_id,
        "occurred_at": ctx.occurred_at,
        "actor_kind": ctx.actor.kind.value,
        "actor_id": ctx.actor.id,
        "actor_authentication": ctx.actor.authentication,
        "actor_principal": ctx.actor.principal,
        "channel": chosen.value if chosen is not None else None,
        "correlation_id": ctx.correlation_id,
        "causation_id": ctx.causation_id,
        "previous_hash": None,
    }
