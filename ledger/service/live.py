"""The live case page: ``/cases/REF``, server-rendered, kept up to date by server-sent events.

The page shows what an agent needs while the customer is on the line — items, promises, deadlines,
the last contact on every channel, the handoff brief — and ``/cases/REF/events`` pushes the same
section again whenever the case gets a new event (the server looks at the case's version every
``POLL_S``), so an e-mail sent during a call appears within a second.

Same authentication as the API: ``Authorization: Bearer`` or, for a browser, the HttpOnly,
SameSite=Strict cookie ``/login`` sets from a token (only these GET pages read it: no write accepts
a cookie, so there is nothing to forge across sites). The role must may ``case.read``. Everything
shown is HTML-escaped; the page runs only its own script (Content-Security-Policy).
"""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Cookie, FastAPI, Form, Header, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from caseledger.ledger.describe import case_record, plain
from caseledger.ledger.domain.case import Case
from caseledger.ledger.domain.permissions import Operation
from caseledger.ledger.errors import AuthenticationError
from caseledger.ledger.principals import Principal

__all__ = ["COOKIE", "add_routes", "render_case"]

COOKIE = "caseledger_token"
POLL_S = 0.1
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

_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:70rem}h1{font-size:1.3rem}
table{border-collapse:collapse;margin:.3rem 0 1rem}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}
.muted{color:#666}.open{color:#a40}.done{color:#070}#live-state{float:right;color:#070}"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers: list[str], rows: list[list[Any]], *, id_: str) -> str:
    if not rows:
        return f'<p class="muted" id="{id_}">none</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{id_}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_case(case: Case) -> str:
    """The case section of the page (what each server-sent event replaces)."""
    r = case_record(case)
    brief = plain(case.brief())
    contacts = sorted(r["contacts"], key=lambda c: str(c.get("received_at") or c.get("occurred_at") or ""))
    last = {}
    for c in contacts:
        last[c.get("channel")] = c
    parts = [
        f'<h1><span id="reference">{_e(r["reference"])}</span> — {_e(r["subject"])}</h1>',
        f'<p>status <b id="status">{_e(r["status"])}</b> · customer {_e(r["customer_id"])} · '
        f'assignee {_e(r["assignee"] or "-")} · team {_e(r["team"] or "-")} · follow-ups {_e(r["follow_ups"])}</p>',
        "<h2>Items</h2>",
        _table(["item", "question", "status"], [[i.get("item_id", i.get("id")), i.get("text"), i.get("status")]
                                                for i in r["items"]], id_="items"),
        "<h2>Promises</h2>",
        _table(["promise", "terms", "due", "status"], [[p.get("promise_id", p.get("id")), p.get("terms"),
                                                        p.get("due_at"), p.get("status")] for p in r["promises"]],
               id_="promises"),
        "<h2>Deadlines</h2>",
        _table(["for", "deadline", "due"],
               [[c.get("contact_id"), "respond by", c.get("respond_by")] for c in contacts if c.get("respond_by")]
               + [[m.get("message_id"), "deliver by", m.get("due_at")] for m in r["messages"] if m.get("due_at")]
               + [[p.get("promise_id"), "promise due", p.get("due_at")] for p in r["promises"]
                  if p.get("status") == "open"], id_="deadlines"),
        _table(["missed", "target"], [[d["kind"], d["target_id"]] for d in r["missed_deadlines"]], id_="missed"),
        "<h2>Last contact per channel</h2>",
        _table(["channel", "contact", "received", "subject"],
               [[ch, c.get("contact_id", c.get("id")), c.get("received_at") or c.get("occurred_at"), c.get("subject")]
                for ch, c in sorted(last.items(), key=lambda kv: str(kv[0]))], id_="last-contacts"),
        "<h2>Contacts</h2>",
        _table(["contact", "channel", "message id", "items"],
               [[c.get("contact_id", c.get("id")), c.get("channel"), c.get("channel_message_id"),
                 "; ".join(str(x) for x in c.get("item_ids", c.get("items", [])) or [])] for c in contacts],
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
        '<span id="live-state">connecting…</span>'
        f'<main id="case" data-events="/cases/{ref}/events" data-version="{case.version}">{render_case(case)}</main>'
        "<script src=/live.js></script></body></html>"
    )


def _login_page(next_path: str, error: str = "") -> str:
    message = f'<p class="open">{_e(error)}</p>' if error else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>caseledger · sign in</title>"
        "<link rel=stylesheet href=/live.css></head><body><h1>Sign in</h1>" + message +
        '<form method="post" action="/login"><label>Token <input name="token" type="password" '
        'autocomplete="off" required></label>'
        f'<input type="hidden" name="next" value="{_e(next_path)}"><button type="submit">Open</button></form>'
        "</body></html>"
    )


def add_routes(app: FastAPI, state: Any) -> None:
    def principal(authorization: str | None, cookie: str | None) -> Principal:
        header = authorization or (f"Bearer {cookie}" if cookie else None)
        found = state.authenticator().authenticate(header)
        found.require(Operation.CASE_READ)
        return found

    @app.get("/live.js", include_in_schema=False)
    def live_js() -> Response:
        return Response(_SCRIPT, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    @app.get("/live.css", include_in_schema=False)
    def live_css() -> Response:
        return Response(_STYLE, media_type="text/css", headers={"Cache-Control": "no-cache"})

    @app.get("/login", include_in_schema=False)
    def login_form(next: str = "/") -> HTMLResponse:
        return HTMLResponse(_login_page(_safe_next(next)), headers=_HEADERS)

    @app.post("/login", include_in_schema=False)
    def login(request: Request, token: Annotated[str, Form()], next: Annotated[str, Form()] = "/") -> Response:
        try:
            state.authenticator().authenticate(f"Bearer {token}")
        except AuthenticationError as error:
            return HTMLResponse(_login_page(_safe_next(next), str(error)), status_code=401, headers=_HEADERS)
        answer = RedirectResponse(_safe_next(next), status_code=303, headers=_HEADERS)
        answer.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                          path="/cases")
        return answer

    @app.get("/cases/{reference}", tags=["live"], response_class=HTMLResponse)
    def case_page(
        request: Request, reference: str, authorization: Annotated[str | None, Header()] = None,
        token: Annotated[str | None, Cookie(alias=COOKIE)] = None,
    ) -> Response:
        """The live case page (HTML); sign in at /login when a browser has no token yet."""
        if authorization is None and token is None:
            return RedirectResponse(f"/login?next=/cases/{_e(reference)}", status_code=303, headers=_HEADERS)
        principal(authorization, token)
        case = state.ledger().get_case(reference)
        return HTMLResponse(_page(case), headers=_HEADERS)

    @app.get("/cases/{reference}/events", tags=["live"])
    async def case_events(
        request: Request, reference: str, authorization: Annotated[str | None, Header()] = None,
        token: Annotated[str | None, Cookie(alias=COOKIE)] = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> StreamingResponse:
        """Server-sent events: ``case`` with the page's case section each time the case changes."""
        await asyncio.to_thread(principal, authorization, token)
        case = await asyncio.to_thread(lambda: state.ledger().get_case(reference))
        known = int(last_event_id) if last_event_id and last_event_id.isdigit() else -1

        async def stream() -> AsyncIterator[bytes]:
            nonlocal case, known
            idle = 0.0
            while not await request.is_disconnected():
                if case.version != known:
                    known = case.version
                    data = json.dumps({"version": known, "html": render_case(case)})
                    yield f"id: {known}\nevent: case\ndata: {data}\n\n".encode()
                    idle = 0.0
                await asyncio.sleep(POLL_S)
                idle += POLL_S
                if idle >= HEARTBEAT_S:
                    yield b": keep-alive\n\n"
                    idle = 0.0
                case = await asyncio.to_thread(_refresh, state, reference, case)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _refresh(state: Any, reference: str, case: Case) -> Case:
    """The case as of now: only its events after the version shown are read."""
    ledger = state.ledger()
    stored = ledger.recorder.select_events_after([case.id], after={case.id: case.version}).get(case.id, [])
    for stored_event in stored:  # the new events only, applied to the case as shown (no replay from the start)
        case = ledger.mapper.to_domain_event(stored_event).mutate(case)
    return case


def _safe_next(path: str) -> str:
    """Only a path of this server (no open redirect)."""
    return path if path.startswith("/cases/") and "//" not in path and "\\" not in path else "/"
