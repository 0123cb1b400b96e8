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

from caseledger.ledger.describe import plain
from caseledger.ledger.domain.case import Case
from caseledger.ledger.domain.permissions import Operation
from caseledger.ledger.errors import AuthenticationError
from caseledger.ledger.principals import Principal

__all__ = ["COOKIE", "add_routes", "render_case"]

COOKIE = "caseledger_token"
POLL_S = 0.1
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


class Watcher:
    """One poll of the store's notification log for all open pages: wakes the streams whose case changed."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.position: int | None = None
        self.waiting: dict[Any, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, case_id: Any) -> asyncio.Event:
        event = asyncio.Event()
        self.waiting.setdefault(case_id, set()).add(event)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return event

    def unwatch(self, case_id: Any, event: asyncio.Event) -> None:
        events = self.waiting.get(case_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self.waiting[case_id]

    async def _run(self) -> None:
        while self.waiting:
            changed = await asyncio.to_thread(self._changed)
            for case_id in changed:
                for event in self.waiting.get(case_id, ()):
                    event.set()
            await asyncio.sleep(POLL_S)

    def _changed(self) -> set[Any]:
        recorder = self.state.ledger().recorder
        if self.position is None:
            self.position = recorder.max_notification_id() or 0
            return set(self.waiting)  # look once at every case when (re)starting
        changed: set[Any] = set()
        while True:
            batch = recorder.select_notifications(start=self.position + 1, limit=1000)
            if not batch:
                return changed
            changed.update(n.originator_id for n in batch)
            self.position = batch[-1].id


def add_routes(app: FastAPI, state: Any) -> None:
    watcher = Watcher(state)
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
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    ) -> StreamingResponse:
        """Server-sent events: ``case`` with the page's case section each time the case changes."""
        await asyncio.to_thread(principal, authorization, token)
        case = await asyncio.to_thread(lambda: state.ledger().get_case(reference))
        known = int(last_event_id) if last_event_id and last_event_id.isdigit() else -1

        async def stream() -> AsyncIterator[bytes]:
            nonlocal case, known
            changed = watcher.watch(case.id)
            try:
                while not await request.is_disconnected():
                    if case.version != known:
                        known = case.version
                        data = await asyncio.to_thread(_event_data, case)
                        yield f"id: {known}\nevent: case\ndata: {data}\n\n".encode()
                    try:
                        await asyncio.wait_for(changed.wait(), timeout=HEARTBEAT_S)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    changed.clear()
                    case = await asyncio.to_thread(_refresh, state, reference, case)
            finally:
                watcher.unwatch(case.id, changed)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _event_data(case: Case) -> str:
    return json.dumps({"version": case.version, "html": render_case(case)})


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
