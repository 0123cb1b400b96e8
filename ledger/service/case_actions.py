"""Acting from the case page: each form of ``/cases/REF`` posts to ``/cases/REF/act/ACTION``, which runs the ledger's
existing command on the same path as the JSON write routes (:mod:`ledger.service.write_routes`).

- **The same command, the same actor, the same permission.** A form runs the command of
  :class:`~caseledger.ledger.commands.LedgerCommands` its JSON route runs (``respond``, ``waive_item``,
  ``make_promise`` …), through the same group committer, as the authenticated principal
  (:meth:`Principal.actor`), under the operation of the matrix the JSON route names (each action is a
  route of its own, with its ``x-operation``). The page shows no form the role may not use; a post
  anyway is refused (403 page), nothing recorded.
- **Once, whatever the browser does.** Each rendered form carries a fresh idempotency key (a UUID,
  hidden field ``key``), kept in the same idempotency store as the API's ``Idempotency-Key``: a form
  sent twice (double click, back button, a retry after a timeout) is recorded once and answered the
  same; the same key with other values is refused.
- **Not from another site** (CSRF): with a session, the form must carry the session's token
  (:func:`~ledger.service.sessions.form_token`) and come from this origin
  (:func:`~ledger.service.sessions.check_form_origin`); the session cookie is SameSite=Strict too.
  A bearer token is never sent by a browser on its own: a post with ``Authorization`` needs no token.
- **POST, redirect, GET.** Done: 303 back to the case page with ``?done=ACTION&id=HANDLE`` (codes
  only: nothing personal in a URL), which the page shows as its flash. Refused input (an empty
  answer, an unknown item, a text over its limit, a date that is no date, a rule of the case): the page
  again, 400, the form open with its error and the values typed, never a 500.
- **Times an agent types** (a promise's due date, ``datetime-local``) are in the zone the page was
  shown in (hidden field ``zone``); the ledger records its own time of recording, never a time the
  form gives (no ``occurred_at`` is sent).

The result is on every open page of the case once recorded: the live page's watcher sees the new
events in the notification log (:mod:`ledger.service.feeds`).
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import escape

from caseledger.ledger.access.principals import Principal
from caseledger.ledger.domain.case_references import normalise_reference
from caseledger.ledger.domain.directory import case_id_for
from caseledger.ledger.domain.permissions import Operation, Role
from caseledger.ledger.domain.values import Actor
from caseledger.ledger.errors import (
    AuthenticationError,
    CaseLedgerError,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from caseledger.ledger.service.agent_language import N_, Words, words
from caseledger.ledger.service.case_page import (
    PAGE_HEADERS,
    CustomerContext,
    Form,
    PageState,
    Viewer,
    load_context,
    render_page,
    valid_zone,
    viewer_for,
)
from caseledger.ledger.service.case_templates import FORMS, FormSpec
from caseledger.ledger.service.group_commit import Write
from caseledger.ledger.service.idempotency import request_digest
from caseledger.ledger.service.problems import problem_for
from caseledger.ledger.service.sessions import (
    CSRF_SUBJECT,
    SESSION_COOKIE,
    Sessions,
    check_form_origin,
    form_token,
)

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.domain.case import Case

__all__ = ["ACT_PATH", "PageAccess", "add_routes", "message_page"]

ACT_PATH = "/cases/{reference}/act/{action}"
_HANDLE = {"Q": re.compile(r"Q\d{1,6}"), "P": re.compile(r"P\d{1,6}"), "X": re.compile(r"X\d{1,6}")}
_WHAT = {"Q": N_("the item"), "P": N_("the promise"), "X": N_("the proposal")}


class PageAccess:
    """Who reads or acts on a page (a bearer token, or a browser's session), how they read it, their forms' token."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self._defaults: tuple[str, str] | None = None
        self._secret: bytes | None = None

    def principal(self, authorization: str | None, session: str | None, operation: Operation | None = None) -> Principal:
        """The caller, allowed ``operation`` when one is given (AuthenticationError, PermissionDenied)."""
        if authorization is not None or session is None:
            found = self.state.authenticator().authenticate(authorization)
        else:
            found = Sessions(self.state.ledger().principal_store).principal(session)
        if operation is not None:
            found.require(operation)
        return found

    def defaults(self) -> tuple[str, str]:
        """The service's default locale and zone for its agents: the response policy's."""
        if self._defaults is None:
            policy = self.state.own_ledger().policy
            self._defaults = (policy.texts.locale, policy.texts.time_zone or policy.calendar.timezone)
        return self._defaults

    def viewer(self, principal: Principal, request: Request, zone: str | None) -> Viewer:
        """The principal's own zone and locale first (:meth:`AgentClock.choose`)."""
        locale, default_zone = self.defaults()
        return viewer_for(principal.role, accept_language=request.headers.get("accept-language"), zone=zone,
                          default_locale=locale, default_zone=default_zone, principal_zone=principal.zone,
                          principal_locale=principal.locale)

    def language(self, request: Request) -> str:
        """The ``lang`` of a page for a caller not known yet (sign-in, refusals): the browser's, else the service's."""
        locale, default_zone = self.defaults()
        return viewer_for(Role.AUDITOR, accept_language=request.headers.get("accept-language"), zone=None,
                          default_locale=locale, default_zone=default_zone).lang

    def token(self, session: str | None) -> str:
        """The token of this session's forms ("" for a bearer caller: it needs none)."""
        return form_token(session, self.secret()) if session else ""

    def secret(self) -> bytes:
        if self._secret is None:  # made once for good under a fixed id (DataKeys.ledger_secret)
            self._secret = self.state.own_ledger().data_keys.ledger_secret(CSRF_SUBJECT)
        return self._secret


def message_page(status: int, title: str, text: str, *, link: str = "", lang: str = "en",
                 text_lang: str = "en") -> HTMLResponse:
    """A refusal as a page a person reads (never a traceback): what is wrong and what to do. ``title`` is an
    English msgid said in ``lang``; ``text`` is in ``text_lang`` (a ledger's reason: English)."""
    w = words(lang)
    title = w._(title)
    back = escape(w._("Back"))
    more = f'<p><a href="{escape(link)}">{back}</a></p>' if link else ""
    marked = f' lang="{escape(text_lang)}"' if text_lang != lang.split("-")[0] else ""
    body = (f'<!doctype html><html lang="{escape(lang)}"><head><meta charset="utf-8"><title>{escape(title)} · '
            f'caseledger</title><link rel="stylesheet" href="/live.css"></head><body><main><h1>{escape(title)}</h1>'
            f'<p id="problem"{marked}>{escape(text)}</p>{more}</main></body></html>')
    return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)


