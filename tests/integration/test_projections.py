"""Projections: incremental equals rebuilt, SQLite equals PostgreSQL, Kafka equals the store.

Hypothesis drives random command sequences through the ledger API on a fresh SQLite ledger;
the events they record are projected incrementally (in small batches, by fresh runners, as
after restarts), rebuilt from the beginning, into SQLite and PostgreSQL, from the store's
notification log and from a real Kafka events topic — and every time the views are the same.
The case state must also say exactly what the Case aggregate says, and the deadlines view must
find exactly the deadlines the aggregates find due.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caseledger.cli import render
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.directory import IntakeSource
from caseledger.ledger.domain.values import Actor, Channel, ContactDraft, Identity
from caseledger.ledger.errors import CaseLedgerError, ConfigurationError
from caseledger.ledger.kafka.settings import KafkaSettings
from caseledger.ledger.settings import LedgerSettings
from caseledger.projections import (
    BUILT_INS,
    COUNTERS,
    FLOAT,
    INT,
    JSON,
    LOG,
    TEXT,
    TIME,
    KafkaEventSource,
    Projection,
    ProjectionRunner,
    StoreEventSource,
    Table,
    Tx,
    kafka_source,
    load_projections,
    open_views,
    read_status,
    rebuild,
)
from caseledger.projections.case_state import CaseView
from caseledger.projections.deadlines import overdue
from caseledger.projections.views import ViewStore
from tests.support.clock import FakeClock
from tests.support.kafka_topics import fresh_topics, publish_all
from tests.support.postgres import PostgresServer

AGENT = Actor.parse("agent:alice")
CUSTOMERS = [Identity.parse(s) for s in ("email:a@example.com", "phone:+33612345678", "handle:@bob")]
CHANNELS = list(Channel)
SEGMENTS = (None, "premium", "standard")
ACTIONS = (
    "contact", "contact", "follow_up", "respond", "respond", "waive", "promise", "settle", "deliver", "read",
    "close", "cancel", "reopen", "assign", "handoff", "escalate", "propose", "decide", "status", "tick",
    "resubmit", "reject", "erase", "hold", "release",
)


# -- a ledger driven by generated commands --------------------------------------------------------------


@dataclass
class Scenario:
    """Applies (action, seed) steps to a ledger; a step the case's rules refuse records nothing."""

    ledger: CaseLedger
    clock: FakeClock
    refs: list[str] = field(default_factory=list)
    who: dict[str, Identity] = field(default_factory=dict)
    messages: list[tuple[Channel, str, Identity]] = field(default_factory=list)

    def apply(self, action: str, seed: int) -> None:
        self.clock.advance(minutes=seed % 90 + 1)
        with suppress(CaseLedgerError):
            getattr(self, f"_{action}")(seed)

    def _ref(self, seed: int) -> str:
        if not self.refs:
            raise ConfigurationError("no case yet")
        return self.refs[seed % len(self.refs)]

    def _draft(self, seed: int, identity: Identity, **kw: Any) -> ContactDraft:
        channel = CHANNELS[seed % len(CHANNELS)]
        msg = f"m{len(self.messages)}"
        self.messages.append((channel, msg, identity))
        return ContactDraft(channel=channel, channel_message_id=msg, identity=identity,
                            items=tuple(f"question {seed % 97} part {n}" for n in range(1 + seed % 3)),
                            subject=f"subject {seed % 13}", **kw)

    def _contact(self, seed: int) -> None:
        identity = CUSTOMERS[(seed // 7) % len(CUSTOMERS)]
        out = self.ledger.record_contact(self._draft(seed, identity, segment=SEGMENTS[seed % 3]))
        if out.opened_case:
            self.refs.append(out.reference)
            self.who[out.reference] = identity

    def _follow_up(self, seed: int) -> None:
        ref = self._ref(seed)
        self.ledger.record_contact(self._draft(seed, self.who[ref], case_reference=ref, follow_up=bool(seed % 2)))

    def _resubmit(self, seed: int) -> None:
        if self.messages:
            channel, msg, identity = self.messages[seed % len(self.messages)]
            draft = ContactDraft(channel=channel, channel_message_id=msg, identity=identity, items=("again",))
            self.ledger.record_contact(draft, source=IntakeSource(topic="intake", partition=0, offset=seed))

    def _reject(self, seed: int) -> None:
        self.ledger.reject_intake(IntakeSource(topic="intake", partition=1, offset=seed), reason="not Avro",
                                  raw=b"\x00" * (seed % 5), kind="undecodable")

    def _respond(self, seed: int) -> None:
        ref = self._ref(seed)
        open_items = self.ledger.get_case(ref).open_item_ids()
        answers = [item for n, item in enumerate(open_items) if seed >> n & 1]
        self.ledger.respond(ref, actor=AGENT, body=f"answer {seed}", answers=answers,
                            channel=CHANNELS[seed % 4].value if seed % 5 else None)

    def _waive(self, seed: int) -> None:
        ref = self._ref(seed)
        for item in self.ledger.get_case(ref).open_item_ids()[:1]:
            self.ledger.waive_item(ref, actor=AGENT, item_id=item, reason="not needed")

    def _promise(self, seed: int) -> None:
        self.ledger.make_promise(self._ref(seed), actor=AGENT, channel=CHANNELS[seed % len(CHANNELS)].value,
                                 kind="callback", terms=f"call back {seed}",
                                 due_at=self.clock.now + timedelta(hours=1 + seed % 72))

    def _settle(self, seed: int) -> None:
        ref = self._ref(seed)
        for pid in self.ledger.get_case(ref).open_promise_ids()[:1]:
            how = seed % 3
            if how == 0:
                self.ledger.keep_promise(ref, actor=AGENT, promise_id=pid, evidence="call log")
            elif how == 1:
                self.ledger.withdraw_promise(ref, actor=AGENT, promise_id=pid, reason="offer ended", notice="sorry")
            else:
                self.ledger.break_promise(ref, actor=AGENT, promise_id=pid, reason="nobody called")

    def _deliver(self, seed: int) -> None:
        ref = self._ref(seed)
        pending = [m for m, s in self.ledger.get_case(ref).messages.items()
                   if not m.startswith("C") and s.delivered_at is None]
        if pending:
            self.ledger.record_delivery(ref, message_id=pending[seed % len(pending)], delivered_at=self.clock.now)

    def _read(self, seed: int) -> None:
        ref = self._ref(seed)
        messages = list(self.ledger.get_case(ref).messages)
        actor = Actor.parse("customer:c1") if seed % 2 else AGENT
        self.ledger.record_read(ref, actor=actor, message_id=messages[seed % len(messages)])

    def _close(self, seed: int) -> None:
        ref = self._ref(seed)
        case = self.ledger.get_case(ref)
        waive = {i: "waived" for i in case.open_item_ids()} | {p: "waived" for p in case.open_promise_ids()}
        self.ledger.close_case(ref, actor=AGENT, reason="done", notice="closed", waive=waive if seed % 3 else {})

    def _cancel(self, seed: int) -> None:
        self.ledger.cancel_case(self._ref(seed), actor=AGENT, reason="duplicate", notice="cancelled")

    def _reopen(self, seed: int) -> None:
        self.ledger.reopen_case(self._ref(seed), actor=AGENT, reason="again", notice="open again")

    def _assign(self, seed: int) -> None:
        self.ledger.assign(self._ref(seed), actor=AGENT, assignee=f"agent{seed % 3}", team=f"team{seed % 2}")

    def _handoff(self, seed: int) -> None:
        self.ledger.hand_off(self._ref(seed), actor=AGENT, to_assignee=f"agent{seed % 4}", note="see brief")

    def _escalate(self, seed: int) -> None:
        self.ledger.escalate_to_human(self._ref(seed), actor=Actor.parse("automation:bot"), bot_id="bot",
                                      waiting_since=self.clock.now - timedelta(minutes=1 + seed % 30),
                                      to_team="humans" if seed % 2 else None, reason="asked for a human")

    def _propose(self, seed: int) -> None:
        if seed % 2:
            self.ledger.propose_action(self._ref(seed), actor=Actor.parse("automation:rule"), rule_id="rule",
                                       action="lower_card_limit", params={"limit": str(seed % 900)},
                                       rationale="declines")
        else:
            self.ledger.propose_action(self._ref(seed), actor=Actor.parse("automation:rule"), rule_id="idle",
                                       action="change_status",
                                       params={"to": "on_hold", "reason": "idle", "notice": "on hold"},
                                       rationale="idle")

    def _decide(self, seed: int) -> None:
        ref = self._ref(seed)
        proposed = [x for x, p in self.ledger.get_case(ref).proposals.items() if p.status == "proposed"]
        for pid in proposed[:1]:
            if seed % 3:
                self.ledger.approve_action(ref, actor=AGENT, proposal_id=pid)
            else:
                self.ledger.reject_action(ref, actor=AGENT, proposal_id=pid, reason="no")

    def _status(self, seed: int) -> None:
        self.ledger.change_status(self._ref(seed), actor=AGENT, to_status=("in_progress", "waiting_on_customer",
                                  "on_hold")[seed % 3], reason="working", notice="we are on it")

    def _erase(self, seed: int) -> None:
        self.ledger.erase_customer(self.ledger.get_case(self._ref(seed)).customer_id, reason="art. 17 request")

    def _hold(self, seed: int) -> None:
        self.ledger.place_legal_hold(self.ledger.get_case(self._ref(seed)).customer_id, reason="litigation")

    def _release(self, seed: int) -> None:
        self.ledger.release_legal_hold(self.ledger.get_case(self._ref(seed)).customer_id, reason="closed")

    def _tick(self, seed: int) -> None:
        self.clock.advance(hours=seed % 48)
        self.ledger.tick()


@contextmanager
def generated_ledger() -> Iterator[tuple[CaseLedger, Scenario, Path]]:
    with tempfile.TemporaryDirectory() as tmp:
        clock = FakeClock()
        ledger = CaseLedger(LedgerSettings.resolve(database=str(Path(tmp) / "ledger.sqlite")), clock=clock)
        try:
            yield ledger, Scenario(ledger, clock), Path(tmp)
        finally:
            ledger.close()


steps_strategy = st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 2**16)), min_size=1, max_size=40)
PROPERTY_SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


