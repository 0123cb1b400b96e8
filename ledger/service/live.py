"""The live case page: ``/cases/REF``, server-rendered, kept up to date by server-sent events.

The page shows what an agent needs while the customer is on the line — items, promises, deadlines,
the last contact on every channel, the handoff brief — and ``/cases/REF/events`` pushes the same
section again whenever the case gets a new event (the server looks at the case's version every
``POLL_S``), so an e-mail sent during a call appears within a second.

Same authentication as the API: ``Authorization: Bearer`` or, for a browser, the session cookie
``/login`` sets after checking a token (:mod:`ledger.service.sessions`: a random session id, never
the token; only these GET pages read it, no write accepts it). The role must may ``case.read``.
Everything shown is HTML-escaped; the page runs only its own script (Content-Security-Policy).
A stream re-authenticates its caller at each change and each heartbeat and ends once the principal
is revoked; streams are capped and share one render per change (:mod:`ledger.service.feeds`).
"""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Cookie, FastAPI, Form, Header, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse

from caseledger.ledger.access.principals import Principal
from caseledger.ledger.domain.case import Case
from caseledger.ledger.domain.permissions import Operation
from caseledger.ledger.errors import AuthenticationError, PermissionDenied
from caseledger.ledger.reports.describe import plain
from caseledger.ledger.service.feeds import StreamLimit, Watcher
from caseledger.ledger.service.problems import MEDIA_TYPE, problem
from caseledger.ledger.service.sessions import (
    LOGIN_COOKIE,
    LOGIN_TTL_S,
    SESSION_COOKIE,
    Sessions,
    check_login_origin,
    new_login_nonce,
)

__all__ = ["add_routes", "render_case"]

SHOWN = 25  # the most recent contacts, items and deadlines the page lists (all of them: GET /v1/cases/REF)
HEARTBEAT_S = 15.0
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_SCRIPT = """'use strict';
(function () {
  var root = document.getElementById('case');
  var state = document.getElementById('live-state');
  var source = new EventSource(root.dataset.events, {withCredentials: true});
  source.addEventListener('case', function (e) {
    var data = JSON.parse(e.data);
    root.innerHTML = data.html;
    root.dataset.version = data.version;
    state.textContent = 'live · version ' + data.version;
  });
  source.onopen = function () { state.textContent = 'live'; };
  source.onerror = function () { state.textContent = 'reconnecting…'; };
})();
"""

