"""The live page's streams: one watcher per process, one render per case change shared by all its streams, caps.

The watcher reads the store's notification log every ``POLL_S`` for all open streams. Each watched
case has one :class:`Feed`: the case as of its latest event and its rendered server-sent event. When
the case changes the watcher applies the new events and renders the section once; every stream of
the case is woken and sends those same bytes (995 streams on one case cost one render, not 995).

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
from collections.abc import Callable
from typing import Any

from caseledger.ledger.domain.case import Case
from caseledger.ledger.domain.catalog import topic_of
from caseledger.ledger.domain.directory import Customer
from caseledger.ledger.errors import CaseLedgerError

__all__ = ["MAX_STREAMS", "MAX_STREAMS_PER_PRINCIPAL", "Feed", "StreamLimit", "Watcher"]

log = logging.getLogger("caseledger.service.live")

POLL_S = 0.1
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


class Feed:
    """One watched case: its latest state and its latest rendered event, shared by every stream showing it."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.version = -1  # the version ``frame`` shows (-1: not rendered yet)
        self.frame = b""
        self.html = ""  # what ``frame`` shows
        self.waiters: set[asyncio.Event] = set()
        self.reload_until = 0.0  # monotonic: read from the store again until then (its customer was erased)


class Watcher:
    """Polls the notification log for all open streams and keeps each watched case's :class:`Feed` (see above)."""

    def __init__(self, state: Any, render: Callable[[Case], str]) -> None:
        self.state = state
        self.render = render
        self.position: int | None = None
        self.feeds: dict[Any, Feed] = {}
        self.streams: dict[str, int] = {}  # open streams per principal name
        self._task: asyncio.Task[None] | None = None
        self._erased: set[Any] = set()  # Customer aggregates whose erasure the last poll read

    def open(self, principal: str, case: Case) -> tuple[Feed, asyncio.Event]:
        """Count a new stream of ``principal`` on ``case`` (StreamLimit past a cap); the feed and the stream's wake-up."""
        if self.streams.get(principal, 0) >= MAX_STREAMS_PER_PRINCIPAL:
            raise StreamLimit(f"at most {MAX_STREAMS_PER_PRINCIPAL} live pages may be open per principal; close "
                              "one (another tab or window) and retry", status=429)
        if sum(self.streams.values()) >= MAX_STREAMS:
            raise StreamLimit(f"this server has {MAX_STREAMS} live pages open; retry later", status=503)
        self.streams[principal] = self.streams.get(principal, 0) + 1
        feed = self.feeds.get(case.id)
        if feed is None:
            feed = self.feeds[case.id] = Feed(case)
        wake = asyncio.Event()
        feed.waiters.add(wake)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        elif feed.version >= 0:
            wake.set()  # the case is rendered already: this stream sends it at once
        return feed, wake

    def close(self, principal: str, feed: Feed, wake: asyncio.Event) -> None:
        """The stream ended: uncount it; a case no stream shows any more is no longer watched."""
        left = self.streams.get(principal, 0) - 1
        if left > 0:
            self.streams[principal] = left
        else:
            self.streams.pop(principal, None)
        feed.waiters.discard(wake)
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
        """Apply the case's new events (only those after the version shown) and render it, once for all its streams.

        False when a case read again from the store (``reload``) shows nothing new: its streams are not woken.
        """
        case = feed.case
        if reload:  # what the case held opened may be erased now: all of it again, from the store
            with self.state.leased_ledger() as ledger:
                case = ledger.get_case(case.reference)
            html = self.render(case)
            if case.version == feed.version and html == feed.html:
                return False
            self._show(feed, case, html)
            return True
        if refresh:
            with self.state.leased_ledger() as ledger:
                stored = ledger.recorder.select_events_after([case.id], after={case.id: case.version}).get(case.id, [])
                try:
                    for stored_event in stored:
                        case = ledger.mapper.to_domain_event(stored_event).mutate(case)
                finally:
                    ledger.data_keys.forget()  # a lent ledger keeps no key past this read
            if case.version == feed.version:
                return True
        self._show(feed, case, self.render(case))
        return True

    @staticmethod
    def _show(feed: Feed, case: Case, html: str) -> None:
        data = json.dumps({"version": case.version, "html": html})
        feed.case, feed.html, feed.version = case, html, case.version
        feed.frame = f"id: {case.version}\nevent: case\ndata: {data}\n\n".encode()

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
