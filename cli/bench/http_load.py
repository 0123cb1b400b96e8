"""The load generator of ``bench api``: closed-loop keep-alive HTTP/1.1 clients in processes of their own.

Why not httpx in the benchmark's own process (as before): its per-request cost in one interpreter
capped the measure at ~73 requests/s where an outside tool saw ~250. Why not ``oha``/``hey``: the
benchmark needs a fresh body and Idempotency-Key per write, retries with the same key, and each
2xx write counted to prove nothing was lost or doubled; a compiled tool would also be one more
thing a fresh machine must build. So each process runs a few hundred lines of plain asyncio: one
connection per client, requests written as bytes, responses read by ``Content-Length``. Its
ceiling is measured in the same run (the bare endpoint, :mod:`caseledger.cli.bench.bare`): a
generator that were the bottleneck would show there first.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LoadPlan", "LoadTally", "run_load"]

RETRIED = ("urn:caseledger:problem:conflict", "urn:caseledger:problem:idempotency-in-progress")


@dataclass(frozen=True, kw_only=True)
class LoadPlan:
    """What every client does: ``reads`` of this share go to ``read_paths``, the rest are writes."""

    host: str
    port: int
    token: str
    clients: int
    seconds: float
    read_share: float = 1.0  # 1.0: reads only; 0.0: writes only
    read_paths: tuple[str, ...] = ()
    run: str = ""  # marks this run's writes (channel message ids, promise terms)
    refs: tuple[str, ...] = ()  # cases promises are made on
    promise_share: float = 0.0  # of the writes, promises on ``refs``; the rest are contacts
    processes: int = 2
    warmup_s: float = 2.0  # run, but not counted: lazy start-up work (compiled decoders, first reads) is done


@dataclass
class LoadTally:
    """What the clients saw: statuses, latencies per kind (seconds), and the writes that got a 2xx."""

    requests: int = 0
    elapsed: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    contacts_2xx: int = 0
    promises_2xx: int = 0
    retried_writes: int = 0
    transport_errors: int = 0

    def merge(self, other: LoadTally) -> None:
        self.requests += other.requests
        self.elapsed = max(self.elapsed, other.elapsed)
        self.statuses.update(other.statuses)
        for kind, values in other.latencies.items():
            self.latencies.setdefault(kind, []).extend(values)
        self.contacts_2xx += other.contacts_2xx
        self.promises_2xx += other.promises_2xx
        self.retried_writes += other.retried_writes
        self.transport_errors += other.transport_errors


def run_load(plan: LoadPlan) -> LoadTally:
    """Run ``plan`` in ``plan.processes`` processes (the clients split among them); their tallies merged."""
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 1.5  # every process connects its clients, then all start together
    with context.Pool(plan.processes) as pool:
        parts = pool.starmap(_process, [(plan, index, start_at) for index in range(plan.processes)])
    tally = LoadTally()
    for part in parts:
        tally.merge(part)
    return tally


def _process(plan: LoadPlan, index: int, start_at: float) -> LoadTally:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    clients = plan.clients // plan.processes + (1 if index < plan.clients % plan.processes else 0)
    return asyncio.run(_clients(plan, index, clients, start_at))


class _Connection:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            await self.open()
        assert self.reader is not None and self.writer is not None
        try:
            self.writer.write(head + body)
            status_line = await self.reader.readuntil(b"\r\n")
            length, close = 0, False
            while True:
                line = await self.reader.readuntil(b"\r\n")
                if line == b"\r\n":
                    break
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            data = await self.reader.readexactly(length) if length else b""
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.close()
            raise ConnectionError("the connection broke") from None
        if close:
            self.close()
        return int(status_line.split(b" ", 2)[1]), data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _clients(plan: LoadPlan, index: int, count: int, start_at: float) -> LoadTally:
    tally = LoadTally()
    auth = f"Authorization: Bearer {plan.token}\r\n".encode()
    host = f"Host: {plan.host}:{plan.port}\r\n".encode()
    counter = iter(range(10**9))
    connections = [_Connection(plan.host, plan.port) for _ in range(count)]
    await asyncio.gather(*(c.open() for c in connections))
    await asyncio.sleep(max(0.0, start_at - time.time()))
    began = time.monotonic() + plan.warmup_s
    end = began + plan.seconds

    def record(kind: str, status: int, took: float) -> None:
        if time.monotonic() < began:
            return
        tally.requests += 1
        tally.statuses[str(status)] += 1
        tally.latencies.setdefault(kind, []).append(took)

    async def get(connection: _Connection, path: str) -> None:
        started = time.perf_counter()
        try:
            status, _ = await connection.request(b"GET " + path.encode() + b" HTTP/1.1\r\n" + host + auth + b"\r\n")
        except ConnectionError:
            tally.transport_errors += 1
            status = 0
        record("read", status, time.perf_counter() - started)

    async def post(connection: _Connection, kind: str, path: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        head = (b"POST " + path.encode() + b" HTTP/1.1\r\n" + host + auth + b"Content-Type: application/json\r\n"
                + f"Idempotency-Key: {uuid.uuid4()}\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        started = time.perf_counter()
        status = 0
        for attempt in range(6):  # a conflict, a key still running or a broken connection: again, same key
            try:
                status, data = await connection.request(head, body)
            except ConnectionError:
                tally.transport_errors += 1
                status = 0
            else:
                if not (status == 409 and json.loads(data).get("type") in RETRIED) and status != 503:
                    break
            tally.retried_writes += 1
            await asyncio.sleep(random.uniform(0, 0.02 * 2**attempt))
        if 200 <= status < 300:  # counted in warm-up too: the store has those writes as well
            if kind == "contact":
                tally.contacts_2xx += 1
            else:
                tally.promises_2xx += 1
        record("write", status, time.perf_counter() - started)

    async def client(number: int, connection: _Connection) -> None:
        rng = random.Random(f"{plan.run}-{index}-{number}")
        while time.monotonic() < end:
            if rng.random() < plan.read_share:
                await get(connection, rng.choice(plan.read_paths))
                continue
            n = next(counter)
            if plan.refs and rng.random() < plan.promise_share:
                await post(connection, "promise", f"/v1/cases/{rng.choice(plan.refs)}/promises", {
                    "channel": "email", "kind": "callback", "terms": f"call back {plan.run} {index}-{n}",
                    "due_at": "2099-01-01T00:00:00+00:00"})
            else:
                await post(connection, "contact", "/v1/contacts", contact_body(f"{index}-{n}", plan.run))
        connection.close()

    await asyncio.gather(*(client(i, c) for i, c in enumerate(connections)))
    tally.elapsed = time.monotonic() - began
    return tally


def contact_body(n: int | str, run: str) -> dict[str, Any]:
    """A new web-form contact of this run; customers repeat (500 of them), message ids never do."""
    who = zlib.crc32(str(n).encode()) % 500
    return {"channel": "web_form", "channel_message_id": f"{run}-{n}", "from": f"email:c{who}@bench.example",
            "subject": "Bench", "items": [f"question {n}"]}
