"""The ledger's clock (issue 22): every recorded time is the ledger's; a time a client claims is kept
beside it, bounded, and never what a deadline, an SLA figure or retention reads. Each test runs on
SQLite and on a real PostgreSQL; the simulated clock of local files: tests/unit/test_simulated_clock.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.claimed_times import CLOCK_SKEW, HORIZON
from caseledger.ledger.domain.policy import ResponsePolicy
from caseledger.ledger.domain.values import Actor
from caseledger.ledger.errors import ValidationError
from caseledger.projections import ProjectionRunner, StoreEventSource, load_projections, open_views
from caseledger.projections.channel_metrics import summary
from caseledger.projections.deadlines import Deadlines
from tests.support.clock import FakeClock
from tests.support.contacts import JANE, cli, draft, events_of, stored
from tests.support.environment import ledger_settings

ALICE = Actor.parse("agent:alice")
BOT = Actor.parse("automation:helpbot")


# -- recorded_at is the ledger's clock ---------------------------------------------------------------------


def test_every_event_is_recorded_on_the_ledgers_clock_and_keeps_the_claim_beside_it(
    make_ledger: Callable[..., CaseLedger], clock: FakeClock
) -> None:
    """Before: ``recorded_at`` was the library's wall clock whatever the ledger's clock said."""
    ledger = make_ledger()
    claimed = clock.now - timedelta(hours=3)
    out = ledger.record_contact(draft(occurred_at=claimed))
    clock.advance(minutes=20)
    ledger.respond(out.reference, actor=ALICE, body="Refunded.", answers=["Q1"],
                   occurred_at=clock.now - timedelta(minutes=5))
    opened, contact, ack, response = events_of(make_ledger(), out.reference)  # read back from the store
    assert {e.timestamp for e in (opened, contact, ack)} == {clock.now - timedelta(minutes=20)}
    assert contact.occurred_at == claimed  # the client's claim, kept
    assert response.timestamp == clock.now and response.occurred_at == clock.now - timedelta(minutes=5)


def test_deadlines_run_from_the_recording_never_from_the_claim(ledger: CaseLedger, clock: FakeClock) -> None:
    """Before: a contact dated 10 days back was acknowledged with a respond-by already past."""
    out = ledger.record_contact(draft(occurred_at=clock.now - timedelta(days=10)))
    ack = events_of(ledger, out.reference)[2]
    assert out.respond_by == ack.respond_by == ledger.policy.respond_by(
        channel="email", category=None, received_at=clock.now)
    assert ack.acknowledge_by == ledger.policy.acknowledge_by(channel="email", received_at=clock.now)
    assert ledger.tick().total == 0  # nothing is overdue the moment it is recorded


# -- what a client may claim ---------------------------------------------------------------------------------

YEAR_1 = datetime(1, 1, 1, tzinfo=UTC)


def test_a_contact_may_not_be_dated_in_year_1_nor_in_the_future(ledger: CaseLedger, clock: FakeClock) -> None:
    with pytest.raises(ValidationError, match=r"occurred_at 0001-01-01T00:00:00\+00:00 is more than 30 days"):
        ledger.record_contact(draft(occurred_at=YEAR_1))
    with pytest.raises(ValidationError, match=r"occurred_at .* is in the future"):
        ledger.record_contact(draft(occurred_at=clock.now + CLOCK_SKEW + timedelta(seconds=1)))
    assert stored(ledger) == 0
    ledger.record_contact(draft(occurred_at=clock.now + CLOCK_SKEW))  # a client's clock a little ahead
    ledger.record_contact(draft(msg="m2", occurred_at=clock.now - HORIZON))


def test_a_response_or_promise_may_not_predate_its_case(ledger: CaseLedger, clock: FakeClock) -> None:
    """Before: a response dated 2001, before its case existed, was recorded."""
    ref = ledger.record_contact(draft(occurred_at=clock.now - timedelta(days=2))).reference  # opened 2 days ago
    clock.advance(days=3)
    ledger.record_contact(draft(msg="m2", case_reference=ref, follow_up=True, items=("And the fee?",),
                                occurred_at=clock.now - timedelta(days=1)))  # C2, Q2
    before = stored(ledger)
    with pytest.raises(ValidationError, match=r"occurred_at 2001-.* is more than 30 days"):
        ledger.respond(ref, actor=ALICE, body="x", answers=["Q1"], occurred_at=datetime(2001, 1, 1, tzinfo=UTC))
    with pytest.raises(ValidationError, match=r"occurred_at .* is before its case was opened"):
        ledger.respond(ref, actor=ALICE, body="x", answers=["Q1"], occurred_at=clock.now - timedelta(days=6))
    with pytest.raises(ValidationError, match=r"occurred_at .* is before its case was opened"):
        ledger.make_promise(ref, actor=ALICE, channel="phone", kind="callback", terms="t",
                            due_at=clock.now + timedelta(days=1), occurred_at=clock.now - timedelta(days=6))
    with pytest.raises(ValidationError, match=r"occurred_at .* is before contact C2 it answers"):
        ledger.respond(ref, actor=ALICE, body="x", answers=["Q1", "Q2"], occurred_at=clock.now - timedelta(days=2))
    with pytest.raises(ValidationError, match=r"occurred_at .* is before its case was opened"):
        ledger.record_contact(draft(msg="m3", case_reference=ref, follow_up=True,
                                    occurred_at=clock.now - timedelta(days=6)))
    assert stored(ledger) == before
    ledger.respond(ref, actor=ALICE, body="Answered on the phone.", answers=["Q1"],
                   occurred_at=clock.now - timedelta(days=2))  # after the contact it answers: a claim kept as said


def test_deliveries_and_reads_may_not_predate_the_message_nor_come_from_the_future(
    ledger: CaseLedger, clock: FakeClock
) -> None:
    """Before: deliveries dated 1990 and 2999 were recorded."""
    ref = ledger.record_contact(draft()).reference
    clock.advance(hours=1)
    before = stored(ledger)
    for when, message in ((datetime(1990, 1, 1, tzinfo=UTC), r"delivered_at 1990-.* is more than 30 days"),
                          (datetime(2999, 1, 1, tzinfo=UTC), r"delivered_at 2999-.* is in the future"),
                          (clock.now - timedelta(minutes=66), r"delivered_at .* is before ACK1 was issued")):
        with pytest.raises(ValidationError, match=message):
            ledger.record_delivery(ref, message_id="ACK1", delivered_at=when)
    with pytest.raises(ValidationError, match=r"read_at .* is before ACK1 was issued"):
        ledger.record_read(ref, actor=Actor.parse("customer:jane"), message_id="ACK1",
                           read_at=clock.now - timedelta(hours=2))
    with pytest.raises(ValidationError, match=r"read_at 2999-.* is in the future"):
        ledger.record_read(ref, actor=Actor.parse("customer:jane"), message_id="ACK1",
                           read_at=datetime(2999, 1, 1, tzinfo=UTC))
    assert stored(ledger) == before
    ledger.record_delivery(ref, message_id="ACK1", delivered_at=clock.now - timedelta(minutes=59))
    delivered = events_of(ledger, ref)[-1]
    assert (delivered.delivered_at, delivered.timestamp) == (clock.now - timedelta(minutes=59), clock.now)


def test_a_chatbot_wait_starts_within_the_case_and_runs_to_the_ledgers_now(ledger: CaseLedger, clock: FakeClock) -> None:
    """Before: ``waiting_since`` 0001 recorded a wait of 63.9 billion seconds."""
    ref = ledger.record_contact(draft(channel="chatbot", occurred_at=clock.now - timedelta(minutes=10))).reference
    clock.advance(minutes=7)
    for since, message in ((YEAR_1, "waiting_since 0001-.* is more than 30 days"),
                           (clock.now - timedelta(hours=1), "before the case's first chatbot contact"),
                           (clock.now + timedelta(hours=1), "waiting_since .* is in the future")):
        with pytest.raises(ValidationError, match=message):
            ledger.escalate_to_human(ref, actor=BOT, bot_id="bot", waiting_since=since, reason="asked for a human")
    wait = ledger.escalate_to_human(ref, actor=BOT, bot_id="bot", waiting_since=clock.now - timedelta(minutes=15),
                                    reason="asked for a human")
    assert wait == 15 * 60 == events_of(ledger, ref)[-1].wait_seconds


# -- what is measured: recorded times ------------------------------------------------------------------------


def test_a_backdated_response_meets_no_deadline(ledger: CaseLedger, clock: FakeClock, tmp_path: Path) -> None:
    """Before: a late response dated back before its respond-by showed as answered in time, and the
    first-response figure was measured to the claim."""
    out = ledger.record_contact(draft())
    received = clock.now
    clock.advance(days=20)  # long past the respond-by
    assert out.respond_by < clock.now
    ledger.respond(out.reference, actor=ALICE, body="Sorry.", answers=["Q1"], occurred_at=received + timedelta(hours=1))
    with open_views(str(tmp_path / "views.sqlite")) as views:
        ProjectionRunner(load_projections(None), views, StoreEventSource(ledger)).run(until_caught_up=True)
        (row,) = views.select(Deadlines.tables[0], where="kind = ?", params=("response",))
        assert row["state"] == "settled" and row["settled_at"] == clock.now > row["due_at"]  # met late
        (email,) = summary(views)
        assert email["first_response_avg_s"] == (clock.now - received).total_seconds()


def test_retention_counts_from_recorded_times_and_tick_names_who_ran_it(tmp_path: Path, database: str) -> None:
    """Before: tick took a caller's ``now`` and recorded under ``system:caseledger`` whoever called it."""
    policy = ResponsePolicy.from_toml_text(
        ResponsePolicy.default_text().replace('after_last_case = "5y"', 'after_last_case = "10d"'), source="test")
    clock = FakeClock()
    ledger = CaseLedger(ledger_settings(database=database), policy=policy, clock=clock)
    try:
        out = ledger.record_contact(draft())
        ledger.make_promise(out.reference, actor=ALICE, channel="email", kind="callback", terms="t",
                            due_at=clock.now + timedelta(hours=1))
        clock.advance(days=1)
        supervisor = Actor(kind="agent", id="sue", authentication="token")
        report = ledger.tick(actor=supervisor, skip_retention="role automation may not customer.erase")
        assert report.now == clock.now and report.retention_skipped == "role automation may not customer.erase"
        missed = [e for e in events_of(ledger, out.reference) if type(e).__name__ == "DeadlineMissed"]
        assert {(e.actor_id, e.actor_authentication, e.timestamp) for e in missed} == {("sue", "token", clock.now)}
        ledger.keep_promise(out.reference, actor=ALICE, promise_id="P1", evidence="called")
        ledger.close_case(out.reference, actor=ALICE, reason="done", notice="Closed.", waive={"Q1": "by phone"})
        closed_at = clock.now
        clock.advance(days=11)
        assert ledger.tick(actor=supervisor, skip_retention="not allowed").retention.erased == []
        assert ledger.tick(actor=supervisor).retention.erased == [out.customer_id]
        (erased,) = [e for e in ledger.history(out.customer_id) if type(e).__name__ == "CustomerErased"]
        assert (erased.actor_id, erased.actor_authentication) == ("sue", "token")
        assert f"({closed_at:%Y-%m-%d})" in erased.reason
        with pytest.raises(TypeError):
            ledger.tick(datetime(2099, 1, 1, tzinfo=UTC))  # type: ignore[misc]  # no caller chooses "now"
    finally:
        ledger.close()


def test_now_is_a_local_files_simulation_clock_only(postgres: Any) -> None:
    refused = cli("--database", postgres.new_database(), "--now", datetime.now(UTC).isoformat(), "contact", "record",
                  "-c", "email", "-m", "m-1", "--from", JANE, "--item", "Why?", code=4)
    assert "local SQLite file" in " ".join(refused.stderr.split())
