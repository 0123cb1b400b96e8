"""``bench cli``: how long the command line takes to answer, process start included, against ``python -c pass``.

Measured in one run, interleaved (one of each in turn, so a busy machine slows them alike): the
interpreter's own start (``python -c pass``, the baseline), ``caseledger --help``, and
``caseledger case show REF`` on a small SQLite ledger generated first (its case state caught up by a
first, uncounted run: what an agent sees looking at a case again). Each is a fresh process, as a
shell runs it; wall time and the CPU time of the process are taken, their minimum and median kept.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

Progress = Callable[[str, int, int], None]

#: The issue's targets on an idle machine, process start included (milliseconds).
TARGETS_MS = {"caseledger --help": 250.0, "caseledger case show REF": 400.0}
BASELINE = "python -c pass"


@dataclass
class Timing:
    command: str
    runs: int
    min_ms: float
    median_ms: float
    cpu_median_ms: float

    def ratio(self, baseline: Timing) -> float:
        return self.median_ms / baseline.median_ms


@dataclass
class CliBenchResult:
    timings: list[Timing]
    contacts: int
    load_average: float

    @property
    def baseline(self) -> Timing:
        return self.timings[0]

    def rows(self) -> list[tuple[str, str]]:
        rows = [("load average (1 min) at the start", f"{self.load_average:.2f}"),
                ("ledger", f"SQLite, {self.contacts} contacts")]
        for t in self.timings:
            rows.append((t.command, f"min {t.min_ms:.0f} ms, median {t.median_ms:.0f} ms, "
                                    f"CPU median {t.cpu_median_ms:.0f} ms ({t.runs} runs)"))
        for t in self.timings[1:]:
            target = TARGETS_MS.get(t.command)
            rows.append((f"{t.command} ÷ {BASELINE}", f"{t.ratio(self.baseline):.1f}× (median)"
                         + (f"; target ≤ {target:.0f} ms on an idle machine: median "
                            f"{'within' if t.median_ms <= target else 'OVER'}" if target else "")))
        return rows


def caseledger_command() -> list[str]:
    """The installed ``caseledger`` script beside this interpreter, else the module run by it."""
    script = Path(sys.executable).with_name("caseledger")
    return [str(script)] if script.exists() else [sys.executable, "-m", "caseledger.cli.app"]


def generate_ledger(database: str, contacts: int, env: dict[str, str]) -> str:
    """A small ledger of ``contacts`` contacts (one case each), under the settings ``env`` gives (the measured
    commands'); the reference of the last case."""
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.domain.values import Actor, Channel, ContactDraft, Identity
    from caseledger.ledger.settings import LedgerSettings, Settings

    ledger = CaseLedger(LedgerSettings.resolve(database=database, settings=Settings.from_environ(env)))
    try:
        reference = ""
        for i in range(contacts):
            identity = Identity(kind="email", value=f"bench-{i}@example.com")
            draft = ContactDraft(channel=Channel.EMAIL, channel_message_id=f"bench-cli-{i}", identity=identity,
                                 items=("Where is my refund?", "Can I pay by card?"), subject="Refund",
                                 body="I returned the parcel two weeks ago.")
            reference = ledger.record_contact(draft, actor=Actor.parse("agent:bench")).reference
        return reference
    finally:
        ledger.close()


def _timed(command: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``command`` (its children's CPU included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_cli(*, runs: int = 20, contacts: int = 20, progress: Progress | None = None) -> CliBenchResult:
    """Time ``python -c pass``, ``caseledger --help`` and ``caseledger case show REF``, ``runs`` times each."""
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="caseledger-bench-cli-") as folder:
        database = str(Path(folder) / "cli.sqlite")
        # The measured commands read no CASELEDGER_* of the caller's environment: the ledger's key is its file.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CASELEDGER_")}
        env["COLUMNS"] = "100"
        if progress:
            progress("generating the ledger", 0, 1)
        reference = generate_ledger(database, contacts, env)
        cli = caseledger_command()
        commands = {BASELINE: [sys.executable, "-c", "pass"],
                    "caseledger --help": [*cli, "--help"],
                    "caseledger case show REF": [*cli, "--database", database, "case", "show", reference]}
        for command in commands.values():  # warm: bytecode compiled, files cached, the case state caught up
            _timed(command, env)
        walls: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        for run in range(runs):
            for name, command in commands.items():
                wall, cpu = _timed(command, env)
                walls[name].append(wall * 1000)
                cpus[name].append(cpu * 1000)
            if progress:
                progress("measuring", run + 1, runs)
    timings = [Timing(name, runs, min(walls[name]), statistics.median(walls[name]), statistics.median(cpus[name]))
               for name in commands]
    return CliBenchResult(timings=timings, contacts=contacts, load_average=load)
