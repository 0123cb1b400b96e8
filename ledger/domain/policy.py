"""Response policy: when an inbound contact must be acknowledged and answered.

Every contact the ledger records gets an acknowledgement carrying a respond-by deadline (story S2).
The deadline comes from a :class:`ResponsePolicy` — a :class:`Delay` per channel and per category —
counted on a :class:`BusinessCalendar`: working days, opening hours and holidays in one time zone.
Every instant returned is timezone-aware UTC; naive datetimes are refused.

Business time
    Only open time counts. On a 09:00–18:00 calendar, Friday 17:30 plus 4 business hours is Monday
    12:30. A deadline may fall exactly on a closing time (Friday 17:30 plus 30 minutes is Friday
    18:00, not Monday 09:00). A delay of zero means "immediately": the start itself.

Business days
    ``N`` business days after an instant is the same point of the business day ``N`` working days
    later. A start outside opening hours first rolls forward to the next opening (received on
    Saturday, or on Friday after closing, counts from Monday's opening). The deadline is then as
    much open time after the opening of the Nth following working day as the rolled start was
    after the opening of its own day, capped at that day's closing. That is the same local clock
    time unless clocks change during opening hours. Monday 10:00 plus 2d is Wednesday 10:00;
    Saturday 11:00 plus 2d is Wednesday 09:00; Monday 19:00 plus 2d is Thursday 09:00.

Daylight saving time
    Opening hours are local clock times. The business opens (closes) at the first instant its
    clock shows the opening (closing) time; a time the clocks skip, such as 02:30 on a
    spring-forward night, is reached when they jump. A day left with no open time has none.

Policy file (TOML)
    ::

        [calendar]                          # required
        timezone = "Europe/Paris"           # required: an IANA time zone name
        working_days = ["mon", "tue", "wed", "thu", "fri"]  # default Monday to Friday
        opens = "09:00"                     # default 09:00; "HH:MM", "HH:MM:SS" or a TOML time
        closes = "18:00"                    # default 18:00; later than opens, the same day
        holidays = [2026-12-25, "2027-01-01"]  # TOML dates or "YYYY-MM-DD"; default none

        [acknowledge]                       # required
        within = "1h"                       # "0m" means immediately

        [respond]                           # required
        default = "2d"                      # required: when no rule below applies

        [respond.channel]                   # optional: one delay per channel
        chat = "4h"

        [respond.category]                  # optional: one delay per category, any channel
        complaint = "10d"

        [respond.channel_category.email]    # optional: one table per channel, a delay per category
        complaint = "5d"

    A delay is a whole number and a unit: ``"90m"`` business minutes, ``"4h"`` business hours,
    ``"2d"`` business days. Channels are those of :class:`ledger.values.Channel`; categories are
    free words, compared in lower case. The most specific rule wins: channel and category, then
    category, then channel, then ``default``. Unknown keys, channels and weekdays are errors, so
    a typo never silently falls back to a default.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from caseledger.ledger.domain.retention import RetentionPolicy
from caseledger.ledger.domain.values import Channel
from caseledger.ledger.errors import ConfigurationError, ValidationError

__all__ = ["BusinessCalendar", "Delay", "DelayUnit", "ResponsePolicy"]

DelayUnit = Literal["minutes", "hours", "days"]

_ONE_DAY = timedelta(days=1)
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DEFAULT_FILE = "default_policy.toml"


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValidationError(
            f"unknown time zone {name!r}; use an IANA name such as Europe/Paris or "
            "America/New_York (if none is found, install the tzdata package)"
        ) from None


def _utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise ValidationError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(
            f"timestamps must be timezone-aware: {name} {value.isoformat()} has no time zone; "
            "pass e.g. datetime(..., tzinfo=timezone.utc)"
        )
    return value.astimezone(UTC)


def _whole(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{name} must be a whole number >= 0, got {value!r}")
    return value


@dataclass(frozen=True, kw_only=True)
class BusinessCalendar:
    """When the business is open: working days, opening hours and holidays in one time zone."""

    timezone: str = "Europe/Paris"
    working_days: frozenset[int] = frozenset({0, 1, 2, 3, 4})
    opens: time = time(9, 0)
    closes: time = time(18, 0)
    holidays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        _zone(self.timezone)
        days = frozenset(self.working_days)
        if not days or not all(isinstance(d, int) and 0 <= d <= 6 for d in days):
            raise ValidationError(
                f"working_days must be a non-empty set of weekdays 0-6 (Monday=0), got {sorted(days)}"
            )
        for name in ("opens", "closes"):
            clock = getattr(self, name)
            if not isinstance(clock, time) or clock.tzinfo is not None:
                raise ValidationError(
                    f"{name} must be a local time of day without a zone, e.g. time(9, 0); got {clock!r}"
                )
            object.__setattr__(self, name, clock.replace(fold=0))
        if self.closes <= self.opens:
            raise ValidationError(
                f"closes ({self.closes}) must be after opens ({self.opens}) on the same day"
            )
        holidays = frozenset(self.holidays)
        if not all(isinstance(d, date) and not isinstance(d, datetime) for d in holidays):
            raise ValidationError("holidays must be dates (datetime.date), not datetimes or strings")
        object.__setattr__(self, "working_days", days)
        object.__setattr__(self, "holidays", holidays)

    def is_open(self, at: datetime) -> bool:
        """Whether ``at`` is within opening hours of a working day that is not a holiday."""
        at = _utc(at, "at")
        span = self._open_span(self._local_day(at))
        return span is not None and span[0] <= at < span[1]

    def add_business_time(self, start: datetime, delay: timedelta) -> datetime:
        """The instant when ``delay`` of open time has passed since ``start``, in UTC."""
        start = _utc(start, "start")
        if not isinstance(delay, timedelta) or delay < timedelta(0):
            raise ValidationError(f"delay must be a timedelta >= 0, got {delay!r}")
        if not delay:
            return start
        left = delay
        for opens, closes in self._spans_from(self._local_day(start)):
            if closes <= start:
                continue
            begin = max(opens, start)
            if left <= closes - begin:
                return begin + left
            left -= closes - begin
        raise AssertionError("unreachable: open spans never run out")

    def add_business_days(self, start: datetime, days: int) -> datetime:
        """The same point of the business day, ``days`` working days later (see the module doc)."""
        start = _utc(start, "start")
        if not _whole(days, "days"):
            return start
        spans = self._spans_from(self._local_day(start))
        opens, closes = next((o, c) for o, c in spans if c > start)
        into_day = max(opens, start) - opens
        for _ in range(days):
            opens, closes = next(spans)
        return min(opens + into_day, closes)

    def business_time_between(self, start: datetime, end: datetime) -> timedelta:
        """Open time between two instants; negative when ``end`` is before ``start``."""
        start, end = _utc(start, "start"), _utc(end, "end")
        if end < start:
            return -self.business_time_between(end, start)
        total = timedelta(0)
        for opens, closes in self._spans_from(self._local_day(start)):
            if opens >= end:
                return total
            total += max(timedelta(0), min(closes, end) - max(opens, start))
        raise AssertionError("unreachable: open spans never run out")

    @property
    def _tz(self) -> ZoneInfo:
        return _zone(self.timezone)  # ZoneInfo keeps its own cache

    def _local_day(self, at: datetime) -> date:
        return at.astimezone(self._tz).date()

    def _spans_from(self, day: date) -> Iterator[tuple[datetime, datetime]]:
        """The open spans, as UTC instants, of ``day`` and every day after it that has one."""
        last = date.max - _ONE_DAY
        while day < last:
            span = self._open_span(day)
            if span is not None:
                yield span
            day += _ONE_DAY
        raise ValidationError("business time ran past the year 9999; use a shorter delay")

    def _open_span(self, day: date) -> tuple[datetime, datetime] | None:
        # Every contact asks for the spans of the next few days: remember them (a calendar is
        # immutable; the cache is not part of its value).
        cache: dict[date, tuple[datetime, datetime] | None] = self.__dict__.setdefault("_span_cache", {})
        try:
            return cache[day]
        except KeyError:
            pass
        span: tuple[datetime, datetime] | None = None
        if day.weekday() in self.working_days and day not in self.holidays:
            opens, closes = self._instant(day, self.opens), self._instant(day, self.closes)
            span = (opens, closes) if opens < closes else None
        if len(cache) > 4096:
            cache.clear()
        cache[day] = span
        return span

    def _instant(self, day: date, clock: time) -> datetime:
        """The first instant ``day``'s local clock shows ``clock``, in UTC."""
        wall = datetime.combine(day, clock)
        # fold=0 is the first of two readings of an ambiguous time, and for a skipped time an
        # instant after the jump; fold=1 of a skipped time is an instant before it.
        after = wall.replace(tzinfo=self._tz).astimezone(UTC)
        if after.astimezone(self._tz).replace(tzinfo=None) == wall:
            return after
        before = wall.replace(tzinfo=self._tz, fold=1).astimezone(UTC)
        return self._jump_between(before, after)

    def _jump_between(self, before: datetime, after: datetime) -> datetime:
        """The instant the clocks jump forward, found to the second (tz data uses whole seconds)."""
        offset = before.astimezone(self._tz).utcoffset()
        low, high = math.floor(before.timestamp()), math.ceil(after.timestamp())
        while high - low > 1:
            middle = (low + high) // 2
            if datetime.fromtimestamp(middle, self._tz).utcoffset() == offset:
                low = middle
            else:
                high = middle
        return datetime.fromtimestamp(high, UTC)

    def _describe(self) -> str:
        days = _describe_weekdays(self.working_days)
        hours = f"{self.opens:%H:%M}-{self.closes:%H:%M}"
        line = f"Open {days} {hours} ({self.timezone})"
        if self.holidays:
            first, last = min(self.holidays), max(self.holidays)
            count = len(self.holidays)
            line += f", {count} holiday{'s' * (count > 1)} from {first} to {last}"
        return line


