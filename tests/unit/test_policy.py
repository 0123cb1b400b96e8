"""Response policy: business calendar arithmetic, delays, rule precedence and the policy file."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caseledger.ledger.domain.business_time import BusinessCalendar, Delay
from caseledger.ledger.domain.policy import ResponsePolicy
from caseledger.ledger.domain.values import Channel
from caseledger.ledger.errors import ConfigurationError, ValidationError
from tests.support.examples import examples

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
CALENDAR = BusinessCalendar(timezone="Europe/Paris", holidays=frozenset({date(2026, 12, 25)}))
EVERY_DAY = frozenset(range(7))


def paris(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS)  # type: ignore[misc]


def in_paris(at: datetime) -> datetime:
    assert at.tzinfo is UTC
    return at.astimezone(PARIS)


# --- business time ---------------------------------------------------------------------------


def test_friday_evening_plus_four_hours_is_monday_noon() -> None:
    result = CALENDAR.add_business_time(paris(2026, 3, 6, 17, 30), timedelta(hours=4))
    assert in_paris(result) == paris(2026, 3, 9, 12, 30)


def test_a_deadline_may_fall_on_the_closing_time() -> None:
    result = CALENDAR.add_business_time(paris(2026, 3, 6, 17, 30), timedelta(minutes=30))
    assert in_paris(result) == paris(2026, 3, 6, 18, 0)


def test_zero_delay_is_the_start_itself_in_utc() -> None:
    start = paris(2026, 3, 7, 23, 0)  # a Saturday night: closed, still immediate
    result = CALENDAR.add_business_time(start, timedelta(0))
    assert result == start and result.tzinfo is UTC


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (paris(2026, 3, 7, 11, 0), paris(2026, 3, 9, 10, 0)),  # Saturday
        (paris(2026, 3, 9, 7, 0), paris(2026, 3, 9, 10, 0)),  # Monday before opening
        (paris(2026, 3, 9, 19, 0), paris(2026, 3, 10, 10, 0)),  # Monday after closing
        (paris(2026, 3, 9, 18, 0), paris(2026, 3, 10, 10, 0)),  # exactly at closing
        (paris(2026, 3, 9, 9, 0), paris(2026, 3, 9, 10, 0)),  # exactly at opening
    ],
)
def test_a_start_outside_opening_hours_counts_from_the_next_opening(
    start: datetime, expected: datetime
) -> None:
    assert in_paris(CALENDAR.add_business_time(start, timedelta(hours=1))) == expected


def test_holidays_are_skipped() -> None:
    # Thursday 24 December 17:00 + 2h: one hour on Thursday, Friday 25 is a holiday, then Monday.
    result = CALENDAR.add_business_time(paris(2026, 12, 24, 17, 0), timedelta(hours=2))
    assert in_paris(result) == paris(2026, 12, 28, 10, 0)
    assert not CALENDAR.is_open(paris(2026, 12, 25, 10, 0))


def test_a_start_in_another_time_zone_is_the_same_instant() -> None:
    start = datetime(2026, 3, 6, 11, 30, tzinfo=NEW_YORK)  # 17:30 in Paris
    result = CALENDAR.add_business_time(start, timedelta(hours=4))
    assert in_paris(result) == paris(2026, 3, 9, 12, 30)


def test_spring_forward_weekend_keeps_local_opening_hours() -> None:
    # Clocks go forward on Sunday 29 March 2026: Friday is UTC+1, Monday UTC+2.
    result = CALENDAR.add_business_time(paris(2026, 3, 27, 17, 0), timedelta(hours=2))
    assert result == datetime(2026, 3, 30, 8, 0, tzinfo=UTC)
    assert in_paris(result) == paris(2026, 3, 30, 10, 0)


def test_open_hours_across_a_clock_change_count_real_time() -> None:
    night = BusinessCalendar(timezone="Europe/Paris", working_days=EVERY_DAY, opens=time(1), closes=time(4))
    spring, autumn = date(2026, 3, 29), date(2026, 10, 25)

    def open_time(day: date) -> timedelta:
        start = datetime.combine(day, time(0), tzinfo=PARIS)
        return night.business_time_between(start, start + timedelta(hours=12))

    assert open_time(spring) == timedelta(hours=2)  # 01:00-02:00 then 03:00-04:00
    assert open_time(autumn) == timedelta(hours=4)  # 02:00-03:00 happens twice
    assert open_time(date(2026, 3, 30)) == timedelta(hours=3)


def test_an_opening_time_the_clocks_skip_is_reached_when_they_jump() -> None:
    night = BusinessCalendar(
        timezone="Europe/Paris", working_days=EVERY_DAY, opens=time(2, 30), closes=time(4)
    )
    result = night.add_business_time(paris(2026, 3, 29, 0, 0), timedelta(minutes=1))
    assert result == datetime(2026, 3, 29, 1, 1, tzinfo=UTC)  # the jump is at 01:00 UTC
    assert in_paris(result).time() == time(3, 1)


def test_is_open_includes_the_opening_and_excludes_the_closing() -> None:
    assert CALENDAR.is_open(paris(2026, 3, 9, 9, 0))
    assert CALENDAR.is_open(paris(2026, 3, 9, 17, 59))
    assert not CALENDAR.is_open(paris(2026, 3, 9, 18, 0))
    assert not CALENDAR.is_open(paris(2026, 3, 9, 8, 59))
    assert not CALENDAR.is_open(paris(2026, 3, 8, 12, 0))  # Sunday


def test_business_time_between_counts_open_time_and_is_signed() -> None:
    start, end = paris(2026, 3, 6, 17, 0), paris(2026, 3, 9, 10, 0)
    assert CALENDAR.business_time_between(start, end) == timedelta(hours=2)
    assert CALENDAR.business_time_between(end, start) == -timedelta(hours=2)
    assert CALENDAR.business_time_between(start, start) == timedelta(0)
    assert CALENDAR.business_time_between(paris(2026, 3, 7, 9), paris(2026, 3, 8, 18)) == timedelta(0)


# --- business days ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "days", "expected"),
    [
        (paris(2026, 3, 9, 10, 0), 2, paris(2026, 3, 11, 10, 0)),  # Monday -> Wednesday, same time
        (paris(2026, 3, 6, 17, 30), 1, paris(2026, 3, 9, 17, 30)),  # Friday -> Monday
        (paris(2026, 3, 7, 11, 0), 2, paris(2026, 3, 11, 9, 0)),  # Saturday counts from Monday 09:00
        (paris(2026, 3, 9, 19, 0), 2, paris(2026, 3, 12, 9, 0)),  # after closing counts from Tuesday
        (paris(2026, 3, 9, 7, 0), 2, paris(2026, 3, 11, 9, 0)),  # before opening counts from Monday
        (paris(2026, 12, 23, 15, 0), 2, paris(2026, 12, 28, 15, 0)),  # the 25th is a holiday
        (paris(2026, 3, 27, 10, 0), 1, paris(2026, 3, 30, 10, 0)),  # across the spring clock change
        (paris(2026, 3, 7, 11, 0), 0, paris(2026, 3, 7, 11, 0)),  # zero days is immediate
    ],
)
def test_business_days_keep_the_point_of_the_business_day(
    start: datetime, days: int, expected: datetime
) -> None:
    assert in_paris(CALENDAR.add_business_days(start, days)) == expected


def test_business_days_are_whole_days_of_open_time() -> None:
    start = paris(2026, 3, 9, 10, 0)
    end = CALENDAR.add_business_days(start, 5)
    assert CALENDAR.business_time_between(start, end) == 5 * timedelta(hours=9)


def test_business_days_are_capped_at_a_shorter_days_closing() -> None:
    night = BusinessCalendar(timezone="Europe/Paris", working_days=EVERY_DAY, opens=time(1), closes=time(4))
    start = datetime(2026, 10, 25, 2, 30, tzinfo=UTC)  # 3h30 into the 4-hour day of the clock change
    assert night.add_business_days(start, 1) == datetime(2026, 10, 26, 3, 0, tzinfo=UTC)  # 04:00 Paris


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda c, t: c.is_open(t),
        lambda c, t: c.add_business_time(t, timedelta(hours=1)),
        lambda c, t: c.add_business_days(t, 1),
        lambda c, t: c.business_time_between(t, t),
        lambda c, t: Delay.parse("1h").apply(c, t),
        lambda c, t: ResponsePolicy.default().respond_by(channel="email", category=None, received_at=t),
        lambda c, t: ResponsePolicy.default().acknowledge_by(channel="email", received_at=t),
    ],
)
def test_naive_timestamps_are_refused(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match="timestamps must be timezone-aware"):
        call(CALENDAR, datetime(2026, 3, 9, 10, 0))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timezone": "Europe/Pariss"}, "unknown time zone"),
        ({"timezone": ""}, "unknown time zone"),
        ({"opens": time(18), "closes": time(9)}, "must be after opens"),
        ({"opens": time(9), "closes": time(9)}, "must be after opens"),
        ({"working_days": frozenset()}, "non-empty"),
        ({"working_days": frozenset({7})}, "weekdays 0-6"),
        ({"holidays": frozenset({datetime(2026, 1, 1, tzinfo=UTC)})}, "must be dates"),
    ],
)
def test_a_bad_calendar_is_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BusinessCalendar(**options)  # type: ignore[arg-type]


def test_negative_delays_are_refused() -> None:
    with pytest.raises(ValidationError):
        CALENDAR.add_business_time(paris(2026, 3, 9, 10), timedelta(minutes=-1))
    with pytest.raises(ValidationError):
        CALENDAR.add_business_days(paris(2026, 3, 9, 10), -1)


# --- delays ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "amount", "unit"),
    [
        ("4h", 4, "hours"),
        ("90m", 90, "minutes"),
        ("2d", 2, "days"),
        (" 10 D ", 10, "days"),
        ("0m", 0, "minutes"),
    ],
)
def test_delay_parse(text: str, amount: int, unit: str) -> None:
    delay = Delay.parse(text)
    assert (delay.amount, delay.unit) == (amount, unit)
    assert Delay.parse(str(delay)) == delay


@pytest.mark.parametrize("text", ["", "4", "h", "1d4h", "-1h", "4 hours", "1.5h", "4w", "٤h"])
def test_delay_parse_refuses_other_text_and_shows_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValidationError, match=r'"90m".*"4h".*"2d"'):
        Delay.parse(text)


def test_delay_fields_are_validated() -> None:
    with pytest.raises(ValidationError):
        Delay(amount=-1, unit="hours")
    with pytest.raises(ValidationError, match="unknown delay unit"):
        Delay(amount=1, unit="weeks")  # type: ignore[arg-type]


def test_delay_apply_counts_business_hours_or_days() -> None:
    start = paris(2026, 3, 6, 17, 30)
    assert in_paris(Delay.parse("4h").apply(CALENDAR, start)) == paris(2026, 3, 9, 12, 30)
    assert in_paris(Delay.parse("240m").apply(CALENDAR, start)) == paris(2026, 3, 9, 12, 30)
    assert in_paris(Delay.parse("2d").apply(CALENDAR, start)) == paris(2026, 3, 10, 17, 30)


# --- policy rules ----------------------------------------------------------------------------

LAYERED = """
[calendar]
timezone = "Europe/Paris"

