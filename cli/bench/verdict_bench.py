"""Benchmark ``bench intake --verdicts``: contacts through the ledger *with their verdicts back at the adapter*.

Two measurements on fresh topics, with the intake worker(s) and the publisher as child processes (as
``bench intake`` runs them):

1. **throughput with verdicts**: N contacts published by one SDK client in batches of 1,000 (the batched form:
   every batch published, then every verdict awaited with the client's one reader of its outcomes partition);
   contacts/s from the first publish to the last verdict read. Target: ≥ 1,000 contacts/s on 2 cores.
2. **verdict latency at a paced rate** (100 contacts/s by default, ``--rate``): one contact every 10 ms, each
   published and acknowledged by the broker, its verdict read by a thread of the same client; p50/p99 from the
   publish to the verdict's arrival at the adapter. Target: p99 ≤ 500 ms at 100 contacts/s.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from caseledger.cli.bench import environment
from caseledger.cli.bench.intake_bench import _drafts, prepare_run, start_services, stop_services
from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.intake.verdicts import intake_id
from caseledger.ledger.settings import LedgerSettings


@dataclass
class VerdictBenchResult:
    contacts: int
    backend: str
    intake_workers: int
    producer: str
    consumer: str
    seconds: float
    contacts_per_s: float
    recorded: int
    paced_rate: float
    paced_contacts: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("backend", self.backend),
            ("intake workers (processes) / their consumer / producer (publisher and adapter)",
             f"{self.intake_workers} / {self.consumer} / {self.producer}"),
            ("contacts (batches of 1,000, then their verdicts)", f"{self.contacts}"),
            ("recorded verdicts", f"{self.recorded}"),
            ("first publish → last verdict at the adapter", f"{self.seconds:.2f} s"),
            ("contacts/s with verdicts (target ≥ 1,000)", f"{self.contacts_per_s:,.0f}"),
            ("paced: contacts at", f"{self.paced_contacts} at {self.paced_rate:g}/s"),
            ("verdict latency p50 (publish → verdict at the adapter)", f"{self.latency_p50_ms:,.0f} ms"),
            ("verdict latency p99 (target ≤ 500 ms)", f"{self.latency_p99_ms:,.0f} ms"),
            ("verdict latency max", f"{self.latency_max_ms:,.0f} ms"),
        ]


def await_verdicts(client: Any, receipts: Sequence[Any], services: Sequence[Any], *, timeout: float,
                   tails: Callable[[], str]) -> list[Any]:
    """The verdicts of ``receipts`` (``client``: a KafkaIntakeClient), in order; a RuntimeError as soon as a
    benchmarked service stopped (its log's tail says why), or when none came within ``timeout`` seconds."""
    ids = [intake_id(r.topic, r.partition, r.offset) for r in receipts]
    found: dict[UUID, Any] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(set(ids)):
        found.update(client.verdicts.wait([i for i in ids if i not in found], 0.5))
        stopped = [s.returncode for s in services if s.poll() is not None]
        if stopped and len(found) < len(set(ids)):
            raise RuntimeError(f"a benchmarked service stopped (exit code {stopped[0]}) before every verdict came:\n"
                               + tails())
        if len(found) < len(set(ids)) and time.monotonic() > deadline:
            raise RuntimeError(f"no verdict within {timeout:g} s for {len(set(ids)) - len(found)} of {len(ids)} "
                               "contacts, the services running:\n" + tails())
    return [found[i] for i in ids]


def bench_verdicts(
    *,
    kafka_bootstrap: str,
    contacts: int = 20_000,
    database: str | None = None,
    workers: int = 1,
    producer: str = "confluent",
    consumer: str = "confluent",
    rate: float = 100.0,
    paced_seconds: float = 20.0,
    progress: Callable[[str, int, int], None] | None = None,
) -> VerdictBenchResult:
    """Run both measurements on fresh topics; ``database`` must be empty (default: a temp SQLite)."""
    from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
    from caseledger.ledger.intake.verdicts import Recorded

    if not 1 <= rate <= 2000:
        raise ConfigurationError(f"--rate {rate:g}: give 1 to 2000 contacts/s")
    tmp, db, run, settings, env = prepare_run(kafka_bootstrap=kafka_bootstrap, database=database, workers=workers,
                                              producer=producer, consumer=consumer)
    backend = LedgerSettings.resolve(database=db, settings=environment(env)).store.describe().split()[0]
    services, logs = start_services(env, Path(tmp.name), partitions=settings.intake_partitions, workers=workers,
                                    consumer=consumer, producer=producer, intake_batch=1000, publisher_batch=2000)

    def tails() -> str:
        return "\n".join(f"--- {log.name}\n" + log.read_text(errors="replace")[-1500:] for log in logs)

    try:
        with KafkaIntakeClient(settings, adapter="bench", producer=producer, consumer=consumer) as client:
            # Warm-up: one contact through every service, so that neither measure counts their start.
            warm = _drafts(1, f"{run}-warm")
            client.verdicts.start()
            await_verdicts(client, client.submit_many(warm), services, timeout=120, tails=tails)
            # 1. throughput: publish every batch, then wait for every verdict
            drafts = _drafts(contacts, run)
            start = time.time()
            receipts = []
            for i in range(0, contacts, 1000):
                receipts += client.submit_many(drafts[i:i + 1000])
                if progress:
                    progress("published", min(i + 1000, contacts), contacts)
            verdicts = await_verdicts(client, receipts, services, timeout=max(120, contacts / 100), tails=tails)
            seconds = time.time() - start
            recorded = sum(isinstance(v, Recorded) for v in verdicts)
            if any(s.poll() is not None for s in services):
                raise RuntimeError("a benchmarked service died:\n" + tails())
            # 2. latency at a paced rate: one publisher loop, one verdict reader thread
            paced = _drafts(int(rate * paced_seconds), f"{run}-paced")
            sent: dict[UUID, float] = {}
            arrived: dict[UUID, float] = {}
            done = threading.Event()
            lock = threading.Lock()

            def read() -> None:
                while not (done.is_set() and len(arrived) >= len(paced)):
                    with lock:
                        waiting = [i for i in sent if i not in arrived]
                    if not waiting:
                        time.sleep(0.002)
                        continue
                    for found in client.verdicts.wait(waiting, 0.01):
                        arrived.setdefault(found, time.time())
                    if done.is_set() and time.time() > deadline:
                        return

            deadline = time.time() + paced_seconds + 120
            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            begin = time.time()
            for n, draft in enumerate(paced):
                pause = begin + n / rate - time.time()
                if pause > 0:
                    time.sleep(pause)
                at = time.time()
                receipt = client.submit(draft)
                with lock:
                    sent[intake_id(receipt.topic, receipt.partition, receipt.offset)] = at
                if progress:
                    progress("paced", n + 1, len(paced))
            done.set()
            reader.join(max(1.0, deadline - time.time()))
            if len(arrived) < len(paced):
                raise RuntimeError(f"only {len(arrived)} of {len(paced)} paced verdicts came in time\n" + tails())
    finally:
        stop_services(services)
        tmp.cleanup()
    latencies = sorted((arrived[i] - sent[i]) * 1000 for i in sent)
    return VerdictBenchResult(
        contacts=contacts, backend=backend, intake_workers=workers, producer=producer, consumer=consumer,
        seconds=seconds, contacts_per_s=contacts / seconds, recorded=recorded, paced_rate=rate,
        paced_contacts=len(paced), latency_p50_ms=statistics.median(latencies),
        latency_p99_ms=latencies[max(0, int(len(latencies) * 0.99) - 1)], latency_max_ms=latencies[-1],
    )
