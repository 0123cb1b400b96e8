"""``audit verify`` on a full ledger (issue 29): its memory does not grow with the ledger, and what it keeps
in memory changes nothing it finds."""

from __future__ import annotations

import shutil
import sqlite3
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caseledger.cli.bench import environment
from caseledger.cli.bench.verify_bench import generate_ledger
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.audit import verification, verify
from caseledger.ledger.audit.report import AuditReport
from caseledger.ledger.settings import LedgerSettings
from tests.support.examples import examples


def _ledger(database: Path) -> CaseLedger:
    return CaseLedger(LedgerSettings.resolve(database=str(database), settings=environment()))


def _filled(database: Path, events: int) -> Path:
    ledger = _ledger(database)
    try:
        generate_ledger(ledger, events)
    finally:
        ledger.close()
    return database


def _peak_kb(database: Path) -> float:
    ledger = _ledger(database)
    try:
        verify(ledger, page_size=200)  # warm: schemas parsed, statements prepared
        tracemalloc.start()
        try:
            report = verify(ledger, page_size=200)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        ledger.close()
    assert report.ok, report.discrepancies
    return peak / 1024


def test_verify_memory_stays_flat_when_the_aggregates_double(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a chain head per aggregate and counters per case for the whole run (~110 B per aggregate)."""
    monkeypatch.setattr(verification, "CHAIN_HEADS", 40, raising=False)
    monkeypatch.setattr(verification, "CASES_HELD", 20, raising=False)
    once = _filled(tmp_path / "once.sqlite", 3000)
    twice = _filled(tmp_path / "twice.sqlite", 6000)
    peak_once, peak_twice = _peak_kb(once), _peak_kb(twice)
    # ~1,100 more aggregates and ~270 more cases: +235 kB when each was kept (605 → 840 kB), +1 kB now
    assert peak_twice <= peak_once + 32, (peak_once, peak_twice)


# -- what is found does not depend on what is held ---------------------------------------------------------


def _findings(report: AuditReport) -> tuple[Any, ...]:
    return (report.events, report.aggregates, report.cases, report.seal, report.ok, dict(report.counts),
            [d.as_dict() for d in report.discrepancies])


@pytest.fixture(scope="module")
def small_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _filled(tmp_path_factory.mktemp("held") / "ledger.sqlite", 240)  # ~22 stories, ~88 aggregates


_TAMPERING = st.sampled_from(["delete", "byte", "swap", "aggregate", "version", "move", "copy"])


def _tamper(database: Path, kind: str, at: int, other: int, byte: int) -> None:
    db = sqlite3.connect(database)
    try:
        with db:
            head = db.execute("SELECT MAX(rowid) FROM stored_events").fetchone()[0]
            at, other = 1 + at % head, 1 + other % head
            row = db.execute("SELECT originator_id, originator_version, topic, state FROM stored_events "
                             "WHERE rowid = ?", (at,)).fetchone()
            if row is None:
                return
            oid, version, topic, state = row
            if kind == "delete":
                db.execute("DELETE FROM stored_events WHERE rowid = ?", (at,))
            elif kind == "byte":
                i = byte % len(state)
                db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?",
                           (state[:i] + bytes([state[i] ^ 0x5A]) + state[i + 1 :], at))
            elif kind == "swap":
                theirs = db.execute("SELECT state FROM stored_events WHERE rowid = ?", (other,)).fetchone()
                if theirs is not None:
                    db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (theirs[0], at))
                    db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (state, other))
            elif kind == "aggregate":  # a whole case, customer, claim or message deleted
                db.execute("DELETE FROM stored_events WHERE originator_id = ?", (oid,))
            elif kind == "version":
                db.execute("UPDATE OR IGNORE stored_events SET originator_version = ? WHERE rowid = ?",
                           (version + 1 + byte % 3, at))
            elif kind == "move":  # an aggregate's event moved to the end of the log
                db.execute("UPDATE stored_events SET rowid = ? WHERE rowid = ?", (head + 1, at))
            else:  # an event's bytes copied as the next version of another aggregate
                other_row = db.execute("SELECT originator_id, MAX(originator_version) FROM stored_events "
                                       "WHERE originator_id = (SELECT originator_id FROM stored_events WHERE rowid = ?)",
                                       (other,)).fetchone()
                if other_row[0] is not None:
                    db.execute("INSERT INTO stored_events (originator_id, originator_version, topic, state) "
                               "VALUES (?, ?, ?, ?)", (other_row[0], other_row[1] + 1, topic, state))
    finally:
        db.close()


@given(
    tamperings=st.lists(st.tuples(_TAMPERING, st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 4000)),
                        max_size=3),
    heads=st.integers(1, 30),
    cases=st.integers(1, 12),
    page=st.integers(1, 60),
)
@settings(max_examples=examples(60), deadline=None)
def test_verify_finds_the_same_whatever_it_holds(small_ledger: Path, tmp_path_factory: pytest.TempPathFactory,
                                                tamperings: list[tuple[str, int, int, int]], heads: int, cases: int,
                                                page: int) -> None:
    """Tampering at an aggregate whose chain head was let go, or a case whose counters went to disk, is still
    named, exactly as with everything held (down to one head, one case, one row a page)."""
    database = tmp_path_factory.mktemp("tampered") / "ledger.sqlite"
    shutil.copy(small_ledger, database)
    for kind, at, other, byte in tamperings:
        _tamper(database, kind, at, other, byte)
    ledger = _ledger(database)
    try:
        held = verify(ledger, heads_held=heads, cases_held=cases, page_size=page)
        everything = verify(ledger, heads_held=1 << 30, cases_held=1 << 30)
    finally:
        ledger.close()
    assert _findings(held) == _findings(everything)


def test_an_event_moved_far_from_its_aggregate_and_a_deleted_case_are_named_with_one_head_held(
        small_ledger: Path, tmp_path: Path) -> None:
    database = tmp_path / "ledger.sqlite"
    shutil.copy(small_ledger, database)
    db = sqlite3.connect(database)
    with db:
        head = db.execute("SELECT MAX(rowid) FROM stored_events").fetchone()[0]
        # the first case's version 4 moved to the end: by then its head (version 8) was let go long ago
        first_case, version = db.execute("SELECT originator_id, originator_version FROM stored_events "
                                         "WHERE rowid = 4").fetchone()
        db.execute("UPDATE stored_events SET rowid = ? WHERE rowid = 4", (head + 1,))
        case = db.execute("SELECT originator_id FROM stored_events WHERE topic = 'caseledger.events.CaseOpened' "
                          "ORDER BY rowid LIMIT 1 OFFSET 10").fetchone()[0]
        db.execute("DELETE FROM stored_events WHERE originator_id = ?", (case,))
    db.close()
    ledger = _ledger(database)
    try:
        report = verify(ledger, heads_held=1, cases_held=1, page_size=1)
        everything = verify(ledger, heads_held=1 << 30, cases_held=1 << 30)
    finally:
        ledger.close()
    moved = [d for d in report.discrepancies if d.position == head + 1]
    assert [(d.code, d.version, d.aggregate_id.replace("-", "")) for d in moved] == [("version-gap", version, first_case)]
    assert "8" in moved[0].message  # the head recalled from the store: version 8, not nothing
    assert any(d.code == "case-missing" and case in d.aggregate_id.replace("-", "") for d in report.discrepancies)
    assert _findings(report) == _findings(everything)
