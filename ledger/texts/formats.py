"""How a language writes dates, times, channels and statuses in a customer text (Babel for the dates).

Everything here is cached per (locale, time zone): an acknowledgement is rendered on every
contact, and parsing a locale or a zone each time would cost more than the rendering itself.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_time, get_datetime_format

from caseledger.ledger.errors import ValidationError

__all__ = ["CHANNEL_WORDS", "Formats", "formats_for", "parse_locale"]

# The words for a channel: (what it is, how a message came or goes by it).
CHANNEL_WORDS: dict[str, dict[str, tuple[str, str]]] = {
    "fr": {
        "web_form": ("formulaire de contact", "via notre formulaire de contact"),
        "email": ("courriel", "par courriel"),
        "phone": ("téléphone", "par téléphone"),
        "chat": ("messagerie instantanée", "par messagerie instantanée"),
        "chatbot": ("assistant virtuel", "avec notre assistant virtuel"),
        "social": ("réseaux sociaux", "sur les réseaux sociaux"),
        "sms": ("SMS", "par SMS"),
        "letter": ("courrier", "par courrier"),
        "branch": ("agence", "en agence"),
        "app": ("application mobile", "dans notre application mobile"),
    },
    "en": {
        "web_form": ("contact form", "through our contact form"),
        "email": ("email", "by email"),
        "phone": ("phone", "by phone"),
        "chat": ("live chat", "on our live chat"),
        "chatbot": ("virtual assistant", "with our virtual assistant"),
        "social": ("social media", "on social media"),
        "sms": ("text message", "by text message"),
        "letter": ("letter", "by letter"),
        "branch": ("branch", "at one of our branches"),
        "app": ("mobile app", "in our mobile app"),
    },
}
STATUS_WORDS: dict[str, dict[str, str]] = {
    "fr": {
        "open": "ouverte", "in_progress": "en cours de traitement", "waiting_on_customer": "en attente de votre réponse",
        "on_hold": "suspendue", "closed": "clôturée", "cancelled": "annulée",
    },
    "en": {
        "open": "open", "in_progress": "being handled", "waiting_on_customer": "waiting for your reply",
        "on_hold": "on hold", "closed": "closed", "cancelled": "cancelled",
    },
}
# CLDR's "atTime" date-time pattern ("{date} à {time}"), which Babel does not expose; other
# languages use Babel's full date-time pattern.
_AT_TIME = {"fr": "{1} 'à' {0}", "en": "{1} 'at' {0}"}


@lru_cache(maxsize=256)
def parse_locale(text: str) -> Locale:
    """The Babel locale for ``fr_FR``, ``fr-CA``, ``en``; a ValidationError saying how to write one."""
    try:
        return Locale.parse(text.strip().replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        raise ValidationError(
            f"unknown locale {text!r}; write a language and an optional region, e.g. fr_FR, fr_CA or en_GB"
        ) from None


class Formats:
    """Dates in one zone, written the way one locale writes them; channel and status words."""

    def __init__(self, locale: str, time_zone: str) -> None:
        self.locale = parse_locale(locale)
        self.zone = ZoneInfo(time_zone)
        language = self.locale.language
        self.words = CHANNEL_WORDS.get(language, CHANNEL_WORDS["en"])
        self.statuses = STATUS_WORDS.get(language, STATUS_WORDS["en"])
        self.at_time = _AT_TIME.get(language) or str(get_datetime_format("full", locale=self.locale))
        # Babel parses its patterns on every call; a text shows the date and the minute, so the
        # strings of one day and of one minute of the clock are made once (bounded).
        self._dates: dict[dt.date, str] = {}
        self._times: dict[tuple[int, int], str] = {}

    def local(self, value: dt.datetime) -> dt.datetime:
        if not isinstance(value, dt.datetime) or value.tzinfo is None:
            raise ValidationError(f"a date in a customer text must be a timezone-aware datetime, got {value!r}")
        return value.astimezone(self.zone)

    def datetime(self, value: dt.datetime) -> str:
        """``mercredi 4 mars 2026 à 09:00``: the full date and the short time, in the customer's zone."""
        local = self.local(value)
        return self.at_time.replace("'", "").replace("{1}", self._date(local)).replace("{0}", self._time(local))

    def date(self, value: dt.datetime) -> str:
        """``mercredi 4 mars 2026``."""
        return self._date(self.local(value))

    def time(self, value: dt.datetime) -> str:
        """``09:00``."""
        return self._time(self.local(value))

    def _date(self, local: dt.datetime) -> str:
        day = local.date()
        text = self._dates.get(day)
        if text is None:
            if len(self._dates) > 4096:
                self._dates.clear()
            text = self._dates[day] = str(format_date(local, "full", locale=self.locale))
        return text

    def _time(self, local: dt.datetime) -> str:
        key = (local.hour, local.minute)
        text = self._times.get(key)
        if text is None:  # at most 1440 of them
            text = self._times[key] = str(format_time(local.replace(second=0, microsecond=0), "short",
                                                      locale=self.locale))
        return text

    def channel(self, value: str) -> str:
        """``formulaire de contact``."""
        return self.words.get(str(value), (str(value), str(value)))[0]

    def channel_by(self, value: str) -> str:
        """``via notre formulaire de contact``, ``par téléphone``."""
        return self.words.get(str(value), (str(value), str(value)))[1]

    def status(self, value: str) -> str:
        """``en cours de traitement``."""
        return self.statuses.get(str(value), str(value))


@lru_cache(maxsize=1024)
def formats_for(locale: str, time_zone: str) -> Formats:
    """The (cached) formats of one locale and zone."""
    return Formats(locale, time_zone)
