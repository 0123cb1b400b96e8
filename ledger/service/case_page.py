"""The case page a person reads: ``/cases/REF`` as an agent sees it, and the section its live stream pushes.

:func:`render_case` renders the case section (what each server-sent event replaces) for one
:class:`Viewer` — the role (which forms it may use, whether the customer is named), the language and
the time zone — from the case and its :class:`CustomerContext` (the customer's name and other cases).
:func:`render_page` wraps it for a GET: the flash of what was just done, a form's error with the
values typed, the CSRF token and a fresh idempotency key in every form (the pushed section carries
neither: ``/live.js`` fills them in, see :mod:`ledger.service.live`).

Every value goes through Jinja2 with autoescape on; the page runs only ``/live.js`` and reads without
JavaScript.

Times are the agent's: in their zone and language, in words (``mardi 9 décembre à 09:00 — dans
2 jours``), an overdue one marked ``overdue`` in words and in red; the zone and language are chosen and
an instant and how far it is said as on every agent page (:mod:`ledger.service.agent_times`: "now" within a
minute, then minute steps), so that a section rendered again changes only when the case did.

Stable ids (the browser tests drive them): the section ``#case`` holds ``#reference``, ``#status``,
``#customer``; ``#brief`` (the handoff brief, first), ``#deadlines``, ``#items``, ``#promises``,
``#proposals``, ``#timeline``, ``#last-contacts``, ``#contacts``, ``#missed``, ``#act`` (whole-case
forms). Each form has the id ``form-NAME`` (``NAME`` = ``respond-Q1``, ``waive-Q1``, ``keep-P1``,
``withdraw-P1``, ``approve-X1``, ``reject-X1``, ``promise``, ``handoff``, ``status``, ``close``,
``cancel``, ``reopen``), each control ``NAME-FIELD`` (``respond-Q1-body``, ``promise-due``,
``handoff-note`` …) with its ``<label>``, each submit button ``NAME-submit``; a form's error is
``NAME-error``. Outside the section: ``#flash`` (what was done), ``#form-error`` (what was refused),
``#live-state``.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale
from markupsafe import Markup, escape

from caseledger.ledger.domain.case_parts import Status
from caseledger.ledger.domain.directory import Customer
from caseledger.ledger.domain.permissions import Operation, Role, allowed
from caseledger.ledger.domain.personal import ERASED
from caseledger.ledger.service.agent_language import LANGUAGES, N_, environment, words
from caseledger.ledger.service.agent_times import AgentClock, relative
from caseledger.ledger.service.case_templates import CASE_FORMS, FORMS

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.domain.case import Case

__all__ = ["PAGE_HEADERS", "SHOWN", "CustomerContext", "SectionClock", "Viewer", "load_context", "render_case",
           "render_page", "valid_zone", "viewer_for"]

SHOWN = 25  # the most recent contacts, items and deadlines the page lists (all of them: GET /v1/cases/REF)
OTHER_CASES = 10  # the customer's most recent other cases on the timeline
TIMELINE = 40  # entries of the timeline shown
O = Operation  # noqa: E741 -- short: the forms name one each
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


# -- who reads: role, language, zone --------------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """Who the section is rendered for: what differs between two agents' pages of the same case version."""

    role: Role
    locale: str = "en"
    zone: str = "UTC"

    def may(self, operation: Operation) -> bool:
        return allowed(self.role, operation)

    @property
    def language(self) -> str:
        """The page's language, as its catalog is named (``fr``) and as ``lang`` says it (``fr-FR``)."""
        return self.locale.split("_")[0]

    @property
    def lang(self) -> str:
        return self.locale.replace("_", "-")

    @property
    def names_customer(self) -> bool:
        """Whether the customer is named (their identities opened) and their other cases shown: the roles that
        read a customer's history (``history.read``), as ``GET /v1/customers/C/history`` does."""
        return allowed(self.role, O.HISTORY_READ)


def valid_zone(name: str | None) -> str | None:
    """``name`` if it is an IANA zone this machine knows, else None."""
    if not name or len(name) > 64:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


