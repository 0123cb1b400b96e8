"""The live page's streams: one watcher per process, one render per case change and view shared by its streams, caps.

The watcher reads the store's notification log every ``POLL_S`` for all open streams. Each watched
case has one :class:`Feed`: the case as of its latest event, its context (what the page shows beyond
the case: the customer's name and other cases, read again at most every ``CONTEXT_S``) and its
rendered server-sent event per *view* (what differs between two readers of the same version: their
role, language and zone). When the case changes the watcher applies the new events and renders the
section once per view its streams show; every stream of the case is woken and sends its view's bytes
(995 streams of agents reading in one language cost one render, not 995).

A case whose customer is erased (by any process: ``CustomerErased`` in the log) is read again from the
store and rendered anew, at every poll for ``ERASED_RELOAD_S`` (the eraser destroys the keys just after
recording the event), so no stream goes on showing what was erased.

Streams are capped: :data:`MAX_STREAMS_PER_PRINCIPAL` per principal (the next gets 429) and
:data:`MAX_STREAMS` per server process (503), so that one token cannot take the server's sockets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from caseledger.ledger.domain.case import Case
from caseledger.ledger.domain.catalog import topic_of
from caseledger.ledger.domain.directory import Customer
from caseledger.ledger.errors import AuthenticationError, CaseLedgerError, PermissionDenied
from caseledger.ledger.service.problems import MEDIA_TYPE, problem

__all__ = ["MAX_STREAMS", "MAX_STREAMS_PER_PRINCIPAL", "EventStream", "Feed", "StreamLimit", "Watcher"]

log = logging.getLogger("caseledger.service.live")

POLL_S = 0.1
CONTEXT_S = 5.0  # the context of a watched case is read again, on its next change, once older than this
MAX_STREAMS_PER_PRINCIPAL = 10  # a few tabs and windows of one agent; docs/api.md
MAX_STREAMS = 2000  # per server process
ERASED_RELOAD_S = 60.0
_ERASED_TOPIC = topic_of("CustomerErased")


class StreamLimit(CaseLedgerError):
    """Too many open streams (for this principal: 429; for the server: 503); retry later."""

    exit_code, http_status, slug, title = 4, 503, "too-many-streams", "Too many live pages"

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = self.http_status = status

    def answer(self) -> JSONResponse:
        """The problem a page's script reads (and retries after)."""
        body = problem(self.status, self.slug, self.title, str(self), exit_code=self.exit_code)
        return JSONResponse(body, status_code=self.status, media_type=MEDIA_TYPE, headers={"Retry-After": "5"})


async def still_allowed(check: Callable[[], object]) -> bool:
    """Whether a stream's caller is still who may read it (checked off the event loop): a revoked one ends it."""
    try:
        await asyncio.to_thread(check)
    except (AuthenticationError, PermissionDenied):
        return False
    return True


class EventStream(StreamingResponse):
    """A page's event stream (the case page's, the queue's); its slot (the principal's count, the view's waiter) is
    given back however it ends."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


class Feed:
    """One watched case: its latest state and its latest rendered event per view, shared by every stream showing it."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.version = -1  # the version ``frames`` show (-1: not rendered yet)
        self.generation = 0  # how many times it was rendered: a case read again after an erasure keeps its version
        self.frames: dict[Any, bytes] = {}  # view → the server-sent event
        self.htmls: dict[Any, str] = {}  # view → what its frame shows
        self.views: dict[Any, int] = {}  # view → its open streams
        self.context: Any = None
        self.context_at = -1e9  # monotonic: when ``context`` was read
        self.waiters: set[asyncio.Event] = set()
        self.reload_until = 0.0  # monotonic: read from the store again until then (its customer was erased)

    @property
    def html(self) -> str:
        """What the first view's frame shows (one view: what every stream shows)."""
        return next(iter(self.htmls.values()), "")

    def shown(self) -> list[Any]:
        """The views to render: those of the open streams (a feed with none renders the default view, None)."""
        return list(self.views) or [None]


