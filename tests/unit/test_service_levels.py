"""Metrics an analyst trusts, and dates that say what they are (issue 27).

- percentiles of first-response and resolution times equal a brute-force computation over the
  events, per channel, segment and month in a stated zone (Hypothesis); incremental equals rebuilt
  for these tables is tests/unit/test_projection_rules.py (it snapshots every built-in table);
- ``metrics --month --zone`` buckets by the zone's month and says which zone;
- the timeline's typed columns, never a sealed token in them; ``projections query`` opens ``line``;
- ``history`` and the HTML export label the occurred time where it is apart from the recorded one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from caseledger.cli.app import app
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import Channel, ContactDraft, Identity
from caseledger.projections import INT, LOG, Projection, StoreEventSource, Table, Tx, open_views
from caseledger.projections.channel_metrics import ChannelMetrics, summary
from tests.support.clock import FakeClock
from tests.support.environment import ledger_settings
from tests.support.examples import examples
from tests.support.projection_scenarios import PROPERTY_SETTINGS, Scenario, catch_up, steps_strategy

runner = CliRunner(env={"CASELEDGER_DATABASE": None, "CASELEDGER_VIEWS": None, "CASELEDGER_KAFKA_BOOTSTRAP": None,
                        "CASELEDGER_ACTOR": None, "TZ": "UTC", "COLUMNS": "250"})
PERCENTILES = (50, 90, 99)
ZONES = ("UTC", "Europe/Paris", "America/St_Johns", "Asia/Kathmandu")  # whole, half and quarter hours off UTC


class Everything(Projection):
    """Keeps every event it sees in memory, in the store's order (the brute force reads them)."""

    name = "everything"
    tables = (Table("everything", {"position": INT}, key=("position",), kind=LOG),)
    seen: ClassVar[list[Any]] = []

    def on_event(self, tx: Tx, event: Any) -> None:
        self.seen.append(event)
        tx.append("everything", {"position": tx.position})


def _ms(start: datetime, end: datetime) -> int:
    return max(0, int((end - start).total_seconds() * 1000))


def brute_force(events: list[Any], zone: str) -> dict[tuple[str, str, str], dict[str, list[int]]]:
    """(channel, segment, month) → every first-response and resolution duration, straight from the events."""
    where = ZoneInfo(zone)
    segment: dict[str, str] = {}
    out: dict[tuple[str, str, str], dict[str, list[int]]] = {}

    def keep(channel: str, case: str, started: datetime, measure: str, ms: int) -> None:
        key = (channel, segment[case], started.astimezone(where).strftime("%Y-%m"))
        out.setdefault(key, {"first_response": [], "resolution": []})[measure].append(ms)

    for n, e in enumerate(events):
        case, kind = str(e.originator_id), type(e).__name__
        if kind == "CaseOpened":
            segment[case] = e.segment or "-"
        elif kind == "ContactReceived":  # its first response: the case's next response, if any
            answer = next((a for a in events[n + 1:] if type(a).__name__ == "ResponseSent"
                           and str(a.originator_id) == case), None)
            if answer is not None:
                keep(e.channel, case, e.timestamp, "first_response", _ms(e.timestamp, answer.timestamp))
    for case in segment:
        mine = [e for e in events if str(e.originator_id) == case]
        contacts = [e for e in mine if type(e).__name__ == "ContactReceived"]
        ends = [e for e in mine if type(e).__name__ in ("CaseClosed", "CaseReopened")]
        if contacts and ends and type(ends[-1]).__name__ == "CaseClosed":
            first = contacts[0]
            keep(first.channel, case, first.timestamp, "resolution", _ms(first.timestamp, ends[-1].timestamp))
    return out


def percentile(values: list[int], p: int) -> int:
    """The smallest value with at least p % of the values at or below it, by counting."""
    return min(v for v in values if sum(x <= v for x in values) * 100 >= p * len(values))


