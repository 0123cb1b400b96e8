"""``audit verify`` against real tampering: SQL on real SQLite and PostgreSQL stores, forged Kafka records.

One ledger per backend is built once per module through the real intake topic, worker, agent
commands and publisher; every test tampers with its own copy of the store (a file copy, or a
PostgreSQL ``CREATE DATABASE … TEMPLATE``) and checks that verify detects *and names* it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kafka import KafkaProducer

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.audit import AuditReport, Discrepancy, Seal, parse_envelope, verify
from caseledger.ledger.avro.codec import event_hash
from caseledger.ledger.domain.directory import IntakeSource
from caseledger.ledger.domain.values import ContactDraft, Identity
from caseledger.ledger.errors import ConflictError
from caseledger.ledger.kafka.events_record import position_of
from caseledger.ledger.kafka.topics import ensure_topics
from caseledger.ledger.settings import KafkaSettings
from tests.support.environment import ledger_settings
from tests.support.kafka_topics import AUDIT_READERS, fresh_topics, publish_all, read_topic
from tests.support.postgres import PostgresServer
from tests.support.tampering import AGENT, Built, RawStore, alter_sealed_text, forge, middle_of_case

pytestmark = pytest.mark.kafka



@pytest.fixture
def tampered(built: Built) -> Iterator[tuple[RawStore, Any]]:
    """A fresh copy of the built store, raw SQL access to it, and ``audit(**options)`` on it."""
    database = built.copy()
    ledgers: list[CaseLedger] = []

    def audit(*, kafka: bool = True, **options: Any) -> AuditReport:
        ledger = CaseLedger(ledger_settings(database=database))
        ledgers.append(ledger)
        return verify(ledger, kafka=built.kafka if kafka else None, readers=AUDIT_READERS if kafka else None, **options)

    yield RawStore(database), audit
    for ledger in ledgers:
        ledger.close()


def named(report: AuditReport, code: str, **where: Any) -> list[Discrepancy]:
    """The report's discrepancies of ``code`` at ``where``; fails with the whole report when there is none."""
    found = [d for d in report.discrepancies if d.code == code and all(getattr(d, k) == v for k, v in where.items())]
    assert found, f"no [{code}] at {where} in:\n" + "\n".join(d.line() for d in report.discrepancies)
    return found


def codes(report: AuditReport) -> set[str]:
    return {d.code for d in report.errors}


# -- a clean ledger -------------------------------------------------------------------------------------


