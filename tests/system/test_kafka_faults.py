"""Fault injection on the Kafka backbone: SIGKILLed services, a restarted broker, malformed records.

After each run the ledger and the topics are reconciled:
- every intake offset has exactly one outcome (a contact, a resubmission trace, a report, or a
  recorded rejection);
- the events topic holds every stored event exactly once, byte for byte;
- per customer (one partition), the topic order is the store order.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.directory import IntakeSource
from caseledger.ledger.domain.values import ContactDraft, Identity
from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
from caseledger.ledger.intake.records import IntakeCodec
from caseledger.ledger.intake.worker import KafkaIntakeWorker, tracking_name
from caseledger.ledger.kafka.events_record import position_of
from caseledger.ledger.kafka.publisher import KafkaEventPublisher
from caseledger.ledger.settings import KafkaSettings
from tests.support.environment import ledger_settings
from tests.support.kafka_topics import fresh_topics, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

OUTCOMES = ("ContactReceived", "ResubmissionTraced", "IntakeRejected", "MessageDelivered", "MessageRead")


def end_offsets(settings: KafkaSettings, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(**settings.client_options(), group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def reconcile(ledger: CaseLedger, settings: KafkaSettings) -> dict[str, int]:
    """Check the three guarantees; returns counts for the report."""
    notifications = ledger.recorder.select_notifications(start=1, limit=10_000_000)
    events = [(n, ledger.mapper.to_domain_event(n)) for n in notifications]

    # 1. every intake offset has exactly one outcome
    outcomes: Counter[Any] = Counter()
    for _, event in events:
        if type(event).__name__ in OUTCOMES and event.causation_id is not None:
            outcomes[event.causation_id] += 1
    ends = end_offsets(settings, settings.intake_topic)
    missing, doubled = [], []
    for partition, end in ends.items():
        for offset in range(end):
            n = outcomes[IntakeSource(settings.intake_topic, partition, offset).event_id]
            if n == 0:
                missing.append((partition, offset))
            elif n > 1:
                doubled.append((partition, offset))
    assert not missing, f"intake offsets without outcome: {missing[:20]}"
    assert not doubled, f"intake offsets with two outcomes: {doubled[:20]}"

    # 2. the events topic holds every stored event exactly once, byte for byte
    records = read_topic(settings, settings.events_topic)
    positions = Counter(position_of(r.headers) for r in records)
    assert [p for p, n in positions.items() if n > 1] == []
    assert sorted(positions) == [n.id for n in notifications]
    by_position = {position_of(r.headers): r for r in records}
    assert all(by_position[n.id].value == bytes(n.state) for n in notifications)

    # 3. per customer the topic order is the store order, all on one partition
    partition_of: dict[bytes, set[int]] = {}
    for record in records:
        partition_of.setdefault(record.key, set()).add(record.partition)
    assert [key for key, parts in partition_of.items() if len(parts) > 1] == []
    per_key: dict[bytes, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        per_key.setdefault(record.key, []).append(position_of(record.headers))
    assert all(p == sorted(p) for p in per_key.values())
    return {"intake_records": sum(ends.values()), "events": len(notifications), "customers": len(per_key)}


class Service:
    """A caseledger service in its own process, killed and restarted by the test."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.log_start = 0

    def start(self) -> None:
        self.log_start = self.log.stat().st_size if self.log.exists() else 0
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from caseledger.cli.app import main; main()", *self.args], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.kills += 1

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self, marker: str) -> bool:
        """Whether the running incarnation logged ``marker`` since it started."""
        return marker.encode() in self.log.read_bytes()[self.log_start:]


def contacts(n: int, start: int = 0) -> list[ContactDraft]:
    return [
        ContactDraft(channel=random.choice(["email", "chat", "sms", "web_form"]), channel_message_id=f"m{i}",
                     identity=Identity.parse(f"email:c{i % 97}@example.com"), items=(f"question {i}",))
        for i in range(start, start + n)
    ]