[acknowledge]
within = "0m"

[respond]
default = "3d"

[respond.channel]
chat = "4h"
email = "2d"

[respond.category]
Complaint = "10d"

[respond.channel_category.email]
complaint = "5d"
"""


@pytest.mark.parametrize(
    ("channel", "category", "expected"),
    [
        ("email", "complaint", "5d"),  # channel and category
        ("chat", "complaint", "10d"),  # category beats channel
        ("letter", " COMPLAINT ", "10d"),  # categories compared in lower case
        ("chat", "billing", "4h"),  # channel
        ("chat", None, "4h"),
        ("email", "", "2d"),  # an empty category is no category
        ("letter", "billing", "3d"),  # default
        (Channel.EMAIL, "complaint", "5d"),
    ],
)
def test_the_most_specific_rule_wins(channel: str, category: str | None, expected: str) -> None:
    policy = ResponsePolicy.from_toml_text(LAYERED)
    received = paris(2026, 3, 9, 10, 0)
    got = policy.respond_by(channel=channel, category=category, received_at=received)
    assert got == Delay.parse(expected).apply(policy.calendar, received)
    assert got.tzinfo is UTC


def test_acknowledge_by_applies_the_acknowledgement_delay() -> None:
    received = paris(2026, 3, 7, 11, 0)
    assert (
        ResponsePolicy.from_toml_text(LAYERED).acknowledge_by(channel="sms", received_at=received) == received
    )
    default = ResponsePolicy.default().acknowledge_by(channel="sms", received_at=received)
    assert in_paris(default) == paris(2026, 3, 9, 10, 0)


def test_an_unknown_channel_is_refused() -> None:
    policy = ResponsePolicy.default()
    with pytest.raises(ValidationError, match="unknown channel"):
        policy.respond_by(channel="fax", category=None, received_at=paris(2026, 3, 9, 10))
    with pytest.raises(ValidationError, match="unknown channel"):
        policy.acknowledge_by(channel="fax", received_at=paris(2026, 3, 9, 10))


def test_a_policy_built_in_code_normalises_its_rules() -> None:
    policy = ResponsePolicy(
        acknowledge_within=Delay.parse("0m"),
        default_respond_within=Delay.parse("2d"),
        respond_within={"Chat": Delay.parse("4h")},
        category_respond_within={" Complaint": Delay.parse("10d")},
    )
    assert dict(policy.respond_within) == {"chat": Delay.parse("4h")}
    assert dict(policy.category_respond_within) == {"complaint": Delay.parse("10d")}
    with pytest.raises(TypeError):
        policy.respond_within["email"] = Delay.parse("1d")  # type: ignore[index]
    with pytest.raises(ValidationError, match="unknown channel"):
        ResponsePolicy(
            acknowledge_within=Delay.parse("0m"),
            default_respond_within=Delay.parse("2d"),
            respond_within={"fax": Delay.parse("4h")},
        )
    with pytest.raises(ValidationError, match="given twice"):
        ResponsePolicy(
            acknowledge_within=Delay.parse("0m"),
            default_respond_within=Delay.parse("2d"),
            category_respond_within={"complaint": Delay.parse("1d"), "Complaint": Delay.parse("2d")},
        )


def test_the_default_policy_is_sane() -> None:
    policy = ResponsePolicy.default()
    assert set(policy.respond_within) == {c.value for c in Channel}
    for live in ("chat", "chatbot", "phone"):
        assert str(policy.respond_within[live]) == "4h"
    assert str(policy.respond_within["letter"]) == "5d"
    assert str(policy.category_respond_within["complaint"]) == "10d"
    assert policy.calendar.timezone == "Europe/Paris"
    assert policy.calendar.is_holiday(date(2026, 12, 25)) and policy.calendar.public_holidays == "FR"
    summary = policy.describe()
    assert "Mon-Fri 09:00-18:00 (Europe/Paris)" in summary
    assert "complaint 10d" in summary and "chat 4h" in summary


def test_from_toml_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(LAYERED, encoding="utf-8")
    assert ResponsePolicy.from_toml(path) == ResponsePolicy.from_toml_text(LAYERED)


def test_a_missing_policy_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigurationError, match=r"nope\.toml does not exist"):
        ResponsePolicy.from_toml(missing)


def test_calendar_values_in_toml_forms() -> None:
    policy = ResponsePolicy.from_toml_text(
        """
        [calendar]
        timezone = "America/New_York"
        working_days = ["Monday", "tue", "SAT"]
        opens = 08:30:00
        closes = "17:15:30"
        holidays = [2026-07-03, "2026-12-25"]
        [acknowledge]
        within = "1h"
        [respond]
        default = "2d"
        """
    )
    assert policy.calendar == BusinessCalendar(
        timezone="America/New_York",
        working_days=frozenset({0, 1, 5}),
        opens=time(8, 30),
        closes=time(17, 15, 30),
        holidays=frozenset({date(2026, 7, 3), date(2026, 12, 25)}),
    )


# Each case replaces one line of MINIMAL (or adds lines) and names the key the error must cite.
MINIMAL = """\
[calendar]
timezone = "Europe/Paris"
opens = "09:00"
closes = "18:00"
[acknowledge]
within = "1h"
[respond]
default = "2d"
"""


@pytest.mark.parametrize(
    ("old", "new", "key", "hint"),
    [
        ("", "colour = 'blue'\n", "colour", "accepts: calendar, acknowledge, respond"),
        ('opens = "09:00"', 'open = "09:00"', "calendar.open", "accepts: timezone"),
        ('timezone = "Europe/Paris"', "", "calendar.timezone", "missing"),
        ('timezone = "Europe/Paris"', 'timezone = "Europe/Pariss"', "calendar.timezone", "IANA"),
        ('timezone = "Europe/Paris"', "timezone = 1", "calendar.timezone", "unknown time zone"),
        ('opens = "09:00"', 'working_days = ["mon", "fry"]', "calendar.working_days[1]", "unknown weekday"),
        ('opens = "09:00"', "working_days = []", "calendar.working_days", "non-empty"),
        ('opens = "09:00"', 'opens = "9h"', "calendar.opens", "not a time of day"),
        ('opens = "09:00"', 'opens = "25:00"', "calendar.opens", "not a time of day"),
        ('closes = "18:00"', 'closes = "08:00"', "calendar.closes", "not after opens"),
        ('closes = "18:00"', 'closes = "09:00"', "calendar.closes", "not after opens"),
        ('opens = "09:00"', 'holidays = ["2026-13-01"]', "calendar.holidays[0]", "not a date"),
        ('opens = "09:00"', "holidays = [2026-12-25T00:00:00Z]", "calendar.holidays[0]", "not a date"),
        ('opens = "09:00"', "holidays = 2026-12-25", "calendar.holidays", "list of dates"),
        ('within = "1h"', 'within = "1 hour"', "acknowledge.within", '"4h"'),
        ('within = "1h"', "within = 1", "acknowledge.within", "not a delay"),
        ('within = "1h"', "", "acknowledge.within", "missing"),
        ('[acknowledge]\nwithin = "1h"\n', "", "acknowledge", "missing"),
        ('default = "2d"', 'defaults = "2d"', "respond.defaults", "accepts: default"),
        ('default = "2d"', "", "respond.default", "missing"),
        ('default = "2d"', 'default = "2d"\nchannel = "4h"', "respond.channel", "must be a table"),
        ("", '[respond.channel]\nfax = "4h"\n', "respond.channel.fax", "unknown channel"),
        ("", '[respond.channel]\nchat = "4 hours"\n', "respond.channel.chat", "not a delay"),
        ("", '[respond.category]\ncomplaint = "ten days"\n', "respond.category.complaint", "not a delay"),
        (
            "",
            '[respond.category]\ncomplaint = "1d"\nComplaint = "2d"\n',
            "respond.category.Complaint",
            "twice",
        ),
        ("", '[respond.channel_category.fax]\ncomplaint = "1d"\n', "respond.channel_category.fax", "channel"),
        (
            "",
            '[respond.channel_category.email]\ncomplaint = "1x"\n',
            "respond.channel_category.email.complaint",
            "not a delay",
        ),
        ("", '[respond.channel_category]\nemail = "1d"\n', "respond.channel_category.email", "table"),
    ],
)
def test_a_bad_policy_file_names_the_file_and_the_key(old: str, new: str, key: str, hint: str) -> None:
    text = MINIMAL.replace(old, new, 1) if old else MINIMAL + new
    if not old and not new.startswith("["):
        text = new + MINIMAL  # a top-level key must come before the first table
    with pytest.raises(ConfigurationError) as caught:
        ResponsePolicy.from_toml_text(text, source="site/policy.toml")
    message = str(caught.value)
    assert message.startswith(f"response policy site/policy.toml: {key}: ")
    assert hint in message


def test_invalid_toml_names_the_file() -> None:
    with pytest.raises(ConfigurationError, match=r"site/policy\.toml is not valid TOML"):
        ResponsePolicy.from_toml_text("[calendar\n", source="site/policy.toml")


# --- properties ------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Sydney", "Asia/Kolkata"]


@st.composite
def calendars(draw: st.DrawFn) -> BusinessCalendar:
    """Any calendar, including opening hours across the night's clock changes."""
    opens = draw(st.integers(0, 22 * 60))
    closes = draw(st.integers(opens + 60, 24 * 60 - 1))  # shorter days only make the tests slower
    return BusinessCalendar(
        timezone=draw(st.sampled_from(ZONES)),
        working_days=draw(st.frozensets(st.integers(0, 6), min_size=1)),
        opens=time(*divmod(opens, 60)),
        closes=time(*divmod(closes, 60)),
        holidays=draw(st.frozensets(st.dates(date(2026, 1, 1), date(2026, 12, 31)), max_size=30)),
    )