@settings(max_examples=examples(10), **PROPERTY_SETTINGS)  # 10: the suite stays within its time  # type: ignore[arg-type]
@given(steps=steps_strategy, zone=st.sampled_from(ZONES))
def test_percentiles_per_channel_segment_and_month_equal_a_brute_force_over_the_events(
    steps: list[tuple[str, int]], zone: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("levels")
    clock = FakeClock(datetime(2026, 3, 31, 19, 0, tzinfo=UTC))  # months turn during the story, in every zone
    ledger = CaseLedger(ledger_settings(database=str(tmp / "ledger.sqlite")), clock=clock)
    Everything.seen = []
    try:
        scenario = Scenario(ledger, clock)
        for action, seed in steps:
            scenario.apply(action, seed)
            clock.advance(minutes=seed % 240)
        with open_views(str(tmp / "views.sqlite")) as views:
            catch_up(views, StoreEventSource(ledger), projections=[ChannelMetrics(), Everything()])
            rows = summary(views, by=("channel", "segment"), month=True, zone=zone)
    finally:
        ledger.close()
    expected = brute_force(Everything.seen, zone)
    got = {(r["channel"], r["segment"], r["month"]): r for r in rows}
    assert set(got) == set(expected)
    for key, measures in expected.items():
        row = got[key]
        assert row["zone"] == zone
        for measure, count in (("first_response", "first_responses"), ("resolution", "resolutions")):
            values = measures[measure]
            assert row[count] == len(values)
            for p in PERCENTILES:
                assert row[f"{measure}_p{p}_s"] == (percentile(values, p) / 1000 if values else None)


# -- the CLI: months in a zone, the timeline's columns, dates labelled ------------------------------------


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    database = str(tmp_path / "cli.sqlite")

    def run(*args: str, code: int = 0) -> Result:
        result = runner.invoke(app, ["--database", database, *args])
        assert result.exit_code == code, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
        return result

    run.database = database  # type: ignore[attr-defined]
    return run


def _contact(cli: Any, at: str, message_id: str, channel: str = "email") -> str:
    out = cli("--now", at, "contact", "record", "-c", channel, "-m", message_id, "--from", "email:jane@example.com",
              "--subject", "Card blocked", "--item", "Why is my card blocked?", "--segment", "retail", "--json")
    return json.loads(out.stdout)["reference"]  # type: ignore[no-any-return]


def test_metrics_give_percentiles_and_months_in_the_zone_asked(cli: Any) -> None:
    late = _contact(cli, "2026-03-31T23:30Z", "m-1")  # 1 April in Paris
    cli("--now", "2026-04-01T01:30Z", "respond", late, "--body", "Unblocked.", "--answers", "Q1")
    cli("--now", "2026-04-01T03:30Z", "case", "close", late, "-r", "answered", "-n", "Closed.")
    early = _contact(cli, "2026-03-10T08:00Z", "m-2")
    cli("--now", "2026-03-10T08:10Z", "respond", early, "--body", "Unblocked.", "--answers", "Q1")

    overall = json.loads(cli("metrics", "--json").stdout)
    assert [(r["channel"], r["first_responses"], r["first_response_p50_s"], r["first_response_p90_s"],
             r["first_response_p99_s"], r["resolutions"], r["resolution_p50_s"]) for r in overall] == [
        ("email", 2, 600.0, 7200.0, 7200.0, 1, 14400.0)]
    assert overall[0]["contacts"] == 2  # the counters stay as they were

    utc = json.loads(cli("metrics", "--by", "both", "--month", "--json").stdout)
    assert [(r["month"], r["zone"], r["segment"], r["first_responses"]) for r in utc] == [
        ("2026-03", "UTC", "retail", 2)]
    paris = json.loads(cli("metrics", "--month", "--zone", "Europe/Paris", "--json").stdout)
    assert [(r["month"], r["zone"], r["first_response_p50_s"], r["resolutions"]) for r in paris] == [
        ("2026-03", "Europe/Paris", 600.0, 0), ("2026-04", "Europe/Paris", 7200.0, 1)]
    shown = cli("metrics", "--month", "--zone", "Europe/Paris").stdout
    assert "months in Europe/Paris" in shown and "2026-04" in shown
    refused = cli("metrics", "--month", "--zone", "Mars/Olympus", code=2)
    assert "unknown time zone 'Mars/Olympus'" in refused.stderr and "Europe/Paris" in refused.stderr


def test_timeline_has_typed_columns_without_tokens_and_queries_open_the_line(cli: Any) -> None:
    ref = _contact(cli, "2026-03-02T08:00Z", "m-1", channel="phone")
    cli("--now", "2026-03-02T08:05Z", "promise", "make", ref, "-c", "phone", "-k", "callback", "-t", "call back",
        "--due", "2026-03-02T10:00Z")
    cli("--now", "2026-03-02T09:00Z", "respond", ref, "--body", "Unblocked.", "--answers", "Q1")
    cli("--now", "2026-03-02T09:05Z", "case", "close", ref, "-r", "answered", "-n", "Closed.", "--waive",
        "P1=called back")
    cli("history", "email:jane@example.com")  # catches the timeline up

    typed = json.loads(cli("projections", "query", "SELECT event_type, contact_id, items, follow_up, message_id, "
                           "promise_id, promise_kind, due_at, case_status FROM timeline ORDER BY position",
                           "--json").stdout)
    by_type = {r["event_type"]: {k: v for k, v in r.items() if v is not None} for r in typed}
    assert by_type["ContactReceived"] == {"event_type": "ContactReceived", "contact_id": "C1", "items": '["Q1"]',
                                          "follow_up": 0}
    assert by_type["PromiseMade"]["promise_id"] == "P1" and by_type["PromiseMade"]["promise_kind"] == "callback"
    assert by_type["PromiseMade"]["due_at"].startswith("2026-03-02T10:00:00")
    assert by_type["ResponseSent"] == {"event_type": "ResponseSent", "items": '["Q1"]', "message_id": "R1"}
    assert by_type["CaseClosed"]["case_status"] == "closed"

    import sqlite3  # what an analyst's own SQL client reads from the views: no token in a typed column

    with sqlite3.connect(cli.database) as raw:
        columns = [r[1] for r in raw.execute("PRAGMA table_info(timeline)") if r[1] != "line"]
        cells = raw.execute(f"SELECT {', '.join(columns)} FROM timeline").fetchall()
        assert cells and not any("enc:1:" in str(v) for row in cells for v in row)
        assert any("enc:1:" in row[0] for row in raw.execute("SELECT line FROM timeline"))  # sealed at rest

    lines = json.loads(cli("projections", "query", "SELECT line FROM timeline", "--json").stdout)
    assert not any("enc:1:" in r["line"] for r in lines)
    assert any("Card blocked" in r["line"] for r in lines)

    cli("customer", "erase", "email:jane@example.com", "--reason", "art. 17")
    erased = json.loads(cli("projections", "query", "SELECT line FROM timeline", "--json").stdout)
    assert not any("enc:1:" in r["line"] or "Card blocked" in r["line"] for r in erased)
    assert any("[erased]" in r["line"] for r in erased)


def test_history_and_the_html_export_label_occurred_time_apart_from_recorded(cli: Any, tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    ledger = CaseLedger(ledger_settings(database=cli.database), clock=clock)
    try:  # an adapter relays a mail received three hours ago, then one received just now
        for n, ago in ((1, timedelta(hours=3)), (2, timedelta(seconds=20))):
            ledger.record_contact(ContactDraft(
                channel=Channel.EMAIL, channel_message_id=f"m-{n}", identity=Identity.parse("email:jane@example.com"),
                items=("Where is my card?",), occurred_at=clock.now - ago))
            clock.advance(minutes=5)
    finally:
        ledger.close()

    shown = cli("history", "email:jane@example.com", "--tz", "Europe/Paris").stdout
    assert "occurred 2026-03-02 10:00:00" in shown  # 09:00 UTC, in Paris: the contact and the events it caused
    assert "occurred 2026-03-02 13:04" not in shown  # relayed within 20 s: one time is enough
    assert "recorded at" in shown

    page = tmp_path / "history.html"
    cli("history", "email:jane@example.com", "--export", "html", str(page), "--tz", "UTC")
    html = page.read_text(encoding="utf-8")
    assert "occurred <time>2026-03-02 09:00:00 UTC</time>" in html
    assert "recorded <time>2026-03-02 12:00:00 UTC</time>" in html
