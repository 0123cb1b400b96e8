"""Projections on SQLite files: incremental equals rebuilt, and agrees with the aggregates.

Hypothesis drives random command sequences through the ledger API on a fresh SQLite ledger; the
events they record are projected incrementally (in small batches, by fresh runners, as after
restarts) and rebuilt from the beginning, and the views are the same. The case state must also say
exactly what the Case aggregate says, and the deadlines view must find exactly the deadlines the
aggregates find due. A projection follows one source until rebuilt; handlers and consumers are
checked when loaded. On PostgreSQL and from Kafka: tests/integration/test_projections.py.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

from caseledger.cli import render
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.errors import CaseLedgerError, ConfigurationError
from caseledger.ledger.settings import KafkaSettings
from caseledger.projections import (
    BUILT_INS,
    KafkaEventSource,
    ProjectionRunner,
    StoreEventSource,
    Tx,
    kafka_source,
    load_projections,
    open_views,
    rebuild,
)
from caseledger.projections.case_state import CaseView
from caseledger.projections.deadlines import overdue
from tests.support.examples import examples
from tests.support.projection_scenarios import (
    CUSTOMERS,
    PROPERTY_SETTINGS,
    Tally,
    built_ins,
    catch_up,
    generated_ledger,
    record_contacts,
    snapshot,
    steps_strategy,
)

# -- the properties ---------------------------------------------------------------------------------------


@settings(max_examples=examples(50), **PROPERTY_SETTINGS)  # 80 before erasures joined the steps: the suite stays under 15 min  # type: ignore[arg-type]
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


# -- the framework's rules ---------------------------------------------------------------------------------


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


def test_an_unknown_kafka_consumer_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="kafka-python, confluent"):
        kafka_source(KafkaSettings.resolve(bootstrap_servers="localhost:9"), consumer="librdkafka")
