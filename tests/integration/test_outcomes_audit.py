"""Issue 25's leftover: ``audit verify --kafka`` checked the events topic and intake accounting, not the outcomes
topic. Now each verdict an event decides must be on it once, keyed by its adapter, and no verdict without its event.

One ledger is built through the real intake topic, worker and publisher (contacts, a resubmission, a rejection,
an unsigned delivery report); the tampering is done on copies of its outcomes topic (forged records produced to a
fresh topic), so the ledger and its events topic stay as the publisher left them.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.audit import AuditReport, verify
from caseledger.ledger.domain.values import ContactDraft, Identity
from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
from caseledger.ledger.intake.records import DeliveryReport
from caseledger.ledger.intake.verdicts import VerdictCodec
from caseledger.ledger.intake.worker import KafkaIntakeWorker
from caseledger.ledger.kafka.topics import ensure_topics
from caseledger.ledger.settings import KafkaSettings
from tests.support.environment import ledger_settings
from tests.support.kafka_topics import (
    AUDIT_READERS,
    drain,
    fresh_topics,
    publish_all,
    publish_unchecked,
    read_topic,
)

pytestmark = pytest.mark.kafka


def draft(n: int, **kw: Any) -> ContactDraft:
    return ContactDraft(channel="email", channel_message_id=f"<m{n}@mail>", identity=Identity.parse(f"email:c{n}@x.org"),
                        items=(f"question {n}",), **kw)


@dataclasses.dataclass
class Built:
    ledger: CaseLedger
    kafka: KafkaSettings
    verdicts: list[Any]  # the outcomes topic's records, as the publisher wrote them


@pytest.fixture(scope="module")
def built(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    kafka = fresh_topics(kafka_bootstrap)
    ledger = CaseLedger(ledger_settings(database=str(Path(tmp_path_factory.mktemp("outcomes")) / "l.sqlite")))
    try:
        with KafkaIntakeClient(kafka, adapter="mail-1") as client:
            client.submit_many([draft(n) for n in range(4)] + [draft(0)])  # the last one: a resubmission
        publish_unchecked(kafka, [draft(9, occurred_at=datetime.now(UTC) + timedelta(days=1))], adapter="mail-2")
        worker = KafkaIntakeWorker(ledger, kafka, batch_size=5)
        drain(worker, until=6)
        reference = ledger.find_by_message("email", "<m1@mail>").reference
        publish_unchecked(kafka, [DeliveryReport(case_reference=reference, message_id="ACK1",
                                                 delivered_at=datetime.now(UTC))], adapter="sms-1")
        drain(worker, until=7)
        publish_all(ledger, kafka)
        yield Built(ledger, kafka, read_topic(kafka, kafka.outcomes_topic))
    finally:
        ledger.close()


def audit(built: Built, outcomes_topic: str | None = None) -> AuditReport:
    kafka = built.kafka if outcomes_topic is None else dataclasses.replace(built.kafka, outcomes_topic=outcomes_topic)
    return verify(built.ledger, kafka=kafka, readers=AUDIT_READERS)


def forged_topic(built: Built, records: list[tuple[bytes | None, bytes, int | None]]) -> str:
    """A fresh outcomes topic holding ``records`` (key, value, partition; None: the key's own)."""
    topic = f"outcomes-{uuid.uuid4().hex[:8]}"
    ensure_topics(dataclasses.replace(built.kafka, outcomes_topic=topic))
    producer = KafkaProducer(**built.kafka.client_options())
    try:
        for key, value, partition in records:
            producer.send(topic, key=key, value=value, partition=partition)
        producer.flush()
    finally:
        producer.close()
    return topic


def outcome_codes(report: AuditReport) -> dict[str, int]:
    found: dict[str, int] = {}
    for d in report.discrepancies:
        if d.code.startswith("outcome"):
            found[d.code] = found.get(d.code, 0) + 1
    return found


def test_the_outcomes_topic_as_the_publisher_left_it_verifies(built: Built) -> None:
    assert len(built.verdicts) == 7  # 4 recorded, 1 resubmission, 1 rejected, 1 applied report
    report = audit(built)
    assert "outcomes topic" in report.checks and outcome_codes(report) == {}, report.discrepancies
    assert report.ok, [d.line() for d in report.discrepancies]


def test_a_verdict_twice_one_without_its_event_and_one_missing_are_named(built: Built) -> None:
    records = [(r.key, r.value, r.partition) for r in built.verdicts]
    codec = VerdictCodec()
    first = codec.decode(records[0][1])
    ghost = dataclasses.replace(first, event_id=uuid.uuid4())  # a verdict no event of the store decides
    topic = forged_topic(built, [*records[1:], records[1], (records[0][0], codec.encode(ghost), records[0][2])])
    report = audit(built, topic)
    assert outcome_codes(report) == {"outcome-missing": 1, "outcome-duplicate": 1, "outcome-extra": 1}, \
        [d.line() for d in report.discrepancies]
    missing = next(d for d in report.discrepancies if d.code == "outcome-missing")
    assert missing.event_id == str(first.event_id) and not report.ok


def test_a_verdict_altered_or_on_another_adapters_key_is_named(built: Built) -> None:
    codec = VerdictCodec()
    records = [(r.key, r.value, r.partition) for r in built.verdicts]
    verdict = codec.decode(records[0][1])
    altered = codec.encode(dataclasses.replace(verdict, intake_offset=verdict.intake_offset + 1))
    elsewhere = records[1]
    topic = forged_topic(built, [(records[0][0], altered, records[0][2]), (b"another-adapter", elsewhere[1], None),
                                 *records[2:]])
    report = audit(built, topic)
    assert outcome_codes(report) == {"outcome-differs": 1, "outcome-key": 1}, [d.line() for d in report.discrepancies]


def test_verdicts_not_published_yet_are_a_warning(built: Built) -> None:
    report = audit(built, forged_topic(built, []))
    assert outcome_codes(report) == {"outcome-unpublished": 7}
    assert all(d.severity == "warning" for d in report.discrepancies if d.code.startswith("outcome"))
