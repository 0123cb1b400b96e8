"""The events topic's records as other tools read them: CloudEvents (Kafka binding, binary mode), keys.

Also: a topic published by an earlier release (the ledger's own header names, customer-less events
keyed with the empty string) stays auditable, rebuildable and resumable.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cloudevents.v1.kafka import KafkaMessage, from_binary
from kafka import KafkaProducer

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.audit import verify
from caseledger.ledger.avro.codec import HEADER_SIZE, NO_CASE, event_hash
from caseledger.ledger.avro.envelope import parse_envelope
from caseledger.ledger.domain.catalog import name_of_topic
from caseledger.ledger.domain.directory import IntakeSource
from caseledger.ledger.domain.values import ContactDraft, Identity
from caseledger.ledger.kafka.events_record import (
    cloudevents_headers,
    event_type_of,
    header,
    position_of,
    time_header,
)
from caseledger.ledger.settings import KafkaSettings
from tests.support.environment import ledger_settings
from tests.support.kafka_topics import AUDIT_READERS, publish_all, read_topic

pytestmark = pytest.mark.kafka


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[CaseLedger]:
    app = CaseLedger(ledger_settings(database=str(tmp_path / "ce.sqlite"), origin="bank.example/complaints"))
    app.record_contact(ContactDraft(channel="email", channel_message_id="m-1",
                                    identity=Identity.parse("email:jane@example.com"), items=("Where is my refund?",)))
    for offset in range(12):  # events of no customer
        app.reject_intake(IntakeSource("caseledger.intake", 0, offset), reason="not Avro", raw=b"x", kind="unknown")
    yield app
    app.close()


def test_every_record_reads_as_a_cloudevent_with_the_sdk(ledger: CaseLedger, kafka: KafkaSettings) -> None:
    publish_all(ledger, kafka)
    records = read_topic(kafka, kafka.events_topic)
    stored = {n.id: n for n in ledger.recorder.select_notifications(start=1, limit=1000)}
    assert len(records) == len(stored) > 12
    subjects = 0
    for record in records:
        name = event_type_of(record.headers)
        message = KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
        event = from_binary(message, data_unmarshaller=lambda value, name=name: ledger.codec.decode(name, value))
        notification = stored[int(event["sequence"])]
        envelope = parse_envelope(bytes(notification.state))
        assert event["specversion"] == "1.0"
        assert event["id"] == envelope[0].decode() == str(event.data.event_id)
        assert event["type"] == f"caseledger.events.{name_of_topic(notification.topic)}"
        assert event["source"] == "urn:caseledger:bank.example/complaints"
        assert datetime.fromisoformat(event["time"]) == event.data.timestamp
        assert event["datacontenttype"].startswith("application/avro; encoding=single-object; schema=")
        assert f"fingerprint={bytes(notification.state)[2:HEADER_SIZE].hex()}" in event["datacontenttype"]
        assert event["eventhash"] == event_hash(record.value).hex()
        if envelope[3].decode() == NO_CASE:
            assert "subject" not in event.get_attributes()
        else:
            assert event["subject"] == envelope[3].decode()
            subjects += 1
        assert event.data.originator_id == notification.originator_id
    assert subjects >= 3  # CaseOpened, ContactReceived, AcknowledgementIssued at least


def test_events_of_no_customer_are_keyed_by_their_aggregate_and_spread(ledger: CaseLedger,
                                                                         kafka: KafkaSettings) -> None:
    publish_all(ledger, kafka)
    rejected = [r for r in read_topic(kafka, kafka.events_topic) if event_type_of(r.headers) == "IntakeRejected"]
    assert len(rejected) == 12
    ids = {str(e.originator_id).encode() for e in ledger.rejections()}
    assert {r.key for r in rejected} == ids  # never the empty string
    assert len({r.partition for r in rejected}) > 1
    assert verify(ledger, kafka=kafka, readers=AUDIT_READERS).ok


def legacy_record(ledger: CaseLedger, notification: Any) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """The record an earlier release's publisher wrote for a stored event (its own header names)."""
    data = bytes(notification.state)
    event_id, _aggregate, _v, case_id, customer, *_ = parse_envelope(data)
    headers = [("event_type", name_of_topic(notification.topic).encode()),
               ("schema_fingerprint", data[2:HEADER_SIZE].hex().encode()), ("event_id", event_id),
               ("case_id", case_id), ("position", str(notification.id).encode()),
               ("event_hash", event_hash(data).hex().encode())]
    return customer, data, headers


def test_a_topic_published_by_an_earlier_release_is_audited_rebuilt_and_continued(
    ledger: CaseLedger, kafka: KafkaSettings, tmp_path: Path,
) -> None:
    from caseledger.ledger.kafka.kafka_python import key_hash
    from caseledger.projections import open_views
    from caseledger.projections.runner import rebuild
    from caseledger.projections.sources import kafka_source
    from caseledger.projections.timeline import CustomerTimeline

    producer = KafkaProducer(**kafka.client_options())
    for notification in ledger.recorder.select_notifications(start=1, limit=1000):
        key, value, headers = legacy_record(ledger, notification)
        producer.send(kafka.events_topic, key=key, value=value, headers=headers,
                      partition=(key_hash(key) & 0x7FFFFFFF) % 3)
    producer.flush()
    producer.close()
    assert verify(ledger, kafka=kafka, readers=AUDIT_READERS).ok  # old header names and the old empty key are accepted
    later = ledger.recorder.max_notification_id()
    ledger.record_contact(ContactDraft(channel="chat", channel_message_id="c-9",
                                       identity=Identity.parse("email:jane@example.com"), items=("Any news?",)))
    publish_all(ledger, kafka)  # resumes after the old records' last position, in the new format
    records = read_topic(kafka, kafka.events_topic)
    positions = sorted(position_of(r.headers) for r in records)
    assert positions == list(range(1, (ledger.recorder.max_notification_id() or 0) + 1))  # none twice
    assert all(header(r.headers, "ce_specversion") == b"1.0" for r in records if position_of(r.headers) > later)
    report = verify(ledger, kafka=kafka, readers=AUDIT_READERS)
    assert report.ok, "\n".join(d.line() for d in report.discrepancies)
    views = open_views(str(tmp_path / "views.sqlite"))  # a rebuild from a topic of both formats
    source = kafka_source(kafka)
    try:
        assert rebuild(CustomerTimeline(), views, source).swapped
        rows = views.fetch("SELECT COUNT(*) AS n FROM timeline")
    finally:
        source.close()
        views.close()
    assert rows[0]["n"] == len(records)


def test_the_time_header_is_rfc_3339_in_utc() -> None:
    assert time_header(0) == b"1970-01-01T00:00:00+00:00"
    assert datetime.fromisoformat(time_header(1_772_438_400_123_456).decode()).microsecond == 123456
    headers = cloudevents_headers(name="CaseOpened", data=b"\xc3\x01" + bytes(8), position=7, event_id=b"e",
                                  case_id=NO_CASE.encode(), recorded_micros=0, source=b"urn:caseledger:x")
    assert [k for k, _ in headers[:2]] == ["ce_sequence", "ce_type"]  # what readers look for, first
    assert "ce_subject" not in dict(headers)
