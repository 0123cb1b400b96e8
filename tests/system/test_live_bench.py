"""``caseledger bench live`` end to end at the smallest size: contacts on the intake topic, on their case pages and
in every open queue, the table printed and the JSON written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caseledger.cli.app import app


@pytest.mark.kafka
def test_bench_live_times_contacts_on_their_case_pages_and_in_every_queue(kafka_bootstrap: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "live", "--kafka", kafka_bootstrap, "--rate", "20", "--seconds", "2",
                                      "--cases", "4", "--queues", "2", "--output", str(tmp_path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "intake topic → queue p50 / p99 / max" in result.output
    [written] = tmp_path.glob("live-*.json")
    found = json.loads(written.read_text())
    assert found["failures"] == []
    assert found["published"] == 40 and found["seen"] == 40  # every contact on its case page
    assert found["queue_expected"] == 80 and found["queue_seen"] == 80  # and in both queues
    assert found["both_seen"] == 40 and 0 < found["both_p99_ms"] < 15_000
    assert found["agents"] == 2 and isinstance(found["target_met"], bool)
