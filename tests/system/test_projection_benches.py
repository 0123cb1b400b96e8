"""``caseledger bench rebuild`` and ``bench lag`` run end to end (small sizes) and report honestly."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from caseledger.cli.app import app
from caseledger.cli.bench.peer_case_state import differing_rows
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.kafka
runner = CliRunner(env={"CASELEDGER_DATABASE": None, "CASELEDGER_KAFKA_BOOTSTRAP": None, "COLUMNS": "200"})


def test_bench_rebuild_rebuilds_every_event_and_reports_its_baseline_and_its_peer(
    kafka_bootstrap: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    views = postgres.new_database()
    result = runner.invoke(app, ["bench", "rebuild", "--kafka", kafka_bootstrap, "-n", "3000",
                                 "--postgres", views, "--workers", "2",
                                 "--consumer", "confluent", "--output", str(tmp_path)])
    assert result.exit_code == 0, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    written = json.loads(next(tmp_path.glob("rebuild-*.json")).read_text())
    assert written["events"] >= 3000
    assert written["rows"]["timeline"] == written["events"]  # every event of the topic made it into the views
    assert written["rebuild_events_per_s"] > 0 and written["baseline_decode_per_s"] > 0
    assert written["ratio_to_baseline"] == pytest.approx(
        written["rebuild_events_per_s"] / written["baseline_decode_per_s"], rel=0.01)
    # Issue 29, the peer: case_state alone by caseledger's runner and by the quixstreams application, same
    # topic, compared row by row: the same cases, every column equal.
    peer = written["peer"]
    assert peer["rows"] == peer["peer_rows"] == written["rows"]["case_state"] > 0 and peer["differing_rows"] == 0
    assert peer["ratio"] == pytest.approx(peer["runner_events_per_s"] / peer["peer_events_per_s"], rel=0.01)
    assert "identical" in result.stdout and "caseledger ÷ peer" in result.stdout
    # The comparison sees one changed value of one row (a JSON column: compared as values, not as text).
    with psycopg.connect(views) as conn:
        conn.execute("UPDATE peer.case_state SET contacts = '[]' WHERE case_id = "
                     "(SELECT min(case_id) FROM peer.case_state)")
        conn.execute("UPDATE peer.case_state SET brief = brief::jsonb::text")  # the same values, other text
    assert differing_rows(views, "runner.case_state", "peer.case_state")[2] == 2


def test_bench_lag_sees_every_contact_in_case_state(kafka_bootstrap: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "lag", "--kafka", kafka_bootstrap, "--rate", "100", "--seconds", "2",
                                 "--workers", "2", "--consumer", "confluent", "--producer", "confluent",
                                 "--output", str(tmp_path)])
    assert result.exit_code == 0, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    assert "2 / confluent / confluent" in result.stdout
    written = json.loads(next(tmp_path.glob("lag-*.json")).read_text())
    assert written["contacts"] == 200 and written["seen"] == written["contacts"]
    assert 0 < written["p50_ms"] <= written["p90_ms"] <= written["p99_ms"] <= written["max_ms"]
    assert written["intake_workers"] == 2 and written["consumer"] == "confluent"
    seconds = written["per_second"]
    assert sum(row[1] for row in seconds) == 200 and [row[0] for row in seconds] == sorted({row[0] for row in seconds})
    assert max(row[3] for row in seconds) <= written["max_ms"] and "worst second" in result.stdout


def test_bench_lag_refuses_more_workers_than_intake_partitions(kafka_bootstrap: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "lag", "--kafka", kafka_bootstrap, "--workers", "99",
                                 "--output", str(tmp_path)])
    assert result.exit_code == 4 and "--workers 99" in result.stderr  # a configuration error, before any topic
