"""Times an adapter claims on the intake topic (issue 22): out of the documented bounds, the record is
rejected with a reason naming the field and the bound, never personal data; the ledger records the rest
on its own clock. Against a real Kafka broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import Actor, ContactDraft, Identity
from caseledger.ledger.errors import ValidationError
from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
from caseledger.ledger.intake.records import DeliveryReport, ReadReceipt
from caseledger.ledger.intake.worker import KafkaIntakeWorker
from caseledger.ledger.settings import KafkaSettings
from tests.support.environment import ledger_settings
from tests.support.kafka_topics import drain, publish_unchecked

pytestmark = pytest.mark.kafka

SECRET = "clock.victim@example.com"


def contact(n: int, **kw: object) -> ContactDraft:
    return ContactDraft(channel="email", channel_message_id=f"t-{n}", identity=Identity.parse(f"email:{SECRET}"),
                        items=("Where is my card?",), **kw)  # type: ignore[arg-type]


def test_intake_records_dated_out_of_bounds_are_rejected_naming_the_field(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    """Before: a contact dated year 0001 and a delivery dated 1990 from the intake topic were recorded."""
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "intake.sqlite")))
    try:
        first = ledger.record_contact(contact(0))
        ref = first.reference
        now = datetime.now(UTC)
        out_of_bounds = [
            contact(1, occurred_at=datetime(1, 1, 1, tzinfo=UTC)),
            contact(2, occurred_at=datetime(2999, 1, 1, tzinfo=UTC)),
            DeliveryReport(case_reference=ref, message_id="ACK1", delivered_at=datetime(1990, 1, 1, tzinfo=UTC)),
            ReadReceipt(case_reference=ref, message_id="ACK1", reader=Actor.parse(f"customer:{first.customer_id}"),
                        read_at=now + timedelta(days=1)),
        ]
        with KafkaIntakeClient(kafka, adapter="mail-1") as client:
            for message in out_of_bounds:  # the SDK refuses each before publishing (issue 25: one validation) …
                with pytest.raises(ValidationError, match="this adapter's clock"):
                    client.submit(message)
            client.submit(contact(3, occurred_at=now - timedelta(days=2)))  # within the bounds
        # … and the worker still refuses them from an adapter that skips the SDK.
        publish_unchecked(kafka, out_of_bounds, adapter="mail-1")
        worker = KafkaIntakeWorker(ledger, kafka)
        drain(worker, until=5)
        assert (worker.stats.contacts, worker.stats.rejected) == (1, 4), worker.stats.line()
        reasons = sorted(r.reason for r in ledger.rejections())
        assert [r.split(" ", 2)[1] for r in reasons] == ["delivered_at", "occurred_at", "occurred_at", "read_at"]
        assert all(r.startswith("ValidationError: ") and SECRET not in r for r in reasons), reasons
        assert sum("horizon" in r for r in reasons) == 2 and sum("in the future" in r for r in reasons) == 2
        assert ledger.get_case(ref).messages["ACK1"].delivered_at is None
        late = ledger.find_by_message("email", "t-3")
        received = list(ledger.events.get(late.id))[1]
        assert received.occurred_at == now - timedelta(days=2)  # the claim, kept
        assert abs(received.timestamp - datetime.now(UTC)) < timedelta(minutes=1)  # recorded on the ledger's clock
        assert late.contacts["C1"].respond_by == ledger.policy.respond_by(
            channel="email", category=None, received_at=received.timestamp)
    finally:
        ledger.close()
