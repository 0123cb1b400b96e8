"""``caseledger run --processes`` end to end (issue 29, the soak): each service in a child process of its own.

Contacts published on the intake topic are recorded, published and projected through three child
processes on one SQLite file; then one child is killed with SIGKILL: the parent stops the others and
exits 1 naming it, and no process of the run is left.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from caseledger.cli.service_plan import CHILD_MAIN
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
from caseledger.projections import open_views, read_status
from tests.support.environment import ledger_settings
from tests.support.kafka_topics import fresh_topics
from tests.system.test_kafka_faults import Service, contacts

pytestmark = pytest.mark.kafka

CONTACTS = 60


def children_of(pid: int) -> dict[str, int]:
    """The children of ``pid`` that run a service of ``run --processes``, by service name."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            arguments = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid and CHILD_MAIN in arguments:
            found[arguments[arguments.index(CHILD_MAIN) + 1]] = int(entry.name)
    return found


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def wait_for(predicate: object, what: str, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}: {log.read_text(errors='replace')[-3000:]}"
        time.sleep(0.2)


def test_run_processes_records_end_to_end_and_a_killed_child_stops_them_all(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = fresh_topics(kafka_bootstrap, partitions=6)  # the topics `run` expects
    database = str(tmp_path / "ledger.sqlite")
    CaseLedger(ledger_settings(database=database)).close()
    env_topics = {"CASELEDGER_INTAKE_TOPIC": settings.intake_topic, "CASELEDGER_EVENTS_TOPIC": settings.events_topic}
    os.environ.update(env_topics)
    log = tmp_path / "run.log"
    run = Service(["--database", database, "run", "--processes", "--kafka", kafka_bootstrap], log)
    try:
        run.start()
        assert run.proc is not None
        wait_for(lambda: set(children_of(run.proc.pid)) == {"intake", "publisher", "projections"} or not run.alive(),
                 "three children", log)
        assert run.alive(), log.read_text()[-3000:]
        children = children_of(run.proc.pid)
        with KafkaIntakeClient(settings, adapter="processes-test") as client:
            client.submit_many(contacts(CONTACTS))

        def projected() -> bool:  # recorded by intake, published by the publisher, projected from the events topic
            with open_views(database) as views:
                positions = [s.store_position or 0 for s in read_status(views)]
            ledger = CaseLedger(ledger_settings(database=database))
            try:
                recorded = ledger.recorder.max_notification_id() or 0
            finally:
                ledger.close()
            return recorded >= CONTACTS and bool(positions) and min(positions) == recorded

        wait_for(projected, "every contact recorded, published and projected", log)
        os.kill(children["publisher"], signal.SIGKILL)
        assert run.proc.wait(90) == 1, log.read_text()[-3000:]
        text = log.read_text(errors="replace")
        assert "publisher killed by SIGKILL" in text
        assert "caseledger.intake INFO stopped:" in text and "caseledger.projections INFO stopped:" in text  # cleanly
        wait_for(lambda: all(gone(pid) for pid in children.values()), "no child left", log, timeout=30)
    finally:
        if run.alive():
            run.kill()
        for key in env_topics:
            os.environ.pop(key, None)
