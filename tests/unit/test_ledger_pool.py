"""A request's ledger: taken from a bounded pool when the request first asks, given back when its route returns.

Before, a worker thread kept its ledger until the thread ended (a finalizer on garbage collection gave it
back): a thread that lived on kept a ledger it no longer used.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from caseledger.ledger.access.principals import PrincipalRegistry
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.errors import BackendError
from caseledger.ledger.service.api import ServiceState
from caseledger.ledger.service.asgi import create_app
from caseledger.ledger.service.ledger_pool import LedgerPool
from caseledger.ledger.settings import LedgerSettings


@pytest.fixture
def settings(tmp_path: Path) -> LedgerSettings:
    return LedgerSettings.resolve(database=str(tmp_path / "l.sqlite"))


def test_a_request_gives_its_ledger_back_when_its_route_returns_though_its_thread_lives_on(
    settings: LedgerSettings,
) -> None:
    setup = CaseLedger(settings)
    token = PrincipalRegistry(setup.principal_store).add("agent-1", "agent").token
    setup.close()
    state = ServiceState(settings, threads=2)
    app = create_app(state)
    served: list[tuple[threading.Thread, CaseLedger]] = []

    @app.get("/probe")
    def probe() -> dict[str, Any]:
        served.append((threading.current_thread(), state.ledger()))
        assert state.ledger() is served[-1][1]  # one ledger for the whole request
        assert state.pool.free == 0
        return {}

    with TestClient(app) as client:
        for _ in range(4):
            assert client.get("/probe").status_code == 200
            assert state.pool.free == state.pool.built == 1  # back in the pool, not kept by the thread
        threads = {thread for thread, _ in served}
        assert threads and all(thread.is_alive() for thread in threads)  # the worker threads live on
        assert len({id(ledger) for _, ledger in served}) == 1  # the next request took the same ledger
        answer = client.get("/v1/customers/cus-nobody/cases",
                            headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code in (200, 404), answer.text
        assert state.pool.free == state.pool.built == 1


def test_the_pool_never_grows_beyond_its_bound_when_more_requests_want_a_ledger(settings: LedgerSettings) -> None:
    state = ServiceState(settings, threads=2)
    app = create_app(state)
    inside = [0]
    most = [0]
    lock = threading.Lock()

    @app.get("/slow")
    async def slow() -> dict[str, int]:
        def work() -> int:  # not on the route threads the limiter counts: only the pool bounds these
            ledger = state.ledger()
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.1)
            with lock:
                inside[0] -= 1
            return id(ledger)

        return {"ledger": await asyncio.to_thread(work)}

    with TestClient(app) as client:
        with ThreadPoolExecutor(6) as requests:
            answers = list(requests.map(lambda _: client.get("/slow"), range(6)))
        assert [a.status_code for a in answers] == [200] * 6
        assert state.pool.built == 2 and most[0] == 2 and len({a.json()["ledger"] for a in answers}) == 2
        assert state.pool.free == 2


def test_a_ledger_is_lent_to_one_user_at_a_time_and_the_next_waits_for_it() -> None:
    made: list[object] = []

    def build() -> Any:
        made.append(object())
        return made[-1]

    pool = LedgerPool(build, size=2, wait_s=0.05)
    first, second = pool.take(), pool.take()
    assert first is not second and pool.built == 2
    with pytest.raises(BackendError, match="every one of the server's 2 ledgers stayed busy"):
        pool.take()
    threading.Timer(0.02, pool.give_back, args=(second,)).start()
    pool.wait_s = 5
    assert pool.take() is second and pool.built == 2
    pool.give_back(first)
    with pool.lease() as lent:
        assert lent is first and pool.free == 0
    assert pool.free == 1 and len(made) == 2


def test_outside_a_request_the_service_uses_its_own_ledger_not_the_pools(settings: LedgerSettings) -> None:
    state = ServiceState(settings)
    try:
        assert state.ledger() is state.ledger() is state.own_ledger()
        assert state.pool.built == 0
    finally:
        state.close()
