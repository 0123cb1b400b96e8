"""The Kafka backbone against a real Apache Kafka broker: adapter SDK, intake worker, publisher."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.avro.codec import event_hash
from caseledger.ledger.domain.catalog import name_of_topic
from caseledger.ledger.domain.values import Actor, ContactDraft, Identity
from caseledger.ledger.errors import BackendError, ConfigurationError, ValidationError
from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
from caseledger.ledger.intake.records import DeliveryReport, IntakeCodec, ReadReceipt
from caseledger.ledger.intake.worker import KafkaIntakeWorker
from caseledger.ledger.kafka.events_record import event_type_of, header, position_of
from caseledger.ledger.kafka.publisher import KafkaEventPublisher
from caseledger.ledger.kafka.topics import INTAKE_TOPIC_CONFIG, ensure_topics
from caseledger.ledger.settings import KafkaSettings
from tests.support.environment import ledger_settings
from tests.support.kafka_topics import drain, publish_all, read_topic

pytestmark = pytest.mark.kafka


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CaseLedger]:
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "k.sqlite")))
    yield ledger
    ledger.close()


def contact(n: int, *, customer: int | None = None, **kw: Any) -> ContactDraft:
    who = customer if customer is not None else n % 7
    return ContactDraft(
        channel=kw.pop("channel", "email"), channel_message_id=kw.pop("msg", f"m{n}"),
        identity=Identity.parse(f"email:c{who}@example.com"), items=(f"question {n}",), **kw,
    )


def test_topics_are_created_with_explicit_configs(kafka: KafkaSettings) -> None:
    admin = KafkaAdminClient(**kafka.client_options())
    try:
        topics = {t["name"]: t for t in admin.describe_topics([kafka.events_topic, kafka.intake_topic])}
        assert len(topics[kafka.events_topic]["partitions"]) == 3
        from kafka.admin import ConfigResource, ConfigResourceType

        # The events and checkpoints topics keep the ledger's (sealed) history forever; the intake topic, which
        # holds what adapters sent in clear, for the configured retention only (docs/privacy.md): Kafka deletes
        # a segment once its newest record is past retention.ms, so retention.ms + segment.ms is the period
        # (before: retention.ms was the period and segment.ms the broker's 7 days, 14 days in all).
        assert len(admin.describe_topics([kafka.checkpoints_topic])[0]["partitions"]) == 1
        # The outcomes topic (each intake record's verdict, issue 25) is kept as long as the intake records.
        wanted = {kafka.events_topic: "-1", kafka.checkpoints_topic: "-1", kafka.intake_topic: str(161 * 3_600_000),
                  kafka.outcomes_topic: str(161 * 3_600_000)}
        assert kafka.intake_retention_hours == 168
        assert len(admin.describe_topics([kafka.outcomes_topic])[0]["partitions"]) == 3  # the intake topic's count
        for topic in (kafka.events_topic, kafka.intake_topic, kafka.checkpoints_topic, kafka.outcomes_topic):
            configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])["topic"][topic]
            assert configs["retention.ms"]["value"] == wanted[topic]
            assert configs["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"  # set by us, not a default
        intake = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, kafka.intake_topic)])["topic"]
        assert intake[kafka.intake_topic]["segment.ms"]["value"] == str(7 * 3_600_000)
    finally:
        admin.close()
    assert ensure_topics(kafka) == {kafka.events_topic: "exists (3 partitions)", kafka.intake_topic: "exists (3 partitions)",
                                    kafka.checkpoints_topic: "exists (1 partitions)",
                                    kafka.outcomes_topic: "exists (3 partitions)"}


def test_an_intake_topic_that_keeps_clear_records_past_retention_is_refused(kafka: KafkaSettings) -> None:
    """Before: the intake topic had retention.ms but no segment.ms; a record in clear could live ~14 days, not 7."""
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(**kafka.client_options())
    try:  # as an earlier release left it: the broker's default segment.ms (7 days) over a 7-day retention
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, kafka.intake_topic,
                                            configs={"retention.ms": str(168 * 3_600_000), "segment.ms": "604800000",
                                                     **INTAKE_TOPIC_CONFIG})])
        with pytest.raises(ConfigurationError, match=r"segment.ms 604800000 keeps records in clear past .*168 h.*"
                                                     r"retention.ms=579600000 and segment.ms=25200000"):
            ensure_topics(kafka)
    finally:
        admin.close()


@pytest.mark.parametrize("producer", ["kafka-python", "confluent"])
def test_adapter_refuses_invalid_input_before_publishing(kafka: KafkaSettings, producer: str) -> None:
    with KafkaIntakeClient(kafka, adapter="test", producer=producer) as client:
        with pytest.raises(ValidationError, match="at least one item"):
            client.submit(ContactDraft(channel="email", channel_message_id="x", identity=Identity.parse("email:a@b.co"), items=()))
        receipt = client.submit(contact(1))
        assert receipt.topic == kafka.intake_topic and receipt.offset == 0 and receipt.kind == "contact"
    assert len(read_topic(kafka, kafka.intake_topic)) == 1


def test_adapters_on_either_client_put_a_customer_on_the_same_partition(kafka: KafkaSettings) -> None:
    """A customer's contacts stay in order on one partition, whichever client each adapter uses."""
    drafts = [contact(n, customer=n % 11) for n in range(40)]
    with KafkaIntakeClient(kafka, adapter="kp", producer="kafka-python") as client:
        by_kafka_python = client.submit_many(drafts[:20])
    with KafkaIntakeClient(kafka, adapter="rd", producer="confluent") as client:
        by_confluent = client.submit_many(drafts[20:])
    partition_of: dict[str, set[int]] = {}
    for draft, receipt in zip(drafts, by_kafka_python + by_confluent, strict=True):
        partition_of.setdefault(str(draft.identity), set()).add(receipt.partition)
    assert all(len(parts) == 1 for parts in partition_of.values())
    assert {p for parts in partition_of.values() for p in parts} == {0, 1, 2}  # and they do spread
    # Each receipt names where the broker stored exactly that record.
    codec = IntakeCodec()
    stored = {(r.partition, r.offset): codec.decode(r.value) for r in read_topic(kafka, kafka.intake_topic)}
    for draft, receipt in zip(drafts, by_kafka_python + by_confluent, strict=True):
        adapter, message = stored[(receipt.partition, receipt.offset)]
        assert message.channel_message_id == draft.channel_message_id  # type: ignore[union-attr]
        assert adapter == ("kp" if receipt in by_kafka_python else "rd")