def test_services_killed_at_random_moments_lose_and_double_nothing(
    kafka_bootstrap: str, postgres: Any, tmp_path: Path
) -> None:
    rng = random.Random(20261123)
    settings = fresh_topics(kafka_bootstrap)
    database = postgres.new_database()
    common = ["--database", database]
    kafka = ["--kafka", kafka_bootstrap]
    env_topics = {"CASELEDGER_INTAKE_TOPIC": settings.intake_topic, "CASELEDGER_EVENTS_TOPIC": settings.events_topic}
    os.environ.update(env_topics)
    try:
        worker = Service([*common, "intake", "run", *kafka, "--batch-size", "50",
                          # killed every second or so: the group forgets each dead incarnation quickly
                          "--session-timeout-ms", "2000", "--consumer", "kafka-python"],
                         tmp_path / "intake.log")
        publisher = Service([*common, "publisher", "run", *kafka, "--batch-size", "80", "--producer", "kafka-python"],
                            tmp_path / "publisher.log")
        worker.start()
        publisher.start()
        total = 1200

        def produce() -> None:
            with KafkaIntakeClient(settings, adapter="crash-test") as client:
                for chunk in range(0, total, 100):
                    batch: list[Any] = contacts(100, chunk)
                    batch += contacts(3, chunk)  # resubmissions of the chunk's first messages
                    client.submit_many(batch)
                    time.sleep(0.4)
            raw = KafkaProducer(**settings.client_options())
            for n in range(20):
                raw.send(settings.intake_topic, key=b"bad", value=os.urandom(30 + n))
            raw.flush()
            raw.close()

        producer = threading.Thread(target=produce)
        producer.start()
        deadline = time.monotonic() + 150
        while producer.is_alive() and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.3, 1.2))
            victim = rng.choice([worker, publisher])
            victim.kill()
            # Restarted with the other Kafka client each time: positions, fencing, resuming from the
            # topic's last position and partitioning must agree between kafka-python and confluent-kafka.
            victim.args[-1] = "confluent" if victim.args[-1] == "kafka-python" else "kafka-python"
            victim.start()
        producer.join()
        # Catching up has its own two minutes from the last crash: on a loaded machine producing under the crashes
        # took most of the 150 s, and a consumer joining its group then had seconds left (a CI run).
        deadline = time.monotonic() + 120
        assert worker.kills + publisher.kills >= 4
        assert worker.kills >= 1 and publisher.kills >= 1

        ledger = CaseLedger(ledger_settings(database=database))
        try:
            ends = end_offsets(settings, settings.intake_topic)
            assert sum(ends.values()) == total + 3 * (total // 100) + 20

            def caught_up() -> bool:
                applied = all(
                    (ledger.recorder.max_tracking_id(tracking_name(settings.intake_topic, p)) or 0) == end
                    for p, end in ends.items()
                )
                if not applied:
                    return False
                top = ledger.recorder.max_notification_id()
                published = read_topic(settings, settings.events_topic)
                return bool(published) and max(position_of(r.headers) for r in published) == top

            while not caught_up():
                if time.monotonic() > deadline:
                    progress = {p: ledger.recorder.max_tracking_id(tracking_name(settings.intake_topic, p)) for p in ends}
                    raise AssertionError(
                        f"services did not catch up after the crashes: intake {progress} of {ends}; "
                        f"store at {ledger.recorder.max_notification_id()}\n"
                        + (tmp_path / "intake.log").read_text()[-2000:] + (tmp_path / "publisher.log").read_text()[-2000:]
                    )
                assert worker.alive() and publisher.alive(), (
                    (tmp_path / "intake.log").read_text()[-3000:] + (tmp_path / "publisher.log").read_text()[-3000:])
                time.sleep(1)
            # A service killed last may still be starting when the others caught up: stop it once it runs.
            while not (worker.ready("intake worker consuming") and publisher.ready("publisher resuming after")):
                assert time.monotonic() < deadline + 60, "a restarted service never reported it was running"
                time.sleep(0.2)
            assert worker.terminate() == 0 and publisher.terminate() == 0  # clean stop on SIGTERM
            report = reconcile(ledger, settings)
            assert report["intake_records"] == sum(ends.values())
        finally:
            ledger.close()
    finally:
        for service in (locals().get("worker"), locals().get("publisher")):
            if service is not None and service.alive():
                service.kill()
        for key in env_topics:
            os.environ.pop(key, None)


def test_broker_restart_mid_stream(kafka_bootstrap: str, kafka_broker: Any, tmp_path: Path) -> None:
    if kafka_broker is None:
        pytest.skip("an external broker (CASELEDGER_TEST_KAFKA) cannot be restarted by the tests")
    settings = fresh_topics(kafka_bootstrap, partitions=2)
    ledgers = [CaseLedger(ledger_settings(database=str(tmp_path / "r.sqlite"))) for _ in range(2)]
    worker = KafkaIntakeWorker(ledgers[0], settings, batch_size=40)
    publisher = KafkaEventPublisher(ledgers[1], settings, batch_size=60)
    stop = threading.Event()
    errors: list[BaseException] = []

    def keep_running(target: Any) -> None:
        # A service that fails while the broker is away is restarted, as a supervisor would.
        while not stop.is_set():
            try:
                target(stop)
            except BaseException as error:
                errors.append(error)
                time.sleep(0.5)

    threads = [threading.Thread(target=keep_running, args=(s.run,)) for s in (worker, publisher)]
    for t in threads:
        t.start()
    try:
        with KafkaIntakeClient(settings, adapter="restart-test") as client:
            client.submit_many(contacts(300))
            kafka_broker.restart()
            client.submit_many(contacts(300, 300))
        ends = end_offsets(settings, settings.intake_topic)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            applied = sum(worker.next_offset(p) for p in ends)
            if applied == sum(ends.values()) and publisher.stats.position == ledgers[0].recorder.max_notification_id():
                break
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    try:
        assert sum(ends.values()) == 600
        report = reconcile(ledgers[0], settings)
        assert report["intake_records"] == 600
    finally:
        for ledger in ledgers:
            ledger.close()


# -- malformed intake records ----------------------------------------------------------------------------

CODEC = IntakeCodec()


def _raw(payload: dict[str, Any]) -> bytes:
    out = BytesIO()
    out.write(CODEC.header)
    schemaless_writer(out, CODEC.schema, {"adapter": "fuzz", "published_at": 0, "payload": ("caseledger.intake.Contact", payload)})
    return out.getvalue()


def _contact(**override: Any) -> dict[str, Any]:
    base = {
        "channel": "email", "channel_message_id": "x", "identity": {"kind": "email", "value": "a@b.co"},
        "customer_id": None, "segment": None, "subject": "", "body": "", "items": ["q"], "attachments": [],
        "case_reference": None, "follow_up": False, "category": None, "occurred_at": 0, "metadata": {},
    }
    base.update(override)
    return base


text = st.text(max_size=30)
malformed = st.one_of(
    st.binary(max_size=200).map(lambda b: b"\xc3\x01" + CODEC.header[2:] + b),  # right header, garbage body
    st.binary(max_size=200),  # not Avro at all
    text.filter(lambda c: c.strip().lower() not in {"web_form", "email", "phone", "chat", "chatbot", "social",
                                                    "sms", "letter", "branch", "app"})
        .map(lambda c: _raw(_contact(channel=c))),  # unknown channel
    st.integers(min_value=100_001, max_value=150_000).map(lambda n: _raw(_contact(body="x" * n))),  # oversize body
    st.sampled_from(["", " ", "not-an-email"]).map(lambda v: _raw(_contact(identity={"kind": "email", "value": v}))),
    text.filter(lambda k: k.strip().lower() not in {"email", "phone", "handle", "account"})
        .map(lambda k: _raw(_contact(identity={"kind": k, "value": "v"}))),  # unknown identity kind
    st.just(_raw(_contact(items=[]))),  # no item
    st.just(_raw(_contact(channel_message_id=" "))),  # no message id
    st.just(_raw(_contact(case_reference="CL-NOPE0-NOPE0"))),  # unknown case
)


@settings(max_examples=1, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(records=st.lists(malformed, min_size=1000, max_size=1000))
def test_malformed_records_each_end_as_a_rejection(records: list[bytes], kafka_bootstrap: str, tmp_path_factory: Any) -> None:
    settings = fresh_topics(kafka_bootstrap, partitions=2)
    producer = KafkaProducer(**settings.client_options(), max_request_size=4_194_304)
    for n, record in enumerate(records):
        producer.send(settings.intake_topic, key=str(n % 5).encode(), value=record)
    producer.flush()
    with KafkaIntakeClient(settings, adapter="fuzz") as client:  # the worker keeps going after them
        client.submit_many(contacts(10, 50_000))
    producer.close()
    ledger = CaseLedger(ledger_settings(database=str(tmp_path_factory.mktemp("fuzz") / "f.sqlite")))
    try:
        worker = KafkaIntakeWorker(ledger, settings, batch_size=250)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,))
        thread.start()
        deadline = time.monotonic() + 120
        while worker.stats.records < 1010 and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        thread.join(30)
        assert (worker.stats.rejected, worker.stats.contacts) == (1000, 10)
        rejected = [ledger.mapper.to_domain_event(n) for n in ledger.recorder.select_notifications(start=1, limit=100_000)]
        rejected = [e for e in rejected if type(e).__name__ == "IntakeRejected"]
        assert len(rejected) == 1000 and all(e.reason.strip() for e in rejected)
        assert {bytes(e.raw) for e in rejected} <= set(records)
    finally:
        ledger.close()
