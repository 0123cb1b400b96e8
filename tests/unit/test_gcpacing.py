"""The collection pacing of long-running services: frozen between batches, collected in full now and then."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from caseledger.ledger.runtime.gc_pacing import GcPacer


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
    gc.disable()
    try:
        pacer.after_batch()
        assert gc.get_freeze_count() == 0 and pacer.full_collections == 0
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
