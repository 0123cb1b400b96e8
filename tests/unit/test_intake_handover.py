"""Intake workers that both believe they own a partition (issue 29): an offset still gets exactly one outcome.

With a consumer group a partition moves between workers: on a rebalance, or when the group takes a
slow worker for dead while it still holds a batch. Before, each batch's tracking record only had to
move forward: a worker whose position was stale applied offsets another worker had already applied
(its batch ended further on), so they got two outcomes. Now a batch is saved only if the partition's
tracking record still holds the position the batch started from (``expect_tracking``).

No broker here: the workers are handed the records a fetch would give them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.audit.intake_outcomes import INTAKE_OUTCOMES
from caseledger.ledger.avro.codec import AvroEventCodec
from caseledger.ledger.domain.catalog import name_of_topic
from caseledger.ledger.domain.directory import IntakeSource
from caseledger.ledger.domain.values import ContactDraft, Identity
from caseledger.ledger.intake.records import IntakeCodec
from caseledger.ledger.intake.worker import IntakeRecord, KafkaIntakeWorker, tracking_name
from caseledger.ledger.settings import KafkaSettings
from tests.support.environment import ledger_settings
from tests.support.examples import examples

TOPIC = "caseledger.intake"
KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:9", intake_topic=TOPIC)  # never reached
CODEC = IntakeCodec()
OFFSETS = 8  # per partition


def intake_record(partition: int, offset: int) -> IntakeRecord:
    """Offset ``offset`` of ``partition``: a contact (odd offsets resubmit the one before: a resubmission's outcome)."""
    n = offset // 2
    draft = ContactDraft(channel="email", channel_message_id=f"m-{partition}-{n}",
                         identity=Identity.parse(f"email:c{partition}-{n}@example.com"), items=("Where is my card?",))
    return IntakeRecord(TOPIC, partition, offset, CODEC.encode(draft, adapter="unit"))


def outcomes(ledger: CaseLedger, partitions: int) -> Counter[tuple[int, int]]:
    """How many outcome events each (partition, offset) has in the store."""
    sources = {IntakeSource(TOPIC, p, o).event_id: (p, o) for p in range(partitions) for o in range(OFFSETS)}
    codec, counted = AvroEventCodec(), Counter[tuple[int, int]]()
    for notification in ledger.recorder.select_notifications(start=1, limit=1_000_000):
        name = name_of_topic(notification.topic)
        if name in INTAKE_OUTCOMES:
            causation = codec.decode(name, bytes(notification.state)).causation_id
            if causation in sources:
                counted[sources[causation]] += 1
    return counted


@pytest.fixture
def ledgers(tmp_path: Path) -> Iterator[tuple[str, list[CaseLedger]]]:
    database = str(tmp_path / "handover.sqlite")
    opened: list[CaseLedger] = []
    yield database, opened
    for ledger in opened:
        ledger.close()


def worker(database: str, opened: list[CaseLedger]) -> KafkaIntakeWorker:
    """A worker of its own process, as far as the store can tell: its own ledger, its own cache."""
    ledger = CaseLedger(ledger_settings(database=database))
    opened.append(ledger)
    return KafkaIntakeWorker(ledger, KAFKA, aggregate_cache=0, require_signatures=False)


def test_a_worker_with_a_stale_position_does_not_apply_what_another_applied(
    ledgers: tuple[str, list[CaseLedger]],
) -> None:
    """Before: the old owner's batch 0–7 committed after the new owner's 0–3 (its end is further on), so
    offsets 0–3 had two outcomes each."""
    database, opened = ledgers
    old, new = worker(database, opened), worker(database, opened)
    records = [intake_record(0, offset) for offset in range(OFFSETS)]
    assert old.next_offset(0) == 0
    old._applied[0] = 0  # the old owner read its position before the partition moved …
    new.apply_batch(0, records[:4])  # … the new owner applied the first half meanwhile …
    old.apply_batch(0, records)  # … and the old owner's batch, from its stale position, comes in
    counted = outcomes(old.ledger, 1)
    assert all(counted[(0, o)] == 1 for o in range(OFFSETS)), sorted(counted.items())
    assert old.ledger.recorder.max_tracking_id(tracking_name(TOPIC, 0)) == OFFSETS
    assert old.stats.conflicts == 1  # refused whole, then applied record by record past the others'


# A step: a worker (0 or 1) is handed the next ``count`` records of a partition from where it believes the
# partition stands (its own memory, possibly stale), or is killed and replaced by a fresh process.
step = st.one_of(
    st.tuples(st.just("fetch"), st.integers(0, 1), st.integers(0, 1), st.integers(1, 5)),
    st.tuples(st.just("kill"), st.integers(0, 1), st.just(0), st.just(0)),
)


@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=3, max_size=8))
@example(steps=[("fetch", 0, 0, 1), ("fetch", 1, 0, 1), ("fetch", 0, 0, 3)])  # before: offset 1 had two outcomes
def test_any_handover_keeps_one_outcome_per_offset(tmp_path_factory: pytest.TempPathFactory,
                                                    steps: list[tuple[str, int, int, int]]) -> None:
    """Whatever the order in which workers get partitions, lose them or die, each offset ends with exactly one
    outcome once a last worker drains the topic (no gap, no double)."""
    database = str(tmp_path_factory.mktemp("handover") / "ledger.sqlite")
    opened: list[CaseLedger] = []
    try:
        workers = [worker(database, opened) for _ in range(2)]
        believed: list[dict[int, int]] = [{}, {}]  # what each worker last read or wrote per partition
        for action, w, partition, count in steps:
            if action == "kill":
                workers[w], believed[w] = worker(database, opened), {}
                continue
            start = believed[w].get(partition)
            if start is None:
                start = believed[w][partition] = workers[w].next_offset(partition)
            batch = [intake_record(partition, o) for o in range(start, min(start + count, OFFSETS))]
            if batch:
                workers[w].apply_batch(partition, batch)
                believed[w][partition] = batch[-1].offset + 1
        last = worker(database, opened)
        for partition in range(2):
            last.apply_batch(partition, [intake_record(partition, o) for o in range(OFFSETS)])
        counted = outcomes(last.ledger, 2)
        assert [(p, o) for p in range(2) for o in range(OFFSETS) if counted[(p, o)] != 1] == [], counted
    finally:
        for ledger in opened:
            ledger.close()
