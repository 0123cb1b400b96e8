"""Where is an intake record validated? Here, once: the adapter SDK and the intake worker run the same checks.

:func:`validate_intake` holds every check that needs no knowledge of the ledger's state. The adapter
SDK runs it on the adapter's clock before anything is published (``KafkaIntakeClient.submit``); the
intake worker runs it again on the ledger's clock before it applies a record, since an adapter built
without the SDK (or an older one) may send anything. What a value is on its own (an identity, an
attachment's ref, a channel, an item) is checked when the value is built (``ledger/domain/values.py``),
so decoding a record on the worker checks it again with the same code.

So a record the SDK accepted is refused after publishing only for what the ledger alone knows — an
unknown case reference or message, a case of another customer, a time before what it refers to, a
collision, an adapter key or channel the adapter does not hold, a report already applied — or for a
time the two clocks disagree on. Claimed times are bounded by ``ledger/domain/claimed_times.py``:
at most :data:`CLOCK_SKEW` ahead of the judging clock, at most :data:`HORIZON` behind it. A time the
SDK accepted is refused by the worker only when the adapter's clock runs more than the skew ahead of the
ledger's (only a time claimed within the skew of "now" can fall on the other side), or when the record
waits on the intake topic long enough for a time near the horizon to pass it.
"""

from __future__ import annotations

from datetime import datetime

from caseledger.ledger.domain.case_references import normalise_reference
from caseledger.ledger.domain.claimed_times import CLOCK_SKEW, HORIZON, check_claim
from caseledger.ledger.domain.values import ActorKind, ContactDraft
from caseledger.ledger.errors import ValidationError
from caseledger.ledger.intake.delivery_reports import inbound_read, is_inbound, not_the_customer
from caseledger.ledger.intake.records import DeliveryReport, IntakeMessage

__all__ = ["ADAPTER_CLOCK", "CLOCK_SKEW", "HORIZON", "LEDGER_CLOCK", "validate_intake"]

LEDGER_CLOCK = "the ledger's clock"
ADAPTER_CLOCK = "this adapter's clock"


def validate_intake(message: IntakeMessage, now: datetime, *, clock: str = LEDGER_CLOCK) -> IntakeMessage:
    """``message`` when the ledger would not refuse it on its own, judged at ``now`` (``clock`` names whose).

    A ValidationError names the field and how to fix it, never a personal value.
    """
    if isinstance(message, ContactDraft):
        if message.occurred_at is not None:
            check_claim("occurred_at", message.occurred_at, now=now, clock=clock)
        return message
    if isinstance(message, DeliveryReport):
        check_claim("delivered_at", message.delivered_at, now=now, clock=clock)
        if is_inbound(message.message_id):
            raise ValidationError(
                f"{message.message_id.strip().upper()} is an inbound contact; delivery reports are for our messages "
                "(ACK…, R…, W…, N…): field message_id", field="message_id"
            )
        return message
    check_claim("read_at", message.read_at, now=now, clock=clock)
    # Through the intake topic a read is the customer's own (ledger/intake/delivery_reports.py): an adapter
    # relays it; an agent's reading of a contact is reported over the API, as that agent.
    if message.reader.kind is not ActorKind.CUSTOMER:
        raise ValidationError(not_the_customer(normalise_reference(message.case_reference), message.reader),
                              field="reader")
    if is_inbound(message.message_id):
        raise ValidationError(inbound_read(message.message_id.strip().upper()), field="message_id")
    return message