instants = st.datetimes(
    min_value=datetime(2025, 12, 1),
    max_value=datetime(2027, 1, 31),
    timezones=st.sampled_from([UTC, PARIS, NEW_YORK]),
)
delays = st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=40))
fast = settings(max_examples=examples(120), deadline=None)


def assert_within_opening_hours(calendar: BusinessCalendar, at: datetime) -> None:
    local = at.astimezone(ZoneInfo(calendar.timezone))
    day = local.date()
    assert day.weekday() in calendar.working_days and day not in calendar.holidays
    midnight = datetime.combine(day, time(0), tzinfo=local.tzinfo)
    if midnight.utcoffset() == (midnight + timedelta(days=1)).utcoffset():  # no clock change that day
        assert calendar.opens <= local.time() <= calendar.closes


@fast
@given(calendars(), instants, delays)
def test_business_time_is_never_before_the_start_and_inverts(
    calendar: BusinessCalendar, start: datetime, delay: timedelta
) -> None:
    end = calendar.add_business_time(start, delay)
    assert end.tzinfo is UTC
    assert end >= start
    assert calendar.business_time_between(start, end) == delay


@fast
@given(calendars(), instants, delays.filter(bool))
def test_business_time_ends_within_opening_hours(
    calendar: BusinessCalendar, start: datetime, delay: timedelta
) -> None:
    end = calendar.add_business_time(start, delay)
    assert calendar.is_open(end - timedelta(microseconds=1))  # the last moment counted was open
    assert_within_opening_hours(calendar, end)