class Watcher:
    """Polls the notification log for all open streams and keeps each watched case's :class:`Feed` (see above)."""

    def __init__(self, state: Any, render: Callable[[Case, Any, Any], str],
                 context: Callable[[Any, Case], Any] | None = None) -> None:
        self.state = state
        self.render = render  # (case, view, context) → the section's HTML
        self.context = context  # (a lent ledger, case) → what the section shows beyond the case
        self.position: int | None = None
        self.feeds: dict[Any, Feed] = {}
        self.streams: dict[str, int] = {}  # open streams per principal name
        self._task: asyncio.Task[None] | None = None
        self._erased: set[Any] = set()  # Customer aggregates whose erasure the last poll read

    def open(self, principal: str, case: Case, view: Any = None) -> tuple[Feed, asyncio.Event]:
        """Count a new stream of ``principal`` on ``case`` shown as ``view`` (StreamLimit past a cap); the feed and the
        stream's wake-up."""
        if self.streams.get(principal, 0) >= MAX_STREAMS_PER_PRINCIPAL:
            raise StreamLimit(f"at most {MAX_STREAMS_PER_PRINCIPAL} live pages may be open per principal; close "
                              "one (another tab or window) and retry", status=429)
        if sum(self.streams.values()) >= MAX_STREAMS:
            raise StreamLimit(f"this server has {MAX_STREAMS} live pages open; retry later", status=503)
        self.streams[principal] = self.streams.get(principal, 0) + 1
        feed = self.feeds.get(case.id)
        if feed is None:
            feed = self.feeds[case.id] = Feed(case)
        feed.views[view] = feed.views.get(view, 0) + 1
        wake = asyncio.Event()
        feed.waiters.add(wake)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        elif feed.version >= 0:
            wake.set()  # the case is rendered already: this stream sends it at once
        return feed, wake

    def close(self, principal: str, feed: Feed, wake: asyncio.Event, view: Any = None) -> None:
        """The stream ended: uncount it; a view or a case no stream shows any more is no longer rendered or watched."""
        left = self.streams.get(principal, 0) - 1
        if left > 0:
            self.streams[principal] = left
        else:
            self.streams.pop(principal, None)
        feed.waiters.discard(wake)
        shown = feed.views.get(view, 0) - 1
        if shown > 0:
            feed.views[view] = shown
        else:
            feed.views.pop(view, None)
            feed.frames.pop(view, None)
            feed.htmls.pop(view, None)
        if not feed.waiters and self.feeds.get(feed.case.id) is feed:
            del self.feeds[feed.case.id]

    async def _run(self) -> None:
        while self.feeds:
            try:
                changed = await asyncio.to_thread(self._changed)
            except Exception:  # the store failed for a moment: streams stay open, the next poll retries
                log.warning("the live page's watcher could not read the notification log", exc_info=True)
                changed = set()
            for feed in list(self.feeds.values()):
                reload = self._reload(feed)
                if feed.version >= 0 and feed.case.id not in changed and not reload:
                    continue
                try:
                    if not await asyncio.to_thread(self._update, feed, feed.version >= 0, reload):
                        continue
                except Exception:
                    log.warning("the live page's watcher could not refresh a case", exc_info=True)
                    continue
                for wake in feed.waiters:
                    wake.set()
            await asyncio.sleep(POLL_S)

    def _reload(self, feed: Feed) -> bool:
        """Whether ``feed``'s case must be read from the store again: its customer was erased lately."""
        now = time.monotonic()
        if self._erased and Customer.id_for(feed.case.customer_id) in self._erased:
            feed.reload_until = now + ERASED_RELOAD_S
        return feed.reload_until > now

    def _update(self, feed: Feed, refresh: bool, reload: bool = False) -> bool:
        """Apply the case's new events (only those after the version shown) and render it, once per view for all its
        streams.

        False when a case read again from the store (``reload``) shows nothing new: its streams are not woken.
        """
        case = feed.case
        if reload:  # what the case held opened may be erased now: all of it again, from the store
            with self.state.leased_ledger() as ledger:
                case = ledger.get_case(case.reference)
                context = self._context(ledger, case)
            htmls = {view: self.render(case, view, context) for view in feed.shown()}
            if case.version == feed.version and htmls == feed.htmls:
                return False
            self._show(feed, case, htmls, context)
            return True
        with self.state.leased_ledger() as ledger:
            if refresh:
                stored = ledger.recorder.select_events_after([case.id], after={case.id: case.version}).get(case.id, [])
                try:
                    for stored_event in stored:
                        case = ledger.mapper.to_domain_event(stored_event).mutate(case)
                finally:
                    ledger.data_keys.forget()  # a lent ledger keeps no key past this read
                if case.version == feed.version:
                    return True
            context = feed.context
            if self.context is not None and time.monotonic() - feed.context_at > CONTEXT_S:
                context = self._context(ledger, case)
        self._show(feed, case, {view: self.render(case, view, context) for view in feed.shown()}, context)
        return True

    def _context(self, ledger: Any, case: Case) -> Any:
        return self.context(ledger, case) if self.context is not None else None

    def render_view(self, feed: Feed, view: Any) -> bytes:
        """The frame of a view no stream showed until now (rendered once, kept with the others)."""
        found = feed.frames.get(view)
        if found is None:
            case = feed.case
            html = self.render(case, view, feed.context)
            found = _frame(case, html)
            if feed.case is case and feed.version == case.version:
                feed.frames[view], feed.htmls[view] = found, html
        return found

    @staticmethod
    def _show(feed: Feed, case: Case, htmls: dict[Any, str], context: Any) -> None:
        if context is not feed.context:
            feed.context, feed.context_at = context, time.monotonic()
        feed.frames = {view: _frame(case, html) for view, html in htmls.items()}
        feed.case, feed.htmls, feed.version = case, htmls, case.version
        feed.generation += 1

    def _changed(self) -> set[Any]:
        with self.state.leased_ledger() as ledger:  # the watcher outlives the request that started it
            recorder = ledger.recorder
            if self.position is None:
                self.position = recorder.max_notification_id() or 0
                return set(self.feeds)  # look once at every case when (re)starting
            changed: set[Any] = set()
            self._erased = set()
            while True:
                batch = recorder.select_notifications(start=self.position + 1, limit=1000)
                if not batch:
                    return changed
                changed.update(n.originator_id for n in batch)
                self._erased.update(n.originator_id for n in batch if n.topic == _ERASED_TOPIC)
                self.position = batch[-1].id


def _frame(case: Case, html: str) -> bytes:
    data = json.dumps({"version": case.version, "html": html})
    return f"id: {case.version}\nevent: case\ndata: {data}\n\n".encode()