class FormRefused(ValidationError):
    """What a form holds cannot be sent (empty, too long, not a date): the form again, with this."""


def read_form(spec: FormSpec, form: Any, zone: str, language: str = "en") -> tuple[str, dict[str, str], datetime | None]:
    """(target, values, due date) of a posted form; FormRefused naming the field and how to fix it, in ``language``."""
    w = words(language)
    values: dict[str, str] = {}
    for field in spec.fields:
        raw = form.get(field.name, "")
        if not isinstance(raw, str):
            raise FormRefused(w._("%(field)s: send text, not a file", field=w._(field.label)))
        values[field.name] = raw
    target = str(form.get("target", "") or "").strip().upper()
    if spec.target and not _HANDLE[spec.target].fullmatch(target):
        raise FormRefused(w._("name %(what)s this form acts on (%(first)s, %(second)s …)",
                              what=w._(_WHAT[spec.target]), first=f"{spec.target}1", second=f"{spec.target}2"))
    if not spec.target:
        target = ""
    due = None
    for field in spec.fields:
        value = values[field.name]
        label = w._(field.label)
        if len(value) > field.limit:
            raise FormRefused(w._("%(field)s: %(n)s characters, at most %(limit)s; shorten it", field=label,
                                  n=len(value), limit=field.limit))
        if field.required and not value.strip():
            raise FormRefused(w._("%(field)s: empty; write it, the ledger keeps nothing empty", field=label))
        if field.kind == "select" and value not in field.choices:
            raise FormRefused(w._("%(field)s: choose one of %(choices)s", field=label,
                                  choices=", ".join(w.code(c) for c in field.choices)))
        if field.kind == "datetime":
            due = _local_time(value, zone, label, w)
    return target, values, due


