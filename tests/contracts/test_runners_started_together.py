"""Projection runners started together on one views database (a consumer group's members) all start.

Finding (CI): one of three `projections run case_state --source kafka` on a new PostgreSQL views
database died at once with "projection case_state has positions but its tables case_state are gone":
it listed the tables before its transaction, another runner created them and recorded the
projection's state meanwhile, and it took that state for tables lost. Each runner now lists the
tables inside its transaction, after the other runners' schema changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.projections import ProjectionRunner, StoreEventSource, open_views
from caseledger.projections.case_state import CaseState
from tests.support.environment import ledger_settings


@pytest.fixture(params=["sqlite", "postgres"])
def views_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "views.sqlite")
    return str(request.getfixturevalue("postgres").new_database())


def test_a_runner_another_one_prepares_before_its_transaction_starts_all_the_same(
    views_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "ledger.sqlite")))
    try:
        with open_views(views_url) as first_views, open_views(views_url) as second_views:
            first = ProjectionRunner([CaseState()], first_views, StoreEventSource(ledger))
            second = ProjectionRunner([CaseState()], second_views, StoreEventSource(ledger))
            opened, listed = second_views.transaction, second_views.table_names
            calls: list[str] = []

            def table_names() -> set[str]:
                calls.append("listed")
                return listed()

            @contextmanager
            def after_the_first_prepared() -> Iterator[Any]:
                if "the other prepared" not in calls:  # its first transaction: the other runner prepares just before
                    calls.append("the other prepared")
                    first.prepare()
                with opened() as tx:
                    yield tx

            second_views.ensure_runner_tables()  # the runners' own tables exist: prepare's first transaction is its own
            monkeypatch.setattr(second_views, "table_names", table_names)
            monkeypatch.setattr(second_views, "transaction", after_the_first_prepared)
            second.prepare()  # before: ConfigurationError "has positions but its tables case_state are gone"
            assert "the other prepared" in calls
            monkeypatch.undo()
            second.run(until_caught_up=True)
    finally:
        ledger.close()
