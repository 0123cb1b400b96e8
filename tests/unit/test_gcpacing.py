"""The collection pacing of long-running services: frozen between batches, collected in full now and then,
by one pacer per process that only its owner thread acts on."""

from __future__ import annotations

import gc
import re
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.runtime.gc_pacing import GcPacer, Pacing
from caseledger.ledger.runtime.supervisor import run_services
from caseledger.ledger.settings import LedgerSettings
from caseledger.projections import ProjectionRunner, StoreEventSource, open_views
from tests.support.projection_scenarios import Tally, record_contacts


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def garbage_cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def clock() -> Iterator[list[float]]:
    now = [1000.0]
    yield now
    gc.unfreeze()


def test_after_a_batch_what_is_alive_is_frozen_and_a_full_collection_comes_on_schedule(clock: list[float]) -> None:
    pacer = GcPacer(full_every_s=60, clock=lambda: clock[0])
    cycle = garbage_cycle()
    pacer.after_batch()
    assert gc.get_freeze_count() > 0
    gc.collect()
    assert cycle() is not None  # frozen before it became garbage: left alone until the full collection
    clock[0] += 59
    pacer.after_batch()
    assert cycle() is not None and pacer.full_collections == 0
    clock[0] += 1
    pacer.after_batch()
    assert cycle() is None and pacer.full_collections == 1
    assert gc.get_freeze_count() > 0  # frozen again after the full collection
    pacer.close()
    assert gc.get_freeze_count() == 0


def test_pacing_stands_aside_while_collection_is_held_off(clock: list[float]) -> None:
    pacer = GcPacer(full_every_s=0, clock=lambda: clock[0])
    frozen = gc.get_freeze_count()  # what an earlier test of this process froze (a service's start-up does)
    gc.disable()
    try:
        pacer.after_batch()
        assert gc.get_freeze_count() == frozen and pacer.full_collections == 0
    finally:
        gc.enable()


def test_rebuild_collections_space_out_while_they_find_nothing_and_come_back_when_they_do() -> None:
    from caseledger.ledger.runtime.gc_pacing import COLLECT_EVERY, MAX_COLLECT_EVERY, SpacedCollections

    freed: list[int] = []
    at: list[int] = []
    records = 0

    def collect() -> int:
        at.append(records)
        return freed.pop(0) if freed else 0

    spacing = SpacedCollections(0, collect=collect)
    for records in range(0, 6_000_001, 10_000):
        spacing.after(records)
    # Nothing freed: 100k, then 200k, 400k, 800k, 1.6M apart, and no further apart than that.
    gaps = [b - a for a, b in zip([0, *at], at, strict=False)]
    assert gaps[:5] == [COLLECT_EVERY, 2 * COLLECT_EVERY, 4 * COLLECT_EVERY, 8 * COLLECT_EVERY, MAX_COLLECT_EVERY]
    assert all(gap == MAX_COLLECT_EVERY for gap in gaps[5:])
    # A collection that finds cycles brings the next one back to COLLECT_EVERY.
    at.clear()
    freed.extend([0, 5_000, 0])
    spacing = SpacedCollections(0, collect=collect)
    for records in range(0, 1_000_001, 10_000):
        spacing.after(records)
    assert at[:4] == [100_000, 300_000, 400_000, 600_000]


# -- one pacer per process, acted on by its owner alone ------------------------------------------------------


@pytest.fixture
def collector_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """Every gc.freeze/unfreeze/collect, with the thread that made it (the real ones still run)."""
    calls: list[tuple[str, int]] = []
    for name in ("freeze", "unfreeze", "collect"):
        real = getattr(gc, name)

        def recording(*args: Any, _name: str = name, _real: Any = real) -> Any:
            calls.append((_name, threading.get_ident()))
            return _real(*args)

        monkeypatch.setattr(gc, name, recording)
    yield calls
    gc.unfreeze()