def built_ins() -> list[Projection]:
    return load_projections(None)


def snapshot(views: ViewStore) -> dict[str, Any]:
    return {p.name: views.snapshot(p.tables) for p in built_ins()}


def catch_up(views: ViewStore, source: Any, *, batch_size: int = 1000, projections: list[Projection] | None = None) -> None:
    ProjectionRunner(projections or built_ins(), views, source, batch_size=batch_size).run(until_caught_up=True)


def schema_url(database_url: str) -> str:
    """A fresh schema in a PostgreSQL database: cheap isolation for each hypothesis example."""
    return database_url + ("&" if "?" in database_url else "?") + f"schema=s_{uuid.uuid4().hex[:10]}"


# -- the properties ---------------------------------------------------------------------------------------


@settings(max_examples=50, **PROPERTY_SETTINGS)  # 80 before erasures joined the steps: the suite stays under 15 min  # type: ignore[arg-type]
@given(steps=steps_strategy)
def test_incremental_equals_rebuilt_and_agrees_with_the_aggregates(steps: list[tuple[str, int]]) -> None:
    with generated_ledger() as (ledger, scenario, tmp), open_views(str(tmp / "views.sqlite")) as views:
        for action, seed in steps:
            scenario.apply(action, seed)
            if seed % 4 == 0:  # a fresh runner with small batches, as after a restart
                catch_up(views, StoreEventSource(ledger), batch_size=1 + seed % 5)
        catch_up(views, StoreEventSource(ledger), batch_size=3)
        incremental = snapshot(views)
        for projection in built_ins():
            assert rebuild(projection, views, StoreEventSource(ledger), batch_size=7).swapped
        assert snapshot(views) == incremental

        cases = {c.reference: c for c in (ledger.repository.get(i) for i in ledger.case_ids())}
        rows = incremental["case_state"]["case_state"]
        assert {r["reference"] for r in rows} == set(cases)
        for row in rows:  # views keep personal data sealed: revealed (or [erased]) as every query does
            view = CaseView(ledger.reveal(row))
            assert render.case_record(view) == render.case_record(cases[row["reference"]])
            assert view.brief() == cases[row["reference"]].brief()

        for later in (timedelta(0), timedelta(days=1), timedelta(days=40)):
            now = scenario.clock.now + later
            found = {(r["reference"], r["kind"], r["target_id"]) for r in overdue(views, now, unrecorded_only=True)}
            due = {(ref, kind, target) for ref, c in cases.items() for kind, target, _ in c.due_deadlines(now)}
            assert found == due

        timeline = incremental["timeline"]["timeline"]
        stored = ledger.recorder.select_notifications(start=1, limit=100_000)
        assert [r["position"] for r in timeline] == [n.id for n in stored]
        for identity in CUSTOMERS:
            try:
                history = ledger.history(str(identity))
            except CaseLedgerError:
                continue
            customer_id = ledger.resolve_customer(str(identity))
            mine = {r["event_id"] for r in timeline if r["customer_id"] == customer_id}
            assert mine == {str(e.event_id) for e in history}


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


