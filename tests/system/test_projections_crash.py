"""Crash a projection runner with SIGKILL in the middle of a batch: nothing applied twice or missed.

``caseledger projections run`` runs as a real child process on a slow analyst projection
(5 ms per event, 50 events per batch, so a kill almost always lands inside a batch). It is
killed twice while it works through the stream, then run to the end with ``--once``. The
projection counts every event it handles and logs every position (the log's key refuses a
second insert of a position): at the end the count equals the number of events and the log
holds each position exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import ContactDraft, Identity
from caseledger.projections import COUNTERS, INT, LOG, TEXT, Projection, Table, Tx, open_views, read_status
from tests.support.environment import ledger_settings
from tests.support.kafka_topics import fresh_topics, publish_all

ROOT = Path(__file__).resolve().parents[2]


class SlowCounter(Projection):
    """Counts every event and logs its position, slowly (a crash-test projection)."""

    name = "slow_counter"
    tables = (
        Table("slow_counter_total", {"k": TEXT, "n": INT}, key=("k",), kind=COUNTERS),
        Table("slow_counter_seen", {"position": INT}, key=("position",), kind=LOG),
    )

    def on_event(self, tx: Tx, event: Any) -> None:
        # Slow enough that the rest of the stream outlasts the test's pause before each kill, even when its
        # poll of the views waits behind a batch (at 2 ms a runner once finished the stream first).
        time.sleep(0.005)
        tx.add("slow_counter_total", "all", n=1)
        tx.append("slow_counter_seen", {"position": tx.position})


def _position(views_path: str) -> int:
    """How many events the runner has committed: its counter, not its store position.

    From Kafka the store position is the highest of three partitions, so it reaches the last event while
    the other partitions are still behind (a runner once read 830 of 830 with 400 events left to apply).
    """
    with open_views(views_path) as views:
        if not read_status(views, SlowCounter.name):
            return 0
        rows = views.select(SlowCounter.tables[0])
        return int(rows[0]["n"]) if rows else 0


@pytest.mark.slow
@pytest.mark.parametrize("source", ["store", "kafka"])
def test_a_runner_killed_mid_batch_resumes_without_gaps_or_doubles(
    source: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    database = str(tmp_path / "ledger.sqlite")
    ledger = CaseLedger(ledger_settings(database=database))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["--source", source]
    try:
        with ledger.unit_of_work():
            for i in range(150):
                ledger.record_contact(ContactDraft(
                    channel="chat", channel_message_id=f"k{i}", identity=Identity.parse(f"email:c{i % 40}@example.com"),
                    items=("is my order shipped?",)))
        total = ledger.recorder.max_notification_id() or 0
        if source == "kafka":
            bootstrap = request.getfixturevalue("kafka_bootstrap")
            settings = fresh_topics(bootstrap)
            publish_all(ledger, settings)
            env["CASELEDGER_EVENTS_TOPIC"] = settings.events_topic
            # the runner shares the topic through the consumer group: each restart waits for its killed
            # incarnation's session to end before it gets the partitions
            env["CASELEDGER_KAFKA_SESSION_TIMEOUT_MS"] = "2000"
            args += ["--kafka", bootstrap]
    finally:
        ledger.close()

    command = [sys.executable, "-c", "from caseledger.cli.app import main; main()", "--database", database,
               "projections", "run", "tests.system.test_projections_crash:SlowCounter", "--batch-size", "50", *args]
    rng = random.Random(source)
    seen = 0
    for _ in range(2):
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while _position(database) <= seen and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.05, 0.3))  # somewhere inside a later batch
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
        after = _position(database)
        assert seen < after < total, (seen, after, total)  # it made progress and was killed mid-stream
        seen = after

    finished = subprocess.run([*command, "--once"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    with open_views(database) as views:
        count = views.select(SlowCounter.tables[0])
        logged = [r["position"] for r in views.select(SlowCounter.tables[1], order_by="position")]
    assert count == [{"k": "all", "n": total}]
    assert logged == list(range(1, total + 1))
