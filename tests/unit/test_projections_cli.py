"""The projection commands end to end, and the README's worked example run as written."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from caseledger.cli.app import app

runner = CliRunner(env={"CASELEDGER_DATABASE": None, "CASELEDGER_VIEWS": None, "CASELEDGER_KAFKA_BOOTSTRAP": None,
                        "CASELEDGER_ACTOR": None, "TZ": "UTC", "COLUMNS": "200"})
DOCS = Path(__file__).resolve().parents[2] / "docs" / "projections.md"


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    database = str(tmp_path / "cli.sqlite")

    def run(*args: str, code: int = 0) -> Result:
        result = runner.invoke(app, ["--database", database, *args])
        assert result.exit_code == code, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
        return result

    return run


AT = ("--now", "2026-03-02T08:00Z")  # the small ledger's story happened in the past: its deadlines are over


def contact(cli: Any, message_id: str, *items: str, channel: str = "email", extra: tuple[str, ...] = ()) -> str:
    args = [*AT, "contact", "record", "-c", channel, "-m", message_id, "--from", "email:jane@example.com"]
    for item in items:
        args += ["--item", item]
    return json.loads(cli(*args, *extra, "--json").stdout)["reference"]  # type: ignore[no-any-return]


def small_ledger(cli: Any) -> tuple[str, str, str]:
    """A case closed at its first contact (email), one closed after a follow-up (phone), one open (chat)."""
    first = contact(cli, "m-1", "Refund?")
    cli(*AT, "respond", first, "--body", "Refunded.", "--answers", "Q1")
    cli(*AT, "case", "close", first, "-r", "answered", "-n", "Closed.")
    second = contact(cli, "c-1", "New card?", channel="phone")
    contact(cli, "c-2", "Still no card", channel="phone", extra=("--case", second, "--follow-up"))
    cli(*AT, "respond", second, "--body", "Sent.", "--answers", "Q1,Q2")
    cli(*AT, "case", "close", second, "-r", "answered", "-n", "Closed.")
    third = contact(cli, "t-1", "Address change?", channel="chat")
    cli(*AT, "promise", "make", third, "-c", "chat", "-k", "callback", "-t", "call back", "--due", "2026-03-02T10:00Z")
    return first, second, third


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[str, str, str]]:
    """The small ledger's folder, generated once for the module, and its cases' references."""
    folder = tmp_path_factory.mktemp("small")
    database = str(folder / "cli.sqlite")

    def run(*args: str) -> Result:
        result = runner.invoke(app, ["--database", database, *args])
        assert result.exit_code == 0, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
        return result

    return folder, small_ledger(run)


@pytest.fixture
def small_cli(cli: Any, small: tuple[Path, tuple[str, str, str]], tmp_path: Path) -> tuple[Any, tuple[str, str, str]]:
    """The CLI on a copy of the small ledger, and its cases' references."""
    for file in small[0].iterdir():
        shutil.copy(file, tmp_path / file.name)
    return cli, small[1]


def test_run_status_list_rebuild_and_query(small_cli: tuple[Any, tuple[str, str, str]]) -> None:
    cli, (first, _second, third) = small_cli
    cli("projections", "run", "--once")
    status = json.loads(cli("projections", "status", "--json").stdout)
    assert {s["projection"] for s in status} == {"case_state", "timeline", "deadlines", "channel_metrics"}
    assert {(s["source"], s["lag"], s["slot"]) for s in status} == {("store", 0, "live")}
    listed = json.loads(cli("projections", "list", "--json").stdout)
    assert {p["name"]: p["follows"] for p in listed}["case_state"] == "store"

    rebuilt = cli("projections", "rebuild", "timeline").stdout
    assert "Rebuilt timeline" in rebuilt and "events/s" in rebuilt
    rows = json.loads(cli("projections", "query", "SELECT status, COUNT(*) AS n FROM case_state GROUP BY status "
                          "ORDER BY status", "--json").stdout)
    assert rows == [{"status": "closed", "n": 2}, {"status": "open", "n": 1}]
    refused = cli("projections", "query", "SELECT * FROM nowhere", code=4)
    assert "projections run" in refused.stderr
    history = json.loads(cli("history", "email:jane@example.com", "--json").stdout)
    assert {h["case_reference"] for h in history} >= {first, third}


def test_overdue_and_metrics_read_their_projections(small_cli: tuple[Any, tuple[str, str, str]]) -> None:
    cli, (_first, _second, third) = small_cli
    late = json.loads(cli("overdue", "--json").stdout)
    assert {(d["reference"], d["kind"], d["target_id"], d["recorded"]) for d in late} == {
        (third, "promise", "P1", False), (third, "acknowledgement", "ACK1", False), (third, "response", "C1", False)
    }
    assert json.loads(cli("--now", "2026-03-02T09:00Z", "overdue", "--json").stdout) == []
    assert "1 missed deadline" not in cli("tick").stdout
    assert all(d["recorded"] for d in json.loads(cli("overdue", "--json").stdout))
    assert "promise" in cli("overdue", "--kind", "promise").stdout

    metrics = {m["channel"]: m for m in json.loads(cli("metrics", "--json").stdout)}
    assert metrics["phone"]["contacts"] == 2 and metrics["phone"]["follow_ups_per_case"] == 1.0
    assert metrics["email"]["first_responses"] == 1 and metrics["chat"]["promises_made"] == 1
    by_segment = json.loads(cli("metrics", "--by", "segment", "--json").stdout)
    assert [m["segment"] for m in by_segment] == ["-"] and by_segment[0]["contacts"] == 4
    assert "Channel metrics" in cli("metrics", "--by", "both").stdout


def test_the_worked_example_of_the_readme_runs_as_written(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = re.search(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    assert code is not None
    (tmp_path / "fcr.py").write_text(code.group(1), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    small_ledger(cli)

    cli("projections", "run", "fcr:FirstContactResolution", "--once")
    query = re.search(r'projections query \\\n\s+"(.*?)"', DOCS.read_text(encoding="utf-8"), re.S)
    assert query is not None
    rows = json.loads(cli("projections", "query", " ".join(query.group(1).split()), "--json").stdout)
    assert [(r["channel"], r["closed"], r["first_contact"], r["fcr_percent"]) for r in rows] == [
        ("email", 1, 1, 100.0), ("phone", 1, 0, 0.0)
    ]
    assert json.loads(cli("projections", "status", "fcr", "--json").stdout)[0]["lag"] == 0
