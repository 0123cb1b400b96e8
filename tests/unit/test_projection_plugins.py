"""Analysts' projections plugged in like the built-ins: entry points, the set `run` keeps, hints that work.

The plugin is the docs' worked example installed as pip leaves a distribution (tests/support/plugins.py);
tests/system/test_plugin_installed.py installs it with pip into a venv of its own.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from caseledger.cli.app import app
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.settings import LedgerSettings, Settings, StoreSettings
from caseledger.projections import open_views, read_status
from tests.support.projection_plugins import FCR, MODULE, installed_metadata
from tests.unit.test_projections_cli import runner, small  # noqa: F401  (the small ledger: a fixture, once per module)

BUILT_INS = {"case_state", "timeline", "deadlines", "channel_metrics"}


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Install the fcr plugin (with the given entry points) where importlib.metadata finds it."""

    def install(entry_points: dict[str, str] | None = None) -> Path:
        site = installed_metadata(tmp_path / "site", entry_points)
        monkeypatch.syspath_prepend(str(site))
        return site

    yield install
    sys.modules.pop(MODULE, None)


@pytest.fixture
def cli(tmp_path: Path, small: tuple[Path, Any]) -> Any:  # noqa: F811
    """The CLI on a copy of the small ledger."""
    for file in small[0].iterdir():
        shutil.copy(file, tmp_path / file.name)
    database = str(tmp_path / "cli.sqlite")

    def run(*args: str, code: int = 0, env: dict[str, str] | None = None) -> Result:
        result = runner.invoke(app, ["--database", database, *args], env=env)
        assert result.exit_code == code, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
        return result

    run.database = database  # type: ignore[attr-defined]
    return run


def by_channel(cli: Any) -> list[tuple[str, int, int]]:
    rows = json.loads(cli("projections", "query", "SELECT channel, closed, first_contact FROM fcr_by_channel "
                          "ORDER BY channel", "--json").stdout)
    return [(r["channel"], r["closed"], r["first_contact"]) for r in rows]


# Finding: `projections list` showed the analyst's projection with no tables; no entry points.
def test_an_installed_plugin_is_listed_with_its_tables_run_with_the_built_ins_and_rebuilt_by_name(
    cli: Any, plugin_site: Any
) -> None:
    plugin_site()
    listed = {row["name"]: row for row in json.loads(cli("projections", "list", "--json").stdout)}
    assert set(listed) == BUILT_INS | {"fcr"}
    assert listed["fcr"]["tables"] == ["fcr_cases", "fcr_by_channel"]
    assert (listed["fcr"]["origin"], listed["fcr"]["class"], listed["fcr"]["problem"]) == (
        "fcr-plugin 1.0", FCR["fcr"], None)
    assert "fcr_by_channel" in cli("projections", "list").stdout

    cli("projections", "run", "--once")  # every installed projection, by default
    assert {s["projection"] for s in json.loads(cli("projections", "status", "--json").stdout)} == BUILT_INS | {"fcr"}
    assert by_channel(cli) == [("email", 1, 1), ("phone", 1, 0)]
    assert json.loads(cli("projections", "status", "fcr", "--json").stdout)[0]["code_version"] == 1
    assert "Rebuilt fcr" in cli("projections", "rebuild", "fcr").stdout
    assert by_channel(cli) == [("email", 1, 1), ("phone", 1, 0)]


def test_broken_plugins_are_reported_by_list_and_never_take_the_built_ins_down(cli: Any, plugin_site: Any) -> None:
    plugin_site({**FCR, "gone": "no_such_module:Projection", "typo": f"{MODULE}:not_a_projection",
                 "case_state": FCR["fcr"], "misnamed": FCR["fcr"]})
    listed = json.loads(cli("projections", "list", "--json").stdout)
    assert {row["name"] for row in listed if row["problem"] is None} == BUILT_INS | {"fcr"}
    problems = {row["name"]: row["problem"] for row in listed if row["problem"]}
    assert set(problems) == {"gone", "typo", "misnamed", "case_state"}
    assert "cannot be imported: ModuleNotFoundError" in problems["gone"] and "fcr-plugin 1.0" in problems["gone"]
    assert "not a Projection subclass" in problems["typo"]
    assert "named 'fcr' in its class" in problems["misnamed"]
    assert "name of a built-in" in problems["case_state"]
    assert [(row["origin"], row["tables"]) for row in listed if row["name"] == "case_state"] == [
        ("built-in", ["case_state"]), ("fcr-plugin 1.0", [])]
    assert "cannot be imported" in cli("projections", "list").stdout

    ran = cli("projections", "run", "--once")
    assert "left out" in ran.stderr and "no_such_module" in ran.stderr
    assert {s["projection"] for s in json.loads(cli("projections", "status", "--json").stdout)} == BUILT_INS | {"fcr"}
    refused = cli("projections", "run", "gone", "--once", code=4)
    assert "cannot be imported" in refused.stderr and "reinstall" in refused.stderr


def test_an_unknown_name_says_what_is_installed_and_where_to_look(cli: Any, plugin_site: Any) -> None:
    plugin_site()
    refused = cli("projections", "rebuild", "fcrr", code=4)
    assert "installed plugin (fcr)" in refused.stderr and "caseledger projections list" in refused.stderr
    cli("projections", "list")  # the command the hint names works


