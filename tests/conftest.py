"""Session fixtures: a real PostgreSQL (pgserver), a real Kafka broker, Apache Avro for Java, ledger factories.

Nothing here skips: when a server cannot start, the tests that need it error, and CI fails.
``CASELEDGER_TEST_POSTGRES`` (an admin URL) and ``CASELEDGER_TEST_KAFKA`` (bootstrap servers)
point the same tests at external servers, e.g. the compose stack.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.settings import LedgerSettings
from tests.avro_java import avro_java  # noqa: F401  (session fixture)
from tests.kafka_broker import kafka_bootstrap, kafka_broker  # noqa: F401  (session fixtures)

# One key-encryption key for the session's ledgers (PostgreSQL ones need one; CLI subprocesses inherit
# it). tests/test_privacy.py unsets it to check the embedded default, a key file beside the database.
os.environ.setdefault("CASELEDGER_KEK", base64.b64encode(os.urandom(32)).decode())


class PostgresServer:
    """Creates one fresh database per test on a real PostgreSQL server."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url

    def new_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        base, _, query = self.admin_url.partition("?")
        base = base.rsplit("/", 1)[0]
        return f"{base}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    external = os.environ.get("CASELEDGER_TEST_POSTGRES")
    if external:
        yield PostgresServer(external)
        return
    import pgserver  # a missing test extra must fail the run, not skip it

    server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    try:
        yield PostgresServer(server.get_uri())
    finally:
        server.cleanup()


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday, 09:00 Paris

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        from datetime import timedelta

        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


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
        app = CaseLedger(LedgerSettings.resolve(database=database), **options)
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
    app = CaseLedger(LedgerSettings.resolve(database=str(tmp_path / "l.sqlite")), clock=clock)
    yield app
    app.close()