def _describe_weekdays(days: Iterable[int]) -> str:
    ordered = sorted(days)
    runs: list[list[int]] = []
    for day in ordered:
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    names = [_WEEKDAYS[d].capitalize() for d in range(7)]
    return ", ".join(
        f"{names[r[0]]}-{names[r[-1]]}" if len(r) > 2 else ", ".join(names[d] for d in r) for r in runs
    )


_DELAY_TEXT = re.compile(r"\s*([0-9]+)\s*([mhdMHD])\s*")
_UNIT_BY_LETTER: dict[str, DelayUnit] = {"m": "minutes", "h": "hours", "d": "days"}
_DELAY_FORMS = '"90m" (business minutes), "4h" (business hours) or "2d" (business days)'


@dataclass(frozen=True, kw_only=True)
class Delay:
    """How long, counted on a business calendar: minutes or hours of open time, or business days."""

    amount: int
    unit: DelayUnit

    def __post_init__(self) -> None:
        _whole(self.amount, "a delay's amount")
        if self.unit not in get_args(DelayUnit):
            raise ValidationError(
                f"unknown delay unit {self.unit!r}; use one of: {', '.join(get_args(DelayUnit))}"
            )

    @classmethod
    def parse(cls, text: str) -> Delay:
        """``"90m"``, ``"4h"`` or ``"2d"``: business minutes, hours or days."""
        match = _DELAY_TEXT.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValidationError(
                f"delay {text!r} is not understood; write a whole number and a unit: {_DELAY_FORMS}"
            )
        return cls(amount=int(match[1]), unit=_UNIT_BY_LETTER[match[2].lower()])

    def apply(self, calendar: BusinessCalendar, start: datetime) -> datetime:
        """The instant this delay after ``start`` on ``calendar``, in UTC."""
        if self.unit == "days":
            return calendar.add_business_days(start, self.amount)
        return calendar.add_business_time(start, timedelta(**{self.unit: self.amount}))

    def __str__(self) -> str:
        return f"{self.amount}{self.unit[0]}"

    def _spoken(self) -> str:
        if not self.amount:
            return "immediately"
        unit = self.unit[:-1] if self.amount == 1 else self.unit
        return f"within {self.amount} business {unit}"


