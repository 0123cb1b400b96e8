"""``bench soak``: ``caseledger run`` for minutes at a steady intake rate while ``serve`` answers reads.

Three processes of the product, as deployed: ``caseledger run`` (intake worker, publisher and the
projections; by default ``--processes``, one child process each, else ``--one-process``), ``caseledger
serve`` (the HTTP service) and, as load, a steady
publisher of contacts on the intake topic (a process of its own, like a channel adapter). This
process reads cases over HTTP at a modest rate (``GET /v1/cases/REF`` and
``GET /v1/customers/ID/history``, alternately, on cases seeded through the service) and samples the
resident memory of every process of the product (``run``, ``serve`` and any child of theirs) every
few seconds.

It fails (the result's ``errors``) when a process died, a read answered 5xx (or anything but 200),
a contact was refused instead of becoming a case (its outcome on the events topic: ``MessageRegistered``
against ``IntakeRejected`` and ``MessageIdCollided``), the contacts still queued when the time was up
stopped being recorded (none for 30 s; those still queued after 5 minutes are reported: the machine
did not reach the rate), or a process's memory grew by 5 % or more after the
warm-up (``max_growth``): the median of its samples in the last minute against the median of its samples
in the first minute after the warm-up (:func:`judge_growth`).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caseledger.cli.bench.intake_bench import prepare_run, stop_services
from caseledger.cli.bench.rebuild_bench import Say, percentile

GROWTH_LIMIT = 0.05
JUDGED_WINDOW_S = 60.0  # memory is judged on the median of each end's minute after the warm-up
MIN_JUDGED = 3  # samples at each end at least
SEED_CASES = 20
STALL_S = 30.0  # no new outcome for this long while contacts are queued: the pipeline is stuck
DRAIN_S = 300.0  # how long the queue left at the end is followed; what is still queued then is reported
FIRST = 1  # the steady publisher's first contact, sent before its clock starts (it connects with it)
ACCEPTED, REFUSED = "MessageRegistered", ("IntakeRejected", "MessageIdCollided")


@dataclass
class ProcessMemory:
    """One process's resident memory over the soak."""

    name: str
    pid: int
    samples: list[list[float]] = field(default_factory=list)  # [seconds since start, MB]
    after_warmup_mb: float = 0.0
    final_mb: float = 0.0
    growth: float = 0.0


@dataclass
class SoakResult:
    minutes: float
    warmup_minutes: float
    target_rate: int
    run_processes: bool  # caseledger run --processes (one process per service), else --one-process
    published: int
    publish_rate: float
    recorded: int
    recorded_rate: float  # contacts recorded during the soak, per second: what the machine reached
    refused: int
    catch_up_seconds: float
    reads: int
    read_failures: int
    server_errors: int
    read_p50_ms: float
    read_p99_ms: float
    processes: list[ProcessMemory]
    errors: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors

    def report(self) -> list[tuple[str, str]]:
        """(measure, value) lines for the table the command prints."""
        rows = [
            ("soak (warm-up not judged)", f"{self.minutes:g} min ({self.warmup_minutes:g} min)"),
            ("caseledger run", "--processes: one process per service" if self.run_processes
             else "--one-process: every service a thread of one process"),
            ("contacts published on the intake topic",
             f"{self.published:,} at {self.publish_rate:,.0f}/s (target {self.target_rate:,}/s)"),
            ("recorded as cases (MessageRegistered) / refused", f"{self.recorded:,} / {self.refused:,}"),
            ("recorded during the soak (the rate reached)", f"{self.recorded_rate:,.0f}/s"),
            ("all recorded, after the last was published", f"{self.catch_up_seconds:.1f} s" if self.published ==
             self.recorded else f"not yet: {self.published - self.recorded:,} still queued after "
                                f"{self.catch_up_seconds:.0f} s (the rate was not reached)"),
            ("reads over HTTP (case show, history): p50 / p99",
             f"{self.reads:,}: {self.read_p50_ms:,.1f} ms / {self.read_p99_ms:,.1f} ms"),
            ("reads failed / of which 5xx", f"{self.read_failures:,} / {self.server_errors:,}"),
        ]
        rows += [(f"memory of {p.name} (pid {p.pid}): after warm-up → end",
                  f"{p.after_warmup_mb:,.0f} MB → {p.final_mb:,.0f} MB ({p.growth:+.1%})") for p in self.processes]
        rows.append(("verdict", "ok" if self.ok else "FAILED: " + "; ".join(self.errors)))
        return rows


