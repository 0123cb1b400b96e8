"""Ledger factories: a fresh store on each backend (``database``), ledgers built on it and closed after."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from caseledger.ledger.application import CaseLedger
from tests.support.clock import FakeClock
from tests.support.environment import ledger_settings
from tests.support.postgres import PostgresServer


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store on each backend: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "ledger.sqlite")
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()


@pytest.fixture
def make_ledger(database: str, clock: FakeClock) -> Iterator[Callable[..., CaseLedger]]:
    """Builds ledgers on the test's store; every one built is closed at the end."""
    built: list[CaseLedger] = []

    def make(**options: Any) -> CaseLedger:
        options.setdefault("clock", clock)
        app = CaseLedger(ledger_settings(database=database), **options)
        built.append(app)
        return app

    yield make
    for app in built:
        app.close()


@pytest.fixture
def ledger(make_ledger: Callable[..., CaseLedger]) -> CaseLedger:
    return make_ledger()


@pytest.fixture
def sqlite_ledger(tmp_path: Path, clock: FakeClock) -> Iterator[CaseLedger]:
    app = CaseLedger(ledger_settings(database=str(tmp_path / "l.sqlite")), clock=clock)
    yield app
    app.close()
