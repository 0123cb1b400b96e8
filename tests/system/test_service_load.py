"""A short run of ``bench api``: concurrent mixed reads and writes against a real server, correctness only.

Latency and throughput are the benchmark's business (``caseledger bench api --clients 200 --seconds 15``);
here: no 5xx, and every write that got a 2xx is in the store exactly once.
"""

from __future__ import annotations

from caseledger.ledger.bench.service import bench_api


def test_concurrent_clients_get_no_5xx_and_lose_or_double_no_write() -> None:
    report = bench_api(clients=24, seconds=6, seed_cases=8, backends=("sqlite",), workers=(1,), scenarios=("mix",),
                       ceiling=False, load_processes=1)
    result = report.find("mix")
    assert result.requests > 0 and result.server_errors == 0, result.statuses
    assert result.contacts_2xx > 0 and result.promises_2xx > 0, result.statuses
    assert result.contacts_2xx == result.contacts_recorded
    assert result.promises_2xx == result.promises_recorded
    assert result.lost_or_doubled == 0 and report.lost_or_doubled == 0