class BatchesService:
    """A service that reports a few batches to the pacer it is given, then waits to be stopped."""

    def __init__(self, batches: int) -> None:
        self.batches = batches
        self.pacers: list[object] = []
        self.stats = SimpleNamespace(line=lambda: "done")

    def run(self, stop: threading.Event, *, on_batch: Any = None, pacer: Pacing | None = None) -> Any:
        self.pacers.append(pacer)
        for _ in range(self.batches):
            if pacer is not None:
                pacer.after_batch()
            time.sleep(0.01)
        stop.wait(5)
        return self.stats


def test_two_services_in_one_process_share_one_pacer_and_only_its_owner_touches_the_collector(
    collector_calls: list[tuple[str, int]],
) -> None:
    first, second = BatchesService(5), BatchesService(5)
    stop = threading.Event()

    def stop_soon() -> None:
        threading.Timer(0.5, stop.set).start()

    outcome = run_services(lambda: pytest.fail("the services open no ledger"),
                           {"first": lambda _ledger: first, "second": lambda _ledger: second}, stop,
                           on_started=stop_soon)
    assert outcome.ok
    (shared,), (other,) = first.pacers, second.pacers
    assert isinstance(shared, GcPacer) and shared is other
    assert ("freeze", threading.get_ident()) in collector_calls  # their batches were acted on ...
    assert {thread for _, thread in collector_calls} == {threading.get_ident()}  # ... by this thread alone


def test_a_batch_reported_from_another_thread_waits_for_the_owner(collector_calls: list[tuple[str, int]]) -> None:
    pacer = GcPacer(full_every_s=3600)
    reporter = threading.Thread(target=pacer.after_batch)
    reporter.start()
    reporter.join()
    assert collector_calls == []  # the service's thread only reported it
    pacer.pace(timeout=1)
    assert collector_calls == [("freeze", threading.get_ident())]
    pacer.pace(timeout=0.01)  # nothing more reported: nothing done
    assert len(collector_calls) == 1
    refused: list[BaseException] = []

    def close_elsewhere() -> None:
        try:
            pacer.close()
        except RuntimeError as error:
            refused.append(error)

    closing = threading.Thread(target=close_elsewhere)
    closing.start()
    closing.join()
    assert refused and "does not own the pacer" in str(refused[0])
    pacer.close()
    assert collector_calls[-1] == ("unfreeze", threading.get_ident()) and gc.get_freeze_count() == 0


def test_a_projection_runner_reports_each_batch_to_the_pacer_it_is_given(tmp_path: Path) -> None:
    ledger = CaseLedger(LedgerSettings.resolve(database=str(tmp_path / "l.sqlite")))
    record_contacts(ledger, 30)
    reported: list[int] = []
    batches: list[object] = []

    class Recording:
        def after_batch(self) -> None:
            reported.append(len(batches))

    with open_views(str(tmp_path / "v.sqlite")) as views:
        runner = ProjectionRunner([Tally()], views, StoreEventSource(ledger), batch_size=20)
        runner.run(until_caught_up=True, on_batch=batches.append, pacer=Recording())
    ledger.close()
    assert len(batches) > 1 and reported == list(range(1, len(batches) + 1))  # after each batch, once


ROOT = Path(__file__).resolve().parents[2]
#: Where a process's pacer is made: the code that runs the process's services, never a service.
MAKERS = {"ledger/runtime/supervisor.py", "cli/projections_commands.py", "cli/bench/rebuild_bench.py"}
#: Where the collector is frozen: the pacer, and `caseledger serve` once after start-up (its lifespan).
FREEZERS = {"ledger/runtime/gc_pacing.py", "ledger/service/asgi.py"}


def test_only_the_runtime_makes_a_pacer_and_only_the_pacer_freezes_the_collector() -> None:
    """Before: the publisher, the intake worker and the projection runner each made a GcPacer of their own."""
    makes, freezes = set(), set()
    for folder in ("ledger", "projections", "cli"):
        for path in (ROOT / folder).rglob("*.py"):
            code = "\n".join(line.split("#")[0] for line in path.read_text(encoding="utf-8").splitlines())
            where = str(path.relative_to(ROOT))
            if re.search(r"\bGcPacer\(", code):
                makes.add(where)
            if re.search(r"\bgc\.(un)?freeze\(", code):
                freezes.add(where)
    assert makes <= MAKERS and freezes <= FREEZERS
