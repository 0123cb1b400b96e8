"""Business time: when the business is open (:class:`BusinessCalendar`) and delays counted on it (:class:`Delay`).

A response policy (:mod:`caseledger.ledger.domain.policy`) counts its deadlines here. Every instant
returned is timezone-aware UTC; naive datetimes are refused.

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
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from caseledger.ledger.errors import ValidationError

__all__ = ["BusinessCalendar", "Delay", "DelayUnit"]

DelayUnit = Literal["minutes", "hours", "days", "months"]

_ONE_DAY = timedelta(days=1)
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


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
    holidays: frozenset[date] = frozenset()  # the company's own closing days
    public_holidays: str | None = None  # a country code: its public holidays from the holidays package
    subdivision: str | None = None  # a subdivision of that country, e.g. "6AE" (Alsace) for FR

    def __post_init__(self) -> None:
        _zone(self.timezone)
        if self.subdivision is not None and self.public_holidays is None:
            raise ValidationError(
                f"subdivision {self.subdivision!r} needs a country: set public_holidays, e.g. \"FR\""
            )
        if self.public_holidays is not None:
            object.__setattr__(self, "_public", _public_holidays(self.public_holidays, self.subdivision))
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

    def is_holiday(self, day: date) -> bool:
        """Whether ``day`` is a public holiday of the calendar's country or one of the company's closing days."""
        if day in self.holidays:
            return True
        public = self.__dict__.get("_public")
        return public is not None and day in public

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

    def add_months(self, start: datetime, months: int) -> datetime:
        """The same local date and clock time ``months`` calendar months later (clamped to the month's end)."""
        start = _utc(start, "start")
        local = start.astimezone(self._tz)
        month = local.month - 1 + _whole(months, "months")
        year, month = local.year + month // 12, month % 12 + 1
        if year > 9999:
            raise ValidationError("months ran past the year 9999; use a shorter delay")
        last = (date(year + month // 12, month % 12 + 1, 1) - _ONE_DAY).day if year < 9999 or month < 12 else 31
        wall = local.replace(tzinfo=None, year=year, month=month, day=min(local.day, last))
        return wall.replace(tzinfo=self._tz).astimezone(UTC)

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
        if day.weekday() in self.working_days and not self.is_holiday(day):
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
        if self.public_holidays:
            where = self.public_holidays + (f"-{self.subdivision}" if self.subdivision else "")
            line += f", closed on the public holidays of {where}"
        if self.holidays:
            first, last = min(self.holidays), max(self.holidays)
            count = len(self.holidays)
            line += f", {count} closing day{'s' * (count > 1)} from {first} to {last}"
        return line


def _public_holidays(country: str, subdivision: str | None) -> Any:
    """The public holidays of a country (and subdivision) from the maintained ``holidays`` package."""
    import holidays  # pure data and date arithmetic: no I/O

    try:
        return holidays.country_holidays(country, subdiv=subdivision)
    except NotImplementedError:
        raise ValidationError(
            f"the holidays package knows no country {country!r}; use an ISO 3166 code such as FR, BE or CA"
        ) from None
    except ValueError as error:
        known = ", ".join(holidays.list_supported_countries().get(country.upper(), ())) or "none"
        raise ValidationError(
            f"{error}; subdivisions of {country} the holidays package knows: {known}"
        ) from None


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


_DELAY_TEXT = re.compile(r"\s*([0-9]+)\s*(mo|[mhd])\s*", re.IGNORECASE)
_UNIT_BY_LETTER: dict[str, DelayUnit] = {"m": "minutes", "h": "hours", "d": "days", "mo": "months"}
_DELAY_FORMS = (
    '"90m" (business minutes), "4h" (business hours), "2d" (business days) or "2mo" (calendar months)'
)


@dataclass(frozen=True, kw_only=True)
class Delay:
    """How long, counted on a business calendar: minutes or hours of open time, business days, or months.

    Months are calendar months (a regulator's "two months at most"): the same local date and
    clock time that many months later, or the month's last day when it has no such date; they
    do not skip closed days, since a maximum must not grow.
    """

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
        """``"90m"``, ``"4h"``, ``"2d"`` or ``"2mo"``: business minutes, hours or days, or calendar months."""
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
        if self.unit == "months":
            return calendar.add_months(start, self.amount)
        return calendar.add_business_time(start, timedelta(**{self.unit: self.amount}))

    def __str__(self) -> str:
        return f"{self.amount}{'mo' if self.unit == 'months' else self.unit[0]}"

    def _spoken(self) -> str:
        if not self.amount:
            return "immediately"
        unit = self.unit[:-1] if self.amount == 1 else self.unit
        return f"within {self.amount} {'calendar' if self.unit == 'months' else 'business'} {unit}"
