"""Running the ledger's long-lived services (intake worker, publisher, projections) until stopped.

A service is any object with ``run(stop, on_batch=…, pacer=…)`` that loops until the ``stop``
event is set, reports each batch to the process's collection pacer and keeps its totals in
``stats`` (whose ``line()`` is logged). :func:`serve` runs one in the calling thread;
:func:`run_services` runs several side by side, one thread each, and stops them all when one
fails. Either way the process has one :class:`GcPacer`, made here, and its owner (the thread that
runs :func:`serve`, the thread that waits in :func:`run_services`) is the only one to act on the
collector. Each service is built from a function that opens its own ledger connection:
connections are not shared between threads, and all are closed at the end.

Signals are the process's business: the caller sets ``stop`` (``caseledger`` does on SIGTERM).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from caseledger.ledger.runtime.gc_pacing import GcPacer, Pacing

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger

log = logging.getLogger("caseledger")

LOG_EVERY_S = 5.0
"""How often a running service logs its totals."""


class Stats(Protocol):
    """A service's totals."""

    def line(self) -> str:
        """The totals as one log line."""
        ...


class Service(Protocol):
    """A loop that runs until ``stop`` is set; after each batch, it calls ``on_batch`` with its totals and
    reports the batch to ``pacer``."""

    @property
    def stats(self) -> Any: ...

    def run(self, stop: threading.Event, *, on_batch: Callable[[Any], None] | None = None, pacer: Pacing) -> Any: ...


LedgerFactory = Callable[[], "CaseLedger"]
ServiceBuilder = Callable[[LedgerFactory], Service]
"""Builds a service, given a function that opens (once) the service's own ledger connection."""


def throttled(logger: logging.Logger, every_s: float = LOG_EVERY_S) -> Callable[[Stats], None]:
    """An ``on_batch`` callback that logs the totals at most once per ``every_s`` seconds."""
    last = [0.0]

    def report(stats: Stats) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            logger.info("%s", stats.line())

    return report


class _OwnLedger:
    """One service's ledger connection: opened on its first call, closed by :meth:`close`."""

    def __init__(self, factory: LedgerFactory) -> None:
        self.factory = factory
        self.ledger: CaseLedger | None = None

    def __call__(self) -> CaseLedger:
        if self.ledger is None:
            self.ledger = self.factory()
        return self.ledger

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None


def serve(ledger_factory: LedgerFactory, name: str, build: ServiceBuilder, stop: threading.Event) -> Any:
    """Run one service in this thread until ``stop`` is set and return its totals; its errors propagate."""
    logger = logging.getLogger(f"caseledger.{name}")
    own = _OwnLedger(ledger_factory)
    try:
        with GcPacer() as pacer:  # this thread runs the one service: it reports its batches and acts on them
            service = build(own)
            stats = service.run(stop, on_batch=throttled(logger), pacer=pacer)
        logger.info("stopped: %s", stats.line())
        return stats
    finally:
        own.close()


@dataclass
class ServicesOutcome:
    """How :func:`run_services` ended: each service's totals, and the error of each that failed."""

    stats: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, BaseException] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures


def run_services(
    ledger_factory: LedgerFactory,
    services: Mapping[str, ServiceBuilder],
    stop: threading.Event,
    *,
    on_started: Callable[[], None] | None = None,
) -> ServicesOutcome:
    """Run the services, one thread each (named after it), until ``stop`` is set or one of them fails.

    A service that fails is logged and sets ``stop``, so the others finish their batch and stop
    too: the caller then exits non-zero and its supervisor restarts the whole process. The services
    report their batches to one pacer; this thread, its owner, acts on them while it waits.
    """
    owns = {name: _OwnLedger(ledger_factory) for name in services}
    outcome = ServicesOutcome()
    pacer = GcPacer()
    try:
        built = {name: build(owns[name]) for name, build in services.items()}

        def guarded(name: str, service: Service) -> None:
            try:
                service.run(stop, on_batch=throttled(logging.getLogger(f"caseledger.{name}")), pacer=pacer)
            except BaseException as error:  # a dead service must stop the whole process
                log.exception("%s failed", name)
                outcome.failures[name] = error
                stop.set()

        threads = [threading.Thread(target=guarded, args=(name, service), name=name) for name, service in built.items()]
        for thread in threads:
            thread.start()
        if on_started is not None:
            on_started()
        while any(t.is_alive() for t in threads):
            pacer.pace(0.5)
        outcome.stats = {name: service.stats for name, service in built.items()}
    finally:
        pacer.close()
        for own in owns.values():
            own.close()
    return outcome
