"""Benchmarks of the ledger service: HTTP load (``bench api``) and live-page latency (``bench live``).

Both start ``caseledger serve`` as a process of its own on a free loopback port (the clients must
not share its interpreter), on a temporary SQLite ledger unless a database is given.

- ``api``: N concurrent clients (asyncio + httpx) doing mixed reads and writes for S seconds. Every
  write carries an Idempotency-Key. Afterwards the requests that got 2xx are compared with the events
  in the store: no write lost, none doubled; and no 5xx at all.
- ``live``: contacts published on the intake topic at a fixed rate, as follow-ups of cases whose
  live event streams are open; the time from publishing a contact to the moment its case's stream
  shows it (the page's update), p50 / p99.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ApiLoadResult", "LiveResult", "bench_api", "bench_live"]

Progress = Callable[[str, int, int], None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def _served(database: str, *, env: dict[str, str] | None = None, workers: int = 1,
            ) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(url, database, tokens by role): principals added, ``caseledger serve`` running until the block ends."""
    import httpx

    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.principals import PrincipalRegistry
    from caseledger.ledger.settings import LedgerSettings

    ledger = CaseLedger(LedgerSettings.resolve(database=database))
    try:
        registry = PrincipalRegistry(ledger.principal_store)
        suffix = uuid.uuid4().hex[:6]
        tokens = {role: registry.add(f"bench-{role}-{suffix}", role).token for role in ("agent", "adapter")}
    finally:
        ledger.close()
    port = _free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "caseledger.cli.app", "--database", database, "serve", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers)], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"caseledger serve did not start: {log.read().decode(errors='replace')[-2000:]}")
                time.sleep(0.1)
            yield url, database, tokens
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _contact_body(n: int, run: str, **extra: Any) -> dict[str, Any]:
    return {"channel": "web_form", "channel_message_id": f"{run}-{n}", "from": f"email:c{n % 500}@bench.example",
            "subject": "Bench", "items": [f"question {n}"], **extra}


# -- bench api ----------------------------------------------------------------------------------------------


@dataclass
class ApiLoadResult:
    clients: int
    seconds: float
    database: str
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)
    requests_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    write_p50_ms: float = 0.0
    write_p99_ms: float = 0.0
    read_p50_ms: float = 0.0
    read_p99_ms: float = 0.0
    server_errors: int = 0
    transport_errors: int = 0
    contacts_2xx: int = 0
    contacts_recorded: int = 0
    promises_2xx: int = 0
    promises_recorded: int = 0
    retried_writes: int = 0

    @property
    def lost_or_doubled(self) -> int:
        return abs(self.contacts_2xx - self.contacts_recorded) + abs(self.promises_2xx - self.promises_recorded)

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("clients × seconds", f"{self.clients} × {self.seconds:.0f} s on {self.database}"),
            ("requests", f"{self.requests:,} ({self.requests_per_s:,.0f}/s)"),
            ("statuses", ", ".join(f"{k}: {v:,}" for k, v in sorted(self.statuses.items()))),
            ("latency p50 / p99 (all)", f"{self.p50_ms:.0f} / {self.p99_ms:.0f} ms"),
            ("reads p50 / p99", f"{self.read_p50_ms:.0f} / {self.read_p99_ms:.0f} ms"),
            ("writes p50 / p99", f"{self.write_p50_ms:.0f} / {self.write_p99_ms:.0f} ms"),
            ("5xx / transport errors", f"{self.server_errors} / {self.transport_errors}"),
            ("contacts: 2xx vs recorded", f"{self.contacts_2xx:,} vs {self.contacts_recorded:,}"),
            ("promises: 2xx vs recorded", f"{self.promises_2xx:,} vs {self.promises_recorded:,}"),
            ("writes retried (same key)", f"{self.retried_writes:,}"),
            ("lost or doubled writes", str(self.lost_or_doubled)),
        ]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lost_or_doubled": self.lost_or_doubled}


