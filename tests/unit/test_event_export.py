"""Issue 27, "every event out": `caseledger export events` read by DuckDB, polars and pandas; docs/analysts.md run.

One generated ledger for the module (tests/support/analyst_ledger.py: ~200 contacts over four months, an
erased customer, an intake rejection), exported once; what a test changes, it changes in a copy.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

from caseledger.ledger.domain.catalog import name_of_topic
from tests.support.analyst_ledger import Trial, generate
from tests.support.examples import examples
from tests.support.projection_scenarios import PROPERTY_SETTINGS, generated_ledger, steps_strategy
from tests.support.stories import run

duckdb = pytest.importorskip("duckdb")
pl = pytest.importorskip("polars")
pd = pytest.importorskip("pandas")
pq = pytest.importorskip("pyarrow.parquet")

#: One worker builds the module's ledger once (pytest-xdist --dist loadgroup), rather than each worker its own.
pytestmark = pytest.mark.xdist_group("event_export")

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "analysts.md"


@pytest.fixture(scope="module")
def trial(tmp_path_factory: pytest.TempPathFactory) -> Trial:
    return generate(tmp_path_factory.mktemp("trial"))


@pytest.fixture(scope="module")
def exported(trial: Trial) -> Path:
    out = trial.database.parent / "events"
    run(str(trial.database), "export", "events", "--out", str(out), "--json")
    return out


def stored(database: Path) -> tuple[Counter[str], Counter[str], int]:
    """Per type, from the store itself: how many events, and the sum of their aggregate versions; the last position."""
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT topic, originator_version FROM stored_events").fetchall()
        last = db.execute("SELECT max(rowid) FROM stored_events").fetchone()[0]
    counts: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    for topic, version in rows:
        counts[name_of_topic(topic)] += 1
        versions[name_of_topic(topic)] += version
    return counts, versions, last


def test_every_event_is_exported_and_duckdb_and_polars_agree_with_the_store(trial: Trial, exported: Path) -> None:
    """Finding: no bulk export (history --export one customer at a time, without events of no customer)."""
    counts, versions, _last = stored(trial.database)
    assert sum(counts.values()) == trial.events
    every = duckdb.sql(f"SELECT event_type, count(*) AS n, sum(aggregate_version) AS v, count(DISTINCT position) AS p "
                       f"FROM read_parquet('{exported}/*/*.parquet', union_by_name = true) GROUP BY ALL").fetchall()
    assert {t: n for t, n, _v, _p in every} == dict(counts)
    assert {t: v for t, _n, v, _p in every} == dict(versions)
    assert sum(p for *_, p in every) == trial.events  # every position once
    for name, n in counts.items():
        frame = pl.read_parquet(f"{exported}/{name}/*.parquet")
        assert frame.height == n and frame["aggregate_version"].sum() == versions[name]
    rejected = pl.read_parquet(f"{exported}/IntakeRejected/*.parquet")
    assert rejected["customer_id"].null_count() == rejected.height == 1  # an event of no customer
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["events"] == trial.events and manifest["counts"] == dict(counts)
    assert manifest["positions"] == {"0": trial.events}
    for part in manifest["files"]:  # each file's hashes: its bytes, and its rows' event hashes in order
        path = exported / part["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == part["sha256"]
        hashes = pq.read_table(path, columns=["event_hash"]).column("event_hash").to_pylist()
        assert hashlib.sha256(b"".join(bytes.fromhex(h) for h in hashes)).hexdigest() == part["rows_sha256"]
    contact = pq.read_schema(next((exported / "ContactReceived").glob("*.parquet")))
    assert str(contact.field("recorded_at").type) == "timestamp[us, tz=UTC]"
    assert str(contact.field("items").type) == "list<element: struct<item_id: string, text: string>>"
    assert b"caseledger.personal" in contact.field("subject").metadata


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_the_docs_answer_the_two_questions_in_duckdb_and_pandas_and_draw_the_chart(
    trial: Trial, exported: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(exported.parent)  # the page's paths are events/…
    broken_sql, waits_sql = _blocks("sql")
    con = duckdb.connect()
    statements = [s for s in broken_sql.split(";") if s.strip()]
    for statement in statements[:-1]:
        con.execute(statement)
    want_broken = {(channel, month): n for (channel, month), n in trial.broken.items()}
    assert {(c, m): n for c, m, n in con.execute(statements[-1]).fetchall()} == want_broken
    want_waits = trial.median_hours()
    got = dict(con.execute(waits_sql).fetchall())
    assert got.keys() == want_waits.keys()
    assert all(abs(got[s] - want_waits[s]) < 1e-6 for s in want_waits)
    namespace: dict[str, Any] = {}
    for block in _blocks("python")[:3]:  # the two questions and the chart; the last block needs a topic record
        exec(compile(block, str(DOC), "exec"), namespace)
    assert {(r.channel, r.month): r.broken for r in namespace["broken"].itertuples()} == want_broken
    waits = {r.segment: r.median_hours for r in namespace["waits"].itertuples()}
    assert all(abs(waits[s] - want_waits[s]) < 1e-6 for s in want_waits) and waits.keys() == want_waits.keys()
    chart = exported.parent / "broken_promises.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000


def test_personal_fields_are_null_or_erased_never_tokens_unless_a_role_that_may_export_opens_them(
    trial: Trial, exported: Path, tmp_path: Path
) -> None:
    contacts = pq.read_table(exported / "ContactReceived").to_pylist()
    erased = [r for r in contacts if r["customer_id"] == trial.erased_customer]
    assert erased and all(r["subject"] == "[erased]" for r in erased)
    assert all(r["subject"] is None and r["identity"]["value"] is None for r in contacts
               if r["customer_id"] != trial.erased_customer)
    for path in exported.glob("*/*.parquet"):  # no token nor address anywhere, whatever the column
        text = json.dumps(pq.read_table(path).to_pylist(), default=str)
        assert "enc:1:" not in text and "example.com" not in text, path
    database = str(trial.database)
    refused = run(database, "export", "events", "--out", str(tmp_path / "a"), "--personal", code=2)
    assert "token" in refused.output
    tokens = {}
    for name, role in (("ann", "agent"), ("dpo", "auditor")):
        printed = run(database, "principals", "add", name, "--role", role).output
        tokens[role] = re.search(r"clt_[A-Za-z0-9_-]{43}", printed).group(0)  # type: ignore[union-attr]
    from caseledger.cli.app import app
    from tests.support.stories import runner

    agent = runner.invoke(app, ["-d", database, "export", "events", "--out", str(tmp_path / "b"), "--personal"],
                          env={"CASELEDGER_TOKEN": tokens["agent"]})
    assert agent.exit_code == 2 and "history.export" in agent.output
    full = tmp_path / "full"
    done = runner.invoke(app, ["-d", database, "export", "events", "--out", str(full), "--personal"],
                         env={"CASELEDGER_TOKEN": tokens["auditor"]})
    assert done.exit_code == 0, done.output
    opened = pq.read_table(full / "ContactReceived").to_pylist()
    assert {r["subject"] for r in opened if r["customer_id"] == trial.erased_customer} == {"[erased]"}
    assert all(re.fullmatch(r"question \d+", r["subject"]) for r in opened if r["customer_id"] != trial.erased_customer)
    assert oct((full / "manifest.json").stat().st_mode & 0o777) == "0o600"


def test_a_second_run_adds_only_what_is_new_and_a_broken_run_leaves_nothing(trial: Trial, exported: Path,
                                                                            tmp_path: Path) -> None:
    shutil.copytree(trial.database.parent, tmp_path / "copy", ignore=shutil.ignore_patterns("events", "*.png"))
    database = str(tmp_path / "copy" / trial.database.name)
    out = tmp_path / "export"
    run(database, "export", "events", "--out", str(out), "--from-position", "1001")
    stray = out / "CaseOpened" / "part-00002.parquet"  # what a run that died before its manifest left
    stray.write_bytes(b"not parquet")
    run(database, "contact", "record", "-c", "email", "-m", "late-1", "--from", "email:late@example.com",
        "--item", "still there?")
    second = json.loads(run(database, "export", "events", "--out", str(out), "--json").stdout)
    assert second["events"] == 7 and second["counts"]["ContactReceived"] == 1
    _counts, _versions, last = stored(Path(database))
    positions = duckdb.sql(f"SELECT min(position), max(position), count(*), count(DISTINCT position) "
                           f"FROM read_parquet('{out}/*/*.parquet', union_by_name = true)").fetchall()[0]
    assert positions == (1001, last, last - 1000, last - 1000)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["events"] for r in manifest["runs"]] == [trial.events - 1000, 7]
    assert manifest["covered"] == {"first_position": 1001, "last_position": last}
    again = run(database, "export", "events", "--out", str(out), "--from-position", "5", code=2)
    assert "new folder" in again.output


def test_help_does_not_import_pyarrow() -> None:
    """`caseledger --help` stays fast: pyarrow is imported by the export alone."""
    code = "import sys; import caseledger.cli.app; assert 'pyarrow' not in sys.modules, 'pyarrow imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("written", sorted((ROOT / "tests" / "data").glob("ledger-written-by-*.sqlite")),
                         ids=lambda p: p.name)
def test_history_of_earlier_releases_exports_whole_and_without_personal_data_in_clear(
    written: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events stored before sealing keep their personal fields in clear: the export withholds them all the same."""
    monkeypatch.delenv("CASELEDGER_KEK", raising=False)  # the ledger's own key file, beside it
    for path in written.parent.glob(written.name + "*"):
        shutil.copy(path, tmp_path / path.name)
        (tmp_path / path.name).chmod(0o600)
    database = tmp_path / written.name
    run(str(database), "export", "events", "--out", str(tmp_path / "out"))
    counts, _versions, _last = stored(database)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"] == dict(counts)
    for path in (tmp_path / "out").glob("*/*.parquet"):
        text = json.dumps(pq.read_table(path).to_pylist(), default=str)
        assert "enc:1:" not in text and not re.search(r"[\w.]+@example\.com|\+33\d{6}", text), path


