"""Garbage collection for long-running services that keep large caches: no long pause per batch.

CPython's full collection traverses every container object alive. A projection runner keeps
tens of thousands of view rows in its cache, an intake worker tens of thousands of aggregates:
half a million objects, which a full collection took 100–430 ms to traverse on a busy 2-core
machine — and it came back every few seconds under load, as the worst latencies of ``bench lag``.

After each batch, :class:`GcPacer` moves everything alive into the collector's permanent
generation (``gc.freeze``, constant time), so automatic collections only look at what later
batches create. Every ``full_every_s`` it puts everything back and runs one full collection,
which also frees any reference cycle that was frozen before it became garbage: one pause of
that length every few minutes instead of one every few seconds. Then it gives the pages glibc's
allocator holds free back to the system (``malloc_trim``, a few milliseconds): otherwise a process's
resident memory stays at its highest, however much of it was freed since (the soak, docs/benchmarks.md).

The collector is the process's, so its pacing is too: one :class:`GcPacer` per process, made
by whoever runs the services (``ledger/runtime/supervisor.py``, a command that runs one loop),
and only the thread that made it calls ``gc.freeze``/``unfreeze``/``collect``. Services are
given it (or :data:`NO_PACING`) and report their batches to it; a report from another thread
waits for the owner's :meth:`GcPacer.pace`.

A rebuild instead holds automatic collections off altogether and collects on its own count of
records, spaced out while collections find nothing (:class:`SpacedCollections`).
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Protocol

from caseledger.ledger.runtime.memory_trace import release_free_memory

FULL_COLLECTION_EVERY_S = 300.0
COLLECT_EVERY = 100_000  # records between two garbage collections while a rebuild holds them off
MAX_COLLECT_EVERY = 1_600_000  # ... at most, while collections find (almost) nothing
WORTH_COLLECTING = 1_000  # objects freed by a collection for the next one to come as soon again


class SpacedCollections:
    """Garbage collections for a runner that holds the automatic ones off (a rebuild).

    The first comes after COLLECT_EVERY records. A replay of the built-ins makes no reference
    cycles (measured: collections freed 0–6 objects) yet each collection traverses the ~200k
    objects a rebuild keeps (160 ms, ~4 % of its CPU): while they find less than
    WORTH_COLLECTING, the interval doubles up to MAX_COLLECT_EVERY. A projection that does
    make cycles brings it back to COLLECT_EVERY.
    """

    def __init__(self, records: int, *, collect: Callable[[], int] = gc.collect) -> None:
        self.every = COLLECT_EVERY
        self._at = records
        self._collect = collect

    def after(self, records: int) -> None:
        """Collect if ``records`` (the runner's count so far) is far enough past the last collection."""
        if records - self._at < self.every:
            return
        freed = self._collect()
        self._at = records
        self.every = COLLECT_EVERY if freed >= WORTH_COLLECTING else min(self.every * 2, MAX_COLLECT_EVERY)


class Pacing(Protocol):
    """Where a service reports that a batch is done and nothing of it is needed any more."""

    def after_batch(self) -> None:
        """One batch done (from the service's own thread)."""
        ...


class NoPacing:
    """Pacing that does nothing: a service run by a test or a library caller leaves the collector alone."""

    def after_batch(self) -> None:
        return None


NO_PACING: Pacing = NoPacing()


class GcPacer:
    """The process's collection pacing. Its owner, the thread that made it, is the only one acting on the collector.

    :meth:`after_batch` on the owner's thread acts at once (one service run in the calling thread);
    from a service's own thread it only reports the batch, and the owner acts in :meth:`pace`
    (the supervisor's thread, while its services run).
    """

    def __init__(
        self, full_every_s: float = FULL_COLLECTION_EVERY_S, *, clock: Callable[[], float] = time.monotonic,
        release: Callable[[], object] = release_free_memory,
    ) -> None:
        self.full_every_s = full_every_s
        self._clock = clock
        self._release = release
        self._last_full = clock()
        self.full_collections = 0
        self._owner = threading.get_ident()
        self._reported = threading.Event()

    def after_batch(self) -> None:
        """A batch is done: freeze what is alive (and collect in full when due), or tell the owner to."""
        if threading.get_ident() == self._owner:
            self._act()
        else:
            self._reported.set()

    def pace(self, timeout: float) -> None:
        """The owner waits up to ``timeout`` seconds for a reported batch, and acts on it."""
        self._require_owner("pace")
        if self._reported.wait(timeout):
            self._reported.clear()
            self._act()

    def close(self) -> None:
        """Give the frozen objects back to the collector (the services stopped, a test ends)."""
        self._require_owner("close")
        gc.unfreeze()

    def __enter__(self) -> GcPacer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _act(self) -> None:
        if not gc.isenabled():
            return  # someone holds collection off on purpose (a rebuild collects on its own schedule)
        now = self._clock()
        if now - self._last_full >= self.full_every_s:
            gc.unfreeze()
            gc.collect()
            self._release()
            self._last_full = now
            self.full_collections += 1
        gc.freeze()

    def _require_owner(self, what: str) -> None:
        if threading.get_ident() != self._owner:
            raise RuntimeError(
                f"GcPacer.{what} was called from a thread that does not own the pacer; only the thread that made "
                "it acts on the collector: give services the pacer and let them call after_batch"
            )
