"""One thread of the service process with a ledger of its own, serving queued requests in batches.

The case reader (:mod:`case_cache`) and the group committer (:mod:`group_commit`) are both this: the
event loop queues a request and awaits its future; the thread takes every request waiting (up to
``max_batch``) and serves them together, so a batch costs one query or one transaction, not one per
request. A batch that fails answers each of its requests with the error: no caller is left waiting.
"""

from __future__ import annotations

import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger

__all__ = ["BatchThread"]

log = logging.getLogger("caseledger.service")


class _Request(Protocol):
    answer: Future[Any]


R = TypeVar("R", bound=_Request)


class BatchThread(ABC, Generic[R]):
    """Starts on the first request; :meth:`serve` gets each batch with the thread's ledger."""

    thread_name = "caseledger-batches"

    def __init__(self, make_ledger: Callable[[], CaseLedger] | None, *, max_batch: int | None = None) -> None:
        self._make_ledger = make_ledger
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[R | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._ledger: CaseLedger | None = None

    @abstractmethod
    def serve(self, ledger: CaseLedger, batch: list[R]) -> None:
        """Answer every request of ``batch`` (its ``answer`` future)."""

    def _enqueue(self, request: R) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
                self._thread.start()
        self._queue.put(request)

    def warm(self) -> None:
        """Build the thread's ledger now, not in the first request's time."""
        if self._ledger is None and self._make_ledger is not None:
            self._ledger = self._make_ledger()

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=30)
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while self.max_batch is None or len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(more)
            try:
                self.warm()
                if self._ledger is None:
                    raise RuntimeError(f"{self.thread_name} has no ledger to serve requests with")
                self.serve(self._ledger, batch)
            except BaseException as error:  # never leave a caller waiting
                log.exception("%s: a batch failed", self.thread_name)
                for request in batch:
                    if not request.answer.done():
                        request.answer.set_exception(error)
