"""Projections: incremental equals rebuilt, SQLite equals PostgreSQL, Kafka equals the store.

Hypothesis drives random command sequences through the ledger API on a fresh SQLite ledger;
the events they record are projected incrementally (in small batches, by fresh runners, as
after restarts), rebuilt from the beginning, into SQLite and PostgreSQL, from the store's
notification log and from a real Kafka events topic — and every time the views are the same.
The framework's contract on both backends follows. On SQLite alone (incremental equals rebuilt and
agrees with the aggregates; sources, handlers, consumers): tests/unit/test_projection_rules.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.errors import ConfigurationError
from caseledger.projections import (
    BUILT_INS,
    FLOAT,
    INT,
    JSON,
    LOG,
    TEXT,
    TIME,
    KafkaEventSource,
    ProjectionRunner,
    StoreEventSource,
    Table,
    kafka_source,
    open_views,
    read_status,
    rebuild,
)
from caseledger.projections.views import ViewStore
from tests.support.environment import ledger_settings
from tests.support.kafka_topics import fresh_topics, publish_all
from tests.support.postgres import PostgresServer
from tests.support.projection_scenarios import (
    ACTIONS,
    PROPERTY_SETTINGS,
    Tally,
    catch_up,
    generated_ledger,
    record_contacts,
    snapshot,
    steps_strategy,
)

# -- the properties ---------------------------------------------------------------------------------------


def schema_url(database_url: str) -> str:
    """A fresh schema in a PostgreSQL database: cheap isolation for each hypothesis example."""
    return database_url + ("&" if "?" in database_url else "?") + f"schema=s_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def views_database(postgres: PostgresServer) -> str:
    return postgres.new_database()


@pytest.mark.kafka
@pytest.mark.postgres
@settings(max_examples=10, **PROPERTY_SETTINGS)  # type: ignore[arg-type]
@given(steps=steps_strategy, split=st.integers(0, 40))
def test_same_views_on_sqlite_and_postgresql_from_the_store_and_from_kafka(
    steps: list[tuple[str, int]], split: int, views_database: str, kafka_bootstrap: str
) -> None:
    kafka = fresh_topics(kafka_bootstrap, intake_partitions=1)
    with generated_ledger() as (ledger, scenario, tmp), \
            open_views(str(tmp / "views.sqlite")) as on_sqlite, \
            open_views(schema_url(views_database)) as on_postgres, \
            open_views(schema_url(views_database)) as from_kafka:
        for n, (action, seed) in enumerate(steps):
            scenario.apply(action, seed)
            if n == split:  # the Kafka runner stops half-way and resumes from its stored positions
                publish_all(ledger, kafka)
                catch_up(from_kafka, KafkaEventSource(kafka), batch_size=4)
        publish_all(ledger, kafka)
        source = KafkaEventSource(kafka)
        try:
            catch_up(from_kafka, source, batch_size=50)
            assert all(st.source == source.name for st in read_status(from_kafka))
            assert all(source.lag(st.positions) == 0 for st in read_status(from_kafka))
        finally:
            source.close()
        catch_up(on_sqlite, StoreEventSource(ledger), batch_size=50)
        catch_up(on_postgres, StoreEventSource(ledger), batch_size=50)
        expected = snapshot(on_sqlite)
        assert snapshot(on_postgres) == expected
        assert snapshot(from_kafka) == expected


# -- the framework's contract, on both backends ---------------------------------------------------------


class TallyV2(Tally):
    """The same projection after a code change."""

    version = 2


def views_for(database: str) -> ViewStore:
    return open_views(schema_url(database) if database.startswith("postgresql") else database + ".views")


def test_tables_counters_and_log_follow_the_store_exactly_once(make_ledger: Any, database: str) -> None:
    ledger = make_ledger()
    record_contacts(ledger, 20)
    with views_for(database) as views:
        runner = ProjectionRunner([Tally()], views, StoreEventSource(ledger), batch_size=7)
        runner.run(until_caught_up=True)
        record_contacts(ledger, 5, start=20)
        ProjectionRunner([Tally()], views, StoreEventSource(ledger), batch_size=3).run(until_caught_up=True)
        total = ledger.recorder.max_notification_id()
        log = views.select(Tally.tables[2], order_by="position")
        assert [r["position"] for r in log] == list(range(1, total + 1))
        assert sum(r["n"] for r in views.select(Tally.tables[0])) == total
        cases = views.select(Tally.tables[1])
        assert len(cases) == 25 and all(c["events"] == 3 for c in cases)  # opened, contact, acknowledgement
        assert read_status(views, "tally")[0].positions == {0: total}


def test_bulk_writes_keep_every_column_type_even_twice_in_one_transaction(database: str) -> None:
    """Batches large enough for COPY (binary on PostgreSQL), a second upsert of the same rows included."""
    rows_table = Table("bulk", {"k": TEXT, "n": INT, "x": FLOAT, "at": TIME, "doc": JSON, "note": TEXT}, key=("k",))
    log_table = Table("bulk_log", {"position": INT, "at": TIME, "doc": JSON}, key=("position",), kind=LOG)
    at = datetime(2026, 1, 5, 8, tzinfo=UTC)
    first = [{"k": f"k{i:03d}", "n": i, "x": i / 4, "at": at + timedelta(microseconds=i * 7919),
              "doc": {"i": [i, None, "é"], "b": True}, "note": None if i % 3 else "n"} for i in range(100)]
    second = [{**r, "n": -r["n"], "doc": []} for r in first[50:]] + [{**r, "k": f"k{i + 100:03d}"}
                                                                    for i, r in enumerate(first[:80])]
    log = [{"position": i, "at": at - timedelta(days=i), "doc": "text"} for i in range(1, 201)]
    with views_for(database) as views:
        with views.transaction() as tx:
            tx.create_table(rows_table, "bulk")
            tx.create_table(log_table, "bulk_log")
        with views.transaction() as tx:
            tx.upsert_rows(rows_table, "bulk", first)
            tx.upsert_rows(rows_table, "bulk", second)
            tx.insert_rows(log_table, "bulk_log", log)
        expected = {r["k"]: r for r in first} | {r["k"]: r for r in second}
        assert views.select(rows_table, order_by="k") == [expected[k] for k in sorted(expected)]
        assert views.select(log_table, order_by="position") == log
        with views.transaction() as tx:  # the next transaction starts from empty staging tables
            tx.upsert_rows(rows_table, "bulk", [{**r, "note": "again"} for r in first])
        assert [r["note"] for r in views.select(rows_table, order_by="k")] == ["again"] * 100 + [
            expected[k]["note"] for k in sorted(expected)[100:]]


def test_two_runners_of_one_projection_never_apply_a_batch_twice(make_ledger: Any, database: str) -> None:
    ledger = make_ledger()
    record_contacts(ledger, 10)
    with views_for(database) as views, open_views(views.url) as other:
        first = ProjectionRunner([Tally()], views, StoreEventSource(ledger), batch_size=5)
        second = ProjectionRunner([Tally()], other, StoreEventSource(ledger), batch_size=5)
        first.prepare()
        second.prepare()
        first.step()  # the second runner's positions are stale now: it must reload, not re-apply
        second.run(until_caught_up=True)
        first.run(until_caught_up=True)
        total = ledger.recorder.max_notification_id()
        assert sum(r["n"] for r in views.select(Tally.tables[0])) == total


def test_a_changed_projection_is_refused_until_rebuilt_and_readers_never_see_half_a_view(
    make_ledger: Any, database: str
) -> None:
    ledger = make_ledger()
    record_contacts(ledger, 12)
    with views_for(database) as views:
        ProjectionRunner([Tally()], views, StoreEventSource(ledger)).run(until_caught_up=True)
        before = views.snapshot(Tally.tables)
        with pytest.raises(ConfigurationError, match=r"version 1 .* this is version 2: rebuild it"):
            ProjectionRunner([TallyV2()], views, StoreEventSource(ledger)).prepare()

        seen_during: list[dict[str, Any]] = []

        def on_batch(_report: Any) -> None:  # a reader in the middle of the rebuild sees the old view
            seen_during.append(views.snapshot(Tally.tables))

        stop_after_one = _StopAfter(1)
        interrupted = rebuild(TallyV2(), views, StoreEventSource(ledger), batch_size=10, stop=stop_after_one.event,
                              on_batch=lambda r: (on_batch(r), stop_after_one(r)))
        assert not interrupted.swapped and seen_during == [before]
        assert read_status(views, "tally", "rebuild")[0].positions == {0: 10}

        record_contacts(ledger, 3, start=12)
        done = rebuild(TallyV2(), views, StoreEventSource(ledger), batch_size=10)  # resumes at 10
        assert done.swapped and done.records == ledger.recorder.max_notification_id() - 10
        ProjectionRunner([TallyV2()], views, StoreEventSource(ledger)).run(until_caught_up=True)
        status = read_status(views, "tally")
        assert [(s.slot, s.version) for s in status] == [("live", 2)]
        total = ledger.recorder.max_notification_id()
        assert sum(r["n"] for r in views.select(Tally.tables[0])) == total
        assert not any(name.endswith("__rebuild") for name in views.table_names())


class _StopAfter:
    def __init__(self, batches: int) -> None:
        import threading

        self.event = threading.Event()
        self.left = batches

    def __call__(self, _report: Any) -> None:
        self.left -= 1
        if self.left <= 0:
            self.event.set()


@pytest.mark.kafka
@pytest.mark.postgres
@pytest.mark.parametrize("consumer", ["kafka-python", "confluent"])
def test_a_parallel_rebuild_from_kafka_equals_the_store_built_views(
    tmp_path: Path, views_database: str, kafka_bootstrap: str, consumer: str
) -> None:
    from caseledger.cli.bench.rebuild_bench import generate_ledger
    from caseledger.projections.parallel import rebuild_in_parallel

    database = str(tmp_path / "ledger.sqlite")
    generate_ledger(database, 1500)
    kafka = fresh_topics(kafka_bootstrap, partitions=4, intake_partitions=1)
    ledger = CaseLedger(ledger_settings(database=database))
    try:
        publish_all(ledger, kafka)
        with open_views(str(tmp_path / "views.sqlite")) as from_store:
            catch_up(from_store, StoreEventSource(ledger))
            expected = snapshot(from_store)
    finally:
        ledger.close()
    url = schema_url(views_database)
    result = rebuild_in_parallel(list(BUILT_INS), url, kafka, workers=2, batch_size=300, consumer=consumer)
    assert result.swapped and result.records >= expected["timeline"]["timeline"][-1]["position"]
    with open_views(url) as parallel:
        assert snapshot(parallel) == expected
        assert {(s.slot, s.source) for s in read_status(parallel)} == {("live", f"kafka:{kafka.events_topic}")}


@pytest.mark.kafka
def test_the_confluent_consumer_reads_what_kafka_python_reads_and_resumes_from_its_positions(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    kafka = fresh_topics(kafka_bootstrap, intake_partitions=1)
    with generated_ledger() as (ledger, scenario, _tmp), open_views(str(tmp_path / "python.sqlite")) as by_python, \
            open_views(str(tmp_path / "confluent.sqlite")) as by_confluent:
        for n in range(30):
            scenario.apply(ACTIONS[n % len(ACTIONS)], n * 7919)
        publish_all(ledger, kafka)
        catch_up(by_confluent, kafka_source(kafka, consumer="confluent"), batch_size=5)  # stops here…
        for n in range(30, 60):
            scenario.apply(ACTIONS[n % len(ACTIONS)], n * 7919)
        publish_all(ledger, kafka)
        source = kafka_source(kafka, consumer="confluent")
        try:
            catch_up(by_confluent, source, batch_size=7)  # …and a fresh runner resumes from the stored positions
            assert all(source.lag(st.positions) == 0 for st in read_status(by_confluent))
            assert source.name == KafkaEventSource(kafka).name
        finally:
            source.close()
        catch_up(by_python, KafkaEventSource(kafka), batch_size=50)
        assert snapshot(by_confluent) == snapshot(by_python)
        assert snapshot(by_python)["timeline"]["timeline"]
