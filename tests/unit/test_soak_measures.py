"""What ``bench soak`` measures and judges, without a server: memory growth, the processes it samples, its options."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from caseledger.cli.app import app
from caseledger.cli.bench.soak_bench import (
    GROWTH_LIMIT,
    ProcessMemory,
    _judge,
    _tree,
    judge_growth,
    resident_mb,
)


def test_growth_is_judged_after_the_warm_up_on_at_least_three_samples_at_each_end() -> None:
    memory = ProcessMemory("caseledger run", 1, samples=[[0, 50.0], [10, 90.0], [20, 100.0], [30, 101.0],
                                                          [40, 99.0], [50, 104.0], [60, 106.0], [70, 105.0]])
    _judge(memory, warmup_s=20)
    assert memory.after_warmup_mb == pytest.approx(100.0) and memory.final_mb == pytest.approx(105.0)
    assert memory.growth == pytest.approx(0.05) and memory.growth >= GROWTH_LIMIT  # the warm-up's 50 → 90 is not judged


def _series(minutes: float, mb_at: object, every_s: float = 10.0) -> list[list[float]]:
    return [[k * every_s, float(mb_at(k * every_s))] for k in range(int(minutes * 60 / every_s) + 1)]  # type: ignore[operator]


def test_a_flat_process_with_one_spike_at_the_end_passes() -> None:
    # The lead's 20-minute soak: flat from minute 3, but one 109 MB sample of a 103-105 MB publisher among the
    # last three failed the mean of three samples (+6.4 % here). The median of the last minute is not moved by it.
    samples = _series(20, lambda at: 104.0 + (at // 10) % 2)
    samples[-2][1] = 125.0  # one sample, 20 % over the rest
    after, end = judge_growth(samples, warmup_s=120) or (0, 0)
    assert end / after - 1 < GROWTH_LIMIT / 5
    head, tail = [mb for at, mb in samples if at >= 120][:3], [mb for _at, mb in samples][-3:]
    assert sum(tail) / sum(head) - 1 >= GROWTH_LIMIT  # what the earlier rule said of it


@pytest.mark.parametrize("per_minute", [0.3, 1.0])
def test_a_slow_leak_fails_in_full(per_minute: float) -> None:
    # 0.3 MB a minute on 100 MB: 5.4 % over the 18 minutes judged, spread so thin no sample stands out.
    samples = _series(20, lambda at: 100.0 + per_minute * at / 60 + ((at // 10) % 3 - 1) * 2.0)
    memory = ProcessMemory("caseledger run: intake", 1, samples=samples)
    _judge(memory, warmup_s=120)
    assert memory.growth >= GROWTH_LIMIT
    assert memory.growth == pytest.approx(per_minute * 18 / (100 + per_minute * 2.5), rel=0.1)


def test_a_spike_held_for_the_whole_last_minute_is_judged() -> None:
    # A rise at the very end is not explained away: when it fills the last minute it is what the process holds.
    samples = _series(10, lambda at: 100.0 if at < 540 else 110.0)
    assert judge_growth(samples, warmup_s=120) == (100.0, 110.0)


def test_a_short_soak_judges_ends_that_never_overlap() -> None:
    samples = _series(0.3, lambda at: 50.0 + at, every_s=2.0)  # the system test's soak: 18 s, 2-s samples
    after, end = judge_growth(samples, warmup_s=6) or (0, 0)
    assert (after, end) == (58.0, 66.0)  # 6, 8, 10 s against 14, 16, 18 s


@pytest.mark.parametrize("psutil_installed", [True, False])
def test_every_descendant_of_a_process_is_sampled(psutil_installed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not psutil_installed:
        monkeypatch.setitem(sys.modules, "psutil", None)  # the /proc path
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; "
                               "subprocess.run([sys.executable, '-c', 'import time; time.sleep(30)'])"])
    try:
        for _ in range(100):
            found = _tree(parent.pid)
            if len(found) == 2:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert found[0] == parent.pid and len(found) == 2
        assert all((resident_mb(pid) or 0) > 1 for pid in found)
    finally:
        for pid in reversed(_tree(parent.pid)):
            os.kill(pid, 9)
        parent.wait()
    assert resident_mb(parent.pid) is None  # a process gone has no memory: the soak reports it died


def test_a_warm_up_as_long_as_the_soak_is_refused_before_anything_starts() -> None:
    result = CliRunner().invoke(app, ["bench", "soak", "--kafka", "127.0.0.1:1", "--minutes", "1",
                                      "--warmup-minutes", "1"])
    assert result.exit_code == 4 and "--warmup-minutes 1 leaves nothing to judge" in result.stderr