def test_an_untouched_ledger_verifies_with_its_topics_and_intake(tampered: tuple[RawStore, Any]) -> None:
    store, audit = tampered
    rows = store.rows()
    report = audit()
    assert report.ok, "\n".join(d.line() for d in report.discrepancies)
    assert report.discrepancies == [] or all(d.code == "position-gap" for d in report.discrepancies)
    assert report.events == len(rows) and report.topic_records == len(rows)
    assert report.intake_offsets == 15 and report.intake_outcomes == 15  # 12 contacts, 1 resubmission, 1 bad, 1 report
    assert {"chains", "events topic", "intake accounting", "cross references", "seal"} <= set(report.checks)
    assert report.seal is not None and report.seal.position == rows[-1].position
    # the same seal holds on the next audit; a customer's or a time range's audit holds too
    assert audit(seal=report.seal).ok
    jane = audit(customer="email:c1@example.com")
    assert jane.ok and 0 < jane.events < len(rows)
    middle = rows[len(rows) // 2]
    since = datetime.fromtimestamp(parse_envelope(middle.state)[5] / 1e6, UTC)
    later = audit(since=since)
    assert later.ok, "\n".join(d.line() for d in later.discrepancies)
    assert later.first_position is not None and later.first_position <= middle.position


# -- tampering in the database ------------------------------------------------------------------------



def test_one_byte_altered_in_an_event_is_named(tampered: tuple[RawStore, Any]) -> None:
    store, audit = tampered
    rows = store.rows()
    row, after = middle_of_case(rows)
    altered = alter_sealed_text(row.state)  # one character of the (sealed) body
    store.update_state(row.position, altered)
    report = audit()
    assert not report.ok
    broken = named(report, "chain-broken", position=after.position)[0]
    assert broken.aggregate_id == str(row.aggregate) and broken.version == row.version + 1
    assert event_hash(row.state).hex() in broken.message and event_hash(altered).hex() in broken.message
    named(report, "topic-bytes", position=row.position, event_type="ContactReceived")


def test_an_altered_customer_id_is_named_as_the_altered_event_it_is(tampered: tuple[RawStore, Any]) -> None:
    """The altered event maps to another partition; it is reported there, not as one missing + one extra."""
    from kafka.partitioner.default import murmur2

    store, audit = tampered
    row, _after = middle_of_case(store.rows())
    original = row.event.customer_id
    partition = lambda key: (murmur2(key.encode()) & 0x7FFFFFFF) % 3  # noqa: E731 - the built topics have 3
    other = next(c for c in (f"email:someone{n}@example.com" for n in range(100)) if partition(c) != partition(original))
    store.update_state(row.position, forge(row, customer_id=other))
    report = audit()
    key = named(report, "topic-key", position=row.position)[0]
    assert original in key.message and other in key.message and "altered" in key.message
    named(report, "topic-bytes", position=row.position)
    wrong = [d for d in report.discrepancies if d.position == row.position and d.code in ("topic-missing", "topic-extra")]
    assert wrong == [], "\n".join(d.line() for d in wrong)


def test_an_event_that_no_longer_decodes_is_named(tampered: tuple[RawStore, Any]) -> None:
    store, audit = tampered
    row, after = middle_of_case(store.rows(), "AcknowledgementIssued")
    store.update_state(row.position, row.state[:40])
    report = audit()
    named(report, "undecodable", position=row.position, event_type="AcknowledgementIssued")
    named(report, "chain-broken", position=after.position)
    assert "no longer decodes" in named(report, "topic-bytes", position=row.position)[0].message


def test_the_last_event_of_an_aggregate_altered_is_caught_by_the_topic_and_by_a_seal(
    tampered: tuple[RawStore, Any],
) -> None:
    store, audit = tampered
    seal = audit(kafka=False).seal
    rows = store.rows()
    last = max((r for r in rows if r.name == "CaseClosed"), key=lambda r: r.position)
    store.update_state(last.position, alter_sealed_text(last.state))  # its notice, sealed
    # Nothing is stored after an aggregate's last event: its own chain cannot show the change ...
    assert "chain-broken" not in codes(audit(kafka=False))
    # ... the auditor's seal and the events topic can.
    named(audit(kafka=False, seal=seal), "seal-mismatch", position=seal.position)
    named(audit(), "topic-bytes", position=last.position, event_type="CaseClosed")


def test_a_deleted_event_is_named(tampered: tuple[RawStore, Any]) -> None:
    store, audit = tampered
    row, after = middle_of_case(store.rows(), "AcknowledgementIssued")
    store.delete(row.position)
    report = audit()
    gap = named(report, "version-gap", position=after.position)[0]
    assert f"version {row.version} is missing" in gap.message
    named(report, "position-gap", position=row.position, severity="error")  # on the topic: deleted
    named(report, "topic-extra", position=row.position)
    assert "deleted" in named(report, "position-gap", position=row.position)[0].message


def test_two_swapped_events_are_named(tampered: tuple[RawStore, Any]) -> None:
    store, audit = tampered
    rows = store.rows()
    first, _ = middle_of_case(rows, "ContactReceived")
    second = next(r for r in rows if r.name == "ResponseSent" and r.aggregate != first.aggregate)
    store.update_state(first.position, second.state)
    store.update_state(second.position, first.state)
    report = audit()
    for row, other in ((first, second), (second, first)):
        mismatch = named(report, "row-mismatch", position=row.position)[0]
        assert str(other.aggregate) in mismatch.message and f"version {other.version}" in mismatch.message
        named(report, "topic-bytes", position=row.position)
    named(report, "type-mismatch", position=first.position)


def test_forged_events_are_named(built: Built) -> None:
    # A forgery that copies a case's event without recomputing the chain link.
    rows = RawStore(built.database).rows()
    row, _ = middle_of_case(rows, "ResponseSent")
    last = max((r for r in rows if r.aggregate == row.aggregate), key=lambda r: r.version)
    kept = dict(event_id=uuid.uuid4(), originator_version=last.version + 1)
    for variant in ("stale link", "backdated"):
        database = built.copy()
        store = RawStore(database)
        if variant == "stale link":
            state = forge(row, **kept)  # still links to the event before the copied one
        else:  # a correct link, but dated to look like it happened long ago
            state = forge(row, **kept, previous_hash=event_hash(last.state),
                          timestamp=datetime.now(UTC) - timedelta(days=3))
        position = store.insert(row.aggregate, last.version + 1, row.topic, state)
        ledger = CaseLedger(ledger_settings(database=database))
        try:
            report = verify(ledger, kafka=built.kafka, readers=AUDIT_READERS)
        finally:
            ledger.close()
        assert not report.ok
        if variant == "stale link":
            broken = named(report, "chain-broken", position=position, event_type="ResponseSent")[0]
            assert broken.aggregate_id == str(row.aggregate) and broken.version == last.version + 1
        else:
            named(report, "backdated", position=position, event_type="ResponseSent")
        # not on the topic: the publisher has not seen it (a warning on its own), which the seal would settle
        named(report, "topic-unpublished", position=position)


def test_a_forged_record_on_the_events_topic_is_named(built: Built, kafka_bootstrap: str) -> None:
    topic = KafkaSettings.resolve(bootstrap_servers=kafka_bootstrap, intake_topic=built.kafka.intake_topic,
                                  events_topic=f"audit-forged-{uuid.uuid4().hex[:8]}", events_partitions=3)
    ensure_topics(topic)
    database = built.copy()
    ledger = CaseLedger(ledger_settings(database=database))
    try:
        publish_all(ledger, topic)
        records = sorted(read_topic(topic, topic.events_topic), key=lambda r: position_of(r.headers))
        genuine = records[len(records) // 2]
        value = genuine.value.replace(b"question", b"QUESTION")
        producer = KafkaProducer(**topic.client_options())
        # the same position again, with altered bytes and a matching hash header
        headers = [(k, event_hash(value).hex().encode() if k == "ce_eventhash" else v) for k, v in genuine.headers]
        producer.send(topic.events_topic, key=genuine.key, value=value, headers=headers, partition=genuine.partition)
        # a record at a position the store never had
        invented = [(k, b"999999" if k == "ce_sequence" else v) for k, v in genuine.headers]
        producer.send(topic.events_topic, key=genuine.key, value=genuine.value, headers=invented,
                      partition=genuine.partition)
        producer.flush()
        producer.close()
        report = verify(ledger, kafka=topic, readers=AUDIT_READERS)
    finally:
        ledger.close()
    duplicate = named(report, "topic-duplicate", partition=genuine.partition)[0]
    assert duplicate.position == position_of(genuine.headers) and duplicate.offset is not None
    named(report, "topic-extra", position=999999, partition=genuine.partition)
    assert "chain-broken" not in codes(report)  # the store itself is intact


@pytest.mark.parametrize("outcome_type", ["ResubmissionTraced", "ContactReceived"])
def test_a_dropped_intake_outcome_is_named(tampered: tuple[RawStore, Any], built: Built, outcome_type: str) -> None:
    store, audit = tampered
    rows = store.rows()
    outcome = next(r for r in rows if r.name == outcome_type and r.event.causation_id is not None)
    causation = outcome.event.causation_id
    dropped = [r.position for r in rows if r.event.causation_id == causation]
    store.delete(*dropped)
    report = audit()
    partition, offset = next(
        (p, o) for p in range(3) for o in range(20)
        if IntakeSource(built.kafka.intake_topic, p, o).event_id == causation
    )
    missing = named(report, "intake-no-outcome", partition=partition, offset=offset)[0]
    assert missing.topic == built.kafka.intake_topic and "consumed" in missing.message


def test_a_whole_case_deleted_is_named_without_kafka(tampered: tuple[RawStore, Any]) -> None:
    store, audit = tampered
    rows = store.rows()
    opened = next(r for r in rows if r.name == "CaseOpened")
    store.delete(*[r.position for r in rows if r.aggregate == opened.aggregate])
    report = audit(kafka=False)
    named(report, "case-missing", aggregate_id=str(opened.aggregate))
    assert "position-gap" in {d.code for d in report.discrepancies}
    named(audit(), "topic-extra", position=opened.position)


def test_a_truncated_tail_is_named_by_the_topic_and_the_seal(tampered: tuple[RawStore, Any]) -> None:
    store, audit = tampered
    seal = audit(kafka=False).seal
    rows = store.rows()
    store.delete(*[r.position for r in rows[-3:]])
    named(audit(kafka=False, seal=seal), "seal-mismatch")
    report = audit()
    for row in rows[-3:]:
        named(report, "topic-extra", position=row.position)


def test_a_seal_names_a_change_behind_it_even_when_its_own_position_is_deleted(
    tampered: tuple[RawStore, Any],
) -> None:
    store, audit = tampered
    seal = audit(kafka=False).seal
    ledger = CaseLedger(ledger_settings(database=store.database))
    try:  # the ledger goes on after the seal was taken
        ledger.record_contact(ContactDraft(channel="sms", channel_message_id="after-the-seal",
                                           identity=Identity.parse("phone:+33600000000"), items=("later",)))
    finally:
        ledger.close()
    assert audit(kafka=False, seal=seal).ok
    store.delete(seal.position)
    mismatch = named(audit(kafka=False, seal=seal), "seal-mismatch", position=seal.position)[0]
    assert "no longer matches the seal" in mismatch.message


# -- PostgreSQL positions after a conflict --------------------------------------------------------------


def test_postgres_gap_after_a_conflict_is_a_warning_that_the_topic_settles(postgres: PostgresServer,
                                                                          kafka_bootstrap: str) -> None:
    database = postgres.new_database()
    kafka = fresh_topics(kafka_bootstrap, partitions=1)
    a, b = (CaseLedger(ledger_settings(database=database)) for _ in range(2))
    try:
        ref = a.record_contact(ContactDraft(channel="email", channel_message_id="g1",
                                            identity=Identity.parse("email:gap@example.com"), items=("q",))).reference
        stale = b.get_case(ref)
        a.respond(ref, actor=AGENT, body="first", answers=[])
        from caseledger.ledger.domain.events import Context

        stale.respond(ctx=Context(actor=AGENT), body="second", answers=[])
        with pytest.raises(ConflictError):
            b.record(stale)
        a.respond(ref, actor=AGENT, body="third", answers=[])
        positions = [n.id for n in a.recorder.select_notifications(start=1, limit=100)]
        skipped = sorted(set(range(1, positions[-1] + 1)) - set(positions))
        assert len(skipped) == 1  # measured: the conflicting insert consumed one sequence number
        alone = verify(a)
        assert alone.ok
        gap = named(alone, "position-gap", position=skipped[0])[0]
        assert gap.severity == "warning" and "ConflictError" in gap.message
        publish_all(a, kafka)
        settled = named(verify(a, kafka=kafka, readers=AUDIT_READERS), "position-gap", position=skipped[0])[0]
        assert settled.severity == "warning" and "never published" in settled.message
    finally:
        a.close()
        b.close()


def test_seal_text_round_trips() -> None:
    seal = Seal(42, "ab" * 32)
    assert Seal.parse(str(seal)) == seal
    with pytest.raises(Exception, match="POSITION:DIGEST"):
        Seal.parse("42:xyz")
