"""The agent's queue at ``/``: the cases to look at, most urgent first, live, readable without JavaScript.

``GET /`` (signed in at ``/login``, or with ``Authorization: Bearer``; the role must may ``case.read``)
lists the cases of :mod:`projections.queue` in urgency order — overdue first, in red and said in words —
with filters by channel, segment, status, who has the case, team and state (a GET form: links and the
back button work, nothing needs a script), and how many cases each state holds. ``/queue/events`` (same
query) pushes the queue section again whenever it changes (:mod:`ledger.service.queue_feed`); the page's
own script (``/queue.js``) swaps it in. Times are the agent's (:mod:`ledger.service.agent_times`).

Each row links to ``/cases/REF``. The customer is never named: a row shows the case's reference and
subject, the subject only to roles that may read a customer's history (``history.read``), ``[erased]``
after erasure. Everything shown is HTML-escaped; the page loads nothing but its own script and style.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Cookie, Depends, FastAPI, Header, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from caseledger.ledger.access.principals import Principal
from caseledger.ledger.domain.case_parts import Status
from caseledger.ledger.domain.permissions import Operation, allowed
from caseledger.ledger.errors import AuthenticationError, PermissionDenied
from caseledger.ledger.service.agent_language import LANGUAGES, N_, Words, words
from caseledger.ledger.service.agent_times import ZONE_COOKIE, AgentClock
from caseledger.ledger.service.case_page import PAGE_HEADERS
from caseledger.ledger.service.feeds import EventStream, StreamLimit, still_allowed
from caseledger.ledger.service.queue_feed import QueueKeeper, Snapshot
from caseledger.ledger.service.sessions import SESSION_COOKIE, Sessions
from caseledger.projections.queue import (
    ORDERS,
    STATES,
    WHO,
    QueueFilter,
    queue_choices,
    queue_counts,
    queue_rows,
)

__all__ = ["add_routes"]

SHOWN = 50  # the most urgent cases a page lists; the counts say how many the filter holds
HEARTBEAT_S = 15.0
_STATE_NAMES = {"overdue": N_("overdue"), "soon": N_("due within 24 h"), "follow_ups": N_("follow-ups unanswered"),
                "proposals": N_("proposals waiting")}
_LIST = "<select"  # the tag kept apart from its attributes, which would read as SQL to the layout test
_ORDER_NAMES = {"urgency": N_("most urgent first"), "recent": N_("latest contact first")}
_WHO_NAMES = {"all": N_("anyone"), "mine": N_("mine, my team's and no one's"), "me": N_("me"), "team": N_("my team"),
              "unassigned": N_("unassigned")}
_DUE_NAMES = {"acknowledgement": N_("acknowledgement to deliver"), "response": N_("answer to"),
              "promise": N_("promise due"), "confirmation": N_("written confirmation to deliver")}

_SCRIPT = """'use strict';
(function () {
  var root = document.getElementById('queue');
  var state = document.getElementById('live-state');
  if (!root || !window.EventSource) { return; }
  var source = new EventSource(root.dataset.events, {withCredentials: true});
  source.addEventListener('queue', function (e) {
    var data = JSON.parse(e.data);
    root.innerHTML = data.html;
    root.dataset.position = data.position;
    state.textContent = state.dataset.live;
  });
  source.onopen = function () { state.textContent = state.dataset.live; };
  source.onerror = function () { state.textContent = state.dataset.reconnecting; };
})();
"""

_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:90rem;color:#1a1a1a}
h1{font-size:1.4rem;display:inline-block;margin-right:1rem}#live-state{float:right;color:#075e00}
form{margin:.5rem 0 1rem}label{margin-right:.8rem}select,input,button{font:inherit}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #bbb;padding:.3rem .5rem;text-align:left;vertical-align:top}
#counts{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.4rem}#counts a{display:inline-block;padding:.2rem .6rem;border:1px solid #555;border-radius:1rem;color:#1a1a1a;text-decoration:none}
#counts a[aria-current]{background:#1a1a1a;color:#fff}.late{color:#b00000;font-weight:bold}tr.overdue td:first-child{border-left:.4rem solid #b00000}
.soon{color:#8a4b00}.muted{color:#555}.lag{background:#fff4ce;padding:.4rem;border:1px solid #8a4b00}
a{color:#0645ad}a:focus,button:focus,select:focus,input:focus{outline:3px solid #0645ad;outline-offset:2px}"""


