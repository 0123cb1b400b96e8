"""Reads of the log by one rare kind never scan the events table, on both stores (issue 29, a full ledger).

Finding: "history from the log grows with the ledger (2.5 s at 1 M events): it lists the message-id collisions
by reading the notification log by topic, and the events table has no index on the topic: a scan of every event
per call (so do ``case_ids`` and the rejections' list)." Every statement a customer's history, the collisions',
the rejections' and the cases' lists run on the events table is explained on the store itself: each is planned
through an index (SQLite ``EXPLAIN QUERY PLAN``; PostgreSQL ``EXPLAIN`` with sequential scans priced out, so a
plan that must filter every row still shows it). A store of an earlier release (no such index) gets them when
opened, by two processes at once too; a read by kind answers exactly what eventsourcing's read answers.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import psycopg
import pytest
from eventsourcing.sqlite import SQLiteCursor

from caseledger.cli.bench.verify_bench import generate_ledger
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.directory import IntakeSource
from caseledger.ledger.domain.values import ContactDraft, Identity
from caseledger.ledger.errors import MessageIdCollision
from caseledger.ledger.store.kind_indexes import index_name
from caseledger.ledger.store_ports import TOPICS_READ_BY_KIND
from tests.support.environment import ledger_settings

JANE = Identity.parse("email:jane@example.com")
BOB = Identity.parse("email:bob@example.com")


def _fill(ledger: CaseLedger) -> None:
    """Stories of others, then Jane's contacts, a collision of Bob's on her message id, a rejected record of hers."""
    generate_ledger(ledger, 200)
    ledger.record_contact(ContactDraft(channel="web_form", channel_message_id="f1", identity=JANE,
                                       subject="Card fees", items=("Why two card fees?",)))
    with pytest.raises(MessageIdCollision):
        ledger.record_contact(ContactDraft(channel="web_form", channel_message_id="f1", identity=BOB, items=("Mine",)))
    ledger.reject_intake(IntakeSource("caseledger.intake", 0, 8), raw=b"raw record", reason="ValidationError: items",
                         kind="contact", sender=JANE,
                         public_reason={"code": "invalid", "field": "items", "fix": "send at most 20 items"})


def _reads(ledger: CaseLedger) -> None:
    ledger.history(str(JANE))
    ledger.collision_records()
    ledger.rejection_records()
    assert sum(1 for _ in ledger.case_ids()) > 1


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Every statement the ledger's recorders run from here on, with its parameters (both drivers' cursors)."""
    seen: list[tuple[Any, Any]] = []
    sqlite_execute, pg_execute = SQLiteCursor.execute, psycopg.Cursor.execute

    def on_sqlite(self: Any, statement: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((statement, args[0] if args else ()))
        return sqlite_execute(self, statement, *args, **kwargs)

    def on_postgres(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        seen.append((query.as_string(self.connection) if not isinstance(query, str) else query, params))
        return pg_execute(self, query, params, **kwargs)

    monkeypatch.setattr(SQLiteCursor, "execute", on_sqlite)
    monkeypatch.setattr(psycopg.Cursor, "execute", on_postgres)
    return seen


def _plans(database: str, events_table: str, statements: list[tuple[Any, Any]]) -> dict[str, str]:
    """Each SELECT on the events table, explained on the store itself: statement → its plan as one line."""
    selects = {s: p for s, p in statements if s.lstrip().upper().startswith("SELECT") and events_table in s
               and "MAX(" not in s.upper()}
    assert selects, "no read of the events table was seen"
    plans: dict[str, str] = {}
    if database.startswith("postgresql"):
        with psycopg.connect(database) as conn:
            conn.execute("SET enable_seqscan = off")  # a plan that reads every row shows it even on a small table
            for statement, params in selects.items():
                rows = conn.execute("EXPLAIN " + statement, params).fetchall()
                plans[statement] = " | ".join(r[0] for r in rows)
    else:
        conn = sqlite3.connect(database)
        try:
            for statement, params in selects.items():
                rows = conn.execute("EXPLAIN QUERY PLAN " + statement, params).fetchall()
                plans[statement] = " | ".join(r[3] for r in rows)
        finally:
            conn.close()
    return plans


def _events_table(ledger: CaseLedger) -> str:
    return str(ledger.recorder.events_table_name)


def test_every_read_of_a_customer_and_of_one_kind_is_planned_through_an_index(
        database: str, statements: list[tuple[Any, Any]]) -> None:
    ledger = CaseLedger(ledger_settings(database=database))
    try:
        _fill(ledger)
        table = _events_table(ledger)
        statements.clear()
        _reads(ledger)
        plans = _plans(database, table, statements)
    finally:
        ledger.close()
    for statement, plan in plans.items():
        if database.startswith("postgresql"):
            assert "Seq Scan" not in plan and "Filter: (topic" not in plan, (statement, plan)
        else:
            steps = [step for step in plan.split(" | ") if table in step]
            assert steps and all("USING INDEX" in s or "USING COVERING INDEX" in s for s in steps), (statement, plan)


def test_a_read_by_kind_answers_what_the_generic_read_answers(database: str) -> None:
    ledger = CaseLedger(ledger_settings(database=database))
    try:
        _fill(ledger)
        recorder, last = ledger.recorder, ledger.recorder.max_notification_id()
        for topic in sorted(TOPICS_READ_BY_KIND):
            for start, stop, inclusive, limit in ((1, None, True, 1000), (None, None, True, 3), (2, last - 5, False, 7),
                                                  (last // 2, None, False, 2)):
                kind = recorder.select_notifications(start, limit, stop, [topic], inclusive_of_start=inclusive)
                generic = [n for n in recorder.select_notifications(start, 10_000, stop, [topic, "no.such.topic"],
                                                                    inclusive_of_start=inclusive)][:limit]
                assert kind == generic, (topic, start, stop, inclusive, limit)
    finally:
        ledger.close()


def _index_names(database: str, table: str) -> set[str]:
    if database.startswith("postgresql"):
        with psycopg.connect(database) as conn:
            return {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", (table,))}
    conn = sqlite3.connect(database)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?",
                                           (table,))}
    finally:
        conn.close()


def _drop(database: str, names: set[str]) -> None:
    if database.startswith("postgresql"):
        with psycopg.connect(database) as conn:
            for name in names:
                conn.execute(f'DROP INDEX "{name}"')
        return
    conn = sqlite3.connect(database)
    try:
        for name in names:
            conn.execute(f'DROP INDEX "{name}"')
        conn.commit()
    finally:
        conn.close()


def test_a_store_of_an_earlier_release_gets_the_indexes_when_two_processes_open_it_at_once(
        database: str) -> None:
    ledger = CaseLedger(ledger_settings(database=database))
    try:
        _fill(ledger)
        table = _events_table(ledger)
    finally:
        ledger.close()
    kinds = {index_name(table, topic) for topic in TOPICS_READ_BY_KIND}
    assert kinds <= _index_names(database, table)
    _drop(database, kinds)  # as an earlier release left it
    errors: list[BaseException] = []
    histories: list[int] = []

    def open_and_read() -> None:
        try:
            opened = CaseLedger(ledger_settings(database=database))
            try:
                histories.append(len(opened.history(str(JANE))))
            finally:
                opened.close()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_and_read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert kinds <= _index_names(database, table)
    assert len(histories) == 2 and histories[0] == histories[1] > 0

