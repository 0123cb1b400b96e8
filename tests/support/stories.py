"""A customer's story with every kind of event, on a SQLite file, and the command line run on it."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from caseledger.cli.app import app
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import Actor, ContactDraft, Identity
from tests.support.clock import FakeClock
from tests.support.environment import ledger_settings

runner = CliRunner(env={"CASELEDGER_DATABASE": None, "CASELEDGER_KAFKA_BOOTSTRAP": None, "TZ": "UTC",
                        "COLUMNS": "200"})
JANE = "email:jane@example.com"
AGENT = Actor.parse("agent:alice")


def run(database: str, *args: str, code: int = 0) -> Result:
    result = runner.invoke(app, ["--database", database, *args])
    assert result.exit_code == code, f"exit {result.exit_code} != {code}\n{result.stdout}\n{result.exception!r}"
    return result


@pytest.fixture
def story(tmp_path: Path) -> str:
    """A customer with every kind of event: contacts, acknowledgements, a phone promise and its written
    confirmation, a status change, a handoff, a missed deadline, a response and a closing."""
    database = str(tmp_path / "story.sqlite")
    clock = FakeClock(datetime.now(UTC))  # the deadlines are missed 10 days on: the ledger's clock moves there
    ledger = CaseLedger(ledger_settings(database=database), clock=clock)
    try:
        first = ledger.record_contact(ContactDraft(channel="web_form", channel_message_id="f1",
                                                   identity=Identity.parse(JANE), subject="Card <blocked> & fees",
                                                   items=("Why is my card blocked?", "Refund the fee?")))
        ref = first.reference
        ledger.record_contact(ContactDraft(channel="phone", channel_message_id="call-2", identity=Identity.parse(JANE),
                                           items=("Still blocked",), case_reference=ref, follow_up=True))
        ledger.make_promise(ref, actor=AGENT, channel="phone", kind="callback", terms="call back tomorrow",
                            due_at=datetime.now(UTC) + timedelta(hours=1))
        ledger.change_status(ref, actor=AGENT, to_status="in_progress", reason="checking", notice="We are on it.")
        ledger.hand_off(ref, actor=AGENT, to_assignee="bob", note="customer prefers email")
        clock.advance(days=10)
        ledger.tick()
        ledger.respond(ref, actor=Actor.parse("agent:bob"), body="Unblocked, fee refunded.", answers=["Q1", "Q2", "Q3"])
        ledger.record_contact(ContactDraft(channel="email", channel_message_id="other",
                                           identity=Identity.parse("email:someone@example.com"), items=("hi",)))
    finally:
        ledger.close()
    return database


def tamper(database: str, event_type: str) -> int:
    """Change one character of the first ``event_type`` event's sealed text with SQL; returns its position."""
    conn = sqlite3.connect(database)
    try:
        position, state = conn.execute("SELECT rowid, state FROM stored_events WHERE topic LIKE ? ORDER BY rowid",
                                       (f"%.{event_type}",)).fetchone()
        at = state.index(b"enc:1:") + 40  # personal data is sealed: a character of its ciphertext
        altered = state[:at] + (b"B" if state[at : at + 1] != b"B" else b"C") + state[at + 1 :]
        with conn:
            conn.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (altered, position))
        return int(position)
    finally:
        conn.close()

