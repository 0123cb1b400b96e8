"""What ``bench soak`` measures and judges, without a server: memory growth, the processes it samples, its options."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from caseledger.cli.app import app
from caseledger.cli.bench.soak_bench import GROWTH_LIMIT, ProcessMemory, _judge, _tree, resident_mb


def test_growth_is_judged_after_the_warm_up_on_three_samples_at_each_end() -> None:
    memory = ProcessMemory("caseledger run", 1, samples=[[0, 50.0], [10, 90.0], [20, 100.0], [30, 101.0],
                                                          [40, 99.0], [50, 104.0], [60, 106.0], [70, 105.0]])
    _judge(memory, warmup_s=20)
    assert memory.after_warmup_mb == pytest.approx(100.0) and memory.final_mb == pytest.approx(105.0)
    assert memory.growth == pytest.approx(0.05) and memory.growth >= GROWTH_LIMIT  # the warm-up's 50 → 90 is not judged


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
