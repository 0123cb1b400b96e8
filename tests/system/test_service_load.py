"""A short run of ``bench api``: concurrent mixed reads and writes against a real server, correctness only.

Latency and throughput are the benchmark's business (``caseledger bench api --clients 200 --seconds 15``);
here: no 5xx, and every write that got a 2xx is in the store exactly once.
"""

from __future__ import annotations

import pytest

from caseledger.cli.bench.service_bench import bench_api


def test_concurrent_clients_get_no_5xx_and_lose_or_double_no_write() -> None:
    report = bench_api(clients=24, seconds=6, seed_cases=8, backends=("sqlite",), workers=(1,), scenarios=("mix",),
                       ceiling=False, load_processes=1)
    result = report.find("mix")
    assert result.requests > 0 and result.server_errors == 0, result.statuses
    assert result.contacts_2xx > 0 and result.promises_2xx > 0, result.statuses
    assert result.contacts_2xx == result.contacts_recorded
    assert result.promises_2xx == result.promises_recorded
    assert result.lost_or_doubled == 0 and report.lost_or_doubled == 0


def test_bench_api_measures_the_bare_ceiling_in_the_same_run_and_the_ratio() -> None:
    report = bench_api(clients=8, seconds=2, seed_cases=3, backends=("sqlite",), workers=(1,), scenarios=("read",),
                       load_processes=2)
    bare, read = report.find("bare"), report.find("read")
    assert bare.requests > 0 and bare.server_errors == 0 and bare.statuses.keys() == {"200"}
    assert read.requests > 0 and read.statuses.keys() == {"200"}
    assert read.of_ceiling == pytest.approx(read.requests_per_s / bare.requests_per_s)
    assert any("bare ceiling" in measure for measure, _value in report.rows())
