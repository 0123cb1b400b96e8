"""The collection pacing of long-running services: frozen between batches, collected in full now and then."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from ledger.gcpacing import GcPacer


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