# -- resident memory ---------------------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """The process and all its descendants (psutil when installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(parent, []).append(int(entry.name))
        found, todo = [], [pid]
        while todo:
            current = todo.pop()
            found.append(current)
            todo.extend(children.get(current, []))
        return found
    try:
        return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def resident_mb(pid: int) -> float | None:
    """VmRSS of ``pid`` in MB, or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def judge_growth(samples: list[list[float]], warmup_s: float) -> tuple[float, float] | None:
    """(MB after the warm-up, MB at the end) of ``samples`` ``[seconds, MB]``: the median of the samples in
    the first :data:`JUDGED_WINDOW_S` after the warm-up against the median of those in the last one (at
    least :data:`MIN_JUDGED` samples each, a third of the judged span at most: a short soak's ends never
    overlap); None when nothing was sampled after the warm-up.

    Medians of a minute, not means of three samples: resident memory sampled every 10 s swings by a few
    MB as batches come and go (a full batch after a stall, glibc's arenas, the collector's five-minute
    full collection), and one such sample among three moved the mean by 3 % on a flat process. A leak
    moves the whole last minute, so its median, by as much as it grew: a real leak is judged in full.
    """
    judged = [(at, mb) for at, mb in samples if at >= warmup_s]
    if not judged:
        return None
    window = min(JUDGED_WINDOW_S, (judged[-1][0] - judged[0][0]) / 3)
    head = [mb for at, mb in judged if at <= judged[0][0] + window]
    tail = [mb for at, mb in judged if at >= judged[-1][0] - window]
    if len(head) < MIN_JUDGED:
        head = [mb for _at, mb in judged[:MIN_JUDGED]]
    if len(tail) < MIN_JUDGED:
        tail = [mb for _at, mb in judged[-MIN_JUDGED:]]
    return statistics.median(head), statistics.median(tail)


def _judge(memory: ProcessMemory, warmup_s: float) -> None:
    ends = judge_growth(memory.samples, warmup_s)
    if ends is None:
        return
    memory.after_warmup_mb, memory.final_mb = ends
    memory.growth = memory.final_mb / memory.after_warmup_mb - 1


# -- the reader ----------------------------------------------------------------------------------------------


class _Reader(threading.Thread):
    """Reads cases and histories over HTTP at ``rate``/s until stopped; keeps latencies and failures."""

    def __init__(self, url: str, token: str, cases: list[tuple[str, str]], rate: float) -> None:
        super().__init__(daemon=True, name="soak-reader")
        self.url, self.token, self.cases, self.rate = url, token, cases, rate
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.failures: dict[str, int] = {}
        self.server_errors = 0

    def run(self) -> None:
        import httpx

        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30) as http:
            n = 0
            started = time.monotonic()
            while not self.stop.is_set():
                reference, customer = self.cases[(n // 2) % len(self.cases)]
                path = f"/v1/cases/{reference}" if n % 2 == 0 else f"/v1/customers/{customer}/history"
                at = time.perf_counter()
                try:
                    status = http.get(path).status_code
                except httpx.HTTPError as error:
                    status, path = 0, f"{path} ({type(error).__name__})"
                self.latencies.append((time.perf_counter() - at) * 1000)
                if status != 200:
                    what = f"{status} on {path.split('/')[2]}"  # the route, never the reference or customer
                    self.failures[what] = self.failures.get(what, 0) + 1
                    self.server_errors += status >= 500
                n += 1
                self.stop.wait(max(0.0, started + n / self.rate - time.monotonic()))


def _seed(url: str, token: str, run: str) -> list[tuple[str, str]]:
    """(reference, customer id) of cases recorded through the service, to be read during the soak."""
    import httpx

    found = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        for n in range(SEED_CASES):
            answer = http.post("/v1/contacts", json={
                "channel": "web_form", "channel_message_id": f"{run}-seed-{n}", "from": f"email:soak{n}@bench.example",
                "subject": "Soak", "items": [f"question {n}"]})
            answer.raise_for_status()
            reference = answer.json()["reference"]
            case = http.get(f"/v1/cases/{reference}")
            case.raise_for_status()
            found.append((reference, case.json()["customer_id"]))
    return found


# -- the soak ------------------------------------------------------------------------------------------------


class _Outcomes:
    """Counts the intake's outcomes on the events topic from their ``ce_type`` headers (no decoding)."""

    def __init__(self, settings: Any, consumer: str) -> None:
        from caseledger.ledger.kafka.clients import KafkaClient

        self.recorded = self.refused = 0
        self._reader = KafkaClient(consumer, "consumer").open_reader(
            settings, topic=settings.events_topic, group="bench-soak", fetch_wait_ms=200,
            on_lost_position="earliest")
        self._reader.assign(dict.fromkeys(self._reader.partitions(), 0))

    def read(self, *, until: int | None = None, wait_s: float = 120.0, stall_s: float = STALL_S) -> bool:
        """Read up to the topic's end as it is now, or until ``until`` contacts have an outcome; False when
        ``wait_s`` ran out or no new outcome came for ``stall_s``."""
        from caseledger.ledger.kafka.events_record import event_type_of
        from caseledger.ledger.kafka.ports import ReadRecord

        ends = self._reader.end_offsets(self._reader.partitions())
        deadline = time.monotonic() + wait_s
        moved = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - moved < stall_s:
            if until is None and all(self._reader.positions().get(p, 0) >= end for p, end in ends.items()):
                return True
            if until is not None and self.recorded + self.refused >= until:
                return True
            for record in self._reader.fetch(20_000, 0.5, ReadRecord):
                kind = event_type_of(record.headers)
                if kind == ACCEPTED or kind in REFUSED:
                    self.recorded += kind == ACCEPTED
                    self.refused += kind in REFUSED
                    moved = time.monotonic()
        return False

    def close(self) -> None:
        self._reader.close()