def test_confluent_adapter_says_what_is_wrong_when_it_cannot_publish(kafka: KafkaSettings) -> None:
    missing = dataclasses.replace(kafka, intake_topic=f"missing-{uuid.uuid4().hex[:6]}")
    with (KafkaIntakeClient(missing, adapter="rd", producer="confluent") as client,
          pytest.raises(BackendError, match=r"does not exist.*caseledger topics create")):
        client.submit(contact(1))
    nowhere = dataclasses.replace(kafka, bootstrap_servers="127.0.0.1:9")
    with (KafkaIntakeClient(nowhere, adapter="rd", producer="confluent", timeout_s=2) as client,
          pytest.raises(BackendError, match=r"cannot reach Kafka at 127\.0\.0\.1:9")):
        client.submit(contact(1))
    with pytest.raises(ConfigurationError, match="use one of kafka-python, confluent"):
        KafkaIntakeClient(kafka, adapter="x", producer="java")


@pytest.mark.parametrize("consumer", ["kafka-python", "confluent"])
def test_worker_applies_each_record_once_and_rejects_bad_ones(
    kafka: KafkaSettings, store: CaseLedger, consumer: str
) -> None:
    with KafkaIntakeClient(kafka, adapter="test") as client:
        receipts = client.submit_many([contact(n) for n in range(30)])
        client.submit(contact(3))  # a resubmission at a new offset
    raw = KafkaProducer(**kafka.client_options())
    raw.send(kafka.intake_topic, key=b"x", value=b"not avro at all")
    raw.send(kafka.intake_topic, key=b"x", value=None)
    raw.flush()
    raw.close()
    worker = KafkaIntakeWorker(store, kafka, batch_size=7, consumer=consumer)
    drain(worker, until=33)
    assert (worker.stats.contacts, worker.stats.duplicates, worker.stats.rejected) == (30, 1, 2)
    history = store.history("email:c3@example.com")
    assert [type(e).__name__ for e in history].count("ContactReceived") == len([n for n in range(30) if n % 7 == 3])
    # positions live in the ledger: a second worker finds nothing left to do
    again = KafkaIntakeWorker(store, kafka, consumer=consumer)
    assert sum(again.next_offset(p) for p in range(3)) == 33
    before = store.recorder.max_notification_id()
    stop = threading.Event()
    t = threading.Thread(target=again.run, args=(stop,))
    t.start()
    time.sleep(1.5)
    stop.set()
    t.join(30)
    assert store.recorder.max_notification_id() == before and again.stats.records == 0
    # every rejection carries its source, reason and raw bytes
    rejected = [e for e in (store.mapper.to_domain_event(n) for n in store.recorder.select_notifications(start=1, limit=10_000))
                if type(e).__name__ == "IntakeRejected"]
    assert sorted(e.raw for e in rejected) == [b"", b"not avro at all"]
    assert all(e.reason and e.source_topic == kafka.intake_topic for e in rejected)
    assert receipts[0].partition in range(3)