def _local_time(value: str, zone: str, label: str, w: Words) -> datetime:
    try:
        typed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise FormRefused(w._("%(field)s: not a date and time; give one such as %(example)s", field=label,
                              example="2026-12-09T09:00")) from None
    if typed.tzinfo is None:
        typed = typed.replace(tzinfo=ZoneInfo(zone))
    return typed.astimezone(UTC)


def _run(spec: FormSpec, ledger: CaseLedger, actor: Actor, ref: str, target: str, v: dict[str, str],
         due: datetime | None) -> str:
    """Run the form's command (the one its JSON route runs); the handle recorded or acted on."""
    action = spec.action
    if action == "respond":
        return ledger.respond(ref, actor=actor, body=v["body"], answers=[target])
    if action == "waive":
        ledger.waive_item(ref, actor=actor, item_id=target, reason=v["reason"])
    elif action == "keep":
        ledger.keep_promise(ref, actor=actor, promise_id=target, evidence=v["evidence"])
    elif action == "withdraw":
        ledger.withdraw_promise(ref, actor=actor, promise_id=target, reason=v["reason"], notice=v["notice"])
    elif action == "approve":
        ledger.approve_action(ref, actor=actor, proposal_id=target, note=v["note"])
    elif action == "reject":
        ledger.reject_action(ref, actor=actor, proposal_id=target, reason=v["reason"])
    elif action == "promise":
        assert due is not None
        promise_id, _confirmation = ledger.make_promise(ref, actor=actor, channel=v["channel"], kind=v["kind"],
                                                        terms=v["terms"], due_at=due)
        return promise_id
    elif action == "handoff":
        ledger.hand_off(ref, actor=actor, to_assignee=v["to"].strip() or None, to_team=v["team"].strip() or None,
                        note=v["note"])
        return f"H{ledger.get_case(ref).handoffs}"
    elif action == "status":
        ledger.change_status(ref, actor=actor, to_status=v["to"], reason=v["reason"], notice=v["notice"])
    elif action == "close":
        ledger.close_case(ref, actor=actor, reason=v["reason"], notice=v["notice"])
    elif action == "cancel":
        ledger.cancel_case(ref, actor=actor, reason=v["reason"], notice=v["notice"])
    elif action == "reopen":
        ledger.reopen_case(ref, actor=actor, reason=v["reason"], notice=v["notice"])
    return target