def bench_soak(
    *, kafka_bootstrap: str, minutes: float = 20.0, rate: int = 500, warmup_minutes: float = 2.0,
    read_rate: float = 10.0, sample_seconds: float = 10.0, max_growth: float = GROWTH_LIMIT,
    database: str | None = None, consumer: str = "confluent", producer: str = "confluent",
    memory_trace: Path | None = None, processes: bool = True, say: Say | None = None,
) -> SoakResult:
    """Run the soak; the result says what was reached and every error (see the module docstring)."""
    from caseledger.cli.bench.service_bench import _served

    say = say or (lambda _text: None)
    tmp, db, run, settings, env = prepare_run(kafka_bootstrap=kafka_bootstrap, database=database, workers=1,
                                              producer=producer, consumer=consumer)
    errors: list[str] = []
    logs = Path(tmp.name)
    cli = [sys.executable, "-c", "from caseledger.cli.app import main; main()"]
    memories: dict[int, ProcessMemory] = {}
    reader: _Reader | None = None
    started_here: list[subprocess.Popen[bytes]] = []  # stopped whatever happens, an interrupt too
    try:
        with _served(db, env=env) as (url, _db, tokens):
            cases = _seed(url, tokens["agent"], run)
            traced = ["--memory-trace", str(memory_trace.resolve())] if memory_trace else []
            form = "--processes" if processes else "--one-process"
            runner = subprocess.Popen([*cli, "run", form, "--consumer", consumer, "--producer", producer, *traced], env=env,
                                      stdout=(logs / "run.log").open("wb"), stderr=subprocess.STDOUT)
            started_here.append(runner)
            _started(runner, logs / "run.log")  # the soak's clock starts with the services, not with Python's imports
            publisher = subprocess.Popen(
                [*cli[:2], "from caseledger.cli.bench.rebuild_bench import steady_publisher_main; "
                 "steady_publisher_main()", run, str(rate), str(int(rate * minutes * 60)), str(logs / "sent.json"),
                 producer, "returning"], env=env, stdout=(logs / "publisher.log").open("wb"), stderr=subprocess.STDOUT)
            started_here.append(publisher)
            watched = {"caseledger run": runner.pid, "caseledger serve": _child_running("serve")}
            reader = _Reader(url, tokens["agent"], cases, read_rate)
            say(f"soaking for {minutes:g} min: {rate}/s on the intake topic, {read_rate:g} reads/s over HTTP; "
                f"caseledger run {form}" + (" (one process per service)" if processes else " (one process)"))
            reader.start()
            started = time.monotonic()
            _soak(watched, memories, reader, runner, publisher, logs, errors, started=started, minutes=minutes,
                  sample_seconds=sample_seconds, say=say)
            reader.stop.set()
            reader.join(30)
            elapsed = time.monotonic() - started
            published, publish_rate = _published(publisher, logs / "sent.json", errors)
            outcomes = _Outcomes(settings, consumer)
            try:
                outcomes.read()
                reached = (outcomes.recorded - SEED_CASES - FIRST) / elapsed
                say(f"recorded {outcomes.recorded - SEED_CASES - FIRST:,} contacts during the soak; waiting for the rest")
                waited = time.monotonic()
                drained = outcomes.read(until=published + SEED_CASES + FIRST, wait_s=0 if errors else DRAIN_S)
                catch_up = time.monotonic() - waited
                stalled = not drained and catch_up < DRAIN_S and not errors
            finally:
                outcomes.close()
            stop_services([runner])
            if runner.returncode != 0 and not errors:
                errors.append(f"caseledger run did not stop cleanly (exit {runner.returncode}): "
                              f"{_tail(logs / 'run.log')}")
    finally:
        if reader is not None:
            reader.stop.set()
        stop_services([p for p in started_here if p.poll() is None])
        tmp.cleanup()
    recorded = outcomes.recorded - SEED_CASES - FIRST
    if outcomes.refused:
        errors.append(f"{outcomes.refused:,} contacts refused (IntakeRejected or MessageIdCollided): none should be")
    if stalled:
        errors.append(f"no contact recorded for {STALL_S:.0f} s with {published - recorded:,} still queued")
    sampled = list(memories.values())
    for memory in sampled:
        _judge(memory, warmup_minutes * 60)
        if memory.growth >= max_growth:
            backlog = published / (minutes * 60) - reached if published else 0.0
            errors.append(f"{memory.name} (pid {memory.pid}) grew {memory.growth:.1%} after the warm-up "
                          f"({memory.after_warmup_mb:,.0f} → {memory.final_mb:,.0f} MB)" + (
                              f", while the contacts queued grew by {backlog:,.0f}/s (the rate was not reached: "
                              "a backlog was judged, not only the services, docs/benchmarks.md)"
                              if backlog > 0.05 * rate else ""))
    if reader.failures and not reader.server_errors:
        errors.append(f"reads failed: {reader.failures}")
    latencies = reader.latencies or [float("nan")]
    return SoakResult(
        minutes=minutes, warmup_minutes=warmup_minutes, target_rate=rate, run_processes=processes, published=published,
        publish_rate=publish_rate, recorded=recorded, recorded_rate=reached, refused=outcomes.refused,
        catch_up_seconds=catch_up, reads=len(reader.latencies), read_failures=sum(reader.failures.values()),
        server_errors=reader.server_errors, read_p50_ms=statistics.median(latencies),
        read_p99_ms=percentile(latencies, 0.99), processes=sampled, errors=errors,
    )