def test_one_poll_from_several_partitions_is_one_transaction_with_each_position(ledger: CaseLedger, clock: Any) -> None:
    """A trickle from three partitions is applied at once; each partition's position is kept, none twice."""
    from caseledger.ledger.intake.worker import IntakeRecord

    codec = IntakeCodec()
    settings = KafkaSettings.resolve(bootstrap_servers="unused:9092", intake_topic="in")
    worker = KafkaIntakeWorker(ledger, settings)

    def records(partition: int, offsets: range) -> list[IntakeRecord]:
        return [IntakeRecord("in", partition, o, codec.encode(contact(10 * partition + o, msg=f"p{partition}o{o}", occurred_at=clock()),
                                                              adapter="test")) for o in offsets]

    polled = {0: records(0, range(0, 3)), 1: records(1, range(0, 2)), 2: records(2, range(4, 5))}
    before = ledger.recorder.max_notification_id() or 0
    worker.apply_polled(polled)
    assert worker.stats.batches == 1 and worker.stats.contacts == 6
    assert [worker.next_offset(p) for p in range(3)] == [3, 2, 5]
    # one transaction: the notification ids of all six contacts' events are consecutive, after `before`
    stored = ledger.recorder.select_notifications(start=before + 1, limit=1000)
    assert [n.id for n in stored] == list(range(before + 1, before + 1 + len(stored)))
    # a redelivery (a worker restarted) with one new record on partition 1 applies only that one
    again = KafkaIntakeWorker(ledger, settings)
    again.apply_polled({0: records(0, range(0, 3)), 1: records(1, range(0, 3))})
    assert (again.stats.contacts, again.stats.records) == (1, 1)
    assert [again.next_offset(p) for p in range(3)] == [3, 3, 5]
    assert ledger.find_by_message("email", "p1o2").reference


