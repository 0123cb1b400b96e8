"""What keeps a long-running process's memory bounded, and the trace that finds what does not (issue 29's soak)."""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caseledger.ledger.kafka.confluent import PREFETCH_KBYTES, ConfluentPartitionReader
from caseledger.ledger.runtime.memory_trace import MemoryTrace, allocator_line, resident_bytes
from caseledger.ledger.settings import KafkaSettings
from tests.support.examples import examples

SETTINGS = KafkaSettings(bootstrap_servers="127.0.0.1:9")  # never connected: the reader opens its consumer lazily


@pytest.mark.parametrize("group", ["intake", "projections"])
def test_a_confluent_reader_prefetches_a_bounded_amount_whatever_the_backlog(group: str) -> None:
    # librdkafka prefetches up to queued.max.messages.kbytes (64 MiB by default) per consumer while a backlog
    # lasts: caseledger run's resident memory grew with the intake backlog until that cap (the soak's finding).
    reader = ConfluentPartitionReader(SETTINGS, topic=f"{group}-topic", group=group)
    assert reader._config["queued.max.messages.kbytes"] == PREFETCH_KBYTES <= 16_384


_leak: list[str] = []


def _grow(n: int) -> None:
    _leak.extend(f"jane.doe+{k}@example.com" for k in range(n))  # stands for a cache without bound


def test_the_memory_trace_names_the_site_that_grows_and_never_a_value(tmp_path: Path) -> None:
    trace_file = tmp_path / "memory.txt"
    was_tracing = tracemalloc.is_tracing()
    trace = MemoryTrace(trace_file, every_s=3600, sites=True)
    trace.start()
    try:
        trace.report()
        _grow(20_000)
        trace.report()
    finally:
        trace.close()
        _leak.clear()
    assert tracemalloc.is_tracing() == was_tracing
    text = trace_file.read_text()
    reports = text.split("== ")[1:]
    assert len(reports) == 3 and trace.reports == 3  # two asked, one at close
    second = reports[1]
    assert re.search(r"resident: [\d,.]+ MB", second) and "python heap (tracemalloc)" in second
    assert "allocator" in second
    grew = second.split("grew most since the previous report:\n")[1].splitlines()[0]
    assert "test_memory_bounds.py" in grew and grew.lstrip().startswith("+")
    assert "@example.com" not in text and "jane" not in text  # sites and sizes only: nothing personal