def _soak(watched: dict[str, int], memories: dict[int, ProcessMemory], reader: _Reader,
          runner: subprocess.Popen[bytes], publisher: subprocess.Popen[bytes], logs: Path, errors: list[str], *,
          started: float, minutes: float, sample_seconds: float, say: Say) -> None:
    """Sample memory and watch for errors until the soak's time is up or an error stops it."""
    next_sample, next_say = started, started + 60
    while time.monotonic() - started < minutes * 60 and not errors:
        now = time.monotonic()
        if now >= next_sample:
            next_sample += sample_seconds
            _sample(watched, memories, now - started)
        if runner.poll() is not None:
            errors.append(f"caseledger run died (exit {runner.returncode}): {_tail(logs / 'run.log')}")
        if resident_mb(watched["caseledger serve"]) is None:
            errors.append("caseledger serve died")
        if publisher.poll() not in (None, 0):
            errors.append(f"the steady publisher died (exit {publisher.returncode}): {_tail(logs / 'publisher.log')}")
        if reader.server_errors:
            errors.append(f"the service answered 5xx: {reader.failures}")
        if now >= next_say:
            next_say += 60
            say(f"{(now - started) / 60:.0f} min: " + ", ".join(
                f"{m.name} {m.samples[-1][1]:,.0f} MB" for m in memories.values() if m.samples))
        time.sleep(max(0.0, min(0.5, next_sample - time.monotonic())))
    if not errors:  # the publisher sends its last contacts as the time runs out
        publisher_deadline = time.monotonic() + 30
        while publisher.poll() is None and time.monotonic() < publisher_deadline:
            time.sleep(0.2)