class Tally(Projection):
    """Counts events per type, keeps one row per case and logs every position (a test projection)."""

    name = "tally"
    tables = (
        Table("tally_types", {"event_type": TEXT, "n": INT}, key=("event_type",), kind=COUNTERS),
        Table("tally_cases", {"case_id": TEXT, "reference": TEXT, "events": INT}, key=("case_id",)),
        Table("tally_log", {"position": INT, "event_type": TEXT}, key=("position",), kind=LOG),
    )

    def on_CaseOpened(self, tx: Tx, event: Any) -> None:
        tx.put("tally_cases", {"case_id": str(event.originator_id), "reference": event.reference, "events": 0})
        self.on_event(tx, event)

    def on_event(self, tx: Tx, event: Any) -> None:
        name = type(event).__name__
        tx.add("tally_types", name, n=1)
        tx.append("tally_log", {"position": tx.position, "event_type": name})
        case = tx.get("tally_cases", str(event.originator_id))
        if case is not None:
            case["events"] += 1
            tx.put("tally_cases", case)


class TallyV2(Tally):
    """The same projection after a code change."""

    version = 2


def record_contacts(ledger: CaseLedger, n: int, start: int = 0) -> None:
    with ledger.unit_of_work():
        for i in range(start, start + n):
            ledger.record_contact(ContactDraft(
                channel="email", channel_message_id=f"c{i}", identity=Identity.parse(f"email:c{i % 5}@example.com"),
                items=("where is my parcel?",)))


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


