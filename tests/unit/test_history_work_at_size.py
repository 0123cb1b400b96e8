"""A customer's history from the log does the same work on a ledger ten times larger, and opens no one else's data.

Finding: "history from the log p50 1.9 s, p99 2.5 s and growing with the ledger": it listed the message-id
collisions by reading the notification log by topic, filtered row by row. The work is counted as SQLite counts
it (virtual-machine steps of every statement the read runs), so it says what the store did, not how busy the
machine was: before, thousands of unrelated events made the read several times longer; now they change nothing
but a B-tree level. Jane's own collision is still in her history, Bob's never.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.sqlite import SQLiteConnection

from caseledger.cli.bench.verify_bench import generate_ledger
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import ContactDraft, Identity
from caseledger.ledger.errors import MessageIdCollision
from tests.support.environment import ledger_settings

JANE = Identity.parse("email:jane@example.com")
BOB = Identity.parse("email:bob@example.com")


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], Any]], int]:
    """The virtual-machine steps (in tens) SQLite runs for a call, on every connection of the ledger."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    cursor = SQLiteConnection.cursor

    def counted(self: SQLiteConnection) -> Any:
        self._sqlite_conn.set_progress_handler(tick, 10)
        return cursor(self)

    monkeypatch.setattr(SQLiteConnection, "cursor", counted)

    def measure(call: Callable[[], Any]) -> int:
        count[0] = 0
        call()
        return count[0]

    return measure


def test_history_from_the_log_does_not_grow_with_unrelated_events(
        tmp_path: Path, steps: Callable[[Callable[[], Any]], int]) -> None:
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "l.sqlite")))
    try:
        generate_ledger(ledger, 100)
        _contacts_and_collisions(ledger, senders=(JANE, BOB, JANE), colliders=(JANE, BOB), collided="f1")
        jane = ledger.data_subject(str(JANE))
        history = ledger.history(str(JANE))
        collided = [e for e in history if type(e).__name__ == "MessageIdCollided"]
        assert len(collided) == 1 and all(e.customer_id == jane for e in history)
        steps(lambda: ledger.history(str(JANE)))  # warm: statements prepared, schema read
        small = steps(lambda: ledger.history(str(JANE)))
        generate_ledger(ledger, 3000)  # about 175 stories of other customers
        large = steps(lambda: ledger.history(str(JANE)))
        assert [(e.originator_id, e.originator_version) for e in ledger.history(str(JANE))] == [
            (e.originator_id, e.originator_version) for e in history]
    finally:
        ledger.close()
    assert large <= small * 1.2, f"history's work grew from {small} to {large} (tens of SQLite steps)"


def _contacts_and_collisions(ledger: CaseLedger, *, senders: tuple[Any, ...], colliders: tuple[Any, ...],
                             collided: str) -> None:
    """A contact of each sender (message ids f0, f1, …), then each collider reusing message id ``collided``."""
    for n, who in enumerate(senders):
        ledger.record_contact(ContactDraft(channel="web_form", channel_message_id=f"f{n}", identity=who,
                                           subject="Card fees", items=("Why two card fees?",)))
    for who in colliders:
        with pytest.raises(MessageIdCollision):
            ledger.record_contact(ContactDraft(channel="web_form", channel_message_id=collided, identity=who,
                                               items=(f"{who}'s own question",)))


def test_the_kinds_read_alone_are_the_catalogs() -> None:
    from caseledger.ledger.domain.catalog import EVENT_TYPES, topic_of
    from caseledger.ledger.store_ports import TOPICS_READ_BY_KIND

    assert {topic_of(name) for name in EVENT_TYPES} >= TOPICS_READ_BY_KIND


def test_a_customers_history_never_opens_another_senders_kept_request(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Attack: Jane's history (or her erasure) decrypting Bob's collision to see whose it is. Before, every
    collision of the ledger was opened with its sender's key, then filtered; now only Jane's are opened."""
    from caseledger.ledger.privacy.data_keys import DataKeys

    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "l.sqlite")))
    try:
        _contacts_and_collisions(ledger, senders=(JANE, BOB), colliders=(BOB, JANE), collided="f0")
        bob = ledger.data_subject(str(BOB))
        bobs = {row.key_id for row in ledger.storage.data_keys().live() if bob in row.subject}
        assert bobs
        opened: list[str] = []
        cipher = DataKeys.cipher

        def watched(self: DataKeys, key_id: str) -> Any:
            opened.append(key_id)
            return cipher(self, key_id)

        monkeypatch.setattr(DataKeys, "cipher", watched)
        history = ledger.history(str(JANE))
        assert sum(type(e).__name__ == "MessageIdCollided" for e in history) == 1
    finally:
        ledger.close()
    assert opened and not bobs & set(opened)