def _category(value: str) -> str | None:
    """Categories are free words compared in lower case, as contacts carry them."""
    return value.strip().lower() or None


@dataclass(frozen=True, kw_only=True)
class ResponsePolicy:
    """How soon an inbound contact must be acknowledged and answered, by channel and category."""

    calendar: BusinessCalendar = field(default_factory=BusinessCalendar)
    acknowledge_within: Delay
    respond_within: Mapping[str, Delay] = field(default_factory=dict)
    category_respond_within: Mapping[str, Delay] = field(default_factory=dict)
    channel_category_respond_within: Mapping[tuple[str, str], Delay] = field(default_factory=dict)
    default_respond_within: Delay
    retention: RetentionPolicy | None = None  # when tick erases customers (ledger.domain.retention)

    def __post_init__(self) -> None:
        if not isinstance(self.calendar, BusinessCalendar):
            raise ValidationError(f"calendar must be a BusinessCalendar, got {self.calendar!r}")
        by_channel = {Channel.parse(k).value: v for k, v in self.respond_within.items()}
        by_category = {self._category_key(k): v for k, v in self.category_respond_within.items()}
        by_both = {
            (Channel.parse(ch).value, self._category_key(cat)): v
            for (ch, cat), v in self.channel_category_respond_within.items()
        }
        if len(by_channel) + len(by_category) + len(by_both) != (
            len(self.respond_within)
            + len(self.category_respond_within)
            + len(self.channel_category_respond_within)
        ):
            raise ValidationError("a channel or category is given twice once written in lower case; keep one")
        delays = [self.acknowledge_within, self.default_respond_within]
        delays += [*by_channel.values(), *by_category.values(), *by_both.values()]
        if not all(isinstance(d, Delay) for d in delays):
            raise ValidationError("every delay of a response policy must be a Delay, e.g. Delay.parse('4h')")
        object.__setattr__(self, "respond_within", MappingProxyType(by_channel))
        object.__setattr__(self, "category_respond_within", MappingProxyType(by_category))
        object.__setattr__(self, "channel_category_respond_within", MappingProxyType(by_both))

    @staticmethod
    def _category_key(value: str) -> str:
        key = _category(value) if isinstance(value, str) else None
        if key is None:
            raise ValidationError(f"a category must be a non-empty word, got {value!r}")
        return key

    def respond_by(self, *, channel: str, category: str | None, received_at: datetime) -> datetime:
        """When the answer is due, by the most specific rule: channel and category, category, channel."""
        return self._respond_within(channel, category).apply(self.calendar, received_at)

    def acknowledge_by(self, *, channel: str, received_at: datetime) -> datetime:
        """When the acknowledgement of a contact received on ``channel`` is due."""
        Channel.parse(channel)
        return self.acknowledge_within.apply(self.calendar, received_at)

    def _respond_within(self, channel: str, category: str | None) -> Delay:
        """Channel and category, then category, then channel, then the default."""
        name = Channel.parse(channel).value
        topic = _category(category) if category else None
        if topic is not None:
            for rule in (
                self.channel_category_respond_within.get((name, topic)),
                self.category_respond_within.get(topic),
            ):
                if rule is not None:
                    return rule
        return self.respond_within.get(name, self.default_respond_within)

    @classmethod
    def default(cls) -> ResponsePolicy:
        """The built-in policy, ``ledger/default_policy.toml``."""
        return cls.from_toml_text(cls.default_text(), source=f"built-in ledger/{_DEFAULT_FILE}")

    @staticmethod
    def default_text() -> str:
        """The built-in policy file's text: a starting point for a company's own."""
        return resources.files("caseledger.ledger.domain").joinpath(_DEFAULT_FILE).read_text(encoding="utf-8")

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> ResponsePolicy:
        """The policy in a TOML file (format in the module docstring)."""
        source = os.fsdecode(path)
        try:
            text = Path(source).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigurationError(
                f"response policy {source} does not exist; give the path of an existing TOML policy with "
                "--policy or CASELEDGER_POLICY, or unset both to use the built-in policy"
            ) from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigurationError(
                f"response policy {source} cannot be read ({error}); make it a readable UTF-8 TOML file"
            ) from None
        return cls.from_toml_text(text, source=source)

    @classmethod
    def from_toml_text(cls, text: str, *, source: str = "<string>") -> ResponsePolicy:
        """The policy in TOML ``text``; ``source`` names it in error messages."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigurationError(
                f"response policy {source} is not valid TOML ({error}); fix the syntax there"
            ) from None
        return _PolicyFile(source).policy(cls, data)

    def describe(self) -> str:
        """A few lines for a human: the calendar and every rule."""
        lines = [
            self.calendar._describe(),
            f"Acknowledge {self.acknowledge_within._spoken()}",
            f"Respond {self.default_respond_within._spoken()} unless a rule below applies",
        ]
        rules = [
            ("by channel", dict(self.respond_within)),
            ("by category", dict(self.category_respond_within)),
            (
                "by channel and category",
                {f"{ch}/{cat}": v for (ch, cat), v in self.channel_category_respond_within.items()},
            ),
        ]
        for title, rule in rules:
            if rule:
                lines.append(f"  {title}: " + ", ".join(f"{k} {v}" for k, v in sorted(rule.items())))
        return "\n".join(lines)


_EXAMPLES = {
    "calendar": '[calendar] with timezone = "Europe/Paris"',
    "calendar.timezone": 'timezone = "Europe/Paris"',
    "calendar.working_days": 'working_days = ["mon", "tue", "wed", "thu", "fri"]',
    "calendar.opens": 'opens = "09:00"',
    "calendar.closes": 'closes = "18:00"',
    "calendar.holidays": 'holidays = [2026-12-25, "2027-01-01"]',
    "acknowledge": '[acknowledge] with within = "1h"',
    "acknowledge.within": 'within = "1h"',
    "respond": '[respond] with default = "2d"',
    "respond.default": 'default = "2d"',
    "respond.channel": '[respond.channel] with chat = "4h"',
    "respond.category": '[respond.category] with complaint = "10d"',
    "respond.channel_category": '[respond.channel_category.email] with complaint = "5d"',
}
_CHANNELS = tuple(c.value for c in Channel)
_CLOCK_TEXT = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?")
_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class _PolicyFile:
    """Reads a parsed policy file; every error names the file, the key and a fix."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, problem: str, fix: str) -> ConfigurationError:
        return ConfigurationError(f"response policy {self.source}: {key}: {problem}; {fix}")

    def table(
        self,
        data: object,
        key: str,
        *,
        known: tuple[str, ...] | None = None,
        required: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """``data`` as a table whose keys are all ``known`` (any key when None)."""
        where = f"[{key}]" if key else "the top level"
        if not isinstance(data, dict):
            raise self.error(key, f"must be a table, got {data!r}", f"write {_example(key)}")
        for name in data:
            if known is not None and name not in known:
                allowed = ", ".join(known)
                raise self.error(_join(key, name), "unknown key", f"{where} accepts: {allowed}")
        for name in required:
            if name not in data:
                full = _join(key, name)
                raise self.error(full, "missing", f"add {_example(full)}" + f" to {where}" * bool(key))
        return data

    def policy(self, cls: type[ResponsePolicy], data: dict[str, Any]) -> ResponsePolicy:
        sections = ("calendar", "acknowledge", "respond")
        self.table(data, "", known=(*sections, "retention"), required=sections)
        calendar = self.calendar(data["calendar"])
        acknowledge = self.table(data["acknowledge"], "acknowledge", known=("within",), required=("within",))
        respond = self.table(
            data["respond"],
            "respond",
            known=("default", "channel", "category", "channel_category"),
            required=("default",),
        )
        by_channel = {
            self.channel(name, f"respond.channel.{name}"): self.delay(text, f"respond.channel.{name}")
            for name, text in self.table(respond.get("channel", {}), "respond.channel").items()
        }
        by_category = self.categories(respond.get("category", {}), "respond.category")
        by_both: dict[tuple[str, str], Delay] = {}
        nested = self.table(respond.get("channel_category", {}), "respond.channel_category")
        for name, table in nested.items():
            key = f"respond.channel_category.{name}"
            channel = self.channel(name, key)
            for category, delay in self.categories(table, key).items():
                by_both[(channel, category)] = delay
        try:
            return cls(
                calendar=calendar,
                acknowledge_within=self.delay(acknowledge["within"], "acknowledge.within"),
                default_respond_within=self.delay(respond["default"], "respond.default"),
                respond_within=by_channel,
                category_respond_within=by_category,
                channel_category_respond_within=by_both,
                retention=RetentionPolicy.from_table(data.get("retention"), source=self.source),
            )
        except ValidationError as error:  # every value was checked above; kept as a safety net
            raise ConfigurationError(f"response policy {self.source}: {error}") from None

    def calendar(self, data: object) -> BusinessCalendar:
        table = self.table(
            data,
            "calendar",
            known=("timezone", "working_days", "opens", "closes", "holidays"),
            required=("timezone",),
        )
        zone = table["timezone"]
        try:
            _zone(zone)
        except ValidationError:
            raise self.error(
                "calendar.timezone",
                f"unknown time zone {zone!r}",
                'use an IANA name, e.g. timezone = "Europe/Paris" (if none is found, install the '
                "tzdata package)",
            ) from None
        opens = self.clock(table.get("opens", BusinessCalendar.opens), "calendar.opens")
        closes = self.clock(table.get("closes", BusinessCalendar.closes), "calendar.closes")
        if closes <= opens:
            raise self.error(
                "calendar.closes",
                f"{closes} is not after opens {opens}",
                "set a closing time later the same day than the opening time; overnight opening "
                "hours are not supported",
            )
        return BusinessCalendar(
            timezone=zone,
            working_days=self.weekdays(table.get("working_days", list(_WEEKDAYS[:5]))),
            opens=opens,
            closes=closes,
            holidays=self.holidays(table.get("holidays", [])),
        )

    def weekdays(self, value: object) -> frozenset[int]:
        key = "calendar.working_days"
        if not isinstance(value, list) or not value:
            raise self.error(key, f"must be a non-empty list, got {value!r}", f"write {_EXAMPLES[key]}")
        days = set()
        for index, name in enumerate(value):
            text = name.strip().lower() if isinstance(name, str) else None
            if text in _WEEKDAYS:
                days.add(_WEEKDAYS.index(text))
            elif text in _WEEKDAY_NAMES:
                days.add(_WEEKDAY_NAMES.index(text))
            else:
                raise self.error(
                    f"{key}[{index}]", f"unknown weekday {name!r}", f"use {', '.join(_WEEKDAYS)}"
                )
        return frozenset(days)

    def clock(self, value: object, key: str) -> time:
        if isinstance(value, time) and value.tzinfo is None:
            return value
        match = _CLOCK_TEXT.fullmatch(value) if isinstance(value, str) else None
        if match is not None:
            try:
                return time(int(match[1]), int(match[2]), int(match[3] or 0))
            except ValueError:
                pass
        raise self.error(key, f"{value!r} is not a time of day", f'write "HH:MM", e.g. {_EXAMPLES[key]}')

    def holidays(self, value: object) -> frozenset[date]:
        key = "calendar.holidays"
        if not isinstance(value, list):
            raise self.error(key, f"must be a list of dates, got {value!r}", f"write {_EXAMPLES[key]}")
        days = set()
        for index, item in enumerate(value):
            if isinstance(item, date) and not isinstance(item, datetime):
                days.add(item)
                continue
            if isinstance(item, str) and _DATE_TEXT.fullmatch(item):
                try:
                    days.add(date.fromisoformat(item))
                    continue
                except ValueError:
                    pass
            raise self.error(
                f"{key}[{index}]",
                f"{item!r} is not a date",
                'write a TOML date such as 2026-12-25 or a string such as "2026-12-25"',
            )
        return frozenset(days)

    def channel(self, name: str, key: str) -> str:
        if name not in _CHANNELS:
            raise self.error(key, f"unknown channel {name!r}", f"use one of: {', '.join(_CHANNELS)}")
        return name

    def categories(self, data: object, key: str) -> dict[str, Delay]:
        delays: dict[str, Delay] = {}
        for name, text in self.table(data, key).items():
            category = _category(name)
            if category is None:
                raise self.error(key, "a category name is empty", "name the category, e.g. complaint")
            if category in delays:
                raise self.error(
                    _join(key, name),
                    f"category {category!r} is given twice",
                    "categories are compared in lower case; keep one of them",
                )
            delays[category] = self.delay(text, _join(key, name))
        return delays

    def delay(self, value: object, key: str) -> Delay:
        try:
            return Delay.parse(value)  # type: ignore[arg-type]  # parse refuses non-strings
        except ValidationError:
            raise self.error(
                key, f"{value!r} is not a delay", f"write a whole number and a unit: {_DELAY_FORMS}"
            ) from None


def _example(key: str) -> str:
    return _EXAMPLES.get(key) or f'[{key}] with complaint = "5d"'  # a respond.channel_category.<channel>


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name
