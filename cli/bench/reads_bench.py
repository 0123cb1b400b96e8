"""``bench reads``: one customer's reads on a full ledger, ``tick`` over many open deadlines, ``audit verify``'s memory.

The ledger is filled as ``bench verify`` fills it (stamped stories, :func:`generate_ledger`): a quarter of the
events first, then the rest, ``audit verify``'s peak resident size measured after each (in a fresh process:
flat means it does not grow with the ledger). Then one customer is given ``customer_events`` events through
the ledger's own commands (seven cases, follow-ups), and read in process, on the ledger object and its views,
as ``case show`` and ``history`` read them. Last, stories left open thirty days ago are added, and ``tick``
records every deadline they missed (in a fresh process: its time and peak resident size).
"""

from __future__ import annotations

import multiprocessing
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caseledger.cli.bench import environment
from caseledger.cli.bench.verify_bench import Progress, _rss_mb, _verify_in_fresh_process, generate_ledger
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.reports.describe import case_record
from caseledger.ledger.settings import LedgerSettings

_READER = "email:reader@bench.example"
_CASES = 7
_OPEN_STORY_DEADLINES = 3  # an open story's acknowledgement, response and promise deadlines, all past due
_OPEN_STORY_EVENTS = 10  # its events (verify_bench._story with open_case): whole stories are written, about this many


@dataclass
class Percentiles:
    """Wall time and the reading thread's CPU time of each read (a loaded machine's wall p99 is not the product's)."""

    reads: int
    p50_ms: float
    p99_ms: float
    cpu_p50_ms: float = 0.0
    cpu_p99_ms: float = 0.0

    @classmethod
    def of(cls, read: Callable[[], Any], reads: int) -> Percentiles:
        times: list[float] = []
        cpu: list[float] = []
        for _ in range(reads):
            started, started_cpu = time.perf_counter(), time.thread_time()
            read()
            cpu.append((time.thread_time() - started_cpu) * 1000)
            times.append((time.perf_counter() - started) * 1000)
        return cls(reads, *_p50_p99(times), *_p50_p99(cpu))

    def text(self, target_ms: float) -> str:
        verdict = "met" if self.p99_ms <= target_ms else "NOT met"
        return (f"p50 {self.p50_ms:.2f} ms · p99 {self.p99_ms:.2f} ms wall; thread CPU p50 {self.cpu_p50_ms:.2f} · "
                f"p99 {self.cpu_p99_ms:.2f} ms ({self.reads} reads; wall p99 ≤ {target_ms:g} ms: {verdict})")


def _p50_p99(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return values[len(values) // 2], values[min(len(values) - 1, round(len(values) * 0.99) - 1)]


@dataclass
class ReadsBenchResult:
    backend: str
    events: int
    generate_seconds: float
    customer_events: int
    case_events: int
    case_show: Percentiles
    case_replayed: Percentiles
    history: Percentiles
    history_from_log: Percentiles
    timeline_built_s: float
    verify_small: dict[str, Any]
    verify_full: dict[str, Any]
    store: dict[str, Any] = field(default_factory=dict)
    timeline_built_cpu_s: float = 0.0
    tick: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str]]:
        growth = self.verify_full["peak_mb"] - self.verify_small["peak_mb"]
        rows = [
            ("backend", self.backend),
            ("events", f"{self.events:,} (generated in {self.generate_seconds:.1f} s)"),
            ("reader", f"{self.customer_events:,} events in {_CASES} cases; the case shown has {self.case_events}"),
            ("case show (case_record)", self.case_show.text(5)),
            ("case show replayed whole (no snapshot)", self.case_replayed.text(5) + " — the path before snapshots"),
            ("history (the timeline view, opened)", self.history.text(10)),
            ("history from the log (Lookups.history)", self.history_from_log.text(10) + " — not the CLI's path"),
            ("timeline view built over the ledger in", f"{self.timeline_built_s:.1f} s, {self.timeline_built_cpu_s:.1f} CPU-s"),
            ("audit verify peak RSS", f"{self.verify_small['peak_mb']:.0f} MB at {self.verify_small['events']:,} events, "
             f"{self.verify_full['peak_mb']:.0f} MB at {self.verify_full['events']:,} ({growth:+.0f} MB)"),
            ("audit verify time", f"{self.verify_small['seconds']:.1f} s, {self.verify_full['seconds']:.1f} s"),
        ]
        rows += [(f"store: {k}", v if isinstance(v, str) else f"{v:,}") for k, v in self.store.items()]
        if self.tick:
            t = self.tick
            rows += [
                ("tick: open deadlines", f"{t['deadlines']:,} in {t['cases']:,} cases (+{t['events']:,} events)"),
                ("tick: deadlines view caught up in", f"{t['catch_up_s']:.1f} s, {t.get('catch_up_cpu_s', 0):.1f} CPU-s"),
                ("tick", f"{t['seconds']:.1f} s, {t.get('cpu_seconds', 0):.1f} CPU-s, {t['missed']:,} recorded "
                         f"({t['missed'] / max(t.get('cpu_seconds') or t['seconds'], 1e-9):,.0f} per CPU-s)"),
                ("tick peak RSS", f"{t['peak_mb']:.0f} MB (over {t['before_mb']:.0f} MB before it)"),
            ]
        return rows


