"""Who recorded what, as the envelopes say: the events whose actor was not authenticated, or whose clock was simulated.

Events recorded by the embedded CLI (a local file, no ledger service) and every event recorded
before principals existed carry ``actor.authentication = none``; those the embedded CLI recorded
under ``--now`` (or the demo) carry ``simulated-clock``: an operator chose their recorded time. The
audit lists both (``caseledger audit verify --unauthenticated``, ``--simulated-clock``) so an
auditor sees exactly which history rests on the operator's word rather than on a token, an OIDC
JWT or an adapter's signature, and which on the operator's clock rather than the ledger's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from caseledger.ledger.avro.codec import AvroEventCodec
from caseledger.ledger.avro.envelope import read_actor
from caseledger.ledger.domain.permissions import Authentication

__all__ = ["UnauthenticatedEvent", "UnauthenticatedEvents"]

LISTED = 1000  # listed one by one; beyond that only counted
_UNAUTHENTICATED = frozenset({Authentication.NONE.value, Authentication.SIMULATED_CLOCK.value})


@dataclass(frozen=True)
class UnauthenticatedEvent:
    position: int
    event_type: str
    actor: str

    def as_dict(self) -> dict[str, Any]:
        return {"position": self.position, "type": self.event_type, "actor": self.actor}


@dataclass
class UnauthenticatedEvents:
    """Collects, from the audit's pass (its ``collect`` hook), the events recorded without authentication.

    ``simulated`` are those of them recorded on a simulated clock (``--now``, the demo).
    """

    codec: AvroEventCodec
    count: int = 0
    listed: list[UnauthenticatedEvent] = field(default_factory=list)
    simulated: int = 0
    simulated_listed: list[UnauthenticatedEvent] = field(default_factory=list)

    def __call__(self, position: int, name: str, state: bytes) -> None:
        if self.codec.writes_current_envelope(state[2:10]):
            kind, ident, authentication = read_actor(state)
        else:
            actor = self.codec.decode_record(name, state)["envelope"]["actor"]
            kind, ident, authentication = actor["kind"], actor["id"], actor.get("authentication", "none")
        if authentication not in _UNAUTHENTICATED:
            return
        self.count += 1
        if len(self.listed) < LISTED:
            self.listed.append(UnauthenticatedEvent(position, name, f"{kind}:{ident}"))
        if authentication == Authentication.SIMULATED_CLOCK.value:
            self.simulated += 1
            if len(self.simulated_listed) < LISTED:
                self.simulated_listed.append(UnauthenticatedEvent(position, name, f"{kind}:{ident}"))
