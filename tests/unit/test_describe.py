"""How times read in descriptions and the timeline: the same text as strftime would give."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from caseledger.ledger.reports.describe import fmt_time

ZONES = st.sampled_from([None, UTC, ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York"),
                         ZoneInfo("Asia/Kolkata"), timezone(timedelta(hours=5, minutes=45))])


@given(value=st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)),
       tz=ZONES, seconds=st.booleans())
def test_fmt_time_reads_as_strftime_would(value: datetime, tz: timezone | None, seconds: bool) -> None:
    shown = value.astimezone(tz or UTC)
    expected = shown.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    assert fmt_time(value, tz, seconds=seconds) == f"{expected} {shown.strftime('%Z') or shown.strftime('%z')}"


def test_fmt_time_names_the_zone_and_shows_nothing_for_no_time() -> None:
    when = datetime(2026, 11, 24, 9, 5, 7, tzinfo=UTC)
    assert fmt_time(when) == "2026-11-24 09:05 UTC"
    assert fmt_time(when, ZoneInfo("Europe/Paris"), seconds=True) == "2026-11-24 10:05:07 CET"
    assert fmt_time(None) == "-"
