"""A real PostgreSQL for the session (pgserver, or ``CASELEDGER_TEST_POSTGRES``), a fresh database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest


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
