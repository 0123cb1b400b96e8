"""A projection plugin pip-installed beside the caseledger wheel: listed, run with the built-ins, rebuilt,
and kept up to date by `caseledger run` (the fixtures: tests/support/projection_plugins.py)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

from tests.support.projection_plugins import PluginVenv

BUILT_INS = {"case_state", "timeline", "deadlines", "channel_metrics"}


def a_closed_case(venv: PluginVenv, database: str, cwd: Path, *, channel: str = "email", message: str = "m-1") -> None:
    """One case opened on ``channel`` and closed after one response: resolved at its first contact."""
    def ok(*args: str) -> str:
        done = venv.caseledger("--database", database, *args, cwd=cwd)
        assert done.returncode == 0, done.stderr
        return done.stdout

    reference = json.loads(ok("contact", "record", "-c", channel, "-m", message, "--from", "email:jane@example.com",
                              "--item", "Refund?", "--json"))["reference"]
    ok("respond", reference, "--body", "Refunded.", "--answers", "Q1")
    ok("case", "close", reference, "-r", "answered", "-n", "Closed.")


def fcr_rows(database: str) -> list[tuple[str, int, int]]:
    with sqlite3.connect(database) as db:
        try:
            return list(db.execute("SELECT channel, closed, first_contact FROM fcr_by_channel ORDER BY channel"))
        except sqlite3.OperationalError:  # not created yet
            return []


# One test, on the Kafka worker (tests/conftest.py): the venv is built once, where `caseledger run` needs it.
def test_the_installed_plugin_is_listed_run_rebuilt_and_kept_up_to_date_by_caseledger_run(
    plugin_venv: PluginVenv, tmp_path: Path, kafka_bootstrap: str
) -> None:
    database = str(tmp_path / "ledger.sqlite")
    a_closed_case(plugin_venv, database, tmp_path)
    listed = plugin_venv.caseledger("--database", database, "projections", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    fcr = next(row for row in json.loads(listed.stdout) if row["name"] == "fcr")
    assert (fcr["origin"], fcr["tables"], fcr["problem"]) == ("fcr-plugin 1.0", ["fcr_cases", "fcr_by_channel"], None)

    ran = plugin_venv.caseledger("--database", database, "projections", "run", "--once", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert fcr_rows(database) == [("email", 1, 1)]
    rebuilt = plugin_venv.caseledger("--database", database, "projections", "rebuild", "fcr", cwd=tmp_path)
    assert rebuilt.returncode == 0 and "Rebuilt fcr" in rebuilt.stdout, rebuilt.stderr
    assert fcr_rows(database) == [("email", 1, 1)]

    # `caseledger run` (every installed projection by default) keeps fcr up to date with what is recorded meanwhile.
    suffix = uuid.uuid4().hex[:8]  # fresh topics, created by `run` itself, one partition each
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "CASELEDGER_INTAKE_TOPIC": f"intake-{suffix}", "CASELEDGER_EVENTS_TOPIC": f"events-{suffix}",
        "CASELEDGER_INTAKE_PARTITIONS": "1", "CASELEDGER_EVENTS_PARTITIONS": "1",
        "CASELEDGER_INTAKE_KEY_SALT": "the tests' deployment salt"}
    process = subprocess.Popen([str(plugin_venv.bin / "caseledger"), "--database", database, "run", "--kafka",
                                kafka_bootstrap], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        a_closed_case(plugin_venv, database, tmp_path, channel="sms", message="s-1")
        deadline = time.monotonic() + 90
        while len(fcr_rows(database)) < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
    assert fcr_rows(database) == [("email", 1, 1), ("sms", 1, 1)], err
    assert process.returncode == 0, err
    assert "projections.fcr" in err
    status = plugin_venv.caseledger("--database", database, "projections", "status", "--json", cwd=tmp_path)
    assert {row["projection"] for row in json.loads(status.stdout)} == BUILT_INS | {"fcr"}