@dataclass(frozen=True)
class ViewKey:
    """What a rendering of the queue depends on: shared by every page that asks the same."""

    queue: QueueFilter
    me: str  # the principal's name when the filter is "me" or "mine", else "" (so that agents share the other views)
    zone: str
    locale: str
    personal: bool  # whether subjects are shown (the role may read a customer's history)
    my_team: str = ""  # the principal's team when the filter is "team" or "mine", else ""
    default_who: str = "all"  # the principal's default view: left out of the page's links


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _query(queue: QueueFilter, zone: str | None = None, default_who: str = "all", **changes: Any) -> str:
    """The query string of a filter (with ``changes``), leaving out what is the default."""
    fields = {"channel": queue.channel, "segment": queue.segment, "status": queue.status, "who": queue.who,
              "team": queue.team, "state": queue.state, "order": queue.order, "zone": zone, **changes}
    defaults = {"status": "active", "who": default_who, "order": "urgency"}
    return urlencode({k: v for k, v in fields.items() if v and defaults.get(k) != v})


def render_queue(ledger: Any, views: Any, key: ViewKey, snapshot: Snapshot) -> str:
    """The queue section of the page (what each server-sent event replaces)."""
    now = ledger.clock()
    clock = AgentClock.choose(now=now, zone=key.zone, default_locale=key.locale)
    w = words(key.locale)
    mine = {"me": key.me, "my_team": key.my_team or None}
    rows = queue_rows(views, queue=key.queue, now=now, limit=SHOWN, **mine)
    counts = queue_counts(views, queue=key.queue, now=now, **mine)
    subjects = ledger.reveal([r["subject"] for r in rows]) if key.personal else [None] * len(rows)
    chips = [("", w._("all"), counts["all"])] + [(s, w._(_STATE_NAMES[s]), counts[s]) for s in STATES]
    per_state = _e(w._("Cases per state"))
    parts = [f'<nav aria-label="{per_state}"><ul id="counts">']
    for state, name, n in chips:
        current = ' aria-current="true"' if (key.queue.state or "") == state else ""
        query = _query(key.queue, state=state or None, default_who=key.default_who)
        href = "/?" + query if query else "/"
        parts.append(f'<li><a href="{_e(href)}"{current} data-state="{_e(state or "all")}">{_e(name)} '
                     f'<b>{n}</b></a></li>')
    parts.append("</ul></nav>")
    if snapshot.behind:
        lag = w._("The queue is catching up with the ledger: %(n)s events still to read. What it shows may be late; "
                  "it updates by itself.", n=snapshot.behind)
        parts.append(f'<p class="lag" role="status">{_e(lag)}</p>')
    if not rows:
        empty = _e(w._("No case in this queue."))
        parts.append(f'<p id="empty">{empty}</p>')
        return "\n".join(parts)
    order = w._(_ORDER_NAMES[key.queue.order])
    if counts["all"] > len(rows):
        caption = w._("the first %(shown)s of %(n)s cases, %(order)s", shown=len(rows), n=counts["all"], order=order)
    else:
        caption = w.n_("%(n)s case, %(order)s", "%(n)s cases, %(order)s", len(rows), order=order)
    heads = [w._("Case"), w._("Subject"), w._("Next deadline"), w._("Waiting"), w._("Channel"), w._("Segment"),
             w._("Status"), w._("Assignee")]
    parts.append(f'<table id="cases"><caption>{_e(caption)}</caption><thead><tr>'
                 + "".join(f'<th scope="col">{_e(h)}</th>' for h in heads) + "</tr></thead><tbody>")
    for row, subject in zip(rows, subjects, strict=True):
        parts.append(_row(row, subject, clock, key.personal, w))
    parts.append("</tbody></table>")
    return "\n".join(parts)


