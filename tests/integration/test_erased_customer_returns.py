"""An erased customer writes again through a running intake worker whose cache knew her (a real Kafka broker).

The issue saw her new acknowledgement written in her erased time zone and sealed under her new key:
the worker kept what it had opened before another process erased her. Here another process (the CLI)
erases her while the worker's cache is warm; she then resends her old form, writes a new request and
a follow-up quoting her old reference. Every one is recorded; her new events, decoded from the events
topic and opened, carry none of her old words, zone or language; the worker holds none in memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.catalog import topic_of
from caseledger.ledger.domain.values import ContactDraft
from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
from caseledger.ledger.intake.worker import KafkaIntakeWorker
from caseledger.ledger.kafka.events_record import event_type_of
from caseledger.ledger.settings import KafkaSettings
from tests.support.kafka_topics import drain, publish_all, read_topic
from tests.support.memory import holding
from tests.support.personal_data import BODY, ITEM, JANE, SUBJECT, jane_contact

pytestmark = pytest.mark.kafka

CHATHAM = "Pacific/Chatham"


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in strings(v)]
    return []


def opened_from_topic(reader: CaseLedger, settings: KafkaSettings, customer_id: str) -> list[Any]:
    """The customer's events as the events topic carries them, decoded and opened with the ledger's keys."""
    events = []
    for record in read_topic(settings, settings.events_topic):
        name = event_type_of(record.headers)
        assert name is not None
        event = reader.mapper.to_domain_event(StoredEvent(originator_id=uuid.uuid4(), originator_version=0,
                                                          topic=topic_of(name), state=record.value))
        if event.customer_id == customer_id:
            events.append(event)
    reader.data_keys.forget()
    return events


def test_a_running_worker_records_the_return_of_a_customer_another_process_erased_with_nothing_of_her_old_data(
    make_ledger: Any, database: str, kafka: KafkaSettings,
) -> None:
    """On SQLite and PostgreSQL (the erasure watch reads each one's notification log)."""
    ledger: CaseLedger = make_ledger(clock=lambda: datetime.now(UTC))  # intake records carry real times
    reader: CaseLedger = make_ledger(clock=lambda: datetime.now(UTC))
    worker = KafkaIntakeWorker(ledger, kafka)  # keeps customers, claims and cases between its batches
    with KafkaIntakeClient(kafka, adapter="test-adapter") as client:
        client.submit(jane_contact("m-1", locale="en", time_zone=CHATHAM))
    drain(worker, until=1)
    reference = ledger.find_by_message("email", "m-1").reference
    old = [SUBJECT, BODY, ITEM, CHATHAM]
    assert holding(worker, old) == old  # its cache is warm: her case, opened

    erased = subprocess.run(  # another process: the CLI, on the same store and key-encryption key
        [sys.executable, "-m", "caseledger.cli.app", "--database", database, "customer", "erase", str(JANE),
         "--reason", "art. 17 request", "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert erased.returncode == 0 and json.loads(erased.stdout)["erased"], erased.stderr
    customer_id = json.loads(erased.stdout)["customer_id"]

    with KafkaIntakeClient(kafka, adapter="test-adapter") as client:
        client.submit(ContactDraft(channel="email", channel_message_id="m-2", identity=JANE,
                                   items=("I am writing to you again",)))
        client.submit(ContactDraft(channel="email", channel_message_id="m-3", identity=JANE,
                                   items=("About my earlier request",), case_reference=reference, follow_up=True))
    drain(worker, until=3)
    assert list(ledger.rejections()) == [] and worker.stats.rejected == 0  # she can always write again
    assert (worker.stats.contacts, worker.stats.duplicates) == (3, 0)
    assert holding(worker, old) == []  # nothing opened before the erasure is kept past its next batch

    returned = ledger.get_case(ledger.find_by_message("email", "m-2").reference)
    quoted = ledger.get_case(ledger.find_by_message("email", "m-3").reference)
    assert returned.customer_id != customer_id  # she is a new customer (nothing links her to her erased self)
    assert quoted.customer_id == returned.customer_id and quoted.reference != reference  # a new case

    publish_all(ledger, kafka)
    old_topic = opened_from_topic(reader, kafka, customer_id)
    erasure = next(e for e in old_topic if type(e).__name__ == "CustomerErased")
    assert [e for e in old_topic if e.timestamp > erasure.timestamp] == []  # nothing joined her erased history
    after = opened_from_topic(reader, kafka, returned.customer_id)
    acks = [e for e in after if type(e).__name__ == "AcknowledgementIssued"]
    assert len(acks) == 2  # the new request and the one quoting her old case
    default = reader.audience_of(None, "email")
    for ack in acks:
        assert (ack.time_zone, ack.locale) == (default.time_zone, default.locale)
        assert "again" in ack.text or "earlier" in ack.text  # her new words, readable
    for event in after:
        texts = strings(vars(event))
        assert not any(secret in text for secret in old for text in texts), type(event).__name__
