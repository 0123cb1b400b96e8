"""The queue's data path: the queue projection kept from the store by the service itself, one render per change.

Why this path: the agent's queue must show a contact within a second of its recording, whatever else
runs. ``caseledger run`` may keep the built-in projections from the Kafka events topic (publisher and
consumer in between), so the queue projection (:mod:`projections.queue`) is not a built-in: each service
process keeps it from the store's notification log, as ``/v1/overdue`` catches its view up before
reading. One :class:`QueueKeeper` per process does it, in one thread of its own (its own ledger and
views connection):

- while queue streams are open, every ``POLL_S`` it reads what the log holds past its position (one
  indexed query when nothing is new), applies it, and renders each distinct *view* (a filter, a zone, a
  language: 50 pages of one view cost one render) at most every ``MIN_RENDER_S`` when the queue
  changed, and every ``RERENDER_S`` anyway (times read "in 5 minutes", overdue flips);
- a page request catches up for at most ``PAGE_BUDGET_S`` before it renders: a queue further behind
  (a service started on a long log) is shown as it is, with how many events it has still to read;
- a customer's erasure (``CustomerErased`` read on the way) has every view rendered again at each poll
  for ``ERASED_RELOAD_S`` (its keys are destroyed just after the event), so no page goes on showing
  what was erased.

Streams are capped like the case page's: per principal and per process (:mod:`ledger.service.feeds`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from caseledger.ledger.service.feeds import MAX_STREAMS, MAX_STREAMS_PER_PRINCIPAL, StreamLimit
from caseledger.projections.queue import AgentQueue
from caseledger.projections.sources import SourceRecord, StoreEventSource

__all__ = ["QueueKeeper", "QueueView", "Snapshot"]

log = logging.getLogger("caseledger.service.live")
T = TypeVar("T")

POLL_S = 0.1
MIN_RENDER_S = 0.2
RERENDER_S = 30.0
PAGE_BUDGET_S = 2.0
POLL_BUDGET_S = 0.5
ERASED_RELOAD_S = 60.0


@dataclass(frozen=True)
class Snapshot:
    """Where the queue stands: the store position it has read to and how many events it has still to read."""

    position: int
    behind: int


@dataclass
class QueueView:
    """One distinct rendering of the queue, shared by every stream showing it."""

    key: Hashable
    html: str = ""
    frame: bytes = b""
    rendered_at: float = 0.0
    generation: int = -1  # the keeper's generation this view was rendered at
    waiters: set[asyncio.Event] = field(default_factory=set)


class _ErasureSpotting(StoreEventSource):
    """The store's log as the runner reads it, noting when it passes a customer's erasure."""

    erased = False

    def fetch(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        records = super().fetch(max_records, timeout_s)
        if any(r.event_type == "CustomerErased" for r in records):
            self.erased = True
        return records


class QueueKeeper:
    """Keeps the queue projection from the store and renders each open view once per change (see above)."""

    def __init__(self, state: Any, render: Callable[[Any, Any, Hashable, Snapshot], str]) -> None:
        """``render(ledger, views, key, snapshot)`` gives a view's HTML; it runs in the keeper's thread."""
        self.state = state
        self.render = render
        self.views: dict[Hashable, QueueView] = {}
        self.streams: dict[str, int] = {}
        self.snapshot = Snapshot(0, 0)
        self.erased_until = 0.0
        self.generation = 0  # moves each time the queue changes
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="caseledger-queue")
        self._task: asyncio.Task[None] | None = None
        self._ledger: Any = None
        self._views: Any = None
        self._source: _ErasureSpotting | None = None
        self._runner: Any = None

    # -- in the keeper's thread ------------------------------------------------------------------------

    def _open(self) -> None:
        from caseledger.ledger.application import CaseLedger
        from caseledger.projections.catchup import views_url
        from caseledger.projections.runner import ProjectionRunner
        from caseledger.projections.view_stores import open_views

        self._ledger = CaseLedger(self.state.settings, clock=self.state.clock)
        self._views = open_views(views_url(database=self.state.settings.store.database, views=self.state.views))
        self._source = _ErasureSpotting(self._ledger)
        self._runner = ProjectionRunner([AgentQueue()], self._views, self._source, codec=self._ledger.codec,
                                        batch_size=2000, idle_s=0)

    def _catch_up(self, budget_s: float) -> bool:
        """Apply what the log holds past the queue's position, for at most ``budget_s``; whether it moved."""
        if self._runner is None:
            self._open()
        assert self._runner is not None and self._source is not None
        deadline = time.monotonic() + budget_s
        stop = threading.Event()

        def enough(_report: Any) -> None:
            if time.monotonic() >= deadline:
                stop.set()

        before = self.snapshot.position
        try:
            self._runner.run(stop, until_caught_up=True, on_batch=enough)
        finally:
            self._ledger.data_keys.forget()
        position = self._runner.positions(AgentQueue.name).get(0, 0)
        end = self._source.end_positions().get(0, 0)
        self.snapshot = Snapshot(position, max(0, end - position))
        if self._source.erased:
            self._source.erased = False
            self.erased_until = time.monotonic() + ERASED_RELOAD_S
        return position != before

    def _render(self, key: Hashable) -> str:
        if self._runner is None:
            self._open()
        try:
            return self.render(self._ledger, self._views, key, self.snapshot)
        finally:
            self._ledger.data_keys.forget()  # no customer's key is kept past a render

    def _page(self, key: Hashable) -> str:
        try:
            self._catch_up(PAGE_BUDGET_S)
        except Exception:  # the store failed for a moment: the page shows the queue as it is
            log.warning("the queue could not read the notification log", exc_info=True)
        return self._render(key)

    def _close(self) -> None:
        for resource in (self._views, self._ledger):
            if resource is not None:
                resource.close()
        self._views = self._ledger = self._runner = self._source = None

    # -- on the event loop ------------------------------------------------------------------------------

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def page(self, key: Hashable) -> str:
        """A page's queue section: caught up (for at most ``PAGE_BUDGET_S``), then rendered."""
        return await self._call(self._page, key)

    async def read(self, query: Callable[[Any], T]) -> T:
        """``query(views)`` in the keeper's thread, on its views connection."""

        def run() -> T:
            if self._runner is None:
                self._open()
            return query(self._views)

        return await self._call(run)

    def open(self, principal: str, key: Hashable) -> tuple[QueueView, asyncio.Event]:
        """Count a new stream of ``principal`` on view ``key`` (StreamLimit past a cap); the view and its wake-up."""
        if self.streams.get(principal, 0) >= MAX_STREAMS_PER_PRINCIPAL:
            raise StreamLimit(f"at most {MAX_STREAMS_PER_PRINCIPAL} live queues may be open per principal; close "
                              "one (another tab or window) and retry", status=429)
        if sum(self.streams.values()) >= MAX_STREAMS:
            raise StreamLimit(f"this server has {MAX_STREAMS} live queues open; retry later", status=503)
        self.streams[principal] = self.streams.get(principal, 0) + 1
        view = self.views.get(key)
        if view is None:
            view = self.views[key] = QueueView(key)
        wake = asyncio.Event()
        view.waiters.add(wake)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        elif view.frame:
            wake.set()
        return view, wake

    def close_stream(self, principal: str, view: QueueView, wake: asyncio.Event) -> None:
        """A stream ended: uncount it; a view no stream shows any more is no longer rendered."""
        left = self.streams.get(principal, 0) - 1
        if left > 0:
            self.streams[principal] = left
        else:
            self.streams.pop(principal, None)
        view.waiters.discard(wake)
        if not view.waiters and self.views.get(view.key) is view:
            del self.views[view.key]

    async def _run(self) -> None:
        while self.views:
            try:
                if await self._call(self._catch_up, POLL_BUDGET_S):
                    self.generation += 1
            except Exception:  # the store failed for a moment: streams stay open, the next poll retries
                log.warning("the queue could not read the notification log", exc_info=True)
            now = time.monotonic()
            erasing = now < self.erased_until
            for view in list(self.views.values()):
                age = now - view.rendered_at
                stale = view.generation != self.generation and age >= MIN_RENDER_S
                if view.frame and not (stale or erasing or age >= RERENDER_S):
                    continue
                generation = self.generation
                try:
                    html = await self._call(self._render, view.key)
                except Exception:
                    log.warning("the queue could not be rendered", exc_info=True)
                    continue
                view.rendered_at, view.generation = now, generation
                if html == view.html and view.frame:
                    continue
                data = json.dumps({"position": self.snapshot.position, "html": html})
                view.html = html
                view.frame = f"id: {self.snapshot.position}\nevent: queue\ndata: {data}\n\n".encode()
                for wake in view.waiters:
                    wake.set()
            await asyncio.sleep(POLL_S)

    def close(self) -> None:
        """Close the keeper's ledger and views (the service is stopping)."""
        try:
            self._thread.submit(self._close).result(timeout=30)
        finally:
            self._thread.shutdown(wait=False)