def _row(row: dict[str, Any], subject: Any, clock: AgentClock, personal: bool, w: Words) -> str:
    due, overdue = "", False
    if row["due_at"] is not None:
        overdue = clock.is_overdue(row["due_at"])
        kind = _DUE_NAMES.get(row["due_kind"])
        what = (w._(kind) if kind else row["due_kind"]) + f' {row["due_target"]}'
        said = _e(w._("Overdue:"))
        late = f'<span class="late">{said}</span> ' if overdue else ""
        due = (f'{late}{_e(what)}<br><time datetime="{_e(row["due_at"].isoformat())}">'
               f'{_e(clock.both(row["due_at"]))}</time>')
    waiting = []
    if row["follow_ups"]:
        waiting.append(w.n_("%(n)s follow-up unanswered", "%(n)s follow-ups unanswered", row["follow_ups"]))
    if row["proposals"]:
        since = clock.relative(row["proposed_since"]) if row["proposed_since"] else "?"
        waiting.append(w.n_("%(n)s proposal waiting since %(since)s", "%(n)s proposals waiting since %(since)s",
                            row["proposals"], since=since))
    if row["open_items"]:
        waiting.append(w.n_("%(n)s open item", "%(n)s open items", row["open_items"]))
    ref = _e(row["reference"])
    hidden = _e(w._("(not shown to this role)"))
    shown = f'<span lang="">{_e(subject)}</span>' if personal else f'<span class="muted">{hidden}</span>'
    team = w._("team %(team)s", team=row["team"]) if row["team"] else ""
    who = _e(row["assignee"] or w._("unassigned")) + (f" · {_e(team)}" if team else "")
    nothing = _e(w._("nothing due"))
    return (f'<tr data-reference="{ref}"{" class=overdue" if overdue else ""}><td><a href="/cases/{ref}">{ref}</a>'
            f'</td><td>{shown}</td><td>{due or f"<span class=muted>{nothing}</span>"}</td>'
            f'<td>{_e(" · ".join(waiting))}</td><td>{_e(w.code(row["channel"]) if row["channel"] else "")}</td>'
            f'<td>{_e(row["segment"] or "")}</td><td>{_e(w.code(row["status"]))}</td><td>{who}</td></tr>')


def _select(name: str, label: str, chosen: str | None, options: list[tuple[str, str]]) -> str:
    shown = "".join(f'<option value="{_e(v)}"{" selected" if (chosen or "") == v else ""}>{_e(t)}</option>'
                    for v, t in options)
    return f'<label>{_e(label)} {_LIST} name="{name}">{shown}</select></label>'


def _page(key: ViewKey, section: str, principal: Principal, choices: dict[str, list[str]], clock: AgentClock,
          zone_given: str | None) -> str:
    q, w = key.queue, words(key.locale)
    every = w._("all")
    t = {k: _e(v) for k, v in {"filter": w._("Filter the queue"), "zone": w._("Time zone"), "show": w._("Show"),
                               "not_live": w._("not live (reload to update)")}.items()}
    form = "".join([
        f'<form method="get" action="/" id="filters" role="search" aria-label="{t["filter"]}">',
        _select("channel", w._("Channel"), q.channel, [("", every)] + [(c, w.code(c)) for c in choices["channel"]]),
        _select("segment", w._("Segment"), q.segment, [("", every)] + [(s, s) for s in choices["segment"]]),
        _select("status", w._("Status"), q.status, [(s, w.code(s)) for s in ("active", "all", *Status.ALL)]),
        _select("who", w._("Assigned to"), q.who, [(o, w._(_WHO_NAMES[o])) for o in WHO
                                                          if principal.team or o != "team"]),
        _select("team", w._("Team"), q.team, [("", w._("any"))] + [(t, t) for t in choices["team"]]),
        _select("state", w._("State"), q.state, [("", every)] + [(s, w._(_STATE_NAMES[s])) for s in STATES]),
        _select("order", w._("Order"), q.order, [(o, w._(_ORDER_NAMES[o])) for o in ORDERS]),
        f'<label>{t["zone"]} <input name="zone" value="{_e(zone_given or clock.zone.key)}" size="18" '
        'autocomplete="off"></label>',
        f'<button type="submit">{t["show"]}</button></form>',
    ])
    query = _query(q, default_who=key.default_who)
    events = "/queue/events" + ("?" + query if query else "")
    title, live, reconnecting = w._("Queue"), w._("live"), w._("reconnecting…")
    if principal.team:
        signed = w._("Signed in as %(name)s (%(role)s) · team %(team)s · times in %(zone)s", name=principal.name,
                     role=principal.role.value, team=principal.team, zone=clock.zone.key)
    else:
        signed = w._("Signed in as %(name)s (%(role)s) · times in %(zone)s", name=principal.name,
                     role=principal.role.value, zone=clock.zone.key)
    return (
        f'<!doctype html><html lang="{_e(clock.language)}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{_e(title)} · caseledger</title><link rel="stylesheet" href="/queue.css"></head><body>'
        f'<header><h1>{_e(title)}</h1><span id="live-state" role="status" data-live="{_e(live)}" '
        f'data-reconnecting="{_e(reconnecting)}">{t["not_live"]}</span>'
        f'<p class="muted">{_e(signed)}</p></header>{form}'
        f'<main id="queue" data-events="{_e(events)}">{section}</main>'
        '<script src="/queue.js"></script></body></html>'
    )