def viewer_for(role: Role, *, accept_language: str | None, zone: str | None, default_locale: str,
               default_zone: str, principal_zone: str | None = None, principal_locale: str | None = None) -> Viewer:
    """The viewer of a request, chosen as every agent page chooses (:meth:`AgentClock.choose`): the principal's own
    zone and locale, ``?zone=`` or the zone cookie, the browser's Accept-Language, else the service's defaults (the
    response policy's locale and zone); its language one the pages have words in (English when none is)."""
    clock = AgentClock.choose(now=datetime.now(UTC), principal_zone=principal_zone, principal_locale=principal_locale,
                              zone=zone, accept_language=(accept_language or "")[:500], default_zone=default_zone,
                              default_locale=default_locale, languages=LANGUAGES)
    return Viewer(role=role, locale=str(clock.locale), zone=clock.zone.key)


@lru_cache(maxsize=64)
def _locale(name: str) -> Locale:
    return Locale.parse(name)


@lru_cache(maxsize=20_000)
def _when(dt: datetime, locale_name: str, zone: str, this_year: int) -> str:
    """An instant in words as every agent page says it (:meth:`AgentClock.when`), kept: a section shows the same
    instants render after render."""
    year = datetime(this_year, 7, 1, tzinfo=UTC)  # when() reads only the year of its ``now``
    return AgentClock(zone=ZoneInfo(zone), locale=_locale(locale_name), now=year).when(dt)


class SectionClock:
    """Times as the viewer reads them, for one render: ``when`` (:mod:`ledger.service.agent_times`, kept),
    ``relative``, ``is_overdue``."""

    def __init__(self, viewer: Viewer, now: datetime) -> None:
        self.viewer = viewer
        self.locale = _locale(viewer.locale)
        self.zone = ZoneInfo(viewer.zone)
        self.now = now
        self.year = now.astimezone(self.zone).year
        self.language = self.locale.language
        self._relative: dict[datetime, str] = {}

    def when(self, dt: datetime | None) -> str:
        """``mardi 9 décembre à 09:00`` (the year when it is not this year's)."""
        if dt is None:
            return "-"
        return _when(dt, self.viewer.locale, self.viewer.zone, self.year)

    def relative(self, dt: datetime | None) -> str:
        """``dans 2 jours``, ``il y a 3 heures``, ``maintenant``: every agent page's rule
        (:func:`~ledger.service.agent_times.relative`), kept for the render."""
        if dt is None:
            return ""
        found = self._relative.get(dt)
        if found is None:
            found = self._relative[dt] = relative(dt - self.now, self.locale)
        return found

    def is_overdue(self, dt: datetime | None) -> bool:
        return dt is not None and dt < self.now

    def iso(self, dt: datetime | None) -> str:
        """The machine-readable instant of a ``<time>`` element (UTC)."""
        return dt.astimezone(UTC).isoformat(timespec="seconds") if dt is not None else ""

    def input_value(self, dt: datetime) -> str:
        """A ``datetime-local`` input's value in the viewer's zone."""
        return dt.astimezone(self.zone).strftime("%Y-%m-%dT%H:%M")


# -- the customer: their name and their other cases -----------------------------------------------------------


@dataclass
class CustomerContext:
    """What the page shows beyond the case: the customer as the ledger may name them, and their other cases."""

    customer_id: str
    identities: list[str] = field(default_factory=list)  # opened; empty once erased
    erased: bool = False
    others: list[Case] = field(default_factory=list)  # their most recent other cases, newest first
    more: int = 0  # other cases not shown


def load_context(ledger: CaseLedger, case: Case) -> CustomerContext:
    """The customer of ``case`` and their most recent other cases, read with ``ledger`` (its keys forgotten after:
    an erasure made meanwhile by another process is in force at the next read)."""
    context = CustomerContext(customer_id=case.customer_id)
    try:
        customer = ledger.get_optional(Customer.id_for(case.customer_id))
        if customer is None:
            return context
        context.identities = [i for i in customer.identities if i != ERASED and not i.endswith(":" + ERASED)]
        context.erased = customer.erased or (not context.identities and bool(customer.erased_keys))
        refs = [r for r in customer.cases if r != case.reference]
        shown = refs[-OTHER_CASES:]
        context.more = len(refs) - len(shown)
        context.others = [ledger.get_case(r) for r in reversed(shown)]
    finally:
        ledger.data_keys.forget()
    return context