def test_a_projection_follows_one_source_until_rebuilt_from_another(sqlite_ledger: CaseLedger, tmp_path: Path) -> None:
    record_contacts(sqlite_ledger, 2)
    settings = KafkaSettings(bootstrap_servers="localhost:1", events_topic="elsewhere")
    with open_views(str(tmp_path / "v.sqlite")) as views:
        ProjectionRunner([Tally()], views, StoreEventSource(sqlite_ledger)).run(until_caught_up=True)
        with pytest.raises(ConfigurationError, match=r"follows store, not kafka:elsewhere; .* --source kafka"):
            ProjectionRunner([Tally()], views, KafkaEventSource(settings)).prepare()


def test_a_handler_named_after_no_event_type_is_refused_with_the_known_ones() -> None:
    class Typo(Tally):
        name = "typo"

        def on_ContactRecieved(self, tx: Tx, event: Any) -> None:
            pass

    with pytest.raises(ConfigurationError, match=r"no event type 'ContactRecieved'.*ContactReceived"):
        Typo().handlers()


def test_every_built_in_loads_and_handles_known_event_types() -> None:
    for name in BUILT_INS:
        projection = load_projections([name])[0]
        assert projection.name == name and projection.handlers()
    with pytest.raises(ConfigurationError, match="module:Class"):
        load_projections(["nope"])


@pytest.mark.kafka
@pytest.mark.postgres
@pytest.mark.parametrize("consumer", ["kafka-python", "confluent"])
def test_a_parallel_rebuild_from_kafka_equals_the_store_built_views(
    tmp_path: Path, views_database: str, kafka_bootstrap: str, consumer: str
) -> None:
    from caseledger.ledger.bench.rebuild import generate_ledger
    from caseledger.projections.parallel import rebuild_in_parallel

    database = str(tmp_path / "ledger.sqlite")
    generate_ledger(database, 1500)
    kafka = fresh_topics(kafka_bootstrap, partitions=4, intake_partitions=1)
    ledger = CaseLedger(LedgerSettings.resolve(database=database))
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


def test_an_unknown_kafka_consumer_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="kafka-python, confluent"):
        kafka_source(KafkaSettings.resolve(bootstrap_servers="localhost:9"), consumer="librdkafka")
