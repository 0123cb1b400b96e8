"""The Kafka ports' contract, on the real broker, for both clients (kafka-python and confluent).

One class per port; every test runs once per client. What is checked is what the callers rely
on: positions after assign, read-committed isolation, acknowledged offsets, one partition per
customer whichever client wrote, and errors as BackendError with the messages users see.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator

import pytest

from caseledger.ledger.errors import BackendError, ConfigurationError
from caseledger.ledger.kafka.clients import DEFAULT_CLIENT, KAFKA_CLIENTS, KafkaClient, check_client
from caseledger.ledger.kafka.kafka_python import key_hash
from caseledger.ledger.kafka.ports import PartitionReader, ReadRecord
from caseledger.ledger.settings import KafkaSettings

pytestmark = pytest.mark.kafka

NOWHERE = "127.0.0.1:9"  # nothing listens there


@pytest.fixture(params=KAFKA_CLIENTS)
def client(request: pytest.FixtureRequest) -> KafkaClient:
    return KafkaClient(request.param, "consumer")


def records(n: int) -> list[tuple[bytes, bytes]]:
    return [(f"customer-{i % 7}".encode(), f"record {i}".encode()) for i in range(n)]


def read_all(reader: PartitionReader, ends: dict[int, int], timeout_s: float = 30) -> list[ReadRecord]:
    """Every record up to ``ends`` (the reader assigned already)."""
    got: list[ReadRecord] = []
    deadline = time.monotonic() + timeout_s
    while any(at < ends[p] for p, at in reader.positions().items()) and time.monotonic() < deadline:
        got += reader.fetch(500, 0.2, ReadRecord)
    return got


def write_transactions(settings: KafkaSettings, client: KafkaClient, *, committed: list[tuple[bytes, bytes]],
                       aborted: list[tuple[bytes, bytes]]) -> None:
    writer = dataclasses.replace(client, role="producer").open_transactional_writer(
        settings, transactional_id=f"port-test-{uuid.uuid4().hex[:8]}")
    with writer:
        writer.init_transactions()
        for batch, commit in ((aborted, False), (committed, True)):
            writer.begin_transaction()
            for key, value in batch:
                writer.send(settings.events_topic, key=key, value=value, headers=[("position", b"1")])
            if commit:
                writer.commit_transaction()
            else:
                writer.abort_transaction()


@pytest.fixture
def reader(kafka: KafkaSettings, client: KafkaClient) -> Iterator[PartitionReader]:
    with client.open_reader(kafka, topic=kafka.events_topic, group="port-test", fetch_wait_ms=50) as opened:
        yield opened


class TestPartitionReader:
    def test_lists_partitions_and_none_for_a_missing_topic(self, kafka: KafkaSettings, client: KafkaClient,
                                                            reader: PartitionReader) -> None:
        assert reader.partitions() == [0, 1, 2]
        with client.open_reader(kafka, topic=f"missing-{uuid.uuid4().hex[:6]}", group="port-test") as missing:
            assert missing.partitions() == []

    def test_reads_from_the_positions_assigned_and_reports_its_own(self, kafka: KafkaSettings, client: KafkaClient,
                                                                    reader: PartitionReader) -> None:
        with KafkaClient(client.name, "producer").open_acknowledged_producer(kafka, timeout_s=30) as producer:
            stored = producer.send_all(kafka.events_topic, records(30))
        ends = reader.end_offsets([0, 1, 2])
        assert sum(ends.values()) == 30 and reader.beginning_offsets([0, 1, 2]) == {0: 0, 1: 0, 2: 0}
        # From the beginning (0) on two partitions, from offset 2 on the third.
        reader.assign({0: 0, 1: 0, 2: 2})
        assert reader.positions() == {0: 0, 1: 0, 2: 2}  # before the first record too
        got = read_all(reader, ends)
        expected = {(p, o) for p, o in stored if p != 2 or o >= 2}
        assert {(r.partition, r.offset) for r in got} == expected
        assert reader.positions() == ends
        by_offset = {(p, o): value for (p, o), (_, value) in zip(stored, records(30), strict=True)}
        assert all(r.value == by_offset[(r.partition, r.offset)] and r.key is not None for r in got)
        # Re-assigning replaces the positions: the same records again.
        reader.assign({1: 0})
        again = read_all(reader, {1: ends[1]})
        assert [r.offset for r in again] == list(range(ends[1]))

    def test_an_aborted_transaction_is_invisible(self, kafka: KafkaSettings, client: KafkaClient,
                                                 reader: PartitionReader) -> None:
        write_transactions(kafka, client, committed=records(9), aborted=[(b"x", b"aborted")] * 5)
        # A commit returns once the coordinator decided it; the markers reach the partitions just after, and
        # until then a read_committed end offset stops short of the records (seen on a loaded machine): read up
        # to the end offsets, and take them again until the committed records are in.
        reader.assign(dict.fromkeys(range(3), 0))
        got: list[ReadRecord] = []
        deadline = time.monotonic() + 30
        while True:
            ends = reader.end_offsets([0, 1, 2])
            got += read_all(reader, ends)
            if len(got) >= 9 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        # A fetch may already have read past a stale end offset: the reader ends where the partitions end now.
        while reader.positions() != (ends := reader.end_offsets([0, 1, 2])) and time.monotonic() < deadline:
            got += reader.fetch(500, 0.2, ReadRecord)
        assert sorted(r.value or b"" for r in got) == sorted(value for _, value in records(9))
        assert reader.positions() == ends  # past the aborted records and the transaction markers

    def test_offsets_for_a_time(self, kafka: KafkaSettings, client: KafkaClient, reader: PartitionReader) -> None:
        with KafkaClient(client.name, "producer").open_acknowledged_producer(kafka, timeout_s=30) as producer:
            producer.send_all(kafka.events_topic, records(6))
        assert reader.offsets_for_time([0, 1, 2], int(time.time() * 1000) + 3_600_000) == dict.fromkeys(range(3))
        earliest = reader.offsets_for_time([0, 1, 2], 0)
        assert earliest == {p: (0 if n else None) for p, n in reader.end_offsets([0, 1, 2]).items()}

    def test_a_lost_position_is_an_error_with_the_owners_advice(self, kafka: KafkaSettings,
                                                                 client: KafkaClient) -> None:
        with KafkaClient(client.name, "producer").open_acknowledged_producer(kafka, timeout_s=30) as producer:
            producer.send_all(kafka.events_topic, records(3))
        opened = client.open_reader(kafka, topic=kafka.events_topic, group="port-test", advice="rebuild it")
        with opened as reader, pytest.raises(BackendError, match=rf"reading {kafka.events_topic}.*; rebuild it"):
            reader.assign(dict.fromkeys(range(3), 1000))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                reader.fetch(10, 0.2, ReadRecord)

    def test_an_unreachable_broker_is_a_backend_error_naming_it(self, kafka: KafkaSettings,
                                                                 client: KafkaClient) -> None:
        nowhere = dataclasses.replace(kafka, bootstrap_servers=NOWHERE)
        opened = client.open_reader(nowhere, topic=kafka.events_topic, group="port-test", timeout_s=3)
        with opened as reader, pytest.raises(BackendError, match=rf"cannot read {kafka.events_topic} on {NOWHERE}"):
            reader.partitions()


class TestTransactionalWriter:
    def test_writes_a_committed_batch_on_the_partition_of_each_key(self, kafka: KafkaSettings,
                                                                   client: KafkaClient) -> None:
        write_transactions(kafka, client, committed=records(21), aborted=[])
        with KafkaClient("kafka-python", "consumer").open_reader(kafka, topic=kafka.events_topic, group="t") as reader:
            ends = reader.end_offsets([0, 1, 2])
            reader.assign(dict.fromkeys(range(3), 0))
            got = read_all(reader, ends)
        assert len(got) == 21
        assert all(r.key is not None and r.partition == key_hash(r.key) % 3 for r in got)
        assert all(r.headers == [("position", b"1")] for r in got)

    def test_a_new_writer_fences_the_earlier_one(self, kafka: KafkaSettings, client: KafkaClient) -> None:
        producer = dataclasses.replace(client, role="producer")
        transactional_id = f"fence-{uuid.uuid4().hex[:8]}"
        with producer.open_transactional_writer(kafka, transactional_id=transactional_id) as first:
            first.init_transactions()
            with producer.open_transactional_writer(kafka, transactional_id=transactional_id) as second:
                second.init_transactions()
                with pytest.raises(BackendError, match="Kafka producer"):
                    first.begin_transaction()
                    first.send(kafka.events_topic, key=b"k", value=b"v", headers=[])
                    first.commit_transaction()


class TestAcknowledgedProducer:
    def test_returns_where_each_record_is_stored_once_acknowledged(self, kafka: KafkaSettings,
                                                                   client: KafkaClient) -> None:
        with KafkaClient(client.name, "producer").open_acknowledged_producer(kafka, timeout_s=30) as producer:
            stored = producer.send_all(kafka.intake_topic, records(40))
        assert len(set(stored)) == 40
        with KafkaClient("kafka-python", "consumer").open_reader(kafka, topic=kafka.intake_topic, group="t") as reader:
            ends = reader.end_offsets([0, 1, 2])
            reader.assign(dict.fromkeys(range(3), 0))
            found = {(r.partition, r.offset): (r.key, r.value) for r in read_all(reader, ends)}
        assert [found[where] for where in stored] == records(40)

    def test_both_clients_put_a_key_on_kafkas_default_partition(self, kafka: KafkaSettings) -> None:
        placed = {}
        for name in KAFKA_CLIENTS:
            with KafkaClient(name, "producer").open_acknowledged_producer(kafka, timeout_s=30) as producer:
                placed[name] = [p for p, _ in producer.send_all(kafka.intake_topic, records(30))]
        assert placed["kafka-python"] == placed["confluent"]
        assert placed["confluent"] == [key_hash(key) % 3 for key, _ in records(30)]

    def test_an_unreachable_broker_is_a_backend_error_naming_it(self, kafka: KafkaSettings,
                                                                 client: KafkaClient) -> None:
        nowhere = dataclasses.replace(kafka, bootstrap_servers=NOWHERE)
        with (KafkaClient(client.name, "producer").open_acknowledged_producer(nowhere, timeout_s=2) as producer,
              pytest.raises(BackendError, match=r"cannot reach Kafka at 127\.0\.0\.1:9")):
            producer.send_all(kafka.intake_topic, records(1))

    def test_a_missing_topic_says_how_to_create_it(self, kafka: KafkaSettings) -> None:
        # kafka-python's producer waits for the topic (max_block_ms) and then reports it unacknowledged.
        with (KafkaClient("confluent", "producer").open_acknowledged_producer(kafka, timeout_s=5) as producer,
              pytest.raises(BackendError, match=r"topic missing-\w+ does not exist.*caseledger topics create")):
            producer.send_all(f"missing-{uuid.uuid4().hex[:6]}", records(1))


class TestGroupMember:
    """A reader in a consumer group (issue 29): the group hands out partitions, the caller's positions say where."""

    def test_each_partition_handed_over_starts_where_the_caller_says_never_at_the_group_s_offsets(
        self, kafka: KafkaSettings, client: KafkaClient
    ) -> None:
        with KafkaClient(client.name, "producer").open_acknowledged_producer(kafka, timeout_s=30) as producer:
            stored = producer.send_all(kafka.events_topic, records(30))
        handed: list[int] = []
        taken: list[int] = []

        def on_assign(partitions: list[int]) -> dict[int, int]:
            handed.extend(partitions)
            return {p: 2 if p == 1 else 0 for p in partitions}  # the caller's own positions

        first = client.open_reader(kafka, topic=kafka.events_topic, group="member-test", fetch_wait_ms=50)
        with first:
            first.subscribe(on_assign, taken.extend, session_timeout_ms=6000)
            got: list[ReadRecord] = []
            deadline = time.monotonic() + 60  # a kafka-python member stuck joining is replaced after 22 s
            while len(got) < 28 and time.monotonic() < deadline:
                got += first.fetch(500, 0.2, ReadRecord)
            assert sorted(handed) == [0, 1, 2] and first.assigned() == {0, 1, 2}  # alone: every partition
            assert {(r.partition, r.offset) for r in got} == {(p, o) for p, o in stored if p != 1 or o >= 2}
        # Nothing was committed to the group: a new member starts where its caller says, again.
        handed.clear()
        with client.open_reader(kafka, topic=kafka.events_topic, group="member-test", fetch_wait_ms=50) as second:
            second.subscribe(on_assign, taken.extend, session_timeout_ms=6000)
            again: list[ReadRecord] = []
            deadline = time.monotonic() + 60
            while len(again) < 28 and time.monotonic() < deadline:
                again += second.fetch(500, 0.2, ReadRecord)
            assert len(again) == 28 and sorted(handed) == [0, 1, 2]


    def test_a_kafka_python_member_whose_join_hangs_is_replaced_and_gets_the_partitions(
        self, kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """kafka-python 3.0.12 can hang in a join (seen in CI); here its first join never ends, as it did there."""
        from kafka.coordinator.base import BaseCoordinator

        import caseledger.ledger.kafka.kafka_python as module

        joins = []
        original = BaseCoordinator._do_join_and_sync_async

        async def hanging_first(coordinator: BaseCoordinator) -> bytes:
            joins.append(coordinator.group_id)
            if len(joins) == 1:
                await coordinator._manager._net.sleep(3600)  # the answer never comes
            return await original(coordinator)  # type: ignore[no-any-return]

        monkeypatch.setattr(BaseCoordinator, "_do_join_and_sync_async", hanging_first)
        monkeypatch.setattr(module, "rejoin_after_s", lambda session_timeout_ms: 3.0)
        with KafkaClient("kafka-python", "producer").open_acknowledged_producer(kafka, timeout_s=30) as producer:
            stored = producer.send_all(kafka.events_topic, records(12))
        handed: list[int] = []
        with KafkaClient("kafka-python", "consumer").open_reader(kafka, topic=kafka.events_topic, group="hang-test",
                                                                  fetch_wait_ms=50) as member:
            member.subscribe(lambda parts: (handed.extend(parts), dict.fromkeys(parts, 0))[1], lambda parts: None,
                             session_timeout_ms=6000)
            got: list[ReadRecord] = []
            deadline = time.monotonic() + 60
            while len(got) < len(stored) and time.monotonic() < deadline:
                got += member.fetch(500, 0.2, ReadRecord)
        assert len(joins) >= 2 and sorted(handed) == [0, 1, 2]
        assert {(r.partition, r.offset) for r in got} == set(stored)


class TestClientChoice:
    def test_an_unknown_client_is_refused_with_the_known_ones(self) -> None:
        with pytest.raises(ConfigurationError, match=r"Kafka producer 'java': use one of kafka-python, confluent"):
            check_client("java", "producer")
        assert check_client("confluent", "consumer") == "confluent"
        assert str(KafkaClient("kafka-python", "consumer")) == "kafka-python"

    def test_the_default_client_is_confluent(self) -> None:
        assert DEFAULT_CLIENT == "confluent"  # issue 29: the fast client by default, kafka-python by option

    def test_the_confluent_client_without_its_package_says_to_reinstall(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # confluent-kafka is a dependency now (issue 29): a broken install is reinstalled, or kafka-python chosen
        import sys

        monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # as if not installed
        import caseledger.ledger.kafka as package

        monkeypatch.delitem(sys.modules, "caseledger.ledger.kafka.confluent", raising=False)
        monkeypatch.delattr(package, "confluent", raising=False)
        with pytest.raises(ConfigurationError, match=r"reinstall it, pip install caseledger\), or choose kafka-python as consumer"):
            KafkaClient("confluent", "consumer").module()
