"""Issue 25's leftover: ``bench intake --verdicts`` on PostgreSQL without a key-encryption key ended with "no verdict
within 120 s" (its intake worker could not start) instead of the cause. The bench checks the ledger's key before it
starts anything, and stops as soon as a service it started stops."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from caseledger.cli.app import app
from tests.support.postgres import PostgresServer


@pytest.mark.parametrize("verdicts", [True, False])
def test_bench_intake_on_postgresql_without_a_key_encryption_key_says_so_at_once(
        postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch, verdicts: bool) -> None:
    monkeypatch.delenv("CASELEDGER_KEK", raising=False)
    monkeypatch.delenv("CASELEDGER_KEK_FILE", raising=False)
    started = time.monotonic()
    result = CliRunner().invoke(app, ["bench", "intake", "--kafka", "127.0.0.1:9", "--database",
                                      postgres.new_database(), "-n", "100", *(["--verdicts"] if verdicts else [])])
    said = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code != 0
    assert "key-encryption key" in said and "caseledger keys new-kek" in said, said
    assert "no verdict" not in said and time.monotonic() - started < 60