# -- what the template reads ----------------------------------------------------------------------------------


@dataclass
class Form:
    """A form as rendered: its values (typed, after a refusal) and its error."""

    values: dict[str, str] = field(default_factory=dict)
    error: str = ""
    lang: str = ""  # the error's language when it is not the page's (a ledger's detail: "en")


@dataclass
class PageState:
    """What only a GET page has: the CSRF token, keys, the failed form, the flash."""

    csrf: str = ""
    keys: bool = False  # fresh idempotency keys in the forms (a GET); else empty, filled by /live.js
    failed: dict[str, Form] = field(default_factory=dict)
    flash: str = ""
    error: str = ""
    error_lang: str = ""  # the error's language when it is not the page's (a ledger's detail: "en")


def _timeline(case: Case, context: CustomerContext, viewer: Viewer) -> list[dict[str, Any]]:
    """Every contact (with its acknowledgement) and every message sent, across the customer's cases, newest first."""
    cases = [case, *(context.others if viewer.names_customer else [])]
    entries: list[dict[str, Any]] = []
    for c in cases:
        for contact in list(c.contacts.values())[-SHOWN:]:
            ack = c.messages.get(contact.acknowledgement_id or "")
            entries.append({"at": contact.received_at, "case": c, "kind": "contact", "contact": contact,
                            "ack": ack, "items": [c.items[i] for i in contact.item_ids if i in c.items]})
        for message in list(c.messages.values())[-SHOWN:]:
            if message.message_id[:1] in ("R", "W", "N") and message.message_id in c.recorded:
                entries.append({"at": c.recorded[message.message_id], "case": c, "kind": "message",
                                "message": message})
    entries.sort(key=lambda e: e["at"], reverse=True)
    return entries[:TIMELINE]


def _deadlines(case: Case) -> list[tuple[str, str, datetime]]:
    contacts = list(case.contacts.values())[-SHOWN:]
    rows = [(c.contact_id, N_("respond by"), c.respond_by) for c in contacts
            if c.respond_by and any(case.items[i].status == "open" for i in c.item_ids if i in case.items)]
    rows += [(m.message_id, N_("deliver by"), m.due_at) for m in list(case.messages.values())[-SHOWN:]
             if m.due_at and not m.delivered_at]
    rows += [(p.promise_id, N_("promise due"), p.due_at) for p in case.promises.values() if p.status == "open"]
    return sorted(((t, w, d) for t, w, d in rows if d is not None), key=lambda r: r[2])


def _customer_name(context: CustomerContext, viewer: Viewer) -> tuple[str, str | None]:
    """How the customer is named, and in which language when not the page's: their identities as they gave them
    (``""``, unknown), the ledger's ``[erased]`` (``"en"``)."""
    unnamed = words(viewer.language)._("customer %(id)s", id=context.customer_id)
    if not viewer.names_customer:
        return unnamed, None
    if context.erased:
        return ERASED, "en"
    return (", ".join(context.identities), "") if context.identities else (unnamed, None)


def _key() -> str:
    return str(uuid.uuid4())


