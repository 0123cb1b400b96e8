"""A PostgreSQL connection lost while an intake batch is in flight (issue 29): retried, never doubled.

The intake worker's batch is one transaction: the tracking check, the data keys, the events, the
partition's new position. Here another connection terminates the batch's backend
(``pg_terminate_backend``) in the middle of it — after the check and before the events, or after
the events and before the commit — on every other batch. The recorder retries on a new connection;
the ledger must end exactly as a run without faults: each intake offset with one outcome, and the
same events for each offset (none doubled, none lost).

No broker: the worker is handed the records a fetch would give it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.audit.intake_outcomes import INTAKE_OUTCOMES
from caseledger.ledger.domain.values import ContactDraft, Identity
from caseledger.ledger.intake.records import IntakeCodec
from caseledger.ledger.intake.worker import IntakeRecord, KafkaIntakeWorker, tracking_name
from caseledger.ledger.settings import KafkaSettings
from caseledger.ledger.store.postgres_recorder import PostgresLedgerRecorder
from tests.support.environment import ledger_settings

TOPIC = "caseledger.intake"
KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:9", intake_topic=TOPIC)  # never reached
CODEC = IntakeCodec()
PARTITIONS, OFFSETS, BATCH = 2, 30, 10


def intake_record(partition: int, offset: int) -> IntakeRecord:
    """A contact; every third one resubmits the one before (its outcome: a traced resubmission)."""
    n = offset - 1 if offset % 3 == 2 else offset
    draft = ContactDraft(channel="email", channel_message_id=f"m-{partition}-{n}",
                         identity=Identity.parse(f"email:c{partition}-{n % 7}@example.com"), items=(f"question {n}",))
    return IntakeRecord(TOPIC, partition, offset, CODEC.encode(draft, adapter="pg-faults"))


def events_per_offset(ledger: CaseLedger) -> Counter[tuple[str, str]]:
    """(causation, event type) → how many: what each intake record led to."""
    counted: Counter[tuple[str, str]] = Counter()
    for notification in ledger.recorder.select_notifications(start=1, limit=1_000_000):
        event = ledger.mapper.to_domain_event(notification)
        if event.causation_id is not None:
            counted[(str(event.causation_id), type(event).__name__)] += 1
    return counted


def run_intake(database: str) -> CaseLedger:
    """Every record applied in batches of BATCH per partition; returns the ledger (open)."""
    ledger = CaseLedger(ledger_settings(database=database))
    worker = KafkaIntakeWorker(ledger, KAFKA, aggregate_cache=0, require_signatures=False)
    for partition in range(PARTITIONS):
        for start in range(0, OFFSETS, BATCH):
            worker.apply_batch(partition, [intake_record(partition, o) for o in range(start, start + BATCH)])
    return ledger


def terminating(database: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` (a step of the recorder's insert transaction), after which, on every other call, another
    connection terminates the transaction's backend."""
    calls = Counter[str]()

    def step(self: PostgresLedgerRecorder, curs: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, curs, *args, **kwargs)
        calls["all"] += 1
        if calls["all"] % 2:
            with psycopg.connect(database, autocommit=True) as admin:
                killed = admin.execute("SELECT pg_terminate_backend(%s)", (curs.connection.info.backend_pid,)).fetchone()
            assert killed == (True,)
            calls["terminated"] += 1
        return result

    step.calls = calls  # type: ignore[attr-defined]
    return step


@pytest.mark.parametrize("where", ["_check_tracking", "_insert_stored_events"],
                         ids=["after-the-check", "after-the-events"])
def test_a_batch_whose_connection_is_terminated_is_retried_never_doubled(
    postgres: Any, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    control = run_intake(postgres.new_database())
    try:
        expected = events_per_offset(control)
    finally:
        control.close()

    database = postgres.new_database()
    step = terminating(database, getattr(PostgresLedgerRecorder, where))
    monkeypatch.setattr(PostgresLedgerRecorder, where, step)
    ledger = run_intake(database)
    try:
        assert step.calls["terminated"] >= PARTITIONS * OFFSETS // BATCH // 2  # every other batch lost its connection
        got = events_per_offset(ledger)
        assert got == expected  # the same events for every intake record: nothing doubled, nothing lost
        outcomes = Counter(causation for (causation, name), n in got.items() if name in INTAKE_OUTCOMES for _ in range(n))
        assert len(outcomes) == PARTITIONS * OFFSETS and set(outcomes.values()) == {1}
        assert [ledger.recorder.max_tracking_id(tracking_name(TOPIC, p)) for p in range(PARTITIONS)] == [OFFSETS] * 2
    finally:
        ledger.close()