def test_an_identity_an_earlier_release_used_as_customer_id_is_withheld() -> None:
    from caseledger.ledger.reports.event_table import Personal

    withheld, opened = Personal(erased=lambda v: False), Personal(erased=lambda v: False, open_value=lambda v: v)
    assert withheld.customer("email:jane@example.com") is None and withheld.customer("phone:+33612345678") is None
    assert withheld.customer("cus-0123456789abcdef") == "cus-0123456789abcdef" == opened.customer("cus-0123456789abcdef")
    assert opened.customer("email:jane@example.com") == "email:jane@example.com"


@settings(max_examples=examples(15), **PROPERTY_SETTINGS)  # type: ignore[arg-type]
@given(steps=steps_strategy)
def test_an_export_resumed_after_any_steps_equals_one_made_at_once(steps: list[tuple[str, int]]) -> None:
    """Whatever happened (erasures, rejections, every kind of event) and wherever runs stopped: the same rows, once."""
    from caseledger.ledger.reports.event_table import personal_of
    from caseledger.ledger.reports.parquet_events import export_events
    from caseledger.projections.sources import StoreEventSource

    def once(out: Path) -> None:
        export_events(StoreEventSource(ledger), out, codec=ledger.codec, personal=personal_of(ledger.data_keys),
                      batch=1 + len(steps) % 4, preload=ledger.preload_keys)

    with generated_ledger() as (ledger, scenario, tmp):
        for action, seed in steps:
            scenario.apply(action, seed)
            if seed % 3 == 0:
                once(tmp / "resumed")
        once(tmp / "resumed")
        once(tmp / "whole")
        last = ledger.recorder.max_notification_id() or 0
        # A run before an erasure wrote null where a later one writes [erased]: neither holds the data.
        resumed, whole = withheld(rows_of(tmp / "resumed")), withheld(rows_of(tmp / "whole"))
        assert resumed == whole and sorted(whole) == list(range(1, last + 1))


def withheld(value: Any) -> Any:
    if value == "[erased]":
        return None
    if isinstance(value, dict):
        return {k: withheld(v) for k, v in value.items()}
    if isinstance(value, list):
        return [withheld(v) for v in value]
    return value


def rows_of(out: Path) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for path in sorted(out.glob("*/*.parquet")):
        for row in pq.read_table(path).to_pylist():
            assert row["position"] not in found
            found[row["position"]] = row
    return found