def render_case(case: Case, viewer: Viewer, context: CustomerContext | None = None, *,
                now: datetime | None = None, page: PageState | None = None) -> str:
    """The case section of the page for ``viewer``: what each server-sent event replaces.

    Read straight from the aggregate and cut to the latest entries, so that a case with hundreds of
    contacts renders in constant time (``GET /v1/cases/REF`` has all of them).
    """
    now = now or datetime.now(UTC)
    context = context or CustomerContext(customer_id=case.customer_id)
    page = page or PageState()
    clock = SectionClock(viewer, now)
    items = list(case.items.values())
    shown_items = [i for i in items if i.status == "open"][-SHOWN:] + [i for i in items if i.status != "open"][-SHOWN:]
    last = {ch: case.contacts[cid] for ch, cid in sorted(case.last_contact_by_channel.items())
            if cid in case.contacts}

    default_due = clock.input_value(now + timedelta(days=1))

    def action(name: str, target: str = "") -> Markup:
        """A form of the section, if the viewer's role may use it (Markup: rendered escaped)."""
        spec = FORMS[name]
        if not viewer.may(spec.operation):
            return Markup("")
        fid = spec.form_id(target)
        failed = page.failed.get(fid)
        if failed is None and not page.csrf and not page.keys:  # a pushed section: the same form each time
            return _pushed_form(name, target, case.reference, viewer.zone, default_due, viewer.language)
        hidden = _hidden(page.csrf, _key() if page.keys else "", viewer.zone)
        return _form(spec, target, case.reference, viewer.zone, default_due, hidden, failed or Form(),
                     viewer.language)

    customer, customer_lang = _customer_name(context, viewer)
    template = _template("case_section.html", viewer.language)
    return template.render(
        case=case, viewer=viewer, clock=clock, O=O, items=shown_items, promises=list(case.promises.values())[-SHOWN:],
        proposals=list(case.proposals.values())[-SHOWN:], contacts=list(case.contacts.values())[-SHOWN:],
        last=last, deadlines=_deadlines(case), missed=sorted(case.missed), timeline=_timeline(case, context, viewer),
        customer=customer, customer_lang=customer_lang, context=context, action=action,
        handoff=getattr(case, "last_handoff", None), bodies=getattr(case, "response_bodies", {}),
        brief=case.brief(), active=case.status not in Status.FINAL,
        case_forms=CASE_FORMS,
    )


def _form(spec: Any, target: str, reference: str, zone: str, default_due: str, hidden: Markup, f: Form,
          language: str) -> Markup:
    return Markup(_template("case_form.html", language).render(spec=spec, fid=spec.form_id(target), target=target, reference=reference,
                                         zone=zone, default_due=default_due, hidden=hidden, f=f, attrs=_attrs))


@lru_cache(maxsize=4096)
def _pushed_form(name: str, target: str, reference: str, zone: str, default_due: str, language: str) -> Markup:
    """A form of a pushed section (no token, no key: /live.js sets them), kept: the section of every change has
    the same forms."""
    return _form(FORMS[name], target, reference, zone, default_due, _hidden("", "", zone), Form(), language)


def _hidden(csrf: str, key: str, zone: str) -> Markup:
    return Markup(f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
                  f'<input type="hidden" name="key" value="{escape(key)}">'
                  f'<input type="hidden" name="zone" value="{escape(zone)}">')


def _attrs(control_id: str, name: str) -> Markup:
    """`` id="…" name="…"`` of a control (a drop-down's, written so that no template line reads like SQL)."""
    return Markup(f' id="{escape(control_id)}" name="{escape(name)}"')


@lru_cache(maxsize=32)
def _template(name: str, language: str) -> Any:
    return environment(language).get_template(name)


def render_page(case: Case, viewer: Viewer, context: CustomerContext, page: PageState, *,
                now: datetime | None = None) -> str:
    """The whole page of a GET (or of a refused form): the section, the flash, the error, the live script."""
    page.keys = True
    section = render_case(case, viewer, context, now=now, page=page)
    return _template("case_page.html", viewer.language).render(case=case, viewer=viewer, page=page,
                                                               section=Markup(section), lang=viewer.lang)


def flash_text(done: str | None, target: str | None, language: str = "en") -> str:
    """The flash of a redirect's ``?done=ACTION&id=HANDLE`` (codes only: nothing personal in a URL), in ``language``."""
    spec = FORMS.get(done or "")
    if spec is None:
        return ""
    handle = target if target and re.fullmatch(r"[A-Z]{1,3}\d{1,6}", target) else ""
    return words(language)._(spec.done).format(id=handle).replace(" ()", "").replace("  ", " ").strip()
