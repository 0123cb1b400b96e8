"""Running each long-lived service in a child process of its own, supervised (``caseledger run --processes``).

One Python process has one GIL: the intake worker, the publisher and the projections as threads of one
process cannot use more than about one core together. Here each runs in a fresh interpreter (spawned,
never forked: no Kafka client or database connection is ever copied), and the parent only supervises:

- one child that exits while nobody asked (an error, a SIGKILL, the OOM killer) stops the others and
  the outcome names it and how it ended, so the caller exits non-zero and its own supervisor restarts
  the whole;
- ``stop`` (set on SIGTERM or Ctrl-C) sends each child SIGTERM, so each finishes its batch; one that is
  still there after ``grace_s`` is killed;
- no child survives its parent, even a parent killed with SIGKILL: each child asks Linux for SIGTERM
  when its parent dies (``PR_SET_PDEATHSIG``) and also watches its stdin, a pipe only the parent holds
  open (end of file: the parent is gone, on any system).

The children inherit the parent's stderr, so their logs appear with the parent's.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

log = logging.getLogger("caseledger")

GRACE_S = 60.0
"""How long a stopping child may take to finish its batch before it is killed."""

ORPHAN_GRACE_S = 10.0
"""How long a child whose parent is gone may take to finish its batch before it exits anyway (its work is
exactly once: a batch cut short is taken again by the next run)."""

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ChildCommand:
    """How to start one child: its command line, and the one line it reads first from stdin (its orders)."""

    argv: Sequence[str]
    orders: bytes = b""


@dataclass
class ChildrenOutcome:
    """How :func:`run_children` ended: for each child that failed, how (``killed by SIGKILL``, ``exited with status 1``)."""

    failures: dict[str, str] = field(default_factory=dict)
    first_failure: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failures

    def line(self) -> str:
        """The failures as one sentence, the first one first."""
        names = sorted(self.failures, key=lambda name: name != self.first_failure)
        return "; ".join(f"{name} {self.failures[name]}" for name in names)


def how_it_ended(returncode: int) -> str:
    """A child's exit status in words: ``killed by SIGKILL``, ``exited with status 1``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


def run_children(
    children: Mapping[str, ChildCommand],
    stop: threading.Event,
    *,
    on_started: Callable[[], None] | None = None,
    grace_s: float = GRACE_S,
    poll_s: float = 0.2,
) -> ChildrenOutcome:
    """Start the children and supervise them until ``stop`` is set or one of them ends unasked; then stop them all.

    Call it from the thread that lives as long as the children (the main thread): Linux sends a child its
    parent-death signal when the thread that started it ends.
    """
    outcome = ChildrenOutcome()
    running: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in children.items():
            child = subprocess.Popen(list(command.argv), stdin=subprocess.PIPE)
            running[name] = child
            _give_orders(child, command.orders)
        if on_started is not None:
            on_started()
        while not stop.is_set():
            ended = next(((name, child) for name, child in running.items() if child.poll() is not None), None)
            if ended is not None:
                name, child = ended
                assert child.returncode is not None
                _failed(outcome, name, how_it_ended(child.returncode) if child.returncode else
                        "exited (status 0) without being asked to stop")
                log.error("%s %s: stopping the others", name, outcome.failures[name])
                break
            stop.wait(poll_s)
        stop.set()
        _stop_all(running, outcome, grace_s)
    finally:
        for child in running.values():  # an error or interrupt here must not leave a child behind
            if child.poll() is None:
                child.kill()
                child.wait()
            if child.stdin is not None:
                with contextlib.suppress(OSError):
                    child.stdin.close()
    return outcome


def _give_orders(child: subprocess.Popen[bytes], orders: bytes) -> None:
    assert child.stdin is not None
    child.stdin.write(orders.rstrip(b"\n") + b"\n")
    child.stdin.flush()  # the pipe stays open: its end of file tells the child that the parent is gone


def _failed(outcome: ChildrenOutcome, name: str, how: str) -> None:
    outcome.failures.setdefault(name, how)
    if outcome.first_failure is None:
        outcome.first_failure = name


def _stop_all(running: Mapping[str, subprocess.Popen[bytes]], outcome: ChildrenOutcome, grace_s: float) -> None:
    """SIGTERM to every child still there, each finishes its batch; those still there after ``grace_s`` are killed."""
    for child in running.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for name, child in running.items():
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            _failed(outcome, name, f"did not stop within {grace_s:g} s of SIGTERM: killed")
            continue
        if child.returncode not in (0, -signal.SIGTERM) and name not in outcome.failures:
            _failed(outcome, name, f"{how_it_ended(child.returncode)} while stopping")


# -- in the child ------------------------------------------------------------------------------------------


def read_orders(stdin: BinaryIO | None = None) -> bytes:
    """The first line the parent wrote on this child's stdin (see :class:`ChildCommand`)."""
    return (stdin or sys.stdin.buffer).readline()


def stay_with_parent(parent_pid: int, stop: threading.Event, *, grace_s: float = ORPHAN_GRACE_S,
                     stdin: BinaryIO | None = None) -> None:
    """Make sure this child ends when its parent does: SIGTERM from Linux (the handler the caller installed sets
    ``stop``), and ``stop`` set when stdin reaches its end; if the service is still there ``grace_s`` later, exit."""
    _ask_for_parent_death_signal()
    fd = (stdin or sys.stdin.buffer).fileno()

    def watch() -> None:
        while os.read(fd, 4096):  # the file descriptor, not the buffered reader: its lock would stall the exit
            pass
        log.warning("the parent process is gone: stopping")
        stop.set()
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the signal was asked for
        stop.set()


def _ask_for_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return  # elsewhere the stdin pipe alone tells
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
