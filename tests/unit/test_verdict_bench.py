"""``bench intake --verdicts`` waits for verdicts while its services run, and stops with the cause when one stops
(before: it waited its whole timeout, 120 s, then said "no verdict within 120 s")."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest

from caseledger.cli.bench.verdict_bench import await_verdicts
from caseledger.ledger.intake.verdicts import intake_id


@dataclass
class Receipt:
    topic: str
    partition: int
    offset: int


class Waiter:
    def __init__(self, found: dict[UUID, Any]) -> None:
        self.found = found

    def wait(self, ids: list[UUID], timeout_s: float) -> dict[UUID, Any]:
        time.sleep(0.01)
        return {i: self.found[i] for i in ids if i in self.found}


class Client:
    def __init__(self, found: dict[UUID, Any]) -> None:
        self.verdicts = Waiter(found)


class Service:
    def __init__(self, returncode: int | None) -> None:
        self.returncode = returncode

    def poll(self) -> int | None:
        return self.returncode


RECEIPTS = [Receipt("t", 0, n) for n in range(3)]


def test_a_stopped_service_ends_the_wait_at_once_with_its_log() -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"(?s)stopped \(exit code 2\).*give the ledger a key"):
        await_verdicts(Client({}), RECEIPTS, [Service(None), Service(2)], timeout=120,
                       tails=lambda: "--- intake-0.log\nerror: give the ledger a key-encryption key")
    assert time.monotonic() - started < 5


def test_the_verdicts_come_in_order_and_none_in_time_is_said() -> None:
    found = {intake_id("t", 0, n): f"v{n}" for n in range(3)}
    assert await_verdicts(Client(found), RECEIPTS[::-1], [Service(None)], timeout=1, tails=str) == ["v2", "v1", "v0"]
    with pytest.raises(RuntimeError, match=r"no verdict within 0\.2 s for 3 of 3"):
        await_verdicts(Client({}), RECEIPTS, [Service(None)], timeout=0.2, tails=str)
