"""The live case page: ``/cases/REF``, server-rendered, kept up to date by server-sent events.

The page (:mod:`ledger.service.case_page`) shows what an agent needs while the customer is on the
line — the handoff brief first, deadlines in words, items with their answers, promises, proposals,
the customer's timeline across cases and channels — and the forms to act
(:mod:`ledger.service.case_actions`). ``/cases/REF/events`` pushes the same section again whenever
the case gets a new event (the server looks at the case's version every ``POLL_S``), rendered for
the stream's view (role, language, zone), so an e-mail sent during a call appears within a second.
The pushed section has neither the forms' token nor their keys: ``/live.js`` fills them in (the
page's token, a fresh key per form) and keeps what the agent was typing, the open forms and the focus.

Same authentication as the API: ``Authorization: Bearer`` or, for a browser, the session cookie
``/login`` sets after checking a token (:mod:`ledger.service.sessions`: a random session id, never
the token). The pages read it; the only writes it is accepted for are the case page's forms, which
carry the session's CSRF token. The role must may ``case.read``.
Everything shown is HTML-escaped; the page runs only its own script (Content-Security-Policy).
A stream re-authenticates its caller at each change and each heartbeat and ends once the principal
is revoked; streams are capped and share one render per change and view (:mod:`ledger.service.feeds`).
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Cookie, FastAPI, Form, Header, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from caseledger.ledger.access.principals import Principal
from caseledger.ledger.domain.permissions import Operation, Role
from caseledger.ledger.errors import AuthenticationError, PermissionDenied
from caseledger.ledger.service import case_actions
from caseledger.ledger.service.agent_language import words
from caseledger.ledger.service.agent_times import ZONE_COOKIE
from caseledger.ledger.service.case_actions import PageAccess
from caseledger.ledger.service.case_page import (
    PAGE_HEADERS,
    PageState,
    Viewer,
    flash_text,
    load_context,
    render_case,
    render_page,
    viewer_for,
)
from caseledger.ledger.service.feeds import EventStream, StreamLimit, Watcher, still_allowed
from caseledger.ledger.service.sessions import (
    LOGIN_COOKIE,
    LOGIN_TTL_S,
    SESSION_COOKIE,
    Sessions,
    check_login_origin,
    new_login_nonce,
)

__all__ = ["add_routes", "render_case"]

HEARTBEAT_S = 15.0
_HEADERS = PAGE_HEADERS

_SCRIPT = """'use strict';
(function () {
  var root = document.getElementById('case');
  var state = document.getElementById('live-state');
  var csrf = document.body.dataset.csrf || '';
  function key() {  // a fresh idempotency key per form (RFC 4122 version 4), also outside secure contexts
    var b = new Uint8Array(16);
    crypto.getRandomValues(b);
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    var h = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join('');
    return h.slice(0, 8) + '-' + h.slice(8, 12) + '-' + h.slice(12, 16) + '-' + h.slice(16, 20) + '-' + h.slice(20);
  }
  function keep() {  // what the agent typed, the open forms and the focus survive a new section
    var kept = {values: {}, open: [], focus: document.activeElement ? document.activeElement.id : ''};
    root.querySelectorAll('input, textarea, select').forEach(function (el) {
      if (el.id && el.type !== 'hidden' && el.value !== el.defaultValue) { kept.values[el.id] = el.value; }
    });
    root.querySelectorAll('details[open]').forEach(function (d) { if (d.id) { kept.open.push(d.id); } });
    return kept;
  }
  function restore(kept) {
    root.querySelectorAll('form').forEach(function (form) {
      if (form.elements.csrf) { form.elements.csrf.value = csrf; }
      if (form.elements.key) { form.elements.key.value = key(); }
    });
    Object.keys(kept.values).forEach(function (id) {
      var el = document.getElementById(id);
      if (el) { el.value = kept.values[id]; }
    });
    kept.open.forEach(function (id) { var d = document.getElementById(id); if (d) { d.open = true; } });
    var focused = kept.focus && document.getElementById(kept.focus);
    if (focused && root.contains(focused)) { focused.focus(); }
  }
  var source = new EventSource(root.dataset.events, {withCredentials: true});
  source.addEventListener('case', function (e) {
    var data = JSON.parse(e.data);
    if (Number(data.version) < Number(root.dataset.version)) { return; }  // never back to an older case
    var kept = keep();
    root.innerHTML = data.html;
    restore(kept);
    root.dataset.version = data.version;
    state.textContent = state.dataset.live + ' · ' + state.dataset.version + ' ' + data.version;
  });
  source.onopen = function () { state.textContent = state.dataset.live; };
  source.onerror = function () { state.textContent = state.dataset.reconnecting; };
})();
"""

_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:70rem;color:#1a1a1a}h1{font-size:1.3rem}
table{border-collapse:collapse;margin:.3rem 0 1rem}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left;
vertical-align:top}caption{text-align:left;font-weight:600}.muted{color:#555}.open{color:#8a3300}.done{color:#05670a}
.overdue{color:#b00020}.error,#form-error{color:#b00020;font-weight:600}#flash{background:#e6f4ea;padding:.4rem}
#brief{border-left:4px solid #1a4d8f;padding:.2rem .8rem;background:#f3f6fb}#live-state{float:right;color:#05670a}
details.act{margin:.2rem 0}summary{cursor:pointer;color:#1a4d8f;padding:.2rem 0;min-height:24px}textarea{width:100%;max-width:40rem}
:focus-visible{outline:3px solid #1a4d8f;outline-offset:2px}.other-case{color:#333}
input,button,select,textarea{font:inherit;padding:.25rem .5rem}input,select,textarea{border:1px solid #595959}"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _login_page(next_path: str, nonce: str, lang: str, error: str = "") -> str:
    """The sign-in page in the agent's language (``lang``: ``fr-FR``); the authenticator's reason stays English."""
    w = words(lang)
    said = {"refused": w._("Not signed in:"), "title": w._("sign in"), "heading": w._("Sign in"),
            "token": w._("Token"), "open": w._("Open")}
    t = {k: _e(v) for k, v in said.items()}
    message = (f'<p class="open" id="login-error" role="alert">{t["refused"]} '
               f'<span lang="en">{_e(error)}</span></p>') if error else ""
    described = ' aria-describedby="login-error" aria-invalid="true"' if error else ""
    return (
        f'<!doctype html><html lang="{_e(lang)}"><head><meta charset=utf-8><title>caseledger · {t["title"]}'
        f"</title><link rel=stylesheet href=/live.css></head><body><main><h1>{t['heading']}</h1>" + message +
        f'<form method="post" action="/login"><label for="token">{t["token"]}</label> <input id="token" '
        f'name="token" type="password" autocomplete="off" required{described}>'
        f'<input type="hidden" name="next" value="{_e(next_path)}">'
        f'<input type="hidden" name="csrf" value="{_e(nonce)}"> <button type="submit">{t["open"]}</button>'
        "</form></main></body></html>"
    )


def add_routes(app: FastAPI, state: Any) -> None:
    access = PageAccess(state)
    watcher = Watcher(state, lambda case, view, context: render_case(case, view or _default_view(access), context),
                      context=load_context)

    def sessions() -> Sessions:
        return Sessions(state.ledger().principal_store)

    def principal(authorization: str | None, session: str | None) -> Principal:
        return access.principal(authorization, session, Operation.CASE_READ)

    def login_form_answer(request: Request, next_path: str, *, error: str = "", status: int = 200) -> Response:
        nonce = new_login_nonce()
        lang = access.language(request)
        answer = HTMLResponse(_login_page(next_path, nonce, lang, error), status_code=status, headers=_HEADERS)
        answer.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_TTL_S, httponly=True, samesite="strict", path="/login")
        return answer

    @app.get("/live.js", include_in_schema=False)
    def live_js() -> Response:
        return Response(_SCRIPT, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    @app.get("/live.css", include_in_schema=False)
    def live_css() -> Response:
        return Response(_STYLE, media_type="text/css", headers={"Cache-Control": "no-cache"})

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/") -> Response:
        return login_form_answer(request, _safe_next(next))

    @app.post("/login", include_in_schema=False)
    def login(
        request: Request, token: Annotated[str, Form(max_length=10_000)], next: Annotated[str, Form()] = "/",
        csrf: Annotated[str, Form(max_length=100)] = "",
        nonce: Annotated[str | None, Cookie(alias=LOGIN_COOKIE)] = None,
        origin: Annotated[str | None, Header()] = None,
        sec_fetch_site: Annotated[str | None, Header()] = None,
    ) -> Response:
        here = f"{request.url.scheme}://{request.url.netloc}"
        try:
            check_login_origin(nonce_cookie=nonce, nonce_form=csrf, origin=origin, fetch_site=sec_fetch_site,
                               own_origin=here)
            found = state.authenticator().authenticate(f"Bearer {token}")
            found.require(Operation.CASE_READ)
        except (AuthenticationError, PermissionDenied) as error:
            status = 401 if isinstance(error, AuthenticationError) else 403
            return login_form_answer(request, _safe_next(next), error=str(error), status=status)
        session, lifetime = sessions().open(found, token=token)
        answer = RedirectResponse(_safe_next(next), status_code=303, headers=_HEADERS)
        # Secure whenever the request came over HTTPS; over plain HTTP (loopback, tests) a browser would drop a
        # Secure cookie: anywhere but loopback, serve TLS (docs/api.md).
        answer.set_cookie(SESSION_COOKIE, session, max_age=lifetime, httponly=True, samesite="strict",
                          secure=request.url.scheme == "https", path="/")
        answer.delete_cookie(LOGIN_COOKIE, path="/login")
        return answer

    case_actions.add_routes(app, state, access)

    @app.get("/cases/{reference}", tags=["live"], response_class=HTMLResponse,
             openapi_extra={"x-operation": Operation.CASE_READ.value})
    def case_page(
        request: Request, reference: str, authorization: Annotated[str | None, Header()] = None,
        session: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None,
        zone: Annotated[str | None, Query(max_length=64)] = None,
        zone_cookie: Annotated[str | None, Cookie(alias=ZONE_COOKIE, max_length=64)] = None,
        done: Annotated[str | None, Query(max_length=20)] = None,
        id: Annotated[str | None, Query(max_length=20)] = None,
    ) -> Response:
        """The live case page (HTML); sign in at /login when a browser has no token yet."""
        if authorization is None and session is None:
            return RedirectResponse("/login?next=" + quote(f"/cases/{reference}", safe="/"), status_code=303,
                                    headers=_HEADERS)
        caller = principal(authorization, session)
        ledger = state.ledger()
        case = ledger.get_case(reference)
        context = load_context(ledger, case)
        viewer = access.viewer(caller, request, zone or zone_cookie)
        page = PageState(csrf=access.token(session) if authorization is None else "",
                         flash=flash_text(done, id, viewer.language))
        return HTMLResponse(render_page(case, viewer, context, page), headers=_HEADERS)

    @app.get("/cases/{reference}/events", tags=["live"], openapi_extra={"x-operation": Operation.CASE_READ.value})
    async def case_events(
        request: Request, reference: str, authorization: Annotated[str | None, Header()] = None,
        session: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
        zone: Annotated[str | None, Query(max_length=64)] = None,
        zone_cookie: Annotated[str | None, Cookie(alias=ZONE_COOKIE, max_length=64)] = None,
        seen: Annotated[str | None, Query(max_length=20)] = None,
    ) -> Response:
        """Server-sent events: ``case`` with the page's case section each time the case changes, rendered in the
        caller's language (Accept-Language) and ``zone``; ``seen`` (or Last-Event-ID): the version the page shows.

        At most 10 streams per principal (the next gets 429); a stream ends once its principal is revoked."""
        caller = await asyncio.to_thread(principal, authorization, session)
        case = await asyncio.to_thread(lambda: state.ledger().get_case(reference))
        view = access.viewer(caller, request, zone or zone_cookie)
        shown = last_event_id if last_event_id is not None else seen
        known = int(shown) if shown and shown.isdigit() else -1
        try:
            feed, wake = watcher.open(caller.name, case, view)
        except StreamLimit as error:
            return error.answer()

        async def allowed() -> bool:
            return await still_allowed(lambda: principal(authorization, session))

        async def stream() -> AsyncIterator[bytes]:
            # Each rendering is sent once (a case read again after its customer's erasure keeps its version, and
            # must still replace what the page shows), but not the one of the version the page already has.
            sent, skip = -1, known
            while True:
                if feed.version >= 0 and feed.generation != sent:
                    sent = feed.generation
                    if feed.version != skip:
                        frame = feed.frames.get(view)
                        yield frame if frame is not None else await asyncio.to_thread(watcher.render_view, feed, view)
                    skip = -2
                try:
                    await asyncio.wait_for(wake.wait(), timeout=HEARTBEAT_S)
                except TimeoutError:
                    if not await allowed():
                        return
                    yield b": keep-alive\n\n"
                    continue
                wake.clear()
                if not await allowed():
                    return

        return EventStream(stream(), lambda: watcher.close(caller.name, feed, wake, view))


def _default_view(access: PageAccess) -> Viewer:
    """What a feed with no stream renders (a read-only role, the service's language and zone)."""
    locale, zone = access.defaults()
    return viewer_for(Role.AUDITOR, accept_language=None, zone=None, default_locale=locale, default_zone=zone)


def _safe_next(path: str) -> str:
    """Only the queue (``/``, ``/?filters``) or a case page of this server (no open redirect), percent-encoded
    (nothing can reach the header raw)."""
    if not (path == "/" or path.startswith(("/?", "/cases/"))) or "//" in path or "\\" in path:
        return "/"
    return quote(path, safe="/-_.~%?=&+")