def test_workers_sharing_the_topic_by_partitions_apply_every_record_once(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    from caseledger.ledger.errors import BackendError

    db = str(tmp_path / "shared.sqlite")
    first, second = (CaseLedger(ledger_settings(database=db)) for _ in range(2))
    try:
        drafts = [contact(n) for n in range(40)]
        # One customer known by identities that hash to different partitions: both workers touch it.
        drafts += [contact(100 + n, customer=50 + n, customer_id="C-shared", msg=f"s{n}") for n in range(6)]
        with KafkaIntakeClient(kafka, adapter="test") as client:
            receipts = client.submit_many(drafts)
        assert len({r.partition for r in receipts}) == 3
        # One worker reads with kafka-python, the other with confluent-kafka: same records, same positions.
        workers = [KafkaIntakeWorker(first, kafka, batch_size=5, partitions=[0]),
                   KafkaIntakeWorker(second, kafka, batch_size=5, partitions=[2, 1], consumer="confluent")]
        stop = threading.Event()
        threads = [threading.Thread(target=w.run, args=(stop,)) for w in workers]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while sum(w.stats.records for w in workers) < len(drafts) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(30)
        assert [w.stats.records for w in workers] == [
            sum(r.partition == 0 for r in receipts), sum(r.partition != 0 for r in receipts)]
        assert sum(w.stats.contacts for w in workers) == len(drafts)
        assert {p: workers[0].next_offset(p) for p in range(3)} == {
            p: sum(r.partition == p for r in receipts) for p in range(3)}
        assert len(first.cases_of("C-shared")) == 6
        assert all(first.find_by_message("email", d.channel_message_id) for d in drafts)
        with pytest.raises(BackendError, match="no partition 7"):
            KafkaIntakeWorker(first, kafka, partitions=[7]).run(threading.Event())
    finally:
        first.close()
        second.close()


def test_delivery_reports_and_read_receipts_flow_through_intake(kafka: KafkaSettings, store: CaseLedger) -> None:
    ref = store.record_contact(contact(1)).reference
    now = datetime.now(UTC)
    with KafkaIntakeClient(kafka, adapter="test") as client:
        client.submit(DeliveryReport(case_reference=ref, message_id="ACK1", delivered_at=now))
        # A read is the customer's act: the record names them (here by identity), the case decides who they are.
        client.submit(ReadReceipt(case_reference=ref, message_id="ACK1", reader=Actor.parse("customer:email:c1@example.com"),
                                  read_at=now))
        client.submit(DeliveryReport(case_reference=ref, message_id="R9", delivered_at=now))
    worker = KafkaIntakeWorker(store, kafka)
    drain(worker, until=3)
    case = store.get_case(ref)
    assert case.messages["ACK1"].delivered_at == now and case.messages["ACK1"].read_by == [f"customer:{case.customer_id}"]
    assert worker.stats.rejected == 1  # R9 does not exist


@pytest.mark.parametrize("producers", [
    ("kafka-python",) * 3, ("confluent",) * 3, ("kafka-python", "confluent", "kafka-python"),
], ids=["kafka-python", "confluent", "mixed"])
def test_publisher_publishes_every_event_once_in_order_and_resumes(
    kafka: KafkaSettings, store: CaseLedger, producers: tuple[str, str, str]
) -> None:
    from caseledger.ledger.kafka.kafka_python import key_hash

    for n in range(40):
        store.record_contact(contact(n))
    publish_all(store, kafka, producer=producers[0])
    for n in range(40, 60):
        store.record_contact(contact(n))
    publish_all(store, kafka, producer=producers[1])  # a restarted publisher continues where the topic ends
    publish_all(store, kafka, producer=producers[2])  # and publishes nothing twice
    records = read_topic(kafka, kafka.events_topic)
    # Either producer puts a customer's events on the partition Kafka's default partitioner picks.
    assert all(r.partition == key_hash(r.key) % 3 for r in records)
    stored = store.recorder.select_notifications(start=1, limit=100_000)
    assert len(records) == len(stored)
    by_position = {position_of(r.headers): r for r in records}
    assert sorted(by_position) == [n.id for n in stored]
    for notification in stored:
        record = by_position[notification.id]
        assert record.value == bytes(notification.state)
        assert event_type_of(record.headers) == name_of_topic(notification.topic)
        assert header(record.headers, "ce_eventhash") == event_hash(bytes(notification.state)).hex().encode()
        event = store.mapper.to_domain_event(notification)
        assert record.key == event.customer_id.encode()
    # per customer, the topic order is the store order
    per_partition: dict[int, list[int]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        per_partition.setdefault(r.partition, []).append(position_of(r.headers))
    assert all(p == sorted(p) for p in per_partition.values())


def test_publisher_refuses_a_transaction_interval_out_of_range(store: CaseLedger) -> None:
    from caseledger.ledger.errors import ConfigurationError

    settings = KafkaSettings.resolve(bootstrap_servers="unused:9092")
    with pytest.raises(ConfigurationError, match="transaction interval -1 ms: give 0 to 10000 ms"):
        KafkaEventPublisher(store, settings, transaction_interval_s=-0.001)
    assert KafkaEventPublisher(store, settings, transaction_interval_s=0).transaction_interval_s == 0


def test_intake_codec_rejects_unknown_schema_fingerprint() -> None:
    codec = IntakeCodec()
    data = bytearray(codec.encode(contact(1), adapter="t"))
    data[5] ^= 0xFF
    from caseledger.ledger.errors import SchemaError

    with pytest.raises(SchemaError, match="unknown intake schema"):
        codec.decode(bytes(data))


# --processes: each service in a child process of its own; SIGTERM to the parent stops each after its batch
@pytest.mark.parametrize(("kafka_client", "form"), [
    ("kafka-python", "--one-process"), ("confluent", "--one-process"), ("confluent", "--processes")])
def test_run_serves_intake_publisher_and_projections_and_stops_on_sigterm(
    kafka: KafkaSettings, tmp_path: Path, kafka_client: str, form: str
) -> None:
    import os
    import signal
    import sqlite3
    import subprocess
    import sys

    database = tmp_path / "run.sqlite"
    env = {**os.environ, "CASELEDGER_INTAKE_TOPIC": kafka.intake_topic, "CASELEDGER_EVENTS_TOPIC": kafka.events_topic,
           "CASELEDGER_INTAKE_PARTITIONS": "3", "CASELEDGER_EVENTS_PARTITIONS": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from caseledger.cli.app import main; main()", "--database", str(database), "run", form,
         "--kafka", kafka.bootstrap_servers, "--consumer", kafka_client, "--producer", kafka_client],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        with KafkaIntakeClient(kafka, adapter="test") as client:
            client.submit_many([contact(n) for n in range(5)])
        deadline = time.monotonic() + 60
        cases = 0
        while time.monotonic() < deadline and cases < 5:
            time.sleep(0.5)
            if database.exists():
                with sqlite3.connect(database) as conn:
                    try:
                        cases = conn.execute("SELECT count(*) FROM case_state").fetchone()[0]
                    except sqlite3.OperationalError:  # the view is not created yet
                        cases = 0
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    assert cases == 5, f"the case state projection did not show the 5 contacts:\n{output[-3000:]}"
    assert proc.returncode == 0, output
    assert "stopping" in output and "stopped" in output
    assert f"({kafka_client} consumer)" in output and f"({kafka_client} producer)" in output
    store = CaseLedger(ledger_settings(database=str(database)))
    try:
        published = read_topic(kafka, kafka.events_topic)
        assert len(published) == store.recorder.max_notification_id()
    finally:
        store.close()


def test_bench_intake_prints_a_table_and_writes_its_result(kafka_bootstrap: str, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from caseledger.cli.app import app

    result = CliRunner().invoke(
        app, ["bench", "intake", "--kafka", kafka_bootstrap, "-n", "200", "--workers", "2", "--producer", "confluent",
              "--consumer", "confluent", "--events", "1000", "--output", str(tmp_path)]
    )
    assert result.exit_code == 0, result.stdout
    assert "records/s" in result.stdout and "baseline" in result.stdout and "worst case" in result.stdout
    written = json.loads(next(tmp_path.glob("intake-*.json")).read_text())
    # The default traffic is a contact centre's (issue 29): delivery reports and read receipts are one event each,
    # a new customer seven; the worst case, every record a new customer, runs beside it.
    assert written["contacts"] == 200 == sum(written["records_by_kind"].values()) and written["events_stored"] >= 200 * 2
    assert written["records_by_kind"]["delivery"] > 0 and written["records_by_kind"]["resubmission"] > 0
    worst = written["worst_case"]
    assert worst["records"] == 200 and worst["by_kind"] == {**dict.fromkeys(worst["by_kind"], 0), "new": 200}
    assert worst["events_stored"] >= 200 * 5 and worst["records_per_s"] > 0 and worst["cpu_us_per_event"]["publisher"] > 0
    # --events: the ledger filled with that many more events (pre-encoded rows), then both runs again.
    full = written["full_ledger"]
    assert full["events"] >= 900 and full["mix"]["records"] == full["worst_case"]["records"] == 200
    assert "full ledger, mix" in result.stdout
    assert written["intake_workers"] == 2 and written["producer"] == written["consumer"] == "confluent"
    assert written["contacts_per_s"] > 0 and written["baseline_events_per_s"] > 0
    # Every contact's latency is read back from the topic: positive, and p50 never above p99.
    assert 0 < written["latency_p50_ms"] <= written["latency_p99_ms"]
    assert 0 < written["ratio_to_baseline"] == pytest.approx(written["events_per_s"] / written["baseline_events_per_s"])
