"""``caseledger bench soak`` runs end to end at the smallest size and reports what it measured (issue 29)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caseledger.cli.app import app

pytestmark = pytest.mark.kafka
runner = CliRunner(env={"CASELEDGER_DATABASE": None, "CASELEDGER_KAFKA_BOOTSTRAP": None, "COLUMNS": "200"})


def test_bench_soak_samples_every_process_and_accounts_every_contact(kafka_bootstrap: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "soak", "--kafka", kafka_bootstrap, "--minutes", "0.3", "--rate", "20",
                                 "--warmup-minutes", "0.1", "--sample-seconds", "2", "--consumer", "confluent",
                                 "--max-growth", "1000",  # 18 s judge no growth: the benchmark's long run does
                                 "--producer", "confluent", "--output", str(tmp_path)])
    assert result.exit_code == 0, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    written = json.loads(next(tmp_path.glob("soak-*.json")).read_text())
    assert written["errors"] == [] and "verdict" in result.stdout and written["run_processes"] is True
    assert written["published"] == 360 and written["recorded"] == written["published"] and written["refused"] == 0
    assert written["publish_rate"] == pytest.approx(20, rel=0.2)  # the steady publisher keeps a low rate too
    assert written["reads"] > 50 and written["read_failures"] == written["server_errors"] == 0
    names = {p["name"] for p in written["processes"]}
    assert {"caseledger run", "caseledger serve"} <= names
    # run --processes by default: each service's process sampled and named
    assert {"caseledger run: intake", "caseledger run: publisher", "caseledger run: projections"} <= names
    for process in written["processes"]:
        assert len(process["samples"]) >= 8  # every 2 s for 18 s
        assert process["after_warmup_mb"] > 0 and process["final_mb"] == pytest.approx(
            process["after_warmup_mb"] * (1 + process["growth"]))