def test_a_memory_trace_needs_a_positive_interval(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        MemoryTrace(tmp_path / "m.txt", every_s=0)


def test_the_figures_a_report_reads_are_there_on_this_machine() -> None:
    assert (resident_bytes() or 0) > 1_000_000
    assert allocator_line().startswith("allocator")


def test_without_sites_the_trace_is_cheap_and_leaves_tracemalloc_alone(tmp_path: Path) -> None:
    from caseledger.cli.service_plan import ServicePlan

    def plan(path: Path | None, *, sites: bool) -> ServicePlan:  # `caseledger run --memory-trace …`'s options
        return ServicePlan(database=None, policy=None, kafka=None, consumer="confluent", producer="confluent",
                           aggregate_cache=0, signatures=None, transaction_interval_ms=0,
                           memory_trace=str(path) if path else None, memory_trace_every=3600, memory_trace_sites=sites)

    trace_file = tmp_path / "memory.txt"
    with plan(trace_file, sites=False).memory_traced():
        assert not tracemalloc.is_tracing()
    text = trace_file.read_text()
    assert text.count("== ") == 1 and "blocks allocated" in text and "allocator" in text
    assert "tracemalloc" not in text and "grew most" not in text
    with plan(None, sites=True).memory_traced():
        assert not tracemalloc.is_tracing()
    with plan(tmp_path / "memory.txt", sites=False).memory_traced("intake"):  # a service's process of --processes
        pass
    assert (tmp_path / "memory.txt.intake").read_text().count("== ") == 1


@settings(max_examples=examples(200), deadline=None)
@given(maxsize=st.integers(1, 50), batches=st.lists(st.lists(st.integers(0, 300), max_size=80), max_size=30))
def test_the_caches_run_keeps_never_hold_more_than_their_bound(maxsize: int, batches: list[list[int]]) -> None:
    from types import SimpleNamespace
    from uuid import UUID

    from caseledger.ledger.unit_of_work import AggregateCache
    from caseledger.projections.base import RowCache

    aggregates, rows = AggregateCache(maxsize), RowCache(maxsize)
    for batch in batches:
        for n in batch[: len(batch) // 3]:
            aggregates.take(UUID(int=n))
        aggregates.keep([SimpleNamespace(id=UUID(int=n), customer_id=None) for n in batch])
        for n in batch:
            rows.get(("t", (n,)))
            rows.set(("t", (n,)), {"n": n})
        rows.trim()  # the runner trims after each batch
        assert len(aggregates) <= maxsize and len(rows) <= maxsize


def test_the_directory_s_name_ids_are_cached_up_to_their_bound() -> None:
    from caseledger.ledger.domain.directory import name_id

    assert name_id.cache_info().maxsize == 65_536  # the README's figure


def test_a_full_collection_gives_what_glibc_holds_free_back_to_the_system() -> None:
    import gc

    from caseledger.ledger.runtime.gc_pacing import GcPacer

    at = [0.0]
    released: list[int] = []
    pacer = GcPacer(full_every_s=60, clock=lambda: at[0], release=lambda: released.append(1))
    try:
        pacer.after_batch()
        assert not released
        at[0] += 60
        pacer.after_batch()
        assert released == [1] and pacer.full_collections == 1
    finally:
        pacer.close()
    assert gc.get_freeze_count() == 0


def test_after_a_peak_the_freed_memory_leaves_the_process() -> None:
    # The soak's finding: run's resident memory stayed at its first minutes' peak while glibc held a third of it free.
    from caseledger.ledger.runtime.memory_trace import release_free_memory

    peak = [b"%06d" % n * 400 for n in range(40_000)]  # 96 MB in glibc's heap (over 512 bytes each)
    kept = peak[::10]  # one in ten stays: the heap is fragmented, glibc cannot shrink it on its own
    del peak
    before = resident_bytes() or 0
    assert release_free_memory()
    after = resident_bytes() or 0
    assert before - after > 40 * 2**20, (before, after)
    del kept


def test_the_partitioner_s_key_hashes_are_kept_up_to_their_bound() -> None:
    # The soak's publisher grew 1 MB every 30 s for ten minutes: 65,536 customers' key hashes (14 MB), one per new customer.
    from kafka.partitioner.default import murmur2

    from caseledger.ledger.kafka.kafka_python import KEY_HASH_CACHE, key_hash

    assert key_hash.cache_info().maxsize == KEY_HASH_CACHE == 4_096  # the README's figure
    keys = [b"customer-%08d" % n for n in range(KEY_HASH_CACHE * 3)]
    for key in keys:
        assert key_hash(key) == murmur2(key) & 0x7FFFFFFF  # Kafka's default partition, cached or not
    assert key_hash.cache_info().currsize == KEY_HASH_CACHE


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_the_memory_trace_says_what_the_full_collections_freed_and_their_longest_pause(tmp_path: Path) -> None:
    import gc

    cycles = [_Cycle() for _ in range(5_000)]
    gc.collect()  # they are old now: only a full collection looks at them
    trace = MemoryTrace(tmp_path / "memory.txt", every_s=3600)
    with trace:
        del cycles
        gc.collect(1)  # not a full collection: neither counted nor freeing them
        gc.collect()
    report = (tmp_path / "memory.txt").read_text()
    found = re.search(r"full collections: (\d+) since the last report, ([\d,]+) objects freed, longest ([\d,]+) ms", report)
    assert found and found[1] == "1" and int(found[2].replace(",", "")) >= 5_000
    assert trace._collections not in gc.callbacks  # closed: the collector no longer reports to it
