"""Issue 27: `caseledger export events --source kafka` writes from the events topic what the store gives, and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caseledger.cli.app import app
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.directory import IntakeSource
from caseledger.ledger.settings import KafkaSettings
from tests.support.environment import ledger_settings
from tests.support.kafka_topics import fresh_topics, publish_all
from tests.support.projection_scenarios import record_contacts
from tests.support.stories import runner

pq = pytest.importorskip("pyarrow.parquet")


def export(database: str, out: Path, kafka: KafkaSettings | None = None) -> dict[str, object]:
    args = ["-d", database, "export", "events", "--out", str(out), "--json", "--batch", "40"]
    env = {}
    if kafka is not None:
        args += ["--source", "kafka", "--kafka", kafka.bootstrap_servers]
        env = {"CASELEDGER_EVENTS_TOPIC": kafka.events_topic}
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    summary: dict[str, object] = json.loads(result.stdout)
    return summary


def rows(out: Path) -> dict[int, dict[str, object]]:
    """Every exported row by position (a type's columns as its own files have them)."""
    found: dict[int, dict[str, object]] = {}
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        for row in pq.read_table(folder).to_pylist():
            assert row["position"] not in found
            found[row["position"]] = row
    return found


@pytest.mark.kafka
def test_the_topic_exports_what_the_store_does_and_resumes_per_partition(tmp_path: Path, kafka_bootstrap: str) -> None:
    kafka = fresh_topics(kafka_bootstrap, intake_partitions=1)
    database = str(tmp_path / "ledger.sqlite")
    ledger = CaseLedger(ledger_settings(database=database))
    try:
        record_contacts(ledger, 25)
        ledger.reject_intake(IntakeSource(topic="intake", partition=0, offset=1), reason="not Avro", raw=b"\x00",
                             kind="undecodable")
        publish_all(ledger, kafka)
        first = export(database, tmp_path / "topic", kafka)
        # A position for each partition that held events (keys by aggregate: a partition may hold none of 25 contacts').
        assert first["source"] == f"kafka:{kafka.events_topic}"
        assert first["positions"] and set(first["positions"]) <= {"0", "1", "2"}  # type: ignore[arg-type]
        record_contacts(ledger, 5, start=25)
        publish_all(ledger, kafka)
        second = export(database, tmp_path / "topic", kafka)
        assert second["events"] == ledger.recorder.max_notification_id() - first["events"]  # type: ignore[operator]
    finally:
        ledger.close()
    export(database, tmp_path / "store")
    assert rows(tmp_path / "topic") == rows(tmp_path / "store")