def bench_api(*, clients: int = 200, seconds: float = 60.0, database: str | None = None, seed_cases: int = 50,
              workers: int = 1, progress: Progress | None = None) -> ApiLoadResult:
    """Mixed reads and writes by ``clients`` concurrent clients for ``seconds`` (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="caseledger-bench-api-") as where:
        db = database or str(Path(where) / "bench.sqlite")
        with _served(db, workers=workers) as (url, _db, tokens):
            return asyncio.run(_api_load(url, db, tokens["agent"], clients=clients, seconds=seconds,
                                         seed_cases=seed_cases, progress=progress))


async def _api_load(url: str, database: str, token: str, *, clients: int, seconds: float, seed_cases: int,
                    progress: Progress | None) -> ApiLoadResult:
    import httpx

    run = uuid.uuid4().hex[:8]
    result = ApiLoadResult(clients=clients, seconds=seconds, database=database.split("@")[-1])
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as http:
        refs: list[str] = []
        for n in range(seed_cases):
            answer = await http.post("/v1/contacts", json=_contact_body(n, f"{run}-seed"))
            answer.raise_for_status()
            refs.append(answer.json()["reference"])
        statuses: Counter[str] = Counter()
        kinds: Counter[str] = Counter()
        reads: list[float] = []
        writes: list[float] = []
        contact_keys: set[str] = set()
        promise_keys: set[str] = set()
        counter = iter(range(10**9))
        end = time.monotonic() + seconds
        done = 0

        async def write(path: str, body: dict[str, Any]) -> tuple[int, float]:
            key = str(uuid.uuid4())
            started = time.perf_counter()
            for attempt in range(5):
                try:
                    answer = await http.post(path, json=body, headers={"Idempotency-Key": key})
                except httpx.TransportError:
                    result.transport_errors += 1
                    result.retried_writes += 1
                    await asyncio.sleep(0.05 * 2**attempt)
                    continue
                if answer.status_code == 409 and answer.json().get("type", "").endswith(("conflict", "in-progress")):
                    result.retried_writes += 1  # retry with the same key: recorded once at most
                    await asyncio.sleep(random.uniform(0, 0.05 * 2**attempt))
                    continue
                if 200 <= answer.status_code < 300:
                    (contact_keys if path == "/v1/contacts" else promise_keys).add(key)
                return answer.status_code, time.perf_counter() - started
            return 0, time.perf_counter() - started

        async def client(i: int) -> None:
            nonlocal done
            rng = random.Random(i)
            while time.monotonic() < end:
                roll = rng.random()
                ref = rng.choice(refs)
                if roll < 0.6:
                    kind = "read case"
                    started = time.perf_counter()
                    try:
                        status = (await http.get(f"/v1/cases/{ref}")).status_code
                    except httpx.TransportError:
                        result.transport_errors += 1
                        status = 0
                    reads.append(time.perf_counter() - started)
                elif roll < 0.7:
                    kind = "read history"
                    started = time.perf_counter()
                    try:
                        who = f"email:c{rng.randrange(min(seed_cases, 500))}@bench.example"
                        status = (await http.get(f"/v1/customers/{who}/cases")).status_code
                    except httpx.TransportError:
                        result.transport_errors += 1
                        status = 0
                    reads.append(time.perf_counter() - started)
                elif roll < 0.85:
                    kind = "record contact"
                    status, took = await write("/v1/contacts", _contact_body(next(counter), run))
                    writes.append(took)
                else:
                    kind = "make promise"
                    status, took = await write(f"/v1/cases/{ref}/promises", {
                        "channel": "email", "kind": "callback", "terms": f"call back {run} {next(counter)}",
                        "due_at": "2099-01-01T00:00:00+00:00"})
                    writes.append(took)
                statuses[str(status)] += 1
                kinds[kind] += 1
                done += 1

        async def report() -> None:
            started = time.monotonic()
            while time.monotonic() < end:
                await asyncio.sleep(1)
                if progress:
                    progress("seconds", min(int(time.monotonic() - started), int(seconds)), int(seconds))

        began = time.monotonic()
        await asyncio.gather(report(), *(client(i) for i in range(clients)))
        elapsed = time.monotonic() - began
    result.requests = done
    result.statuses = dict(statuses)
    result.by_kind = dict(kinds)
    result.requests_per_s = done / elapsed
    everything = reads + writes
    result.p50_ms, result.p99_ms = _quantile(everything, 0.5) * 1000, _quantile(everything, 0.99) * 1000
    result.read_p50_ms, result.read_p99_ms = _quantile(reads, 0.5) * 1000, _quantile(reads, 0.99) * 1000
    result.write_p50_ms, result.write_p99_ms = _quantile(writes, 0.5) * 1000, _quantile(writes, 0.99) * 1000
    result.server_errors = sum(n for s, n in statuses.items() if s.startswith("5"))
    result.contacts_2xx, result.promises_2xx = len(contact_keys), len(promise_keys)
    result.contacts_recorded, result.promises_recorded = _recorded(database, run)
    return result


def _recorded(database: str, run: str) -> tuple[int, int]:
    """(contacts of this run, promises made) as the store has them."""
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.settings import LedgerSettings

    ledger = CaseLedger(LedgerSettings.resolve(database=database))
    try:
        contacts = sum(1 for n in ledger._notifications_of("ContactReceived")
                       if f"{run}-".encode() in bytes(n.state) and f"{run}-seed".encode() not in bytes(n.state))
        # The terms are sealed in the store (personal data): read through the ledger, which opens them.
        promises = sum(1 for n in ledger._notifications_of("PromiseMade")
                       if ledger.mapper.to_domain_event(n).terms.startswith(f"call back {run} "))
    finally:
        ledger.close()
    return contacts, promises


# -- bench live ---------------------------------------------------------------------------------------------


@dataclass
class LiveResult:
    rate: float
    seconds: float
    cases: int
    published: int = 0
    seen: int = 0
    achieved_rate: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    stored_p50_ms: float = 0.0
    stored_p99_ms: float = 0.0

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("rate × seconds", f"{self.rate:.0f}/s × {self.seconds:.0f} s over {self.cases} open case pages"),
            ("published / seen on a page", f"{self.published:,} / {self.seen:,} ({self.achieved_rate:.0f}/s sent)"),
            ("intake topic → page p50 / p90 / p99", f"{self.p50_ms:.0f} / {self.p90_ms:.0f} / {self.p99_ms:.0f} ms"),
            ("max", f"{self.max_ms:.0f} ms"),
            ("of which intake topic → store p50 / p99", f"{self.stored_p50_ms:.0f} / {self.stored_p99_ms:.0f} ms"),
            ("target", "p99 < 1000 ms at 100 contacts/s"),
        ]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_live(*, kafka_bootstrap: str, rate: float = 100.0, seconds: float = 30.0, cases: int = 20,
               database: str | None = None, progress: Progress | None = None) -> LiveResult:
    """Publish follow-up contacts at ``rate``/s for ``seconds``; time each until its case's live stream shows it."""
    from caseledger.ledger.kafka.settings import KafkaSettings
    from caseledger.ledger.kafka.topics import ensure_topics

    suffix = uuid.uuid4().hex[:8]
    topics = {"CASELEDGER_INTAKE_TOPIC": f"bench-live-intake-{suffix}", "CASELEDGER_EVENTS_TOPIC":
              f"bench-live-events-{suffix}"}
    kafka = KafkaSettings.resolve(bootstrap_servers=kafka_bootstrap, intake_topic=topics["CASELEDGER_INTAKE_TOPIC"],
                                  events_topic=topics["CASELEDGER_EVENTS_TOPIC"])
    ensure_topics(kafka)
    with tempfile.TemporaryDirectory(prefix="caseledger-bench-live-") as where:
        db = database or str(Path(where) / "live.sqlite")
        with _served(db) as (url, _db, tokens):
            worker = subprocess.Popen(
                [sys.executable, "-m", "caseledger.cli.app", "--database", db, "intake", "run", "--kafka",
                 kafka_bootstrap], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **topics})
            try:
                return asyncio.run(_live(url, tokens, kafka, rate=rate, seconds=seconds, cases=cases,
                                         progress=progress, database=db))
            finally:
                worker.terminate()
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()