@fast
@given(calendars(), instants, instants, delays, delays)
def test_business_time_is_monotonic(
    calendar: BusinessCalendar, a: datetime, b: datetime, short: timedelta, long: timedelta
) -> None:
    (a, b), (short, long) = sorted([a, b]), sorted([short, long])
    assert calendar.add_business_time(a, short) <= calendar.add_business_time(b, short)
    assert calendar.add_business_time(a, short) <= calendar.add_business_time(a, long)


@fast
@given(calendars(), instants, instants, st.integers(0, 8), st.integers(0, 8))
def test_business_days_are_monotonic_and_within_opening_hours(
    calendar: BusinessCalendar, a: datetime, b: datetime, few: int, many: int
) -> None:
    (a, b), (few, many) = sorted([a, b]), sorted([few, many])
    assert a <= calendar.add_business_days(a, few) <= calendar.add_business_days(b, few)
    assert calendar.add_business_days(a, few) <= calendar.add_business_days(a, many)
    if many:
        assert_within_opening_hours(calendar, calendar.add_business_days(a, many))


@fast
@given(calendars(), instants, instants)
def test_business_time_between_is_additive(calendar: BusinessCalendar, a: datetime, b: datetime) -> None:
    middle = a + (b - a) / 2
    whole = calendar.business_time_between(a, b)
    assert whole == calendar.business_time_between(a, middle) + calendar.business_time_between(middle, b)
    assert abs(whole) <= abs(b - a)
