"""Intake workers that fail over (issue 29): kill -9 one of three under load, the others take its partitions.

Before, workers split the intake topic by a static ``--partitions`` list: a dead worker's partitions
stopped until someone restarted it. Now they share it through Kafka's consumer group: once the dead
worker's session times out (6 s here), its partitions move to the two others, which read them from
the positions the ledger recorded. Every intake offset still ends with exactly one outcome, and
the lag goes back to zero. Against the real broker and PostgreSQL, with the default client
(confluent-kafka, cooperative-sticky) and kafka-python (eager rebalancing).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.audit.intake_outcomes import INTAKE_OUTCOMES
from caseledger.ledger.domain.directory import IntakeSource
from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
from caseledger.ledger.intake.worker import tracking_name
from caseledger.ledger.settings import KafkaSettings
from tests.support.environment import ledger_settings
from tests.support.kafka_topics import fresh_topics
from tests.system.test_kafka_faults import Service, contacts, end_offsets

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SESSION_TIMEOUT_S = 6
TOTAL = 900  # contacts, sent over ~9 s


def outcomes_per_offset(ledger: CaseLedger, settings: KafkaSettings, ends: dict[int, int]) -> Counter[tuple[int, int]]:
    sources = {IntakeSource(settings.intake_topic, p, o).event_id: (p, o) for p, end in ends.items() for o in range(end)}
    counted: Counter[tuple[int, int]] = Counter()
    for notification in ledger.recorder.select_notifications(start=1, limit=10_000_000):
        event = ledger.mapper.to_domain_event(notification)
        if type(event).__name__ in INTAKE_OUTCOMES and event.causation_id in sources:
            counted[sources[event.causation_id]] += 1
    return counted


def assigned_partitions(log: Path) -> set[int]:
    """The partitions a worker holds by its log: what it was assigned minus what it gave up, in order."""
    held: set[int] = set()
    for verb, listed in re.findall(r"intake worker (assigned|gave up) \S+ partitions \[([\d, ]*)\]", log.read_text()):
        numbers = {int(n) for n in listed.split(",") if n.strip()}
        held = held | numbers if verb == "assigned" else held - numbers
    return held


@pytest.mark.parametrize("consumer", ["confluent", "kafka-python"])
def test_a_killed_worker_s_partitions_move_to_the_others(
    kafka_bootstrap: str, postgres: Any, tmp_path: Path, consumer: str
) -> None:
    settings = fresh_topics(kafka_bootstrap, partitions=6)
    database = postgres.new_database()
    CaseLedger(ledger_settings(database=database)).close()  # tables first: three workers would race to create them
    env_topics = {"CASELEDGER_INTAKE_TOPIC": settings.intake_topic, "CASELEDGER_EVENTS_TOPIC": settings.events_topic}
    os.environ.update(env_topics)
    workers = [
        Service(["--database", database, "intake", "run", "--kafka", kafka_bootstrap, "--batch-size", "40",
                 "--session-timeout-ms", str(SESSION_TIMEOUT_S * 1000), "--consumer", consumer], tmp_path / f"w{n}.log")
        for n in range(3)
    ]
    try:
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 60
        while not all(assigned_partitions(w.log) for w in workers):  # the group has given each worker a share
            assert time.monotonic() < deadline, "\n".join(w.log.read_text()[-1500:] for w in workers)
            time.sleep(0.2)

        def produce() -> None:
            with KafkaIntakeClient(settings, adapter="failover-test") as client:
                for chunk in range(0, TOTAL, 100):
                    client.submit_many(contacts(100, chunk) + contacts(2, chunk))  # 2 resubmissions a chunk
                    time.sleep(1)

        producer = threading.Thread(target=produce)
        producer.start()
        time.sleep(3)  # under load
        victim = workers[0]
        orphaned = assigned_partitions(victim.log)
        victim.kill()
        killed_at = time.monotonic()
        # Its partitions move to the others within the session timeout (and a rebalance's round trips).
        while not orphaned <= assigned_partitions(workers[1].log) | assigned_partitions(workers[2].log):
            assert time.monotonic() - killed_at < SESSION_TIMEOUT_S + 20, (
                orphaned, [w.log.read_text()[-1500:] for w in workers[1:]])
            time.sleep(0.2)
        moved_after = time.monotonic() - killed_at
        producer.join()

        ledger = CaseLedger(ledger_settings(database=database))
        try:
            ends = end_offsets(settings, settings.intake_topic)
            assert sum(ends.values()) == TOTAL + 2 * (TOTAL // 100)

            def lag() -> int:
                return sum(end - (ledger.recorder.max_tracking_id(tracking_name(settings.intake_topic, p)) or 0)
                           for p, end in ends.items())

            while lag():  # the lag recovers: every partition applied to the topic's end
                assert time.monotonic() - killed_at < 120, f"lag {lag()} after the kill"
                assert all(w.alive() for w in workers[1:]), [w.log.read_text()[-2000:] for w in workers[1:]]
                time.sleep(0.5)
            counted = outcomes_per_offset(ledger, settings, ends)
            missing = [(p, o) for p, end in ends.items() for o in range(end) if counted[(p, o)] == 0]
            doubled = [(p, o) for p, end in ends.items() for o in range(end) if counted[(p, o)] > 1]
            assert (missing, doubled) == ([], []), f"no outcome: {missing[:20]}; two or more: {doubled[:20]}"
            print(f"{consumer}: partitions {sorted(orphaned)} moved {moved_after:.1f} s after the kill")
        finally:
            ledger.close()
        assert all(w.terminate() == 0 for w in workers[1:])  # a clean stop leaves the group
    finally:
        for worker in workers:
            if worker.alive():
                worker.kill()
        for key in env_topics:
            os.environ.pop(key, None)
