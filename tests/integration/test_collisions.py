"""A reused channel message id: a resubmission only when it is the same request, else a recorded collision.

The contract tests run on SQLite and on a real PostgreSQL; the intake test on the real Kafka broker. The
hypothesis property, the CLI and the retried batch on SQLite files: tests/unit/test_collision_rule.py.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.audit import verify
from caseledger.ledger.domain.values import Attachment, Channel, ContactDraft, Identity
from caseledger.ledger.errors import MessageIdCollision, NotFound
from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
from caseledger.ledger.intake.records import IntakeCodec
from caseledger.ledger.intake.worker import KafkaIntakeWorker
from tests.support.clock import FakeClock
from tests.support.contacts import MALLORY, SAM, form
from tests.support.environment import ledger_settings
from tests.support.kafka_topics import AUDIT_READERS, drain, fresh_topics, publish_all, read_topic

PDF = Attachment(ref="s3://inbox/1.pdf", sha256="a" * 64, size=10, media_type="application/pdf")
PNG = Attachment(ref="s3://inbox/2.png", sha256="b" * 64, size=20, media_type="image/png")


def stored_count(ledger: CaseLedger) -> int:
    return ledger.recorder.max_notification_id() or 0


def collide(ledger: CaseLedger, draft: ContactDraft) -> MessageIdCollision:
    with pytest.raises(MessageIdCollision) as caught:
        ledger.record_contact(draft)
    return caught.value


def event_text(event: Any) -> str:
    """Every field of an event, bytes included, as one searchable text."""
    return " ".join(
        value.decode("latin-1") if isinstance(value, bytes) else str(value) for value in vars(event).values()
    )


# -- the same request again ------------------------------------------------------------------------------


def test_the_same_request_again_is_a_resubmission_and_records_nothing(ledger: CaseLedger, clock: FakeClock) -> None:
    first = ledger.record_contact(form(body="Line one\nline two", attachments=(PDF, PNG)))
    before = stored_count(ledger)
    clock.advance(minutes=20)
    # What a resubmission after a session timeout changes: time, line endings, trailing blanks,
    # the order of the attachments, the adapter's category and metadata.
    again = ledger.record_contact(form(
        body="Line one  \r\nline two\r\n", attachments=(PNG, PDF), occurred_at=clock.now, category="cards",
        metadata={"retry": "1"},
    ))
    assert again.duplicate and not again.opened_case
    assert (again.reference, again.contact_id, again.acknowledgement) == (
        first.reference, first.contact_id, first.acknowledgement)
    assert stored_count(ledger) == before
    assert list(ledger.collisions()) == []


# -- another request under the same id --------------------------------------------------------------------


def test_another_sender_reusing_the_id_is_refused_kept_and_told_nothing_of_the_first(ledger: CaseLedger) -> None:
    sam = ledger.record_contact(form())
    before = stored_count(ledger)
    mallory = form(MALLORY)  # the very same words, from someone else
    refused = collide(ledger, mallory)
    for secret in (sam.reference, str(sam.case_id), sam.customer_id, "sam@", "Card blocked", "no longer works"):
        assert secret not in str(refused)
    assert stored_count(ledger) == before + 1
    (collision,) = ledger.collisions()
    assert str(collision.originator_id) == refused.collision_id
    # Under mallory's pseudonym, never the e-mail address itself (docs/privacy.md).
    assert (collision.customer_id, collision.kind, collision.channel) == (ledger.customer_id_for(MALLORY), "identity",
                                                                           "web_form")
    assert collision.source == "" and collision.causation_id is None
    for secret in (sam.reference, str(sam.case_id), sam.customer_id, str(_correlation_of(ledger, sam.case_id))):
        assert secret not in event_text(collision)
    # The raw bytes are mallory's request, as an intake record any adapter could have published.
    adapter, kept = IntakeCodec().decode(collision.raw)
    assert adapter.startswith("direct:") and kept.identity == MALLORY and kept.items == mallory.items
    assert collision.content_digest == ledger.pseudonyms.content_digest_for(mallory)  # keyed (issue 24)
    # Sam's case did not change, and mallory was given no case.
    assert len(ledger.get_case(sam.reference).contacts) == 1
    with pytest.raises(NotFound):
        ledger.cases_of(str(MALLORY))


def _correlation_of(ledger: CaseLedger, case_id: Any) -> Any:
    return next(iter(ledger.events.get(case_id))).correlation_id


@pytest.mark.parametrize("change", [
    {"subject": "Another subject"},
    {"items": ("Why is my card blocked?", "And my loan?")},
    {"items": ("Why is my account blocked?",)},
    {"body": "A different body."},
    {"attachments": (PDF,)},
    {"identity": Identity.parse("phone:+33612345678"), "customer_id": SAM},  # sam's customer id, see below
], ids=["subject", "one more item", "item text", "body", "attachment", "other identity of the customer"])
def test_the_same_sender_with_other_content_is_a_collision(ledger: CaseLedger, change: dict[str, Any]) -> None:
    first = ledger.record_contact(form())
    if change.get("customer_id") is SAM:
        change = {**change, "customer_id": first.customer_id}
    refused = collide(ledger, form(**change))
    (collision,) = ledger.collisions()
    assert collision.kind == "content" and str(collision.originator_id) == refused.collision_id
    assert "other content" in collision.reason


def test_naming_another_case_is_a_collision(ledger: CaseLedger) -> None:
    ledger.record_contact(form())
    other = ledger.record_contact(form(msg="form-78", subject="Loan"))
    collide(ledger, form(case_reference=other.reference))
    (collision,) = ledger.collisions()
    assert collision.kind == "case"


def test_the_same_collision_twice_is_kept_once_and_refused_both_times(ledger: CaseLedger) -> None:
    ledger.record_contact(form())
    first = collide(ledger, form(MALLORY))
    count = stored_count(ledger)
    second = collide(ledger, form(MALLORY))
    assert second.collision_id == first.collision_id and stored_count(ledger) == count
    third = collide(ledger, form(MALLORY, subject="Something else"))  # another request: another collision
    assert third.collision_id != first.collision_id
    assert len(list(ledger.collisions())) == 2


def test_a_registration_kept_before_digests_is_compared_through_its_contact(
    ledger: CaseLedger, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with monkeypatch.context() as patched:  # a MessageRegistered as read from the retired schema
        patched.setattr(ContactDraft, "content_digest", lambda self, key=None: "")
        first = ledger.record_contact(form(attachments=(PDF,)))
    registered = ledger.pseudonyms.find_message(Channel.WEB_FORM, "form-77")
    assert registered.content_digest == ""
    assert ledger.record_contact(form(attachments=(PDF,))).reference == first.reference
    assert collide(ledger, form(body="edited")).collision_id
    assert [c.kind for c in ledger.collisions()] == ["content"]


def test_concurrent_senders_of_one_id_give_one_contact_and_one_collision(make_ledger: Any) -> None:
    writers = [make_ledger(), make_ledger()]
    barrier = threading.Barrier(2)
    results: dict[str, Any] = {}

    def send(ledger: CaseLedger, who: Identity) -> None:
        barrier.wait()
        try:
            results[who.value] = ledger.record_contact(form(who))
        except MessageIdCollision as error:
            results[who.value] = error

    threads = [threading.Thread(target=send, args=(w, who)) for w, who in zip(writers, (SAM, MALLORY), strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    outcomes = sorted(results.values(), key=lambda r: isinstance(r, MessageIdCollision))
    assert len(outcomes) == 2
    recorded, refused = outcomes
    assert not isinstance(recorded, MessageIdCollision) and isinstance(refused, MessageIdCollision)
    (collision,) = writers[0].collisions()
    assert collision.customer_id != recorded.customer_id
    assert recorded.customer_id not in str(refused) and recorded.reference not in str(refused)


# -- through the intake topic ------------------------------------------------------------------------------


@pytest.mark.kafka
def test_the_intake_worker_keeps_a_collision_as_the_outcome_of_its_offset(
    kafka_bootstrap: str, tmp_path: Path,
) -> None:
    # One intake partition: which of Sam's and Mallory's records comes first must be the order they were sent
    # in, and only one partition orders records of two customers (their keys may land on any two partitions).
    kafka = fresh_topics(kafka_bootstrap, intake_partitions=1)
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "intake.sqlite")))
    try:
        with KafkaIntakeClient(kafka, adapter="forms") as client:
            client.submit_many([form(), form(MALLORY), form(), form(subject="Edited")])
        raw = KafkaProducer(**kafka.client_options())
        raw.send(kafka.intake_topic, key=b"bad", value=b"not an intake record")
        raw.flush()
        raw.close()
        worker = KafkaIntakeWorker(ledger, kafka, batch_size=10)
        drain(worker, until=5)
        stats = worker.stats
        assert (stats.contacts, stats.duplicates, stats.collisions, stats.rejected) == (1, 1, 2, 1), stats.line()
        records = {(r.partition, r.offset): r.value for r in read_topic(kafka, kafka.intake_topic)}
        collisions = list(ledger.collisions())
        assert sorted(c.kind for c in collisions) == ["content", "identity"]
        for collision in collisions:
            topic, partition, offset = collision.source.rsplit("/", 2)
            assert topic == kafka.intake_topic
            assert collision.raw == records[(int(partition), int(offset))]
        sam = ledger.find_by_message("web_form", "form-77")
        assert len(sam.contacts) == 1 and sam.customer_id == ledger.customer_id_for(SAM)
        for collision in collisions:
            assert sam.reference not in event_text(collision)
        publish_all(ledger, kafka)
        report = verify(ledger, kafka=kafka, readers=AUDIT_READERS)
        assert report.ok, "\n".join(d.line() for d in report.discrepancies)
        assert report.intake_offsets == report.intake_outcomes == 5
    finally:
        ledger.close()