def _refusal(status: int, title: str, detail: str, lang: str) -> HTMLResponse:
    """A refusal in the agent's language (``title`` an English msgid); the reason stays English (``lang="en"``)."""
    w = words(lang)
    heading, again = _e(w._(title)), _e(w._("Sign in with another token"))
    marked = "" if lang.startswith("en") else ' lang="en"'
    body = (f'<!doctype html><html lang="{_e(lang)}"><head><meta charset="utf-8"><title>{heading} · caseledger'
            f'</title><link rel="stylesheet" href="/queue.css"></head><body><main><h1>{heading}</h1>'
            f'<p{marked}>{_e(detail)}</p><p><a href="/login?next=/">{again}</a></p></main></body></html>')
    return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)


def default_who(principal: Principal) -> str:
    """What ``/`` shows an agent who chose nothing: with a team, their own cases, their team's and no one's
    (docs/agents.md says why); without one, the whole queue (the ledger does not know which part is theirs)."""
    return "mine" if principal.team else "all"


def who_of(principal: Principal, who: str | None) -> str:
    """The ``who`` asked for, else the principal's default; "my team" without a team is the whole queue."""
    if who == "team" and not principal.team:
        return "all"
    return who or default_who(principal)


class QueueAsked:
    """What a queue request asks: its filters (the query), who calls (a token or the session), the zone and language."""

    def __init__(
        self,
        channel: Annotated[str | None, Query(max_length=100)] = None,
        segment: Annotated[str | None, Query(max_length=100)] = None,
        status: Annotated[str, Query(max_length=40)] = "active",
        who: Annotated[str | None, Query(max_length=20)] = None,
        team: Annotated[str | None, Query(max_length=100)] = None,
        state_: Annotated[str | None, Query(alias="state", max_length=20)] = None,
        order: Annotated[str, Query(max_length=20)] = "urgency",
        zone: Annotated[str | None, Query(max_length=64)] = None,
        authorization: Annotated[str | None, Header()] = None,
        accept_language: Annotated[str | None, Header(max_length=500)] = None,
        session: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None,
        zone_cookie: Annotated[str | None, Cookie(alias=ZONE_COOKIE, max_length=64)] = None,
    ) -> None:
        self.channel, self.segment, self.status, self.who, self.team = channel, segment, status, who, team
        self.state, self.order, self.zone = state_, order, zone
        self.authorization, self.accept_language = authorization, accept_language
        self.session, self.zone_cookie = session, zone_cookie

    def filter(self, who: str) -> QueueFilter:
        return QueueFilter(channel=self.channel, segment=self.segment, status=self.status, who=who, team=self.team,
                           state=self.state, order=self.order)


