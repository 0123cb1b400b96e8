"""An adapter reads the verdict of one of its own intake records from the store (the service's
``POST /v1/intake/verdict``), when it cannot follow the outcomes topic or lost its place in it.

The record is named by where it was stored on the intake topic (topic, partition, offset: the SDK's receipt);
a contact also by its channel and channel message id (the draft's idempotency), which find its registration; a
delivery or read report by its case reference (the report's event is the case's). Rejections and collisions
are found by the record alone (their aggregate's id is derived from it). Another adapter's record reads
exactly like one without a verdict yet: not found.
"""

from __future__ import annotations

from typing import Any

from caseledger.ledger.domain.case_references import normalise_reference
from caseledger.ledger.domain.catalog import name_of_topic
from caseledger.ledger.domain.directory import IntakeSource, case_id_for, name_id
from caseledger.ledger.domain.values import Channel, check_text
from caseledger.ledger.errors import NotFound
from caseledger.ledger.intake.verdicts import (
    VERDICT_EVENTS,
    Collision,
    Recorded,
    Rejected,
    Resubmission,
    Verdict,
    verdict_of_event,
)

__all__ = ["read_verdict", "verdict_json"]

_NO_VERDICT = ("no verdict for that intake record of adapter {adapter!r} (yet): the intake worker has not applied it, "
               "or it was not sent by this adapter; for a contact, give its channel and channel_message_id too, for a "
               "delivery or read report its case_reference")


def read_verdict(ledger: Any, *, adapter: str, topic: str, partition: int, offset: int,
                 channel: str | None = None, channel_message_id: str | None = None,
                 case_reference: str | None = None) -> Verdict:
    """The verdict of the intake record at ``topic``/``partition``/``offset`` that ``adapter`` sent; NotFound else."""
    for text, what in ((topic, "topic"), (channel, "channel"), (channel_message_id, "channel_message_id"),
                       (case_reference, "case_reference")):
        check_text(text, what)
    source = IntakeSource(topic, partition, offset)
    candidates = [source.event_id, name_id(f"collision:{source}")]  # a rejection's id, a collision's id
    if channel and channel_message_id:
        message = ledger.pseudonyms.find_message(Channel.parse(channel), channel_message_id)
        if message is not None:
            candidates.append(message.id)
    if case_reference:
        candidates.append(case_id_for(normalise_reference(case_reference)))
    for aggregate_id in candidates:
        for stored in ledger.recorder.select_events(aggregate_id):
            name = name_of_topic(stored.topic)
            if name not in VERDICT_EVENTS:
                continue
            verdict = verdict_of_event(name, ledger.codec.decode_record(name, bytes(stored.state)), 0)
            if verdict is not None and verdict.intake_id == source.event_id and verdict.adapter == adapter:
                return verdict
    raise NotFound(_NO_VERDICT.format(adapter=adapter))


def verdict_json(verdict: Verdict) -> dict[str, Any]:
    """A verdict as the service answers it (the outcomes topic's record, as JSON; no position over HTTP)."""
    body: dict[str, Any] = {
        "outcome": verdict.outcome, "received": verdict.received, "adapter": verdict.adapter,
        "intake_id": str(verdict.intake_id), "intake_topic": verdict.intake_topic,
        "intake_partition": verdict.intake_partition, "intake_offset": verdict.intake_offset,
        "event_id": str(verdict.event_id), "recorded_at": verdict.recorded_at.isoformat(),
    }
    if isinstance(verdict, Recorded | Resubmission):
        body.update(reference=verdict.reference, contact_id=verdict.contact_id,
                    acknowledgement_id=verdict.acknowledgement_id, customer_id=verdict.customer_id)
    if isinstance(verdict, Collision):
        body["collision_kind"] = verdict.kind
    if isinstance(verdict, Collision | Rejected):
        reason = verdict.reason
        body["reason"] = {"code": reason.code, "field": reason.field, "fix": reason.fix}
    return body