def _sample(watched: dict[str, int], memories: dict[int, ProcessMemory], at: float) -> None:
    for name, pid in watched.items():
        for k, member in enumerate(_tree(pid)):
            mb = resident_mb(member)
            if mb is None:
                continue
            memory = memories.get(member)
            if memory is None:
                memory = memories[member] = ProcessMemory(name if k == 0 else _child_name(name, member), member)
            memory.samples.append([round(at, 1), round(mb, 1)])


def _child_name(parent: str, pid: int) -> str:
    """``caseledger run: intake`` for a service's process of ``run --processes``, else ``… (child)``."""
    from caseledger.cli.service_plan import CHILD_MAIN

    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        arguments = []
    if CHILD_MAIN in arguments[:-1]:
        return f"{parent}: {arguments[arguments.index(CHILD_MAIN) + 1]}"
    return f"{parent} (child)"


def _published(publisher: subprocess.Popen[bytes], sent: Path, errors: list[str]) -> tuple[int, float]:
    """How many contacts the steady publisher sent, and at what rate (it is stopped if still sending)."""
    import json

    if publisher.poll() is None:
        errors.append("the steady publisher could not keep the rate: still sending when the soak ended")
        publisher.kill()
        publisher.wait()
        return 0, 0.0
    if not sent.exists():
        return 0, 0.0
    written = json.loads(sent.read_text())
    return len(written["sent"]), len(written["sent"]) / max(written["seconds"], 1e-9)


def _child_running(command: str) -> int:
    """The pid of this process's child running ``caseledger COMMAND`` (the service the bench started)."""
    for pid in _tree(os.getpid())[1:]:
        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if command.encode() in arguments:
            return pid
    raise RuntimeError(f"no child process runs caseledger {command}")


def _started(runner: subprocess.Popen[bytes], log: Path, wait_s: float = 120.0) -> None:
    """Wait until ``caseledger run`` says its services run."""
    deadline = time.monotonic() + wait_s
    while "running intake worker" not in (log.read_text(errors="replace") if log.exists() else ""):
        if runner.poll() is not None or time.monotonic() > deadline:
            runner.kill()
            raise RuntimeError(f"caseledger run did not start within {wait_s:.0f} s: {_tail(log)}")
        time.sleep(0.2)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-1500:] if log.exists() else "(no log)"