def add_routes(app: FastAPI, state: Any) -> Callable[[], None]:
    """Add ``/``, ``/queue/events`` and the page's script and style; what to call when the service stops."""
    keeper = QueueKeeper(state, render_queue)
    now: Callable[[], datetime] = state.clock or (lambda: datetime.now(UTC))
    defaults: dict[str, str] = {}

    def default_zone_and_locale() -> tuple[str, str]:
        if not defaults:  # the company's own, from the response policy's [texts]
            policy = state.ledger().policy
            defaults["zone"] = policy.texts.time_zone or policy.calendar.timezone
            defaults["locale"] = policy.texts.locale
        return defaults["zone"], defaults["locale"]

    def principal(authorization: str | None, session: str | None) -> Principal:
        if authorization is not None or session is None:
            found = state.authenticator().authenticate(authorization)
        else:
            found = Sessions(state.ledger().principal_store).principal(session)
        found.require(Operation.CASE_READ)
        return found

    def refusal_lang(accept_language: str | None) -> str:
        return AgentClock.choose(now=now(), accept_language=accept_language, default_locale=defaults.get("locale", "en"),
                                 languages=LANGUAGES).language

    def view_of(caller: Principal, queue: QueueFilter, zone: str | None, accept_language: str | None) -> ViewKey:
        default_zone, default_locale = default_zone_and_locale()
        clock = AgentClock.choose(now=now(), principal_zone=caller.zone, principal_locale=caller.locale, zone=zone,
                                  accept_language=accept_language, default_zone=default_zone,
                                  default_locale=default_locale, languages=LANGUAGES)
        return ViewKey(queue, caller.name if queue.who in ("me", "mine") else "", clock.zone.key, str(clock.locale),
                       allowed(caller.role, Operation.HISTORY_READ),
                       my_team=(caller.team or "") if queue.who in ("team", "mine") else "",
                       default_who=default_who(caller))

    @app.get("/queue.js", include_in_schema=False)
    def queue_js() -> Response:
        return Response(_SCRIPT, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    @app.get("/queue.css", include_in_schema=False)
    def queue_css() -> Response:
        return Response(_STYLE, media_type="text/css", headers={"Cache-Control": "no-cache"})

    @app.get("/", tags=["live"], response_class=HTMLResponse, openapi_extra={"x-operation": Operation.CASE_READ.value})
    async def queue_page(request: Request, asked: Annotated[QueueAsked, Depends()]) -> Response:
        """The agent's queue (HTML): the cases to look at, most urgent first; sign in at /login first."""
        here = "/" + (f"?{request.url.query}" if request.url.query else "")
        authorization, session, accept_language = asked.authorization, asked.session, asked.accept_language
        if authorization is None and session is None:
            return RedirectResponse("/login?next=" + quote(here, safe=""), status_code=303, headers=PAGE_HEADERS)
        try:
            caller = await asyncio.to_thread(principal, authorization, session)
        except AuthenticationError as error:
            if authorization is None:  # a browser whose session ended: sign in again, then back here
                return RedirectResponse("/login?next=" + quote(here, safe=""), status_code=303,
                                        headers=PAGE_HEADERS)
            return _refusal(401, N_("Not signed in"), str(error), refusal_lang(accept_language))
        except PermissionDenied as error:
            return _refusal(403, N_("Not allowed for this role"), str(error), refusal_lang(accept_language))
        queue = asked.filter(who_of(caller, asked.who))
        chosen_zone = asked.zone or asked.zone_cookie
        key = await asyncio.to_thread(view_of, caller, queue, chosen_zone, accept_language)
        section = await keeper.page(key)
        choices = await keeper.read(queue_choices)
        clock = AgentClock.choose(now=now(), zone=key.zone, default_locale=key.locale)
        answer = HTMLResponse(_page(key, section, caller, choices, clock, chosen_zone), headers=PAGE_HEADERS)
        if asked.zone and asked.zone == key.zone:  # a zone the agent chose and that exists: kept for the next pages
            answer.set_cookie(ZONE_COOKIE, asked.zone, max_age=400 * 86400, httponly=True, samesite="strict",
                              secure=request.url.scheme == "https", path="/")
        return answer

    @app.get("/queue/events", tags=["live"], openapi_extra={"x-operation": Operation.CASE_READ.value})
    async def queue_events(asked: Annotated[QueueAsked, Depends()]) -> Response:
        """Server-sent events: ``queue`` with the page's queue section each time the queue changes.

        At most 10 streams per principal (the next gets 429); a stream ends once its principal is revoked."""
        authorization, session = asked.authorization, asked.session
        caller = await asyncio.to_thread(principal, authorization, session)
        key = await asyncio.to_thread(view_of, caller, asked.filter(who_of(caller, asked.who)),
                                      asked.zone or asked.zone_cookie, asked.accept_language)
        try:
            view, wake = keeper.open(caller.name, key)
        except StreamLimit as error:
            return error.answer()

        async def allowed_still() -> bool:
            return await still_allowed(lambda: principal(authorization, session))

        async def stream() -> AsyncIterator[bytes]:
            sent = b""
            while True:
                if view.frame and view.frame != sent:
                    sent = view.frame
                    yield sent
                try:
                    await asyncio.wait_for(wake.wait(), timeout=HEARTBEAT_S)
                except TimeoutError:
                    if not await allowed_still():
                        return
                    yield b": keep-alive\n\n"
                    continue
                wake.clear()
                if not await allowed_still():
                    return

        return EventStream(stream(), lambda: keeper.close_stream(caller.name, view, wake))

    return keeper.close

