"""How the agent's pages show a time: in the agent's zone and language, in words, overdue said in words too.

One :class:`AgentClock` per request: ``when(dt)`` gives "mardi 9 décembre à 09:00" (the year only when it
is not this year), ``relative(dt)`` "dans 2 jours" / "il y a 3 heures" / "maintenant" (one rule for every page), ``is_overdue(dt)`` whether the
time has passed. :meth:`AgentClock.choose` picks the zone and the language, first found wins:

1. what the principal says of itself (its zone and locale, when its identity gives them);
2. the agent's own choice: ``?zone=Europe/Paris`` or the ``caseledger_zone`` cookie the page sets;
   the language from the browser's ``Accept-Language``;
3. the service's default: the response policy's ``[texts]`` locale and zone (the company's own).

The pages pass the languages they have words in (:mod:`ledger.service.agent_language`): the first of the
agent's that has, else English, so that the page's ``lang`` is true of its words and of its times.
A zone or language that cannot be read is skipped, never an error: a page shows a time whatever it
is given. Formats are Babel's (CLDR): nothing here is written for one language.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime, format_time, format_timedelta

__all__ = ["ZONE_COOKIE", "AgentClock", "parse_accept_language", "relative"]

ZONE_COOKIE = "caseledger_zone"
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8})*$")
_WEEKDAY = re.compile(r"(?<!E)E{1,3}(?!E)")  # a short weekday, made the full one
_NOW = timedelta(minutes=1)  # closer than this is "now"
_MAX_LANGUAGES = 12  # of an Accept-Language header, the first ones only


@dataclass(frozen=True)
class AgentClock:
    """The agent's zone, language and the instant the page is rendered at."""

    zone: ZoneInfo
    locale: Locale
    now: datetime

    @classmethod
    def choose(cls, *, now: datetime, principal_zone: str | None = None, principal_locale: str | None = None,
               zone: str | None = None, accept_language: str | None = None, default_zone: str = "UTC",
               default_locale: str = "en", languages: Collection[str] | None = None) -> AgentClock:
        """The clock of a request: the first readable zone and language in the order of the module docstring;
        with ``languages`` (those the pages have words in: ``("en", "fr")``), the first of those, else English."""
        chosen_zone = next((z for z in (_zone(principal_zone), _zone(zone), _zone(default_zone)) if z is not None),
                           ZoneInfo("UTC"))
        wanted = [principal_locale, *parse_accept_language(accept_language), default_locale]
        readable = (loc for loc in map(_locale, wanted) if loc is not None)
        chosen_locale = next((loc for loc in readable if languages is None or loc.language in languages),
                             Locale("en"))
        return cls(zone=chosen_zone, locale=chosen_locale, now=now.astimezone(UTC))

    def when(self, dt: datetime) -> str:
        """``dt`` as the agent reads it: weekday, day, month (year if not this year) and hour, in their zone."""
        local = dt.astimezone(self.zone)
        skeleton = "MMMMEd" if local.year == self.now.astimezone(self.zone).year else "yMMMMEd"
        found = self.locale.datetime_skeletons.get(skeleton)
        pattern = _WEEKDAY.sub("EEEE", found.pattern) if found is not None else str(self.locale.date_formats["full"])
        day = format_datetime(local, pattern, locale=self.locale)
        hour = format_time(local, "short", locale=self.locale)
        # CLDR's "date at time" ({1} 'à' {0}); Babel has it only in its locale data, else "{1}, {0}".
        joins = self.locale._data.get("datetime_formats_relative") or {}
        join = str(joins.get("long") or self.locale.datetime_formats.get("long") or "{1} {0}")
        return join.replace("''", "\0").replace("'", "").replace("\0", "'").format(hour, day)

    def relative(self, dt: datetime) -> str:
        """How far ``dt`` is from now, in words: "dans 2 jours", "il y a 3 heures", "maintenant" (:func:`relative`)."""
        return relative(dt - self.now, self.locale)

    def is_overdue(self, dt: datetime) -> bool:
        """Whether ``dt`` (a deadline) has passed."""
        return dt < self.now

    def both(self, dt: datetime) -> str:
        """``when`` and ``relative`` together: "mardi 9 décembre à 09:00 — dans 2 jours"."""
        return f"{self.when(dt)} — {self.relative(dt)}"

    @property
    def language(self) -> str:
        """The page's ``lang`` attribute (BCP 47)."""
        return "-".join(part for part in (self.locale.language, self.locale.territory) if part)


def relative(delta: timedelta, locale: Locale) -> str:
    """The one rule of every agent page for how far a time is, in words: "now" within a minute, else in whole
    minutes, hours, days … ("dans 2 jours", "il y a 3 heures"). The words change at most about once a minute, so
    a section rendered again shows a change only when something changed."""
    if abs(delta) < _NOW:
        return str(locale._data["date_fields"]["second"]["relative"].get(0, "now"))
    return format_timedelta(delta, add_direction=True, threshold=1.1, granularity="minute", locale=locale)


def parse_accept_language(header: str | None) -> list[str]:
    """The languages of an ``Accept-Language`` header, the preferred first (q-values); ``*`` and junk skipped."""
    if not header:
        return []
    found: list[tuple[float, int, str]] = []
    for n, part in enumerate(header.split(",")[:_MAX_LANGUAGES]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        if _LANGUAGE_TAG.match(tag) and quality > 0:
            found.append((-quality, n, tag))
    return [tag for _, _, tag in sorted(found)]


def _zone(name: str | None) -> ZoneInfo | None:
    if not name or len(name) > 64 or ".." in name or name.startswith("/"):
        return None
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # unknown, or not a zone name
        return None


def _locale(tag: str | None) -> Locale | None:
    if not tag or not _LANGUAGE_TAG.match(tag):
        return None
    try:
        return Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return None