def hinted_command(stderr: str) -> list[str]:
    """The `caseledger projections …` command an error tells the user to run, as arguments."""
    found = re.search(r"caseledger (projections rebuild [^\s;)]+(?: --\w+)?)", " ".join(stderr.split()))
    assert found is not None, stderr
    return found.group(1).split()


# Finding: after a version bump the error said `projections rebuild analyst`, which then failed "unknown
# projection". Each hint is run as given.
@pytest.mark.parametrize("installed", [True, False], ids=["plugin", "module-class"])
def test_after_a_version_bump_the_hint_names_a_rebuild_that_works(
    cli: Any, plugin_site: Any, installed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin_site(FCR if installed else {})
    spec = "fcr" if installed else FCR["fcr"]
    cli("projections", "run", spec, "--once")
    module = __import__(MODULE)
    monkeypatch.setattr(module.FirstContactResolution, "version", 2)
    refused = cli("projections", "run", spec, "--once", code=4)
    hint = hinted_command(refused.stderr)
    assert hint == ["projections", "rebuild", spec]
    assert "Rebuilt fcr" in cli(*hint).stdout
    cli("projections", "run", spec, "--once")
    assert json.loads(cli("projections", "status", "fcr", "--json").stdout)[0]["tables_version"] == 2
    if installed:
        return
    # the tables gone under the positions: that hint works too
    with open_views(cli.database) as views, views.transaction() as tx:
        tx.drop_table("fcr_cases")
    refused = cli("projections", "run", spec, "--once", code=4)
    assert "Rebuilt fcr" in cli(*hinted_command(refused.stderr)).stdout


# Finding: `caseledger run` kept only the built-ins up to date. Its projection services, run as `run` runs
# them (run_services), without the Kafka services beside them.
def test_caseledger_run_keeps_the_configured_set_up_to_date(cli: Any, plugin_site: Any) -> None:
    from caseledger.cli.backbone_commands import projection_services
    from caseledger.cli.common import Session
    from caseledger.ledger.runtime.supervisor import run_services

    plugin_site({**FCR, "gone": "no_such_module:Projection"})
    logged: list[str] = []

    class Log:
        def error(self, message: str, *args: Any) -> None:
            logged.append(message % args)

    def services_for(selection: str | None) -> dict[str, Any]:
        settings = Settings(store=StoreSettings(database=cli.database), projections=selection)
        session = Session(database=cli.database, policy=None, actor_given=None, now=None, zone=None,
                          settings=settings)
        return projection_services(session, None, "kafka-python", Log())  # type: ignore[arg-type]

    assert set(services_for(None)) == {"projections", "projections.fcr"}  # all installed, by default
    assert len(logged) == 1 and "no_such_module" in logged[0] and "left out" in logged[0]
    assert set(services_for("fcr")) == {"projections.fcr"}
    services = services_for("case_state, fcr")
    assert set(services) == {"projections", "projections.fcr"} and len(logged) == 1
    expected = {"case_state", "fcr"}
    stop = threading.Event()

    def caught_up() -> bool:
        with open_views(cli.database) as views:
            states = {st.projection: st.store_position for st in read_status(views)}
        return set(states) == expected and all(p is not None and p > 0 for p in states.values())

    thread = threading.Thread(target=run_services, args=(
        lambda: CaseLedger(LedgerSettings.resolve(database=cli.database)), services, stop))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not caught_up() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(30)
    assert caught_up()
    assert by_channel(cli) == [("email", 1, 1), ("phone", 1, 0)]


def test_a_selection_that_names_nothing_is_refused_with_an_example(cli: Any) -> None:
    refused = cli("projections", "run", "--once", code=4, env={"CASELEDGER_PROJECTIONS": " , "})
    assert "CASELEDGER_PROJECTIONS" in refused.stderr and "case_state,timeline" in refused.stderr


def test_help_never_reads_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plugins load lazily, in the commands that list or run projections: --help stays fast."""
    import caseledger.projections.registry as registry

    def scanned(**_: Any) -> Any:
        raise AssertionError("entry points read for --help")

    monkeypatch.setattr(registry, "entry_points", scanned)
    for args in (["--help"], ["projections", "--help"], ["projections", "run", "--help"], ["run", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output


def test_projections_following_different_sources_are_named_with_a_command_for_each(
    cli: Any, plugin_site: Any
) -> None:
    from caseledger.projections.views import STATE

    plugin_site()
    cli("projections", "run", "--once")
    with open_views(cli.database) as views, views.transaction() as tx:  # as if fcr followed the events topic
        row = tx.select_row(STATE, STATE.name, ("fcr", "live"))
        tx.upsert_rows(STATE, STATE.name, [{**row, "source": "kafka:caseledger.events"}])
    refused = cli("projections", "run", "--once", code=4)
    text = " ".join(refused.stderr.split())
    assert "kafka: fcr; store: case_state, timeline, deadlines, channel_metrics" in text
    found = re.search(r"`caseledger (projections run case_state[^`]*)`", text)
    assert found is not None and "`caseledger projections run fcr`" in text, text
    cli(*found.group(1).split(), "--once")  # the store's group, as the hint names it
