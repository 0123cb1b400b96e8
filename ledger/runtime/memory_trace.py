"""What a long-running process's memory is made of, written to a file every few seconds (an operator's debug aid).

``caseledger run --memory-trace FILE`` (or ``CASELEDGER_MEMORY_TRACE``) appends a report to FILE every
``--memory-trace-every`` seconds: the process's resident memory, Python's objects (blocks of its small-object
allocator; the collector's tracked and frozen objects), and what glibc's allocator holds from the system,
in use and free (fragmentation, the arenas of ``MALLOC_ARENA_MAX``), and the full collections since the
previous report (how many, the objects they freed, the longest pause). Cheap: it can stay on. A resident
memory that grows with glibc's "in use" while Python's blocks stay flat is large objects or a C library
(a Kafka client, SQLite); one that grows with glibc's "free" is fragmentation.

``--memory-trace-sites`` also starts :mod:`tracemalloc` and lists the allocation sites that grew most since
the first report and since the previous one: a site that keeps growing is a cache or a list without
bound. Tracing costs several times the CPU of each allocation: turn it on to find a leak, not for good.

A report names source lines and sizes, never a value: nothing personal is written.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import TextIO

log = logging.getLogger("caseledger.memory")

DEFAULT_EVERY_S = 60.0
TOP_SITES = 25
_IGNORED = (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap*"))


def resident_bytes() -> int | None:
    """This process's resident memory (VmRSS), or None where /proc is not there."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo2() -> _MallInfo2 | None:
    """glibc's allocator over all its arenas, or None on another C library."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = _MallInfo2
    return function()


def release_free_memory() -> bool:
    """Give the pages glibc's allocator holds free back to the system (``malloc_trim``); False elsewhere.

    glibc keeps what a process freed for its next allocations and returns only the top of each
    arena: after a peak, the resident memory stays at the peak's even while half of it is free.
    """
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


def allocator_line() -> str:
    """What glibc holds from the system, in use and free (free: fragmentation the process cannot give back)."""
    info = _mallinfo2()
    if info is None:
        return "allocator: not glibc"
    held = info.arena + info.hblkhd
    return (f"allocator (glibc, all arenas): {held / 2**20:,.1f} MB held, {info.uordblks / 2**20:,.1f} MB in use, "
            f"{info.fordblks / 2**20:,.1f} MB free in {info.ordblks:,} chunks, {info.hblkhd / 2**20:,.1f} MB mmapped")


class FullCollections:
    """The process's full (generation 2) collections, as the collector reports them (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.count = self.freed = 0
        self.longest_s = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._began = time.perf_counter()
            return
        self.count += 1
        self.freed += info.get("collected", 0)
        self.longest_s = max(self.longest_s, time.perf_counter() - self._began)

    def line(self) -> str:
        """What the full collections since the last line did; starts counting again."""
        text = (f"full collections: {self.count} since the last report, {self.freed:,} objects freed, "
                f"longest {self.longest_s * 1000:,.0f} ms")
        self.count = self.freed = 0
        self.longest_s = 0.0
        return text


class MemoryTrace:
    """Appends a memory report to ``path`` every ``every_s`` seconds, from a daemon thread, until closed;
    ``sites``: with the allocation sites that grew most (tracemalloc)."""

    def __init__(self, path: Path, *, every_s: float = DEFAULT_EVERY_S, top: int = TOP_SITES, sites: bool = False) -> None:
        if every_s <= 0:
            raise ValueError(f"a memory trace every {every_s} s: give a positive number of seconds")
        self.path, self.every_s, self.top, self.sites = path, every_s, top, sites
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first: tracemalloc.Snapshot | None = None
        self._previous: tracemalloc.Snapshot | None = None
        self._started = 0.0
        self._collections = FullCollections()
        self.reports = 0

    def __enter__(self) -> MemoryTrace:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self.sites and not tracemalloc.is_tracing():
            tracemalloc.start(1)
        self._started = time.monotonic()
        gc.callbacks.append(self._collections)
        self._thread = threading.Thread(target=self._loop, name="memory-trace", daemon=True)
        self._thread.start()
        log.info("tracing memory: a report every %g s in %s", self.every_s, self.path)

    def close(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.report()
        gc.callbacks.remove(self._collections)
        if self.sites:
            tracemalloc.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.report()
            except OSError as error:  # a full disk must not stop the services
                log.warning("memory trace not written to %s: %s", self.path, error)

    def report(self) -> None:
        """Append one report: memory figures, then the sites that grew most since the first and the last report."""
        rss = resident_bytes()
        lines = [
            f"== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} +{time.monotonic() - self._started:,.0f} s",
            f"resident: {rss / 2**20:,.1f} MB" if rss is not None else "resident: unknown",
            f"python objects: {sys.getallocatedblocks():,} blocks allocated; gc: {len(gc.get_objects()):,} objects "
            f"tracked, {gc.get_freeze_count():,} frozen",
            allocator_line(),
            self._collections.line(),
        ]
        if not self.sites:
            with self.path.open("a", encoding="utf-8") as out:
                _write(out, lines)
            self.reports += 1
            return
        snapshot = tracemalloc.take_snapshot().filter_traces(_IGNORED)
        current, peak = tracemalloc.get_traced_memory()
        lines.insert(2, f"python heap (tracemalloc): {current / 2**20:,.1f} MB, peak {peak / 2**20:,.1f} MB")
        if self._first is None:
            self._first = snapshot
            lines += ["largest sites:", *_sites(snapshot.statistics("lineno")[: self.top])]
        else:
            lines += ["grew most since the first report:",
                      *_sites(snapshot.compare_to(self._first, "lineno")[: self.top])]
            assert self._previous is not None
            lines += ["grew most since the previous report:",
                      *_sites(snapshot.compare_to(self._previous, "lineno")[: self.top])]
        self._previous = snapshot
        with self.path.open("a", encoding="utf-8") as out:
            _write(out, lines)
        self.reports += 1


def _sites(stats: list[tracemalloc.StatisticDiff] | list[tracemalloc.Statistic]) -> list[str]:
    found = []
    for stat in stats:
        frame = stat.traceback[0]
        where = f"{frame.filename}:{frame.lineno}"
        if isinstance(stat, tracemalloc.StatisticDiff):
            found.append(f"  {stat.size_diff / 2**10:+12,.1f} KiB {stat.count_diff:+10,} blocks "
                         f"(now {stat.size / 2**10:,.1f} KiB)  {where}")
        else:
            found.append(f"  {stat.size / 2**10:12,.1f} KiB {stat.count:10,} blocks  {where}")
    return found


def _write(out: TextIO, lines: list[str]) -> None:
    out.write("\n".join(lines) + "\n\n")
    out.flush()
