"""``caseledger bench export``: events/s of ``export events`` over a generated ledger, against a raw Avro decode."""

from __future__ import annotations

import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from caseledger.cli.bench.rebuild_bench import generate_ledger
from caseledger.cli.common import environment
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.catalog import name_of_topic
from caseledger.ledger.settings import LedgerSettings


@dataclass
class ExportBenchResult:
    events: int
    generate_seconds: float
    export_seconds: float
    events_per_s: float
    baseline_decode_per_s: float
    output_mb: float
    peak_rss_mb: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("events", f"{self.events:,}"),
            ("ledger generated in", f"{self.generate_seconds:.1f} s"),
            ("export events (store → Parquet)", f"{self.export_seconds:.2f} s"),
            ("export events/s", f"{self.events_per_s:,.0f}"),
            ("baseline: read + Avro decode of every event", f"{self.baseline_decode_per_s:,.0f} events/s"),
            ("export ÷ decode", f"{self.events_per_s / max(1.0, self.baseline_decode_per_s):.0%}"),
            ("Parquet written", f"{self.output_mb:.1f} MB"),
            ("peak resident memory", f"{self.peak_rss_mb:.0f} MB"),
        ]


def bench_export(*, events: int = 100_000, say: Callable[[str], None] | None = None) -> ExportBenchResult:
    """Generate ``events`` events in a temporary SQLite ledger, time a raw decode of them all, then the export."""
    from caseledger.ledger.reports.parquet_events import export_events
    from caseledger.projections.sources import StoreEventSource

    with tempfile.TemporaryDirectory(prefix="caseledger-bench-export-") as tmp:
        database = str(Path(tmp) / "ledger.sqlite")
        started = time.monotonic()
        total = generate_ledger(database, events, say=say)
        generated = time.monotonic() - started
        ledger = CaseLedger(LedgerSettings.resolve(database=database, settings=environment()))
        try:
            if say:
                say(f"generated {total:,} events in {generated:.1f} s; decoding them all (baseline)")
            started = time.monotonic()
            after = 0
            while True:
                page = ledger.recorder.select_notifications(start=after + 1, limit=5000)
                if not page:
                    break
                for n in page:
                    ledger.codec.decode_record(name_of_topic(n.topic), bytes(n.state))
                after = page[-1].id
            decode_s = time.monotonic() - started
            if say:
                say("exporting")
            from caseledger.ledger.reports.event_table import personal_of

            out = Path(tmp) / "events"
            summary = export_events(StoreEventSource(ledger), out, codec=ledger.codec,
                                    personal=personal_of(ledger.data_keys), preload=ledger.preload_keys)
        finally:
            ledger.close()
        size = sum(p.stat().st_size for p in out.rglob("*.parquet"))
    return ExportBenchResult(
        events=summary.events, generate_seconds=round(generated, 2), export_seconds=summary.seconds,
        events_per_s=summary.events / summary.seconds if summary.seconds else 0.0,
        baseline_decode_per_s=total / decode_s if decode_s else 0.0, output_mb=size / 1048576,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
