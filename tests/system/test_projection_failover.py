"""Projection runners that fail over (issue 29): kill -9 one of three following the events topic under load.

Before, one runner read every partition (or a rebuild's workers a static share each): a dead runner's
partitions stopped. Now runners of the same projections share the topic through Kafka's consumer
group: once the dead runner's session times out (6 s here), its partitions move to the two others,
which read them from the positions the views recorded. The views then end identical to what a
single runner builds from the same topic. Against the real broker, views on PostgreSQL.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import ContactDraft, Identity
from caseledger.ledger.kafka.publisher import KafkaEventPublisher
from caseledger.projections import open_views, read_status
from caseledger.projections.registry import load_projections
from tests.support.environment import ledger_settings
from tests.support.kafka_topics import fresh_topics
from tests.system.test_kafka_faults import Service, end_offsets

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SESSION_TIMEOUT_S = 6


def held(log: Path) -> set[int]:
    """The partitions a runner holds by its log: assigned minus given up, in order."""
    partitions: set[int] = set()
    for verb, listed in re.findall(r"projections case_state (assigned|gave up) partitions \[([\d, ]*)\]", log.read_text()):
        numbers = {int(n) for n in listed.split(",") if n.strip()}
        partitions = partitions | numbers if verb == "assigned" else partitions - numbers
    return partitions


def table(views_url: str) -> list[dict[str, Any]]:
    (projection,) = load_projections(["case_state"])
    with open_views(views_url) as views:
        return sorted((dict(row) for row in views.select(projection.tables[0])), key=repr)


@pytest.mark.parametrize("consumer", ["confluent", "kafka-python"])
def test_a_killed_runner_s_partitions_move_and_the_views_match_one_runner(
    kafka_bootstrap: str, postgres: Any, tmp_path: Path, consumer: str
) -> None:
    settings = fresh_topics(kafka_bootstrap, partitions=6)
    database = str(tmp_path / "ledger.sqlite")
    shared_views, single_views = postgres.new_database(), postgres.new_database()
    env = {"CASELEDGER_EVENTS_TOPIC": settings.events_topic, "CASELEDGER_INTAKE_TOPIC": settings.intake_topic,
           "CASELEDGER_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_S * 1000), "CASELEDGER_KAFKA_CONSUMER": consumer}
    os.environ.update(env)
    run = ["--database", database, "projections", "run", "case_state", "--source", "kafka", "--kafka", kafka_bootstrap,
           "--batch-size", "20"]
    runners = [Service([*run, "--views", shared_views], tmp_path / f"r{n}.log") for n in range(3)]
    ledger = CaseLedger(ledger_settings(database=database))
    stop_publishing = threading.Event()
    publisher = threading.Thread(target=KafkaEventPublisher(ledger, settings, batch_size=100).run, args=(stop_publishing,))
    try:
        ledger.record_contact(ContactDraft(channel="chat", channel_message_id="first",
                                           identity=Identity.parse("email:first@example.com"), items=("hello?",)))
        publisher.start()
        for runner in runners:
            runner.start()
        deadline = time.monotonic() + 60
        while not all(held(r.log) for r in runners):  # each runner holds a share
            assert time.monotonic() < deadline, "\n".join(r.log.read_text()[-1500:] for r in runners)
            time.sleep(0.2)
        killed_at = 0.0
        for second in range(10):  # under load: 60 contacts a second, ~6 events each, over six partitions
            with ledger.unit_of_work():
                for i in range(60):
                    n = second * 60 + i
                    ledger.record_contact(ContactDraft(
                        channel="chat", channel_message_id=f"k{n}", identity=Identity.parse(f"email:c{n % 90}@example.com"),
                        items=(f"question {n}",)))
            if second == 2:
                victim = runners[0]
                orphaned = held(victim.log)
                victim.kill()
                killed_at = time.monotonic()
            time.sleep(0.5)
        while not orphaned <= held(runners[1].log) | held(runners[2].log):
            assert time.monotonic() - killed_at < SESSION_TIMEOUT_S + 20, [r.log.read_text()[-1500:] for r in runners[1:]]
            time.sleep(0.2)
        moved_after = time.monotonic() - killed_at
        top = ledger.recorder.max_notification_id()
        deadline = time.monotonic() + 60
        ends: dict[int, int] = {}
        while True:
            ends = end_offsets(settings, settings.events_topic)
            with open_views(shared_views) as views:
                status = read_status(views, "case_state")
            positions = status[0].positions if status else {}
            published = sum(ends.values()) >= (top or 0)  # one record per event
            if published and all(positions.get(p, 0) >= end for p, end in ends.items()):
                break  # the lag recovered: every partition applied to the topic's end
            assert time.monotonic() < deadline, (positions, ends, [r.log.read_text()[-1500:] for r in runners[1:]])
            assert all(r.alive() for r in runners[1:]), [r.log.read_text()[-2000:] for r in runners[1:]]
            time.sleep(0.5)
        assert all(r.terminate() == 0 for r in runners[1:])
        single = subprocess.run([sys.executable, "-c", "from caseledger.cli.app import main; main()", *run, "--views",
                                 single_views, "--once"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                capture_output=True, text=True, timeout=120)
        assert single.returncode == 0, single.stderr
        assert table(shared_views) == table(single_views)  # identical to what one runner builds
        assert len(table(single_views)) >= 91  # the cases of 91 customers
        print(f"{consumer}: partitions {sorted(orphaned)} moved {moved_after:.1f} s after the kill")
    finally:
        stop_publishing.set()
        if publisher.is_alive():
            publisher.join(30)
        ledger.close()
        for runner in runners:
            if runner.alive():
                runner.kill()
        for key in env:
            os.environ.pop(key, None)