def add_routes(app: FastAPI, state: Any, access: PageAccess) -> None:
    """One route per form, each under the operation its JSON route names."""

    async def act(spec: FormSpec, request: Request, reference: str) -> Response:
        authorization = request.headers.get("authorization")
        session = request.cookies.get(SESSION_COOKIE)
        back = f"/cases/{quote(reference, safe='-')}"
        lang = access.language(request)
        if authorization is None and session is None:
            return message_page(401, N_("Sign in first"),
                                words(lang)._("no session: sign in at /login, then act from the case page"),
                                link="/login?next=" + quote(back, safe="/"), lang=lang, text_lang=lang[:2])
        try:
            principal = await asyncio.to_thread(access.principal, authorization, session)
        except AuthenticationError as error:
            return message_page(401, N_("Sign in again"), str(error), link="/login?next=" + quote(back, safe="/"),
                                lang=lang)
        form = await request.form()
        try:
            if authorization is None and session is not None:
                check_form_origin(session_id=session, token=_text(form.get("csrf")), secret=access.secret(),
                                  origin=request.headers.get("origin"),
                                  fetch_site=request.headers.get("sec-fetch-site"),
                                  own_origin=f"{request.url.scheme}://{request.url.netloc}")
            principal.require(spec.operation)
        except PermissionDenied as error:
            return message_page(403, N_("Not allowed"), str(error), link=back, lang=lang)
        zone = valid_zone(_text(form.get("zone"))) or access.defaults()[1]
        viewer = access.viewer(principal, request, zone)
        try:
            ref = normalise_reference(reference)
            target, values, due = read_form(spec, form, zone, viewer.language)
            key = _text(form.get("key")).strip()
            if not key:
                raise FormRefused(words(viewer.language)._(
                    "the form has no idempotency key; reload the case page and send it again"))
        except FormRefused as error:
            return await refused(spec, reference, viewer, session, form, str(error), error_lang="")
        except CaseLedgerError as error:
            return await refused(spec, reference, viewer, session, form, str(error))
        actor = principal.actor()
        payload = json.dumps({"target": target, **values}, sort_keys=True).encode()
        digest = request_digest("POST", f"/cases/{ref}/act/{spec.action}", payload)

        def execute(ledger: CaseLedger) -> tuple[int, Any]:
            return 200, {"done": spec.action, "id": _run(spec, ledger, actor, ref, target, values, due)}

        try:
            answer = state.committer.submit(Write(execute, principal.name, key, digest,
                                                  lambda _ledger: [case_id_for(ref)]))
            status, result, _replayed = await asyncio.wrap_future(answer)
        except CaseLedgerError as error:
            status, result = error.http_status, problem_for(error)
        if status >= 400:
            if status in (401, 403):
                return message_page(status, N_("Not allowed"), str(result.get("detail", "")), link=back, lang=lang)
            return await refused(spec, reference, viewer, session, form, str(result.get("detail", "")),
                                 target=target)
        query = urlencode({"done": result.get("done", spec.action), "id": result.get("id", ""), "zone": zone})
        return RedirectResponse(f"/cases/{ref}?{query}", status_code=303, headers=PAGE_HEADERS)

    async def refused(spec: FormSpec, reference: str, viewer: Viewer, session: str | None, form: Any, error: str,
                      *, target: str | None = None, error_lang: str = "en") -> Response:
        """The case page again, 400, the refused form open with its error and what was typed (a ledger's error
        stays English, marked ``lang="en"``; the form's own checks speak the page's language)."""
        name = spec.form_id(target if target is not None else _text(form.get("target")).strip().upper())
        typed = {f.name: _text(form.get(f.name))[: f.limit] for f in spec.fields}

        def page() -> tuple[Case, CustomerContext, str]:
            ledger = state.ledger()
            case = ledger.get_case(reference)
            return case, load_context(ledger, case), access.token(session)

        try:
            case, context, token = await asyncio.to_thread(page)
        except NotFound as error:
            return message_page(404, N_("No such case"), str(error), link="/", lang=viewer.lang)
        lang = error_lang if error_lang and error_lang != viewer.language else ""
        html = render_page(case, viewer, context, PageState(csrf=token, failed={name: Form(typed, error, lang)},
                                                              error=error, error_lang=lang))
        return HTMLResponse(html, status_code=400, headers=PAGE_HEADERS)

    def route(spec: FormSpec) -> None:
        async def endpoint(request: Request, reference: str) -> Response:
            return await act(spec, request, reference)

        endpoint.__name__ = f"page_{spec.action}"
        endpoint.__doc__ = f"The case page's form to {spec.button.lower()}: 303 back to the page, or the page, 400."
        app.post(ACT_PATH.replace("{action}", spec.action), tags=["live"], include_in_schema=True,
                 response_class=HTMLResponse, summary=f"The case page's form: {spec.button.lower()}",
                 openapi_extra={"x-operation": spec.operation.value})(endpoint)

    for spec in FORMS.values():
        route(spec)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
