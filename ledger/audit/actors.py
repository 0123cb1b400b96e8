"""Who recorded what, as the envelopes say: the events whose actor was not authenticated.

Events recorded by the embedded CLI (a local file, no ledger service) and every event recorded
before principals existed carry ``actor.authentication = none``. The audit lists them
(``caseledger audit verify --unauthenticated``) so an auditor sees exactly which history rests on
the operator's word rather than on a token, an OIDC JWT or an adapter's signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from caseledger.ledger.store.codec import AvroEventCodec
from caseledger.ledger.store.envelope import read_actor

__all__ = ["UnauthenticatedEvent", "UnauthenticatedEvents"]

LISTED = 1000  # listed one by one; beyond that only counted


@dataclass(frozen=True)
class UnauthenticatedEvent:
    position: int
    event_type: str
    actor: str

    def as_dict(self) -> dict[str, Any]:
        return {"position": self.position, "type": self.event_type, "actor": self.actor}


@dataclass
class UnauthenticatedEvents:
    """Collects, from the audit's pass (its ``collect`` hook), the events recorded without authentication."""

    codec: AvroEventCodec
    count: int = 0
    listed: list[UnauthenticatedEvent] = field(default_factory=list)

    def __call__(self, position: int, name: str, state: bytes) -> None:
        if self.codec.writes_current_envelope(state[2:10]):
            kind, ident, authentication = read_actor(state)
        else:
            actor = self.codec.decode_record(name, state)["envelope"]["actor"]
            kind, ident, authentication = actor["kind"], actor["id"], actor.get("authentication", "none")
        if authentication == "none":
            self.count += 1
            if len(self.listed) < LISTED:
                self.listed.append(UnauthenticatedEvent(position, name, f"{kind}:{ident}"))
