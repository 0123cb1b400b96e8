"""Rebuilding from the Kafka events topic with one process per share of the partitions.

A customer's events all live on one partition, and so do the rows the built-in projections
key by case or customer; counters are only ever added to. So processes that each own some
partitions can apply their batches concurrently into the same rebuild tables, each storing
its own partitions' positions in its own transactions, with the same exactly-once effect as
one runner. When all have caught up, one runner builds the indexes, applies what arrived
meanwhile, and swaps the tables in — as :func:`projections.runner.rebuild` does.

Only for projections whose rows tables are keyed by something that lives on one partition
(a case, a customer); a rows table keyed by, say, a channel would be written by several
processes at once.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from caseledger.ledger.errors import BackendError
from caseledger.ledger.kafka.clients import DEFAULT_CLIENT
from caseledger.projections.registry import load_projections
from caseledger.projections.runner import (
    REBUILD,
    ProjectionRunner,
    RebuildResult,
    collecting_between_batches,
    discard_rebuild,
    physical_name,
    read_status,
)
from caseledger.projections.sources import kafka_source
from caseledger.projections.view_stores import open_views


def resident_mb() -> float:
    """This process's resident memory (Linux), in MiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

if TYPE_CHECKING:
    from caseledger.ledger.settings import KafkaSettings


def _worker(specs: list[str], views_url: str, settings: KafkaSettings, partitions: list[int], batch_size: int,
            progress: Any, consumer: str) -> None:
    projections = load_projections(specs)
    with open_views(views_url) as views:
        source = kafka_source(settings, consumer=consumer, partitions=partitions)
        try:
            runner = ProjectionRunner(projections, views, source, slot=REBUILD, batch_size=batch_size, idle_s=0.2)
            with collecting_between_batches():
                runner.run(until_caught_up=True, on_batch=lambda batch: progress.put((batch.records, resident_mb())))
        finally:
            source.close()


def rebuild_in_parallel(
    specs: Sequence[str],
    views_url: str,
    settings: KafkaSettings,
    *,
    workers: int = 2,
    batch_size: int = 5000,
    restart: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int, float], None] | None = None,
    stop: threading.Event | None = None,
    consumer: str = DEFAULT_CLIENT,
) -> RebuildResult:
    """Rebuild the projections named by ``specs`` from the topic with ``workers`` processes, then swap.

    ``on_progress(records, resident_mb)`` hears of every batch a worker committed, with the
    worker's resident memory. ``consumer`` is the Kafka client every process reads with.
    """
    from caseledger.projections.runner import swap_in

    projections = load_projections(list(specs))
    started = time.monotonic()
    with open_views(views_url) as views:
        for projection in projections:
            previous = read_status(views, projection.name, REBUILD)
            stale = previous and (previous[0].source != f"kafka:{settings.events_topic}"
                                  or previous[0].version != projection.version)
            if restart or stale:
                discard_rebuild(views, projection)
        source = kafka_source(settings, consumer=consumer)
        try:
            setup = ProjectionRunner(projections, views, source, slot=REBUILD)
            setup.prepare()  # tables and state rows exist before the workers start
            partitions = source.partitions
            if on_start is not None:
                on_start(setup.lag())
        finally:
            source.close()

        context = multiprocessing.get_context("spawn")
        progress = context.Queue()
        shares = [partitions[i::workers] for i in range(min(workers, len(partitions)))]
        processes = [
            context.Process(target=_worker, args=(list(specs), views_url, settings, share, batch_size, progress, consumer),
                            name=f"rebuild-{n}")
            for n, share in enumerate(shares)
        ]
        for process in processes:
            process.start()
        records = 0
        try:
            while any(p.is_alive() for p in processes) or not progress.empty():
                if stop is not None and stop.is_set():
                    break
                try:
                    done, memory = progress.get(timeout=0.2)
                except queue.Empty:
                    continue
                records += done
                if on_progress is not None:
                    on_progress(done, memory)
        finally:
            for process in processes:
                if stop is not None and stop.is_set():
                    process.terminate()
                process.join()
        names = [p.name for p in projections]
        if stop is not None and stop.is_set():
            return RebuildResult(names, records, time.monotonic() - started, swapped=False)
        failed = [p.name for p in processes if p.exitcode != 0]
        if failed:
            raise BackendError(f"rebuild workers {', '.join(failed)} failed; run the rebuild again to resume")

        source = kafka_source(settings, consumer=consumer)
        try:
            with views.transaction() as tx:
                for projection in projections:
                    for table in projection.tables:
                        tx.create_indexes(table, physical_name(table.name, REBUILD))
            final = ProjectionRunner(projections, views, source, slot=REBUILD, batch_size=batch_size, idle_s=0.2)
            with collecting_between_batches():
                final.run(until_caught_up=True)
            records += final.stats.records
        finally:
            source.close()
        swap_in(views, projections)
    return RebuildResult(names, records, time.monotonic() - started, swapped=True)
