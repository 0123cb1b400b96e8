"""What the customer reads: the port the domain renders customer texts through, who reads them, and the port
that signs the receipt an acknowledgement carries (``ContactReceipts``).

The Case aggregate decides *that* a text goes out and with which facts (the reference, the
copy of the request, the respond-by, the terms agreed); the wording comes from a company's
templates, rendered outside the domain by an adapter of :class:`CustomerTexts`
(``caseledger.ledger.texts.TemplateTexts``: Jinja2 in a sandbox, dates by Babel). The event
keeps the rendered text verbatim with the template's id and version and the locale, so what
the customer read is on record and a later template change never rewrites history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from caseledger.ledger.domain.personal import is_erased, unless_erased
from caseledger.ledger.errors import ValidationError

__all__ = [
    "TEXT_KINDS", "Audience", "ContactReceipts", "CustomerTexts", "RenderedText", "TextKind", "TextSettings", "Writer",
    "check_time_zone",
]

TextKind = Literal[
    "request_copy",
    "acknowledgement",
    "written_confirmation",
    "notice_status_changed",
    "notice_closed",
    "notice_cancelled",
    "notice_reopened",
    "notice_promise_withdrawn",
]
TEXT_KINDS: tuple[TextKind, ...] = (
    "request_copy",
    "acknowledgement",
    "written_confirmation",
    "notice_status_changed",
    "notice_closed",
    "notice_cancelled",
    "notice_reopened",
    "notice_promise_withdrawn",
)


def check_time_zone(name: str, what: str = "time zone") -> str:
    """``name`` if it is an IANA time zone; a ValidationError saying how to write one otherwise."""
    if is_erased(name):
        raise ValidationError(
            f"the {what} was erased with the customer's personal data; give their zone again (an IANA name "
            "such as Europe/Paris), or none for the policy's default"
        )
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValidationError(
            f"unknown {what} {name!r}; use an IANA name such as Europe/Paris or America/Montreal"
        ) from None
    return name


@dataclass(frozen=True, kw_only=True)
class Audience:
    """Who reads a text: their locale (``fr_FR``, ``en``) and their time zone (IANA)."""

    locale: str
    time_zone: str

    def __post_init__(self) -> None:
        if is_erased(self.locale) or not self.locale.strip():
            raise ValidationError("a customer's locale must not be empty, e.g. fr_FR or en_GB")
        check_time_zone(self.time_zone)


@dataclass(frozen=True, kw_only=True)
class RenderedText:
    """A text as the customer receives it, and what it was made from."""

    text: str
    template_id: str  # e.g. "builtin:fr/acknowledgement" or "company:fr/acknowledgement"
    template_version: str  # "sha256:" + hex digest of the template source(s) rendered
    locale: str  # the locale the text was written for (dates, words), e.g. fr_FR


class CustomerTexts(Protocol):
    """Renders one kind of customer text for an audience from the facts the domain gives."""

    def render(self, kind: TextKind, audience: Audience, facts: Mapping[str, Any]) -> RenderedText:
        """The text of ``kind`` for ``audience``; ``facts`` are plain values (datetimes are UTC)."""
        ...


@dataclass(frozen=True, kw_only=True)
class TextSettings:
    """A policy's ``[texts]``: the default locale and zone (per channel too), the company, its templates."""

    locale: str = "fr_FR"
    time_zone: str | None = None  # None: the calendar's time zone
    channel_locales: Mapping[str, str] = field(default_factory=dict)  # channel value -> locale
    channel_time_zones: Mapping[str, str] = field(default_factory=dict)  # channel value -> IANA zone
    company: str = "Le service clients"
    templates: str | None = None  # a folder of the company's templates, overriding the built-in ones

    def __post_init__(self) -> None:
        if self.time_zone is not None:
            check_time_zone(self.time_zone)
        for zone in self.channel_time_zones.values():
            check_time_zone(zone)
        if not self.company.strip():
            raise ValidationError("texts.company must name the company that signs the texts")
        object.__setattr__(self, "channel_locales", MappingProxyType(dict(self.channel_locales)))
        object.__setattr__(self, "channel_time_zones", MappingProxyType(dict(self.channel_time_zones)))

    def audience(self, channel: str | None, calendar_zone: str, *, locale: str | None = None,
                 time_zone: str | None = None) -> Audience:
        """The customer's own choice where they made one, else this channel's default, else the policy's.

        A choice that was erased is no choice: the customer gets the defaults, never the marker.
        """
        locale, time_zone = unless_erased(locale), unless_erased(time_zone)
        default_zone = self.time_zone or calendar_zone
        return Audience(
            locale=locale or self.channel_locales.get(channel or "", self.locale),
            time_zone=time_zone or self.channel_time_zones.get(channel or "", default_zone),
        )


@dataclass(frozen=True, kw_only=True)
class Writer:
    """Writes the texts of one command for one customer: the templates, and who reads them."""

    texts: CustomerTexts
    audience: Audience

    def write(self, kind: TextKind, facts: Mapping[str, Any]) -> RenderedText:
        return self.texts.render(kind, self.audience, facts)

    def record(self, kind: TextKind, facts: Mapping[str, Any]) -> dict[str, Any]:
        """The fields an event keeps of the text: the text itself, its template id and version, the locale."""
        rendered = self.write(kind, facts)
        return {
            "text": rendered.text, "template_id": rendered.template_id,
            "template_version": rendered.template_version, "locale": rendered.locale,
        }


class ContactReceipts(Protocol):
    """Who signs the receipt an acknowledgement carries (the transparency log's key, outside the domain): the case
    only asks, once the contact's event is triggered."""

    def new_salt(self) -> str:
        """A fresh secret for one contact's receipt (kept sealed in its ``ContactReceived``)."""
        ...

    def receipt(self, case: Any, contact_id: str) -> str:
        """The signed receipt of ``contact_id``, whose ``ContactReceived`` was just triggered on ``case``."""
        ...