async def _live(url: str, tokens: dict[str, str], kafka: Any, *, rate: float, seconds: float, cases: int,
                progress: Progress | None, database: str) -> LiveResult:
    import httpx

    from caseledger.ledger.domain.values import Channel, ContactDraft, Identity
    from caseledger.ledger.kafka.intake_client import KafkaIntakeClient

    result = LiveResult(rate=rate, seconds=seconds, cases=cases)
    run = uuid.uuid4().hex[:6]
    headers = {"Authorization": f"Bearer {tokens['agent']}"}
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    pattern = re.compile(rf"live-{run}-\d+")
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=None,
                                 limits=httpx.Limits(max_connections=cases + 10)) as http:
        refs = []
        for n in range(cases):
            answer = await http.post("/v1/contacts", json=_contact_body(n, f"{run}-open"))
            answer.raise_for_status()
            refs.append(answer.json()["reference"])
        ready = asyncio.Event()
        opened = 0

        async def listen(ref: str) -> None:
            nonlocal opened
            async with http.stream("GET", f"/cases/{ref}/events") as stream:
                first = True
                async for line in stream.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    now = time.monotonic()
                    if first:
                        first = False
                        opened += 1
                        if opened == len(refs):
                            ready.set()
                    for message_id in pattern.findall(line):
                        seen.setdefault(message_id, now)

        from caseledger.ledger.application import CaseLedger
        from caseledger.ledger.settings import LedgerSettings

        store = CaseLedger(LedgerSettings.resolve(database=database))
        stored: dict[str, float] = {}
        position = store.recorder.max_notification_id() or 0

        def scan() -> None:
            nonlocal position
            batch = store.recorder.select_notifications(start=position + 1, limit=5000)
            now = time.monotonic()
            for n in batch:
                for message_id in pattern.findall(bytes(n.state).decode("latin-1")):
                    stored.setdefault(message_id, now)
            if batch:
                position = batch[-1].id

        async def watch_store() -> None:
            while True:
                await asyncio.to_thread(scan)
                await asyncio.sleep(0.05)

        listeners = [asyncio.create_task(listen(ref)) for ref in refs]
        listeners.append(asyncio.create_task(watch_store()))
        await asyncio.wait_for(ready.wait(), timeout=60)
        loop = asyncio.get_running_loop()
        with KafkaIntakeClient(kafka, adapter="bench-live") as client:
            total = int(rate * seconds)
            tick = 0.05  # publish what is due every 50 ms, in one acknowledged batch
            began = time.monotonic()
            n = 0
            while n < total:
                due = min(total, int((time.monotonic() - began) * rate) + 1)
                batch = []
                while n < due:
                    message_id = f"live-{run}-{n}"
                    batch.append((message_id, ContactDraft(
                        channel=Channel.EMAIL, channel_message_id=message_id,
                        identity=Identity.parse(f"email:c{n % len(refs)}@bench.example"),
                        case_reference=refs[n % len(refs)], follow_up=True, items=(f"follow-up {n}",))))
                    n += 1
                if batch:
                    now = time.monotonic()
                    for message_id, _draft in batch:
                        sent[message_id] = now
                    drafts: list[Any] = [d for _m, d in batch]
                    await loop.run_in_executor(None, client.submit_many, drafts)
                    if progress:
                        progress("contacts", n, total)
                await asyncio.sleep(tick)
            result.achieved_rate = total / max(time.monotonic() - began, 1e-9)
        deadline = time.monotonic() + 15
        while len(seen) < len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
    store.close()
    to_store = [stored[m] - t for m, t in sent.items() if m in stored]
    result.stored_p50_ms, result.stored_p99_ms = _quantile(to_store, 0.5) * 1000, _quantile(to_store, 0.99) * 1000
    latencies = [seen[m] - t for m, t in sent.items() if m in seen]
    result.published, result.seen = len(sent), len(latencies)
    result.p50_ms = _quantile(latencies, 0.5) * 1000
    result.p90_ms = _quantile(latencies, 0.9) * 1000
    result.p99_ms = _quantile(latencies, 0.99) * 1000
    result.max_ms = max(latencies, default=float("nan")) * 1000
    return result


def to_json(result: Any) -> str:
    return json.dumps(result.as_dict(), indent=2)
