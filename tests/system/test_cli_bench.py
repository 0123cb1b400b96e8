"""``caseledger bench cli`` runs end to end (small sizes) and reports each command against ``python -c pass``."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from caseledger.cli.app import app


def test_bench_cli_times_help_and_case_show_against_the_interpreter_start(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "cli", "--runs", "3", "--contacts", "2", "--output", str(tmp_path)],
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "caseledger --help ÷ python -c pass" in result.output
    [written] = tmp_path.glob("cli-*.json")
    found = json.loads(written.read_text())
    assert [t["command"] for t in found["timings"]] == ["python -c pass", "caseledger --help",
                                                        "caseledger case show REF"]
    for timing in found["timings"]:
        assert timing["runs"] == 3 and 0 < timing["min_ms"] <= timing["median_ms"]