_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:70rem;color:#1a1a1a;background:#fff}
h1{font-size:1.3rem}table{border-collapse:collapse;margin:.3rem 0 1rem}
td,th{border:1px solid #767676;padding:.2rem .5rem;text-align:left}
.muted{color:#595959}.open{color:#8a3500}.done{color:#0a6b0a}#live-state{float:right;color:#0a6b0a}
a{color:#0b57d0}a:visited{color:#6a1b9a}
:focus-visible{outline:3px solid #0b57d0;outline-offset:2px}
input,button,select,textarea{font:inherit;padding:.25rem .5rem}
input,select,textarea{border:1px solid #595959}"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers: list[str], rows: list[list[Any]], *, id_: str) -> str:
    if not rows:
        return f'<p class="muted" id="{id_}">none</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{id_}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _t(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else ("" if value is None else str(value))


def render_case(case: Case) -> str:
    """The case section of the page (what each server-sent event replaces).

    Read straight from the aggregate and cut to the latest entries, so that a case with hundreds of
    contacts renders in constant time (``GET /v1/cases/REF`` has all of them).
    """
    contacts = list(case.contacts.values())  # in the order they were received
    last: dict[str, Any] = {}
    for c in contacts:
        last[c.channel] = c
    items = list(case.items.values())
    shown_items = [i for i in items if i.status == "open"][-SHOWN:] + [i for i in items if i.status != "open"][-SHOWN:]
    recent = contacts[-SHOWN:]
    messages = list(case.messages.values())[-SHOWN:]
    promises = list(case.promises.values())
    brief = plain(case.brief())
    parts = [
        f'<h1><span id="reference">{_e(case.reference)}</span> — {_e(case.subject)}</h1>',
        f'<p>status <b id="status">{_e(case.status)}</b> · customer {_e(case.customer_id)} · '
        f'assignee {_e(case.assignee or "-")} · team {_e(case.team or "-")} · follow-ups {_e(case.follow_ups)}</p>',
        "<h2>Items</h2>",
        _table(["item", "question", "status"], [[i.item_id, i.text, i.status] for i in shown_items], id_="items"),
        "<h2>Promises</h2>",
        _table(["promise", "terms", "due", "status"], [[p.promise_id, p.terms, _t(p.due_at), p.status]
                                                        for p in promises[-SHOWN:]], id_="promises"),
        "<h2>Deadlines</h2>",
        _table(["for", "deadline", "due"],
               [[c.contact_id, "respond by", _t(c.respond_by)] for c in recent if c.respond_by]
               + [[m.message_id, "deliver by", _t(m.due_at)] for m in messages if m.due_at and not m.delivered_at]
               + [[p.promise_id, "promise due", _t(p.due_at)] for p in promises if p.status == "open"],
               id_="deadlines"),
        _table(["missed", "target"], [[k, t] for k, t in sorted(case.missed)], id_="missed"),
        "<h2>Last contact per channel</h2>",
        _table(["channel", "contact", "received", "subject"],
               [[ch, c.contact_id, _t(c.received_at), c.subject] for ch, c in sorted(last.items())],
               id_="last-contacts"),
        "<h2>Contacts</h2>",
        _table(["contact", "channel", "message id", "items"],
               [[c.contact_id, c.channel, c.channel_message_id, "; ".join(c.item_ids)] for c in recent],
               id_="contacts"),
        "<h2>Handoff brief</h2>",
        f'<pre id="brief">{_e(json.dumps(brief, indent=2, ensure_ascii=False))}</pre>',
    ]
    return "\n".join(parts)


def _page(case: Case) -> str:
    ref = _e(case.reference)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{ref} · caseledger</title><link rel=stylesheet href=/live.css></head><body>"
        '<header><span id="live-state" role="status">connecting…</span></header>'
        f'<main id="case" data-events="/cases/{ref}/events" data-version="{case.version}">{render_case(case)}</main>'
        "<script src=/live.js></script></body></html>"
    )


def _login_page(next_path: str, nonce: str, error: str = "") -> str:
    message = f'<p class="open" id="login-error" role="alert">{_e(error)}</p>' if error else ""
    described = ' aria-describedby="login-error" aria-invalid="true"' if error else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>caseledger · sign in</title>"
        "<link rel=stylesheet href=/live.css></head><body><main><h1>Sign in</h1>" + message +
        '<form method="post" action="/login"><label for="token">Token</label> <input id="token" name="token" '
        f'type="password" autocomplete="off" required{described}>'
        f'<input type="hidden" name="next" value="{_e(next_path)}">'
        f'<input type="hidden" name="csrf" value="{_e(nonce)}"> <button type="submit">Open</button></form>'
        "</main></body></html>"
    )


def add_routes(app: FastAPI, state: Any) -> None:
    watcher = Watcher(state, lambda case: render_case(case))

    def sessions() -> Sessions:
        return Sessions(state.ledger().principal_store)

    def principal(authorization: str | None, session: str | None) -> Principal:
        if authorization is not None or session is None:
            found = state.authenticator().authenticate(authorization)
        else:
            found = sessions().principal(session)
        found.require(Operation.CASE_READ)
        return found

    def login_form_answer(next_path: str, *, error: str = "", status: int = 200) -> Response:
        nonce = new_login_nonce()
        answer = HTMLResponse(_login_page(next_path, nonce, error), status_code=status, headers=_HEADERS)
        answer.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_TTL_S, httponly=True, samesite="strict", path="/login")
        return answer

    @app.get("/live.js", include_in_schema=False)
    def live_js() -> Response:
        return Response(_SCRIPT, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    @app.get("/live.css", include_in_schema=False)
    def live_css() -> Response:
        return Response(_STYLE, media_type="text/css", headers={"Cache-Control": "no-cache"})

    @app.get("/login", include_in_schema=False)
    def login_form(next: str = "/") -> Response:
        return login_form_answer(_safe_next(next))

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
            return login_form_answer(_safe_next(next), error=str(error), status=status)
        session, lifetime = sessions().open(found, token=token)
        answer = RedirectResponse(_safe_next(next), status_code=303, headers=_HEADERS)
        # Secure whenever the request came over HTTPS; over plain HTTP (loopback, tests) a browser would drop a
        # Secure cookie: anywhere but loopback, serve TLS (docs/api.md).
        answer.set_cookie(SESSION_COOKIE, session, max_age=lifetime, httponly=True, samesite="strict",
                          secure=request.url.scheme == "https", path="/")
        answer.delete_cookie(LOGIN_COOKIE, path="/login")
        return answer

    @app.get("/cases/{reference}", tags=["live"], response_class=HTMLResponse,
             openapi_extra={"x-operation": Operation.CASE_READ.value})
    def case_page(
        reference: str, authorization: Annotated[str | None, Header()] = None,
        session: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None,
    ) -> Response:
        """The live case page (HTML); sign in at /login when a browser has no token yet."""
        if authorization is None and session is None:
            return RedirectResponse("/login?next=" + quote(f"/cases/{reference}", safe="/"), status_code=303,
                                    headers=_HEADERS)
        principal(authorization, session)
        case = state.ledger().get_case(reference)
        return HTMLResponse(_page(case), headers=_HEADERS)

    @app.get("/cases/{reference}/events", tags=["live"], openapi_extra={"x-operation": Operation.CASE_READ.value})
    async def case_events(
        reference: str, authorization: Annotated[str | None, Header()] = None,
        session: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    ) -> Response:
        """Server-sent events: ``case`` with the page's case section each time the case changes.

        At most 10 streams per principal (the next gets 429); a stream ends once its principal is revoked."""
        caller = await asyncio.to_thread(principal, authorization, session)
        case = await asyncio.to_thread(lambda: state.ledger().get_case(reference))
        known = int(last_event_id) if last_event_id and last_event_id.isdigit() else -1
        try:
            feed, wake = watcher.open(caller.name, case)
        except StreamLimit as error:
            body = problem(error.status, "too-many-streams", "Too many live pages", str(error), exit_code=4)
            return JSONResponse(body, status_code=error.status, media_type=MEDIA_TYPE, headers={"Retry-After": "5"})

        async def allowed() -> bool:
            try:
                await asyncio.to_thread(principal, authorization, session)
            except (AuthenticationError, PermissionDenied):
                return False
            return True

        async def stream() -> AsyncIterator[bytes]:
            sent = known
            while True:
                if feed.version >= 0 and feed.version != sent:
                    sent = feed.version
                    yield feed.frame
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

        return _Stream(stream(), lambda: watcher.close(caller.name, feed, wake))


class _Stream(StreamingResponse):
    """The event stream; its slot (the principal's count, the feed's waiter) is given back however it ends."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _safe_next(path: str) -> str:
    """Only the queue (``/``, ``/?filters``) or a case page of this server (no open redirect), percent-encoded
    (nothing can reach the header raw)."""
    if not (path == "/" or path.startswith(("/?", "/cases/"))) or "//" in path or "\\" in path:
        return "/"
    return quote(path, safe="/-_.~%?=&+")
