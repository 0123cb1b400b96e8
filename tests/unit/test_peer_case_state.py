"""bench rebuild's quixstreams peer makes, from the same events, the rows the case state projection makes (issue 29).

The benchmark compares the two tables row by row on its generated stories; those stories never miss a
deadline, propose an action or withdraw a promise. Here the generated commands of the projection tests
(every kind of event) go through the peer's own functions — the ``ce_type`` filter, the update of the
row kept in quixstreams' state (JSON, as quixstreams stores it), the row as the sink writes it — and
through caseledger's runner, and the rows must be equal.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings

from caseledger.cli.bench.peer_case_state import COLUMNS, JSON_COLUMNS, apply_event, handled, table_row
from caseledger.ledger.domain.catalog import name_of_topic
from caseledger.projections import StoreEventSource, open_views
from caseledger.projections.case_state import CaseState
from tests.support.examples import examples
from tests.support.projection_scenarios import PROPERTY_SETTINGS, catch_up, generated_ledger, steps_strategy


class JsonState:
    """quixstreams' ``State`` as the peer uses it: values by key, serialized as JSON between events."""

    def __init__(self) -> None:
        self.stored: dict[str, str] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(self.stored[key]) if key in self.stored else default

    def set(self, key: str, value: Any) -> None:
        self.stored[key] = json.dumps(value)


@settings(max_examples=examples(30), **PROPERTY_SETTINGS)  # type: ignore[arg-type]
@given(steps=steps_strategy)
def test_the_peer_makes_the_rows_of_the_case_state_projection(steps: list[tuple[str, int]]) -> None:
    with generated_ledger() as (ledger, scenario, tmp), open_views(str(tmp / "views.sqlite")) as views:
        for action, seed in steps:
            scenario.apply(action, seed)
        catch_up(views, StoreEventSource(ledger), projections=[CaseState()])
        expected = views.snapshot(CaseState.tables)["case_state"]
        state = JsonState()
        for stored in ledger.recorder.select_notifications(start=1, limit=1_000_000):
            headers = [("ce_sequence", str(stored.id).encode()),
                       ("ce_type", f"caseledger.events.{name_of_topic(stored.topic)}".encode())]
            if handled(bytes(stored.state), None, 0, headers):
                apply_event(bytes(stored.state), state)
        rows = [dict(zip(COLUMNS, table_row(state.get(case_id)), strict=True)) for case_id in sorted(state.stored)]
        for row in rows:
            row.update({column: json.loads(row[column]) for column in JSON_COLUMNS})
        assert rows == expected
