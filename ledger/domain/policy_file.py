"""Reading a response policy file: every error names the file, the key and a fix.

The format is in :mod:`caseledger.ledger.domain.policy`'s docstring; this module turns a parsed
TOML document into a :class:`~caseledger.ledger.domain.policy.ResponsePolicy`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, TypeVar

from caseledger.ledger.domain.business_time import (
    _DELAY_FORMS,
    _WEEKDAY_NAMES,
    _WEEKDAYS,
    BusinessCalendar,
    Delay,
    _zone,
)
from caseledger.ledger.domain.retention import RetentionPolicy
from caseledger.ledger.domain.texts import TextSettings, check_time_zone
from caseledger.ledger.domain.values import Channel, category_key, check_locale
from caseledger.ledger.errors import ConfigurationError, ValidationError

Policy = TypeVar("Policy")  # the ResponsePolicy class the caller builds (this module never imports it)

__all__ = ["PolicyFile"]

_EXAMPLES = {
    "calendar": '[calendar] with timezone = "Europe/Paris"',
    "calendar.timezone": 'timezone = "Europe/Paris"',
    "calendar.working_days": 'working_days = ["mon", "tue", "wed", "thu", "fri"]',
    "calendar.opens": 'opens = "09:00"',
    "calendar.closes": 'closes = "18:00"',
    "calendar.holidays": 'holidays = [2026-12-24, "2026-12-31"]',
    "calendar.closing_days": 'closing_days = [2026-12-24, "2026-12-31"]',
    "calendar.public_holidays": 'public_holidays = "FR"',
    "calendar.subdivision": 'subdivision = "6AE"',
    "acknowledge": '[acknowledge] with within = "1h"',
    "acknowledge.within": 'within = "1h"',
    "acknowledge.spoken_in_writing": "spoken_in_writing = true",
    "confirm": '[confirm] with within = "1d"',
    "confirm.within": 'within = "1d"',
    "texts": '[texts] with locale = "fr_FR"',
    "texts.locale": 'locale = "fr_FR"',
    "texts.timezone": 'timezone = "Europe/Paris"',
    "texts.company": 'company = "Banque Exemple"',
    "texts.templates": 'templates = "templates"',
    "texts.channel": '[texts.channel.social] with locale = "en"',
    "respond": '[respond] with default = "2d"',
    "respond.default": 'default = "2d"',
    "respond.channel": '[respond.channel] with chat = "4h"',
    "respond.category": '[respond.category] with complaint = "10d"',
    "respond.channel_category": '[respond.channel_category.email] with complaint = "5d"',
}
_CHANNELS = tuple(c.value for c in Channel)
_CLOCK_TEXT = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?")
_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class PolicyFile:
    """Reads a parsed policy file; every error names the file, the key and a fix."""

    def __init__(self, source: str, *, folder: Path | None = None) -> None:
        self.source = source
        self.folder = folder

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

    def policy(self, cls: Callable[..., Policy], data: dict[str, Any]) -> Policy:
        sections = ("calendar", "acknowledge", "respond")
        self.table(data, "", known=(*sections, "confirm", "texts", "retention"), required=sections)
        calendar = self.calendar(data["calendar"])
        acknowledge = self.table(
            data["acknowledge"], "acknowledge", known=("within", "spoken_in_writing"), required=("within",)
        )
        in_writing = acknowledge.get("spoken_in_writing", False)
        if not isinstance(in_writing, bool):
            raise self.error("acknowledge.spoken_in_writing", f"{in_writing!r} is not true or false",
                             f"write {_EXAMPLES['acknowledge.spoken_in_writing']}")
        confirm = self.table(data.get("confirm", {"within": "1d"}), "confirm", known=("within",), required=("within",))
        texts = self.texts(data.get("texts", {}))
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
                confirm_within=self.delay(confirm["within"], "confirm.within"),
                acknowledge_spoken_in_writing=in_writing,
                texts=texts,
                retention=RetentionPolicy.from_table(data.get("retention"), source=self.source),
            )
        except ValidationError as error:  # every value was checked above; kept as a safety net
            raise ConfigurationError(f"response policy {self.source}: {error}") from None

    def calendar(self, data: object) -> BusinessCalendar:
        table = self.table(
            data,
            "calendar",
            known=("timezone", "working_days", "opens", "closes", "holidays", "closing_days", "public_holidays",
                   "subdivision"),
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
        country, subdivision = table.get("public_holidays"), table.get("subdivision")
        for key, value in (("public_holidays", country), ("subdivision", subdivision)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise self.error(f"calendar.{key}", f"{value!r} is not a code", f"write {_EXAMPLES['calendar.' + key]}")
        closing = self.holidays(table.get("holidays", []), "calendar.holidays")
        closing |= self.holidays(table.get("closing_days", []), "calendar.closing_days")
        try:
            return BusinessCalendar(
                timezone=zone,
                working_days=self.weekdays(table.get("working_days", list(_WEEKDAYS[:5]))),
                opens=opens,
                closes=closes,
                holidays=closing,
                public_holidays=country.strip().upper() if country else None,
                subdivision=subdivision.strip() if subdivision else None,
            )
        except ValidationError as error:
            key = "calendar.subdivision" if subdivision else "calendar.public_holidays"
            raise self.error(key, str(error), f"write e.g. {_EXAMPLES[key]}") from None

    def texts(self, data: object) -> TextSettings:
        table = self.table(data, "texts", known=("locale", "timezone", "company", "templates", "channel"))
        values: dict[str, Any] = {}
        for key in ("locale", "timezone", "company", "templates"):
            value = table.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                raise self.error(f"texts.{key}", f"{value!r} is not a non-empty string", f"write {_EXAMPLES['texts.' + key]}")
            values[key] = value.strip()
        if "timezone" in values:
            self.zone(values["timezone"], "texts.timezone")
        if "locale" in values:
            values["locale"] = self.locale(values["locale"], "texts.locale")
        templates = values.pop("templates", None)
        if templates is not None:
            folder = Path(templates).expanduser()
            if not folder.is_absolute() and self.folder is not None:
                folder = self.folder / folder
            if not folder.is_dir():
                raise self.error("texts.templates", f"{folder} is not a folder",
                                 "name the folder of your templates, relative to the policy file or absolute")
            templates = str(folder)
        locales: dict[str, str] = {}
        zones: dict[str, str] = {}
        for name, entry in self.table(table.get("channel", {}), "texts.channel").items():
            key = f"texts.channel.{name}"
            channel = self.channel(name, key)
            entry = self.table(entry, key, known=("locale", "timezone"))
            if "locale" in entry:
                locales[channel] = self.locale(entry["locale"], f"{key}.locale")
            if "timezone" in entry:
                zones[channel] = self.zone(entry["timezone"], f"{key}.timezone")
        return TextSettings(
            locale=values.get("locale", "fr_FR"),
            time_zone=values.get("timezone"),
            company=values.get("company", TextSettings.company),
            templates=templates,
            channel_locales=locales,
            channel_time_zones=zones,
        )

    def zone(self, value: object, key: str) -> str:
        try:
            return check_time_zone(value)  # type: ignore[arg-type]  # refuses non-strings
        except ValidationError:
            raise self.error(key, f"unknown time zone {value!r}", 'use an IANA name, e.g. "Europe/Paris"') from None

    def locale(self, value: object, key: str) -> str:
        try:
            return check_locale(value)  # type: ignore[arg-type]  # refuses non-strings
        except ValidationError:
            raise self.error(key, f"{value!r} is not a locale", 'write a language and an optional region, e.g. "fr_FR" or "en"') from None

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

    def holidays(self, value: object, key: str) -> frozenset[date]:
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
            category = category_key(name)
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
