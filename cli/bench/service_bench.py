"""Benchmarks of the ledger service: HTTP load (``bench api``); live pages' latency is ``live_bench.py``.

Each starts ``caseledger serve`` as a process of its own on a free loopback port (the clients must
not share its interpreter), on a temporary SQLite ledger unless a database is given.

- ``api``: per backend (SQLite, PostgreSQL) and worker count, first the bare-framework ceiling (a
  FastAPI endpoint with a bearer check on the same uvicorn options, :mod:`~caseledger.cli.bench.bare`),
  then ``GET /v1/cases/REF``, ``POST /v1/contacts`` and an 80/20 read/write mix, each by the same
  number of closed-loop keep-alive clients in load processes of their own
  (:mod:`~caseledger.cli.bench.http_load`); the rates are shown as shares of the ceiling. Every
  write carries an Idempotency-Key and is retried with it on a conflict; afterwards the writes that
  got 2xx are compared with the events in the store: no write lost, none doubled; and no 5xx.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from caseledger.cli.bench import environment
from caseledger.ledger.errors import CaseLedgerError

__all__ = ["ApiLoadResult", "ScenarioResult", "bench_api"]

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
    from caseledger.ledger.access.principals import PrincipalRegistry
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.settings import LedgerSettings

    ledger = CaseLedger(LedgerSettings.resolve(database=database, settings=environment()))
    try:
        registry = PrincipalRegistry(ledger.principal_store)
        suffix = uuid.uuid4().hex[:6]
        tokens = {role: registry.add(f"bench-{role}-{suffix}", role).token for role in ("agent", "adapter")}
    finally:
        ledger.close()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with _process([sys.executable, "-m", "caseledger.cli.app", "--database", database, "serve", "--host", "127.0.0.1",
                   "--port", str(port), "--workers", str(workers)], url, env=env):
        yield url, database, tokens


@contextmanager
def _process(command: list[str], url: str, *, env: dict[str, str] | None = None) -> Iterator[None]:
    """A server process, from the moment its ``/healthz`` answers until the block ends."""
    import httpx

    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
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
                    raise RuntimeError(f"{command[2]} did not start: {log.read().decode(errors='replace')[-2000:]}")
                time.sleep(0.1)
            yield
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

SCENARIOS = ("read", "write", "mix")
SCENARIO_NAMES = {"bare": "bare ceiling: GET /bare", "read": "GET /v1/cases/REF", "write": "POST /v1/contacts",
                  "mix": "80/20 mix (GET case / POST contact, promise)"}
TARGETS = {"read": 0.5, "write": 0.25}  # of the bare ceiling
MIX_P99_TARGET_MS = 500.0


@dataclass
class ScenarioResult:
    """One scenario on one server: throughput, latency, and the writes checked against the store."""

    scenario: str
    backend: str
    workers: int
    clients: int
    seconds: float
    requests: int = 0
    requests_per_s: float = 0.0
    of_ceiling: float | None = None
    statuses: dict[str, int] = field(default_factory=dict)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    read_p99_ms: float = 0.0
    write_p50_ms: float = 0.0
    write_p99_ms: float = 0.0
    server_errors: int = 0
    transport_errors: int = 0
    retried_writes: int = 0
    contacts_2xx: int = 0
    contacts_recorded: int = 0
    promises_2xx: int = 0
    promises_recorded: int = 0

    @property
    def lost_or_doubled(self) -> int:
        return abs(self.contacts_2xx - self.contacts_recorded) + abs(self.promises_2xx - self.promises_recorded)

    @property
    def met(self) -> bool | None:
        """Whether the scenario met its target (None: it has none)."""
        if self.scenario in TARGETS:
            return self.of_ceiling is not None and self.of_ceiling >= TARGETS[self.scenario]
        if self.scenario == "mix":
            return self.p99_ms <= MIX_P99_TARGET_MS
        return None

    def row(self) -> tuple[str, str]:
        share = f" = {self.of_ceiling:.2f} of bare" if self.of_ceiling is not None else ""
        target = {True: " ✓", False: " ✗", None: ""}[self.met]
        writes = (f"; writes 2xx/recorded {self.contacts_2xx + self.promises_2xx:,}/"
                  f"{self.contacts_recorded + self.promises_recorded:,}" if self.scenario in ("write", "mix") else "")
        return (f"{self.backend} ×{self.workers} · {SCENARIO_NAMES[self.scenario]}",
                f"{self.requests_per_s:,.0f}/s{share}{target}; p50/p99 {self.p50_ms:.0f}/{self.p99_ms:.0f} ms; "
                f"5xx {self.server_errors}, transport {self.transport_errors}{writes}")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lost_or_doubled": self.lost_or_doubled, "met": self.met,
                "name": SCENARIO_NAMES[self.scenario]}


@dataclass
class ApiLoadResult:
    """Every scenario of one ``bench api`` run, each beside the bare ceiling measured just before it."""

    clients: int
    seconds: float
    load_processes: int
    scenarios: list[ScenarioResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # a server that did not start or a store that refused

    def find(self, scenario: str, backend: str | None = None, workers: int | None = None) -> ScenarioResult:
        return next(s for s in self.scenarios if s.scenario == scenario and backend in (None, s.backend)
                    and workers in (None, s.workers))

    @property
    def server_errors(self) -> int:
        return sum(s.server_errors for s in self.scenarios)

    @property
    def lost_or_doubled(self) -> int:
        return sum(s.lost_or_doubled for s in self.scenarios)

    def scaling(self) -> dict[str, float]:
        """Reads/s with the most workers over reads/s with one, per backend."""
        found: dict[str, float] = {}
        for backend in {s.backend for s in self.scenarios}:
            reads = {s.workers: s.requests_per_s for s in self.scenarios if s.backend == backend and s.scenario == "read"}
            if 1 in reads and len(reads) > 1 and reads[1]:
                found[backend] = reads[max(reads)] / reads[1]
        return found

    def rows(self) -> list[tuple[str, str]]:
        rows = [("clients × seconds, load", f"{self.clients} keep-alive clients × {self.seconds:.0f} s per scenario, "
                 f"in {self.load_processes} load processes")]
        rows += [s.row() for s in self.scenarios]
        rows += [(f"{backend}: reads, most workers / one", f"{ratio:.2f}× (target ≥ 1.6× on postgresql)")
                 for backend, ratio in sorted(self.scaling().items())]
        rows += [("failed", failure) for failure in self.failures]
        rows += [("lost or doubled writes", str(self.lost_or_doubled)),
                 ("targets", "GET ≥ 0.50 of bare; POST ≥ 0.25; mix p99 ≤ 500 ms")]
        return rows

    def as_dict(self) -> dict[str, Any]:
        return {"clients": self.clients, "seconds": self.seconds, "load_processes": self.load_processes,
                "scenarios": [s.as_dict() for s in self.scenarios], "scaling": self.scaling(),
                "server_errors": self.server_errors, "lost_or_doubled": self.lost_or_doubled,
                "failures": self.failures}


def bench_api(*, clients: int = 200, seconds: float = 15.0, backends: tuple[str, ...] = ("sqlite", "postgresql"),
              workers: tuple[int, ...] = (1, 2), scenarios: tuple[str, ...] = SCENARIOS, postgres_url: str | None = None,
              seed_cases: int = 50, load_processes: int = 2, ceiling: bool = True,
              progress: Progress | None = None) -> ApiLoadResult:
    """Each scenario on each backend and worker count, beside the bare ceiling (see the module docstring)."""
    result = ApiLoadResult(clients=clients, seconds=seconds, load_processes=load_processes)
    steps = len(backends) * len(workers) * (len(scenarios) + (1 if ceiling else 0))
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress:
            progress("scenarios", done, steps)

    with tempfile.TemporaryDirectory(prefix="caseledger-bench-api-") as where:
        env = {} if os.environ.get("CASELEDGER_KEK") or os.environ.get("CASELEDGER_KEK_FILE") else {
            "CASELEDGER_KEK": base64.b64encode(os.urandom(32)).decode()}  # PostgreSQL requires one
        with _environment(env), _postgres(postgres_url, Path(where), "postgresql" in backends) as new_postgres:
            for backend in backends:
                for count in workers:
                    bare_rate = None
                    if ceiling:
                        tally = _bare_ceiling(clients=clients, seconds=seconds, workers=count,
                                              processes=load_processes)
                        bare = _scenario_result("bare", backend, count, clients, tally, None)
                        if set(bare.statuses) != {"200"}:
                            raise RuntimeError(f"the bare ceiling answered {bare.statuses}, not only 200: void")
                        result.scenarios.append(bare)
                        bare_rate = bare.requests_per_s
                        step()
                    database = (new_postgres() if backend == "postgresql"
                                else str(Path(where) / f"bench-{count}.sqlite"))
                    try:
                        with _served(database, workers=count) as (url, _db, tokens):
                            refs = _seed(url, tokens["agent"], seed_cases)
                            for scenario in scenarios:
                                result.scenarios.append(_run_scenario(
                                    scenario, url, database, tokens["agent"], refs, backend=backend, workers=count,
                                    clients=clients, seconds=seconds, processes=load_processes, bare_rate=bare_rate))
                                step()
                    except (CaseLedgerError, RuntimeError) as error:  # the others still run; the report says why
                        result.failures.append(f"{backend} ×{count}: {str(error)[-300:]}")
    return result


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _postgres(url: str | None, where: Path, wanted: bool) -> Iterator[Callable[[], str]]:
    """A maker of fresh PostgreSQL databases: on a temporary pgserver, or the one database given."""
    if not wanted or url is not None:
        yield lambda: url or ""
        return
    import psycopg

    from caseledger.cli.bench.rebuild_bench import _temporary_postgres

    admin_url, server = _temporary_postgres(where / "pg")

    def new() -> str:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        base, _, query = admin_url.partition("?")
        return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")

    try:
        yield new
    finally:
        server.cleanup()


def _bare_ceiling(*, clients: int, seconds: float, workers: int, processes: int) -> Any:
    from caseledger.cli.bench.bare import TOKEN_ENV
    from caseledger.cli.bench.http_load import LoadPlan, run_load

    token = f"clt_{uuid.uuid4().hex}"
    port = _free_port()
    with _process([sys.executable, "-m", "caseledger.cli.bench.bare", "--port", str(port), "--workers",
                   str(workers)], f"http://127.0.0.1:{port}", env={TOKEN_ENV: token}):
        return run_load(LoadPlan(host="127.0.0.1", port=port, token=token, clients=clients, seconds=seconds,
                                 read_paths=("/bare",), processes=processes))


def _seed(url: str, token: str, cases: int) -> list[str]:
    import httpx

    run = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        refs = []
        for n in range(cases):
            answer = http.post("/v1/contacts", json=_contact_body(n, f"{run}-seed"))
            answer.raise_for_status()
            refs.append(answer.json()["reference"])
    return refs


def _run_scenario(scenario: str, url: str, database: str, token: str, refs: list[str], *, backend: str,
                  workers: int, clients: int, seconds: float, processes: int,
                  bare_rate: float | None) -> ScenarioResult:
    from caseledger.cli.bench.http_load import LoadPlan, run_load

    run = uuid.uuid4().hex[:8]
    port = int(url.rsplit(":", 1)[1])
    share = {"read": 1.0, "write": 0.0, "mix": 0.8}[scenario]
    plan = LoadPlan(host="127.0.0.1", port=port, token=token, clients=clients, seconds=seconds, read_share=share,
                    read_paths=tuple(f"/v1/cases/{ref}" for ref in refs), run=run, refs=tuple(refs),
                    promise_share=0.25 if scenario == "mix" else 0.0, processes=processes)
    tally = run_load(plan)
    found = _scenario_result(scenario, backend, workers, clients, tally, bare_rate)
    if scenario != "read":
        found.contacts_recorded, found.promises_recorded = _recorded(database, run)
    return found


def _scenario_result(scenario: str, backend: str, workers: int, clients: int, tally: Any,
                     bare_rate: float | None) -> ScenarioResult:
    reads, writes = tally.latencies.get("read", []), tally.latencies.get("write", [])
    everything = reads + writes
    rate = tally.requests / tally.elapsed if tally.elapsed else 0.0
    return ScenarioResult(
        scenario=scenario, backend=backend, workers=workers, clients=clients, seconds=tally.elapsed,
        requests=tally.requests, requests_per_s=rate, of_ceiling=rate / bare_rate if bare_rate else None,
        statuses=dict(tally.statuses), p50_ms=_quantile(everything, 0.5) * 1000,
        p99_ms=_quantile(everything, 0.99) * 1000, read_p99_ms=_quantile(reads, 0.99) * 1000,
        write_p50_ms=_quantile(writes, 0.5) * 1000, write_p99_ms=_quantile(writes, 0.99) * 1000,
        server_errors=sum(n for s, n in tally.statuses.items() if s.startswith("5")),
        transport_errors=tally.transport_errors, retried_writes=tally.retried_writes,
        contacts_2xx=tally.contacts_2xx, promises_2xx=tally.promises_2xx,
    )


def _recorded(database: str, run: str) -> tuple[int, int]:
    """(contacts of this run, promises made) as the store has them."""
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.settings import LedgerSettings

    ledger = CaseLedger(LedgerSettings.resolve(database=database, settings=environment()))
    try:
        # Channel message ids and terms are sealed in the store (personal data): read through the ledger, which
        # opens them.
        contacts = 0
        for n in ledger.notifications_of("ContactReceived"):
            message_id = ledger.mapper.to_domain_event(n).channel_message_id
            contacts += message_id.startswith(f"{run}-") and not message_id.startswith(f"{run}-seed")
        promises = sum(1 for n in ledger.notifications_of("PromiseMade")
                       if ledger.mapper.to_domain_event(n).terms.startswith(f"call back {run} "))
    finally:
        ledger.close()
    return contacts, promises


def to_json(result: Any) -> str:
    return json.dumps(result.as_dict(), indent=2)
