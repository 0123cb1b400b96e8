"""Benchmarks say what they need. Issue 25's leftover: ``bench intake --verdicts`` on PostgreSQL without a
key-encryption key ended with "no verdict within 120 s"; issue 29: ``bench lag`` (and ``bench intake``) on
PostgreSQL without one died with "a benchmarked service died". A benchmark's ledger is thrown away with its run:
it makes a throw-away key in its temporary folder (never printed, gone with the run), and a key the caller set
that cannot be read is said before anything starts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caseledger.cli.app import app
from caseledger.ledger.privacy import kek
from tests.support.postgres import PostgresServer


@pytest.mark.parametrize("verdicts", [True, False])
def test_bench_intake_with_a_key_encryption_key_file_it_cannot_read_says_so_at_once(
        postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, verdicts: bool) -> None:
    monkeypatch.delenv("CASELEDGER_KEK", raising=False)
    monkeypatch.setenv("CASELEDGER_KEK_FILE", str(tmp_path / "missing.kek"))
    started = time.monotonic()
    result = CliRunner().invoke(app, ["bench", "intake", "--kafka", "127.0.0.1:9", "--database",
                                      postgres.new_database(), "-n", "100", *(["--verdicts"] if verdicts else [])])
    said = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code != 0
    assert "key-encryption key" in said and "caseledger keys new-kek" in said, said
    assert "no verdict" not in said and "died" not in said and time.monotonic() - started < 60


def test_bench_lag_on_postgresql_without_a_key_encryption_key_makes_a_throwaway_one(
        postgres: PostgresServer, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CASELEDGER_KEK", raising=False)
    monkeypatch.delenv("CASELEDGER_KEK_FILE", raising=False)
    made: list[kek.KeyEncryptionKey] = []
    write = kek.write_new_kek
    monkeypatch.setattr(kek, "write_new_kek", lambda path: made.append(write(path)) or made[-1])
    result = CliRunner().invoke(app, ["bench", "lag", "--kafka", kafka_bootstrap, "--database", postgres.new_database(),
                                      "--rate", "20", "--seconds", "1", "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert json.loads(next((tmp_path / "out").glob("lag-*.json")).read_text())["seen"] == 20
    # The key was the run's own: never printed or written with the result, gone with the run's folder.
    [key] = made
    written = result.output + next((tmp_path / "out").glob("lag-*.json")).read_text()
    assert kek.base64.b64encode(key.key).decode() not in written and key.key.hex() not in written
    assert not Path(key.origin).exists()
