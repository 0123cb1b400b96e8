"""``bench live``: how soon a contact published on the intake topic is on its open case page and in every open queue.

Story S8 (an e-mail must be on screen while the customer is still on the line): contacts are published
on the intake topic at a fixed rate as follow-ups of open cases, while agents keep case pages and their
queues open — each agent a principal of its own (a principal may hold ten live pages), each with one
queue and a few case pages, as a team works. ``caseledger serve`` and ``caseledger intake run`` are
processes of their own on a temporary SQLite ledger.

- **Case page**: the time from publishing a contact to the moment its case's event stream
  (``/cases/REF/events``) sends a section that shows the contact's channel message id.
- **Queue**: the queue's stream (``/queue/events``, or the path given) sends ``{"position", "html"}``
  frames; ``position`` is the store position the queue shows. A contact is in a queue once that
  queue sends a frame at or past the contact's own position (read from the store as it is recorded);
  measured for every queue page and every contact, and at the end every queue must list every case.
- **Both**: per contact, the later of its case page and the slowest queue: what the target is about
  (p99 < 1 s at 100 contacts/s with 50 case pages open).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from caseledger.cli.bench import environment
from caseledger.cli.bench.service_bench import Progress, _contact_body, _quantile, _served

__all__ = ["QUEUE_EVENTS", "LiveResult", "bench_live", "queue_latencies"]

QUEUE_EVENTS = "/queue/events"
PAGES_PER_AGENT = 10  # the service's cap on one principal's live pages (ledger/service/feeds.py)
TARGET_MS = 1000.0


@dataclass
class LiveResult:
    rate: float
    seconds: float
    cases: int
    queues: int = 0
    agents: int = 0
    published: int = 0
    seen: int = 0
    achieved_rate: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    queue_expected: int = 0  # contacts × queue pages
    queue_seen: int = 0
    queue_p50_ms: float = 0.0
    queue_p99_ms: float = 0.0
    queue_max_ms: float = 0.0
    both_seen: int = 0
    both_p50_ms: float = 0.0
    both_p99_ms: float = 0.0
    stored_p50_ms: float = 0.0
    stored_p99_ms: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def target_met(self) -> bool:
        return (not self.failures and self.published > 0 and self.both_seen == self.published
                and self.both_p99_ms < TARGET_MS)

    def rows(self) -> list[tuple[str, str]]:
        rows = [
            ("rate × seconds", f"{self.rate:.0f}/s × {self.seconds:.0f} s"),
            ("pages open", f"{self.cases} case pages + {self.queues} queues, {self.agents} agents"),
            ("published / on the case page", f"{self.published:,} / {self.seen:,} ({self.achieved_rate:.0f}/s sent)"),
            ("intake topic → case page p50 / p90 / p99", f"{self.p50_ms:.0f} / {self.p90_ms:.0f} / {self.p99_ms:.0f} ms"),
            ("case page max", f"{self.max_ms:.0f} ms"),
            ("in every queue (contact × queue)", f"{self.queue_seen:,} / {self.queue_expected:,}"),
            ("intake topic → queue p50 / p99 / max", f"{self.queue_p50_ms:.0f} / {self.queue_p99_ms:.0f} / "
             f"{self.queue_max_ms:.0f} ms"),
            ("on the case page and in every queue p50 / p99", f"{self.both_p50_ms:.0f} / {self.both_p99_ms:.0f} ms "
             f"({self.both_seen:,} contacts)"),
            ("of which intake topic → store p50 / p99", f"{self.stored_p50_ms:.0f} / {self.stored_p99_ms:.0f} ms"),
            ("target", f"p99 < {TARGET_MS:.0f} ms at 100 contacts/s, 50 case pages: "
             + ("met" if self.target_met else "NOT met")),
        ]
        rows += [("failure", f) for f in self.failures]
        return rows

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "target_met": self.target_met}


def bench_live(*, kafka_bootstrap: str, rate: float = 100.0, seconds: float = 30.0, cases: int = 50,
               queues: int = 10, queue_path: str = QUEUE_EVENTS, database: str | None = None,
               progress: Progress | None = None) -> LiveResult:
    """Publish follow-ups at ``rate``/s for ``seconds``; time each until its case page and every queue show it."""
    from caseledger.ledger.kafka.topics import ensure_topics
    from caseledger.ledger.settings import KafkaSettings

    suffix = uuid.uuid4().hex[:8]
    topics = {"CASELEDGER_INTAKE_TOPIC": f"bench-live-intake-{suffix}",
              "CASELEDGER_EVENTS_TOPIC": f"bench-live-events-{suffix}"}
    kafka = KafkaSettings.resolve(settings=environment().kafka, bootstrap_servers=kafka_bootstrap,
                                  intake_topic=topics["CASELEDGER_INTAKE_TOPIC"],
                                  events_topic=topics["CASELEDGER_EVENTS_TOPIC"])
    ensure_topics(kafka)
    with tempfile.TemporaryDirectory(prefix="caseledger-bench-live-") as where:
        db = database or str(Path(where) / "live.sqlite")
        with _served(db) as (url, _db, tokens):
            worker = subprocess.Popen(
                [sys.executable, "-m", "caseledger.cli.app", "--database", db, "intake", "run", "--kafka",
                 kafka_bootstrap], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **topics})
            try:
                run = _Run(url, tokens, kafka, db, rate=rate, seconds=seconds, cases=cases, queues=queues,
                           queue_path=queue_path, progress=progress)
                return asyncio.run(run.measure())
            finally:
                worker.terminate()
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()


def queue_latencies(sent: dict[str, float], positions: dict[str, int],
                    frames: list[list[tuple[float, int]]]) -> dict[str, list[float]]:
    """Per contact, its latency on each queue: the first frame at or past its position, less when it was sent.

    ``frames`` holds each queue's frames in order, as (when received, position); a queue that never
    reached a contact's position leaves it out of that contact's list.
    """
    found: dict[str, list[float]] = {m: [] for m in sent}
    for frames_of_one in frames:
        reached = [p for _t, p in frames_of_one]
        running = list(reached)
        for i in range(1, len(running)):  # positions only grow; a late frame of an older render changes nothing
            running[i] = max(running[i], running[i - 1])
        for message_id, at in sent.items():
            position = positions.get(message_id)
            if position is None:
                continue
            i = bisect.bisect_left(running, position)
            if i < len(running):
                found[message_id].append(frames_of_one[i][0] - at)
    return found


class _Run:
    """One measurement: agents, their pages, the publisher and the store watcher."""

    def __init__(self, url: str, tokens: dict[str, str], kafka: Any, database: str, *, rate: float, seconds: float,
                 cases: int, queues: int, queue_path: str, progress: Progress | None) -> None:
        self.url, self.kafka, self.database = url, kafka, database
        self.rate, self.seconds, self.cases, self.queues = rate, seconds, cases, queues
        self.queue_path, self.progress = queue_path, progress
        self.agents = max(1, queues, -(-(cases + queues) // PAGES_PER_AGENT))
        self.opener = tokens["agent"]
        self.run = uuid.uuid4().hex[:6]
        self.pattern = re.compile(rf"live-{self.run}-\d+")
        self.sent: dict[str, float] = {}
        self.seen: dict[str, float] = {}
        self.stored: dict[str, float] = {}
        self.positions: dict[str, int] = {}
        self.queue_frames: list[list[tuple[float, int]]] = [[] for _ in range(queues)]
        self.queue_html: list[str] = ["" for _ in range(queues)]
        self.opened = 0
        self.ready = asyncio.Event()
        self.failures: list[str] = []

    def _agent_tokens(self, ledger: Any) -> list[str]:
        from caseledger.ledger.access.principals import PrincipalRegistry

        registry = PrincipalRegistry(ledger.principal_store)
        return [registry.add(f"bench-live-agent-{self.run}-{n}", "agent").token for n in range(self.agents)]

    async def _listen(self, http: Any, path: str, token: str, on_data: Any) -> None:
        try:
            async with http.stream("GET", path, headers={"Authorization": f"Bearer {token}"}) as stream:
                if stream.status_code != 200:
                    self.failures.append(f"{path.split('?')[0]}: {stream.status_code}")
                    self._opened()
                    return
                first = True
                async for line in stream.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    on_data(line, time.monotonic())
                    if first:
                        first = False
                        self._opened()
        except Exception as error:  # a page that fails is a failure of the run, said in its report
            if not isinstance(error, asyncio.CancelledError):
                self.failures.append(f"{path.split('?')[0]}: {type(error).__name__}: {error}"[:300])
            raise

    def _opened(self) -> None:
        self.opened += 1
        if self.opened == self.cases + self.queues:
            self.ready.set()

    def _on_case(self, line: str, now: float) -> None:
        for message_id in self.pattern.findall(line):
            self.seen.setdefault(message_id, now)

    def _on_queue(self, index: int) -> Any:
        def on_data(line: str, now: float) -> None:
            try:
                frame = json.loads(line[5:])
            except ValueError:
                return
            self.queue_frames[index].append((now, int(frame.get("position", -1))))
            self.queue_html[index] = str(frame.get("html", ""))
        return on_data

    async def measure(self) -> LiveResult:
        import httpx

        from caseledger.ledger.application import CaseLedger
        from caseledger.ledger.settings import LedgerSettings

        result = LiveResult(rate=self.rate, seconds=self.seconds, cases=self.cases, queues=self.queues,
                            agents=self.agents)
        store = CaseLedger(LedgerSettings.resolve(database=self.database, settings=environment()))
        try:
            agents = self._agent_tokens(store)
            limits = httpx.Limits(max_connections=self.cases + self.queues + 10)
            async with httpx.AsyncClient(base_url=self.url, timeout=None, limits=limits) as http:
                refs = []
                for n in range(self.cases):
                    answer = await http.post("/v1/contacts", json=_contact_body(n, f"{self.run}-open"),
                                             headers={"Authorization": f"Bearer {self.opener}"})
                    answer.raise_for_status()
                    refs.append(answer.json()["reference"])
                position = store.recorder.max_notification_id() or 0
                tasks = [asyncio.create_task(self._listen(http, f"/cases/{ref}/events", agents[n % self.agents],
                                                          self._on_case)) for n, ref in enumerate(refs)]
                tasks += [asyncio.create_task(self._listen(http, self.queue_path, agents[q % self.agents],
                                                           self._on_queue(q))) for q in range(self.queues)]
                tasks.append(asyncio.create_task(self._watch_store(store, position)))
                try:
                    await asyncio.wait_for(self.ready.wait(), timeout=60)
                    result.achieved_rate = await self._publish(refs)
                    await self._settle(refs)
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                missing = [n for n, html in enumerate(self.queue_html) if any(f'"{r}"' not in html for r in refs)]
                if missing:
                    self.failures.append(f"{len(missing)} queue pages do not list every case at the end")
        finally:
            store.close()
        return self._result(result)

    async def _watch_store(self, store: Any, start: int) -> None:
        position = start

        def scan() -> None:
            nonlocal position
            batch = store.recorder.select_notifications(start=position + 1, limit=5000)
            now = time.monotonic()
            for n in batch:
                if "ContactReceived" not in n.topic:
                    continue
                message_id = store.mapper.to_domain_event(n).channel_message_id  # sealed: opened by the ledger
                if self.pattern.fullmatch(message_id):
                    self.stored.setdefault(message_id, now)
                    self.positions.setdefault(message_id, n.id)
            store.data_keys.forget()
            if batch:
                position = batch[-1].id

        while True:
            await asyncio.to_thread(scan)
            await asyncio.sleep(0.05)

    async def _publish(self, refs: list[str]) -> float:
        from caseledger.ledger.domain.values import Channel, ContactDraft, Identity
        from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient

        loop = asyncio.get_running_loop()
        with KafkaIntakeClient(self.kafka, adapter="bench-live") as client:
            total = int(self.rate * self.seconds)
            began = time.monotonic()
            n = 0
            while n < total:
                due = min(total, int((time.monotonic() - began) * self.rate) + 1)
                batch = []
                while n < due:
                    message_id = f"live-{self.run}-{n}"
                    batch.append((message_id, ContactDraft(
                        channel=Channel.EMAIL, channel_message_id=message_id,
                        identity=Identity.parse(f"email:c{n % len(refs)}@bench.example"),
                        case_reference=refs[n % len(refs)], follow_up=True, items=(f"follow-up {n}",))))
                    n += 1
                if batch:
                    now = time.monotonic()
                    for message_id, _draft in batch:
                        self.sent[message_id] = now
                    await loop.run_in_executor(None, client.submit_many, [d for _m, d in batch])
                    if self.progress:
                        self.progress("contacts", n, total)
                await asyncio.sleep(0.05)  # what is due every 50 ms, in one acknowledged batch
            return total / max(time.monotonic() - began, 1e-9)

    async def _settle(self, refs: list[str]) -> None:
        """Wait (15 s at most) until every contact is on its page and every queue is past the last one."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            last = max(self.positions.values(), default=None)
            queues_done = last is not None and len(self.positions) == len(self.sent) and all(
                frames and max(p for _t, p in frames) >= last for frames in self.queue_frames)
            if len(self.seen) >= len(self.sent) and (queues_done or not self.queues):
                return
            await asyncio.sleep(0.1)

    def _result(self, result: LiveResult) -> LiveResult:
        ms = 1000.0
        to_store = [self.stored[m] - t for m, t in self.sent.items() if m in self.stored]
        result.stored_p50_ms, result.stored_p99_ms = _quantile(to_store, 0.5) * ms, _quantile(to_store, 0.99) * ms
        on_page = {m: self.seen[m] - t for m, t in self.sent.items() if m in self.seen}
        latencies = list(on_page.values())
        result.published, result.seen = len(self.sent), len(latencies)
        result.p50_ms, result.p90_ms = _quantile(latencies, 0.5) * ms, _quantile(latencies, 0.9) * ms
        result.p99_ms, result.max_ms = _quantile(latencies, 0.99) * ms, max(latencies, default=float("nan")) * ms
        in_queues = queue_latencies(self.sent, self.positions, self.queue_frames)
        pairs = [lat for lats in in_queues.values() for lat in lats]
        result.queue_expected, result.queue_seen = len(self.sent) * self.queues, len(pairs)
        result.queue_p50_ms, result.queue_p99_ms = _quantile(pairs, 0.5) * ms, _quantile(pairs, 0.99) * ms
        result.queue_max_ms = max(pairs, default=float("nan")) * ms
        both = [max([on_page[m], *lats]) for m, lats in in_queues.items()
                if m in on_page and len(lats) == self.queues]
        result.both_seen = len(both)
        result.both_p50_ms, result.both_p99_ms = _quantile(both, 0.5) * ms, _quantile(both, 0.99) * ms
        result.failures = list(dict.fromkeys(self.failures))
        return result
