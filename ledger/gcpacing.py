"""Garbage collection for long-running services that keep large caches: no long pause per batch.

CPython's full collection traverses every container object alive. A projection runner keeps
tens of thousands of view rows in its cache, an intake worker tens of thousands of aggregates:
half a million objects, which a full collection took 100–430 ms to traverse on a busy 2-core
machine — and it came back every few seconds under load, as the worst latencies of ``bench lag``.

After each batch, :class:`GcPacer` moves everything alive into the collector's permanent
generation (``gc.freeze``, constant time), so automatic collections only look at what later
batches create. Every ``full_every_s`` it puts everything back and runs one full collection,
which also frees any reference cycle that was frozen before it became garbage: one pause of
that length every few minutes instead of one every few seconds.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

FULL_COLLECTION_EVERY_S = 300.0


class GcPacer:
    """Call :meth:`after_batch` when a batch is done and nothing of it is needed any more."""

    def __init__(
        self, full_every_s: float = FULL_COLLECTION_EVERY_S, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.full_every_s = full_every_s
        self._clock = clock
        self._last_full = clock()
        self.full_collections = 0

    def after_batch(self) -> None:
        if not gc.isenabled():
            return  # someone holds collection off on purpose (a rebuild collects on its own schedule)
        now = self._clock()
        if now - self._last_full >= self.full_every_s:
            gc.unfreeze()
            gc.collect()
            self._last_full = now
            self.full_collections += 1
        gc.freeze()

    def close(self) -> None:
        """Give the frozen objects back to the collector (a service that stops, a test)."""
        gc.unfreeze()
