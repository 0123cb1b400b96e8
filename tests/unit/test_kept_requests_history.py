"""A customer's rejected intake records and collisions are in their history and their export (issue 26).

Finding: "A customer's rejected intake records and collisions are not in their history or export." A sender the
ledger knows only from the requests it kept of theirs (a collision on another request's message id, a record it
rejected) had no history at all: ``history`` and the export answered "no customer known", although the ledger holds
their words (sealed under their key) and erasure already reached them. Now history, the export (and the audit's
``--customer``) find them as erasure does, by the keys that seal what was kept; nobody else's request shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caseledger.cli.app import app
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.directory import IntakeSource
from caseledger.ledger.domain.values import ContactDraft, Identity
from caseledger.ledger.errors import MessageIdCollision, NotFound
from caseledger.verify.history import check_history, read_export
from tests.support.environment import ledger_settings

JANE = Identity.parse("email:jane@example.com")
BOB = Identity.parse("email:bob@example.com")
CAROL = Identity.parse("email:carol@example.com")
runner = CliRunner(env={"CASELEDGER_DATABASE": None, "CASELEDGER_ACTOR": None, "TZ": "UTC", "COLUMNS": "200"})


@pytest.fixture
def database(tmp_path: Path) -> Iterator[str]:
    """Jane's contact; Bob's request on Jane's message id (kept as a collision); a record of Carol's rejected; Jane's
    own second request on her message id (a collision of hers) and a record of hers rejected."""
    path = str(tmp_path / "ledger.sqlite")
    ledger = CaseLedger(ledger_settings(database=path))
    try:
        ledger.record_contact(ContactDraft(channel="web_form", channel_message_id="f1", identity=JANE,
                                           subject="Card fees", items=("Why two card fees?",)))
        for who, text in ((BOB, "Bob's own question"), (JANE, "Jane asks again")):
            with pytest.raises(MessageIdCollision):
                ledger.record_contact(ContactDraft(channel="web_form", channel_message_id="f1", identity=who,
                                                   items=(text,)))
        for offset, who in ((7, CAROL), (8, JANE)):
            ledger.reject_intake(IntakeSource("caseledger.intake", 0, offset), raw=b"raw record",
                                 reason=f"ValidationError: field items: too many ({who})", kind="contact", sender=who,
                                 public_reason={"code": "invalid", "field": "items", "fix": "send at most 20 items"})
    finally:
        ledger.close()
    yield path


def history(database: str, *args: str, code: int = 0) -> str:
    result = runner.invoke(app, ["--database", database, "history", *args])
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result.stdout


def test_a_sender_known_only_from_a_collision_or_a_rejection_has_a_history_and_an_export(
        database: str, tmp_path: Path) -> None:
    """Before: ``history email:bob@…`` exited 2, "no customer known"; so did the export."""
    for who, kept in ((BOB, "MessageIdCollided"), (CAROL, "IntakeRejected")):
        rows = json.loads(history(database, str(who), "--json"))
        assert [r["type"] for r in rows] == [kept], who
        # By the customer id the history names just as well.
        assert json.loads(history(database, rows[0]["customer_id"], "--json")) == rows
        export = tmp_path / f"{who.value}.json"
        history(database, str(who), "--export", "json", str(export))
        document = read_export(export)
        assert [e["event_type"] for e in document["events"]] == [kept]
        assert document["verification"]["verified"] is True
    bob = json.loads((tmp_path / "bob@example.com.json").read_text())
    # The sender's own request (the raw record, opened for their copy); never the first request it collided with.
    raw = bytes.fromhex(bob["events"][0]["event"]["raw"])
    assert b"Bob's own question" in raw and "Why two card fees" not in json.dumps(bob)


def test_a_customers_own_collisions_and_rejections_are_in_their_history_and_export_and_nobody_elses(
        database: str, tmp_path: Path) -> None:
    rows = json.loads(history(database, str(JANE), "--json"))
    types = [r["type"] for r in rows]
    assert types.count("MessageIdCollided") == 1 and types.count("IntakeRejected") == 1
    assert "Bob's own question" not in json.dumps(rows) and "carol" not in json.dumps(rows)
    export = tmp_path / "jane.json"
    history(database, str(JANE), "--export", "json", str(export))
    document = read_export(export)
    assert [e["event_type"] for e in document["events"]] == [r["type"] for r in rows]
    assert "bob@" not in export.read_text() and "carol@" not in export.read_text()


def test_an_unknown_identity_has_no_history_and_the_read_stores_nothing(database: str) -> None:
    """An attack on the new path: asking for anyone's history must not make (and later store) a lookup secret for
    them, nor find a customer."""
    ledger = CaseLedger(ledger_settings(database=database))
    try:
        with pytest.raises(NotFound):
            ledger.data_subject("email:nobody@example.com")
        assert ledger.data_keys.unsaved() == []
        ledger.record_contact(ContactDraft(channel="web_form", channel_message_id="f9", identity=JANE, items=("Q?",)))
        with pytest.raises(NotFound):
            ledger.data_subject("email:nobody@example.com")
    finally:
        ledger.close()
    history(database, "email:nobody@example.com", code=2)


def test_the_verifier_accepts_a_kept_requests_export(database: str, tmp_path: Path) -> None:
    export = tmp_path / "carol.json"
    history(database, str(CAROL), "--export", "json", str(export))
    from caseledger.verify.note import VerifierKey

    # No checkpoint on this ledger: every event is named uncommitted, nothing else is wrong with the file.
    result = check_history(read_export(export), VerifierKey("x", bytes(32)))
    assert {f.code for f in result.findings} == {"uncommitted"} and result.events == 1
