"""How a request gets a ledger of its own: taken from a bounded pool for the request, given back when it ends.

A ledger holds a pool of database connections, and its unit of work belongs to one user at a time.
The server keeps a few (:class:`LedgerPool`: at most ``size``, each built when first needed) and
lends one to each request that asks for one. :func:`request_scope` is the dependency every route
runs: it opens the request's :class:`RequestLedger`, which takes a ledger on the request's first
``ledger()`` call, and gives it back when the route function returns (a streamed body goes on
without it). Nothing is returned on garbage collection, so a worker thread that lives on after its
request holds nothing.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from caseledger.ledger.errors import BackendError

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger

__all__ = ["LedgerPool", "RequestLedger", "current_request_ledger", "request_scope"]


class LedgerPool:
    """At most ``size`` ledgers, built when first needed; each is lent to one user at a time."""

    def __init__(self, build: Callable[[], CaseLedger], *, size: int, wait_s: float) -> None:
        if size < 1:
            raise ValueError(f"a ledger pool needs room for one ledger at least, not {size}")
        self.size = size
        self.wait_s = wait_s
        self._build = build
        self._all: list[CaseLedger] = []
        self._free: list[CaseLedger] = []
        self._building = 0
        self._changed = threading.Condition()

    @property
    def built(self) -> int:
        """Ledgers built so far (never more than ``size``)."""
        return len(self._all)

    @property
    def free(self) -> int:
        """Ledgers built and not lent."""
        return len(self._free)

    def take(self) -> CaseLedger:
        """A free ledger, a new one while fewer than ``size`` exist, else the first given back (``wait_s`` at most)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._free or self.built + self._building < self.size,
                                          timeout=self.wait_s):
                raise BackendError(
                    f"every one of the server's {self.size} ledgers stayed busy for {self.wait_s:g} s; retry later, or "
                    "serve with more processes (caseledger serve --workers N)"
                )
            if self._free:
                return self._free.pop()
            self._building += 1
        try:
            ledger = self._build()
        except BaseException:
            with self._changed:
                self._building -= 1
                self._changed.notify()
            raise
        with self._changed:
            self._building -= 1
            self._all.append(ledger)
        return ledger

    def give_back(self, ledger: CaseLedger) -> None:
        with self._changed:
            self._free.append(ledger)
            self._changed.notify()

    @contextmanager
    def lease(self) -> Iterator[CaseLedger]:
        """A ledger for the block's duration."""
        ledger = self.take()
        try:
            yield ledger
        finally:
            self.give_back(ledger)

    def close(self) -> None:
        with self._changed:
            ledgers, self._all, self._free = self._all, [], []
        for ledger in ledgers:
            ledger.close()


class RequestLedger:
    """The ledger one request took from the pool, if it asked for one; given back by :meth:`end`."""

    def __init__(self, pool: LedgerPool) -> None:
        self._pool = pool
        self._ledger: CaseLedger | None = None
        self._ended = False
        self._lock = threading.Lock()

    def ledger(self) -> CaseLedger | None:
        """The request's ledger (taken on the first call); None once the request has ended."""
        with self._lock:
            if self._ended:
                return None
            if self._ledger is None:
                self._ledger = self._pool.take()
            return self._ledger

    def end(self) -> None:
        with self._lock:
            ledger, self._ledger, self._ended = self._ledger, None, True
        if ledger is not None:
            self._pool.give_back(ledger)


_current: ContextVar[RequestLedger | None] = ContextVar("caseledger_request_ledger", default=None)


def current_request_ledger() -> RequestLedger | None:
    """The request being served in this context (its worker thread's copy included); None outside requests."""
    return _current.get()


def request_scope(pool: LedgerPool) -> Callable[[], AsyncIterator[None]]:
    """The dependency that opens each request's :class:`RequestLedger` and ends it when the route returns.

    Asynchronous, so that it runs in the request's own context (which the route's worker thread copies) and
    costs no thread hop; declared with ``scope="function"``, so that it ends before a streamed body is sent.
    """

    async def request_ledger() -> AsyncIterator[None]:
        request = RequestLedger(pool)
        _current.set(request)
        try:
            yield
        finally:
            request.end()

    return request_ledger