def bench_reads(*, events: int = 1_000_000, customer_events: int = 1000, deadlines: int = 1_000_000,
                database: str | None = None, reads: int = 200, progress: Progress | None = None) -> ReadsBenchResult:
    """Fill a ledger of ``events`` events and measure one customer's reads, ``audit verify``'s memory and ``tick``."""
    tmp = tempfile.TemporaryDirectory(prefix="caseledger-bench-reads-")
    db = database or str(Path(tmp.name) / "reads.sqlite")
    ledger = CaseLedger(LedgerSettings.resolve(database=db, settings=environment()))
    pool = multiprocessing.get_context("spawn").Pool(1)  # fresh processes: each peak RSS is its measure alone
    try:
        if (ledger.recorder.max_notification_id() or 0) > 0:
            raise ConfigurationError(f"{ledger.settings.store.describe()} is not empty; benchmark on an empty database")
        backend = ledger.settings.store.describe().split(" ")[0]
        started = time.perf_counter()
        generate_ledger(ledger, events // 4, progress)
        generated = time.perf_counter() - started
        verify_small = pool.apply(_verify_in_fresh_process, (db,))
        started = time.perf_counter()
        generate_ledger(ledger, events - verify_small["events"], progress)
        generated += time.perf_counter() - started
        verify_full = pool.apply(_verify_in_fresh_process, (db,))

        if progress:
            progress("the reader's events", 0, customer_events)
        references = _reader(ledger, customer_events)
        from caseledger.projections.catchup import catch_up
        from caseledger.projections.queries import customer_timeline
        from caseledger.projections.timeline import CustomerTimeline
        from caseledger.projections.view_stores import open_views

        customer_id = ledger.data_subject(_READER)
        with open_views(db) as views:
            started, started_cpu = time.perf_counter(), time.process_time()
            catch_up(views, CustomerTimeline(), ledger=lambda: ledger)
            built, built_cpu = time.perf_counter() - started, time.process_time() - started_cpu
            shown = ledger.get_case(references[0])
            history = Percentiles.of(lambda: customer_timeline(views, customer_id, ledger=lambda: ledger), reads)
            counted = len(customer_timeline(views, customer_id, ledger=lambda: ledger))
        # Without its snapshot (ledger/case_snapshots.py) a case is replayed whole: measured in the same run.
        replayed = Percentiles.of(lambda: case_record(ledger.load(shown.id)), reads)
        ledger.case_record(references[0])  # the first read keeps the case's snapshot (a reader's, as the CLI's)
        case_show = Percentiles.of(lambda: ledger.case_record(references[0]), reads)
        from_log = Percentiles.of(lambda: ledger.history(_READER), max(3, reads // 20))
        store = _store_figures(ledger, db)
        result = ReadsBenchResult(
            backend=backend, events=verify_full["events"] + counted, generate_seconds=generated,
            customer_events=counted, case_events=shown.version, case_show=case_show, case_replayed=replayed,
            history=history,
            history_from_log=from_log, timeline_built_s=built, timeline_built_cpu_s=built_cpu, verify_small=verify_small, verify_full=verify_full,
            store=store)
        if deadlines:
            result.tick = _tick(ledger, db, deadlines, pool, progress)
        return result
    finally:
        pool.terminate()
        ledger.close()
        tmp.cleanup()


def _reader(ledger: CaseLedger, customer_events: int) -> list[str]:
    """One customer given about ``customer_events`` events: seven cases, then follow-ups on each in turn."""
    from caseledger.ledger.domain.values import Channel, ContactDraft, Identity

    identity = Identity.parse(_READER)

    def contact(n: int, reference: str | None) -> str:
        draft = ContactDraft(channel=Channel.WEB_FORM, channel_message_id=f"reader-{n}", identity=identity,
                             items=("Where is my refund?",), subject="Refund", case_reference=reference,
                             body="I returned the parcel two weeks ago and the refund has not arrived.")
        return str(ledger.record_contact(draft).reference)

    references = [contact(n, None) for n in range(_CASES)]
    n = _CASES
    while (count := len(ledger.history(_READER))) < customer_events:
        per_contact = max(1, count // n)
        for _ in range(max(1, (customer_events - count) // per_contact)):
            contact(n, references[n % _CASES])
            n += 1
    return references


def _store_figures(ledger: CaseLedger, db: str) -> dict[str, Any]:
    """The store at this size: its bytes, its data keys, its Merkle tree."""
    from caseledger.ledger.transparency.tree import MerkleLog

    figures: dict[str, Any] = {}
    file = ledger.storage.database_file
    if file is not None:
        figures["bytes on disk"] = sum(p.stat().st_size for p in Path(file).parent.glob(Path(file).name + "*"))
    figures["data keys (live)"] = len(ledger.storage.data_keys().live())
    tree = MerkleLog.of(ledger)
    started, started_cpu = time.perf_counter(), time.process_time()
    appended = tree.catch_up(ledger, batch=20_000)
    figures["Merkle tree leaves"] = ledger.storage.merkle().state()[0]
    figures["Merkle tree built in"] = (f"{time.perf_counter() - started:.1f} s, {time.process_time() - started_cpu:.1f} "
                                       f"CPU-s ({appended:,} leaves appended)")
    return figures


def _tick(ledger: CaseLedger, db: str, deadlines: int, pool: Any, progress: Progress | None) -> dict[str, Any]:
    from caseledger.projections.catchup import catch_up
    from caseledger.projections.deadlines import PENDING, Deadlines
    from caseledger.projections.view_stores import open_views

    stories = max(1, deadlines // _OPEN_STORY_DEADLINES)
    added = generate_ledger(ledger, stories * _OPEN_STORY_EVENTS, progress, open_cases=True)
    with open_views(db) as views:
        started, started_cpu = time.perf_counter(), time.process_time()
        catch_up(views, Deadlines(), ledger=lambda: ledger)
        caught_up, caught_up_cpu = time.perf_counter() - started, time.process_time() - started_cpu
        now = ledger.clock()
        counted = views.fetch(f"SELECT COUNT(*) AS n, COUNT(DISTINCT reference) AS cases FROM {Deadlines.tables[0].name} "
                              "WHERE state = ? AND due_at < ? AND missed = 0", (PENDING, now))[0]
    measured = pool.apply(_tick_in_fresh_process, (db,))
    return {"deadlines": int(counted["n"]), "cases": int(counted["cases"]), "events": added,
            "catch_up_s": caught_up, "catch_up_cpu_s": caught_up_cpu, **measured}


def _tick_in_fresh_process(database: str) -> dict[str, Any]:
    from caseledger.ledger.domain.values import SYSTEM
    from caseledger.projections.queries import tick_missed_deadlines
    from caseledger.projections.view_stores import open_views

    ledger = CaseLedger(LedgerSettings.resolve(database=database, settings=environment()))
    try:
        with open_views(database) as views:
            before = _rss_mb()
            started, started_cpu = time.perf_counter(), time.process_time()
            report = tick_missed_deadlines(views, ledger=lambda: ledger, actor=SYSTEM)
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        ledger.close()
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "missed": report.total, "before_mb": before, "peak_mb": max(peak, before)}
