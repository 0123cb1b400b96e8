"""A full ledger (issue 29): ``bench reads``, ``tick`` streaming its overdue cases, reveal as it was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caseledger.cli.app import app
from caseledger.cli.bench import environment
from caseledger.cli.bench.verify_bench import generate_ledger
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.personal import ERASED
from caseledger.ledger.domain.values import SYSTEM
from caseledger.ledger.privacy.sealing import TOKEN, TOKEN_PREFIX
from caseledger.ledger.settings import LedgerSettings
from caseledger.projections import queries
from caseledger.projections.catchup import catch_up
from caseledger.projections.deadlines import Deadlines, overdue, overdue_references
from caseledger.projections.view_stores import open_views
from tests.support.examples import examples
from tests.support.stories import runner


def test_bench_reads_reports_case_show_history_verify_memory_store_and_tick(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "reads", "--events", "2000", "--customer-events", "40", "--deadlines", "30",
                                 "--reads", "10", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "case show" in result.output and "history" in result.output and "tick peak RSS" in result.output
    written: Any = json.loads(next(tmp_path.glob("reads-*.json")).read_text())
    assert written["customer_events"] >= 40 and written["case_show"]["p99_ms"] > 0 and written["history"]["reads"] == 10
    assert written["verify_small"]["ok"] and written["verify_full"]["ok"]
    assert written["verify_full"]["events"] > written["verify_small"]["events"]
    assert written["store"]["Merkle tree leaves"] == written["events"]
    assert written["tick"]["missed"] == written["tick"]["deadlines"] >= 30


@pytest.fixture
def open_ledger(tmp_path: Path) -> tuple[CaseLedger, str]:
    db = str(tmp_path / "open.sqlite")
    ledger = CaseLedger(LedgerSettings.resolve(database=db, settings=environment()))
    generate_ledger(ledger, 40)  # closed stories: nothing due
    generate_ledger(ledger, 50, open_cases=True)  # five cases, three deadlines each past due
    return ledger, db


def test_tick_streams_the_overdue_cases_a_page_at_a_time(open_ledger: tuple[CaseLedger, str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    ledger, db = open_ledger
    with open_views(db) as views:
        catch_up(views, Deadlines(), ledger=lambda: ledger)
        now = ledger.clock()
        every = sorted({row["reference"] for row in overdue(views, now, unrecorded_only=True)})
        assert len(every) == 5
        assert list(overdue_references(views, now, page=2)) == every  # each once, across pages

        executed: list[str] = []
        fetch = views.fetch
        monkeypatch.setattr(views, "fetch", lambda sql, params=(): executed.append(sql) or fetch(sql, params))
        list(overdue_references(views, now, page=2))
        page_sql = next(sql for sql in executed if "DISTINCT reference" in sql)
        plan = " ".join(r["detail"] for r in fetch("EXPLAIN QUERY PLAN " + page_sql, ["", "pending", now, 2]))
        assert "(reference>?)" in plan and "TEMP B-TREE" not in plan  # each page starts where the last ended
        monkeypatch.setattr(views, "fetch", fetch)

        def whole_list(*_a: Any, **_k: Any) -> Any:
            raise AssertionError("tick read every overdue row at once")

        monkeypatch.setattr(queries, "overdue", whole_list)  # what tick did: a million rows in one list
        report = queries.tick_missed_deadlines(views, ledger=lambda: ledger, actor=SYSTEM)
    assert report.missed == {"acknowledgement": 5, "response": 5, "promise": 5}
    assert [c.reference for c in map(ledger.get_case, every)] == every  # a generated case is found by its reference
    ledger.close()


def _reveal_before(sealer: Any, value: Any) -> Any:
    """Sealer.reveal as it was before issue 29 (one recursive rebuild), the reference for the faster one."""
    if isinstance(value, str):
        if TOKEN_PREFIX not in value:
            return value
        sealer.keys.load(m.group(1) for m in TOKEN.finditer(value))
        return TOKEN.sub(sealer._open_text, value)
    if isinstance(value, dict):
        return {k: _reveal_before(sealer, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_reveal_before(sealer, v) for v in value]
    if isinstance(value, tuple):
        return tuple(_reveal_before(sealer, v) for v in value)
    return value


def test_reveal_opens_what_it_opened_before_and_rebuilds_only_what_holds_a_token(tmp_path: Path) -> None:
    ledger = CaseLedger(LedgerSettings.resolve(database=str(tmp_path / "r.sqlite"), settings=environment()))
    generate_ledger(ledger, 40)
    with open_views(str(tmp_path / "r.sqlite")) as views:
        catch_up(views, queries.CustomerTimeline(), ledger=lambda: ledger)
        lines = [r["line"] for r in views.fetch("SELECT line FROM timeline")]
    texts = [*[t for t in lines if TOKEN_PREFIX in t][:6], "plain", "enc:1:not-a-token"]
    leaves = st.sampled_from(texts) | st.integers() | st.none() | st.booleans()
    values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                          | st.dictionaries(st.sampled_from("abcd"), inner, max_size=4), max_leaves=12)
    sealer = ledger.sealer

    @given(values)
    @settings(max_examples=examples(60), deadline=None)
    def same(value: Any) -> None:
        assert sealer.reveal(value) == _reveal_before(sealer, value)
        sealer.keys.forget()

    same()
    opened = ledger.reveal(texts[0])
    assert ERASED not in opened and TOKEN_PREFIX not in opened
    row = {"line": texts[0], "items": ["Q1"], "n": 1}
    revealed = ledger.reveal([row, {"line": "plain"}])
    assert revealed[0]["line"] == opened and revealed[0]["items"] is row["items"] and row["line"] == texts[0]
    ledger.close()
