"""Issue 25, "what must be delivered cannot be read by who delivers it": the outbound feed (ledger/intake/outbound.py).

Before it, an acknowledgement's text was sealed on the events topic and nothing handed it to the adapter of its
channel, so nothing reported it delivered and every acknowledgement deadline was recorded missed. The feed opens,
for the channels of one adapter, each pending message with its address and deadline; the adapter reports it
delivered or failed, and the deadline is met or missed accordingly.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import Actor, ActorKind, ContactDraft, Identity
from caseledger.ledger.errors import PermissionDenied, RuleViolation, ValidationError
from caseledger.ledger.intake.delivery_reports import Reporter
from caseledger.ledger.intake.outbound import OutboundFeed
from tests.support.clock import FakeClock
from tests.support.contacts import JANE, draft
from tests.support.environment import ledger_settings
from tests.support.examples import examples

MAIL = Reporter(actor=Actor(kind=ActorKind.SYSTEM, id="mail-1", authentication="token"), adapter=True,
                channels=("email",))
SMS = Reporter(actor=Actor(kind=ActorKind.SYSTEM, id="sms-1", authentication="token"), adapter=True,
               channels=("sms",))


def _pending(ledger: CaseLedger, *channels: str, after: int = 0) -> list[dict]:
    return [m.as_record() for m in OutboundFeed(ledger).page(channels=channels, after=after).messages]


def test_an_acknowledgement_reaches_its_channels_adapter_in_clear_with_its_address_and_deadline(
    sqlite_ledger: CaseLedger,
) -> None:
    """Finding: the acknowledgement's text was sealed, and no path handed it to the adapter that delivers it."""
    out = sqlite_ledger.record_contact(draft("<m-1@mail.example>"))
    (ack,) = _pending(sqlite_ledger, "email")
    case = sqlite_ledger.get_case(out.reference)
    assert ack["reference"] == out.reference and ack["message_id"] == "ACK1" and ack["kind"] == "acknowledgement"
    assert ack["address"] == JANE and ack["channel"] == "email" and ack["customer_id"] == out.customer_id
    assert ack["text"] == case.messages["ACK1"].text and out.reference in ack["text"]
    assert ack["deliver_by"] == case.messages["ACK1"].due_at.isoformat()
    assert ack["in_reply_to"] == "<m-1@mail.example>" and ack["subject"] == "Refund"
    assert _pending(sqlite_ledger, "sms", "chat") == []  # another channel's adapter sees none of it


def test_every_kind_of_message_to_the_customer_is_handed_out(sqlite_ledger: CaseLedger) -> None:
    out = sqlite_ledger.record_contact(draft("m-1"))
    agent = Actor.parse("agent:alice")
    sqlite_ledger.respond(out.reference, actor=agent, body="Refunded on Monday.", answers=["Q1"])
    sqlite_ledger.make_promise(out.reference, actor=agent, channel="phone", kind="callback", terms="We call back",
                               due_at=sqlite_ledger.clock() + timedelta(days=2), confirmation_channel="email")
    sqlite_ledger.close_case(out.reference, actor=agent, reason="answered", notice="Your case is closed.",
                             waive={"P1": "closing"})
    kinds = {m["message_id"]: (m["kind"], m["deliver_by"] is not None) for m in _pending(sqlite_ledger, "email")}
    assert kinds == {"ACK1": ("acknowledgement", True), "R1": ("response", True),
                     "W1": ("written_confirmation", True), "N1": ("notice", False)}
    (response,) = [m for m in _pending(sqlite_ledger, "email") if m["message_id"] == "R1"]
    assert response["text"] == "Refunded on Monday." and response["address"] == JANE


def test_a_delivered_message_is_no_longer_pending_and_its_deadline_is_met(sqlite_ledger: CaseLedger,
                                                                           clock: FakeClock) -> None:
    out = sqlite_ledger.record_contact(draft("m-1"))
    (ack,) = _pending(sqlite_ledger, "email")
    sqlite_ledger.record_delivery(ack["reference"], message_id=ack["message_id"], delivered_at=clock(),
                                  actor=MAIL.actor, reporter=MAIL)
    assert _pending(sqlite_ledger, "email") == []
    clock.advance(days=30)
    assert sqlite_ledger.tick().missed.get("acknowledgement", 0) == 0
    assert ("acknowledgement", "ACK1") not in sqlite_ledger.get_case(out.reference).missed


def test_without_a_delivery_the_deadline_is_missed(sqlite_ledger: CaseLedger, clock: FakeClock) -> None:
    out = sqlite_ledger.record_contact(draft("m-1"))
    clock.advance(days=30)
    assert sqlite_ledger.tick().missed["acknowledgement"] == 1
    assert ("acknowledgement", "ACK1") in sqlite_ledger.get_case(out.reference).missed


def test_a_failure_is_recorded_stays_undelivered_and_leaves_the_feed(sqlite_ledger: CaseLedger,
                                                                     clock: FakeClock) -> None:
    out = sqlite_ledger.record_contact(draft("m-1"))
    sqlite_ledger.record_delivery_failure(out.reference, message_id="ack1", reason="Bounced", actor=MAIL.actor,
                                          reporter=MAIL)
    case = sqlite_ledger.get_case(out.reference)
    assert case.messages["ACK1"].failure == "bounced" and case.messages["ACK1"].delivered_at is None
    assert _pending(sqlite_ledger, "email") == []
    clock.advance(days=30)
    assert sqlite_ledger.tick().missed["acknowledgement"] == 1  # not delivered: the deadline is missed
    # a retry that succeeded later is still a delivery (the failure is cleared); a failure after it is refused
    sqlite_ledger.record_delivery(out.reference, message_id="ACK1", delivered_at=clock(), reporter=MAIL)
    assert sqlite_ledger.get_case(out.reference).messages["ACK1"].failure is None
    with pytest.raises(RuleViolation, match="already reported delivered"):
        sqlite_ledger.record_delivery_failure(out.reference, message_id="ACK1", reason="bounced", reporter=MAIL)


def test_a_failure_names_a_code_and_only_the_channels_adapter_reports_it(sqlite_ledger: CaseLedger) -> None:
    out = sqlite_ledger.record_contact(draft("m-1"))
    with pytest.raises(ValidationError, match="delivery failure code") as refused:
        sqlite_ledger.record_delivery_failure(out.reference, message_id="ACK1", reason="550 jane@example.com unknown",
                                              reporter=MAIL)
    assert "jane" not in str(refused.value)  # the reason is a code: never the channel's words, never quoted
    with pytest.raises(PermissionDenied, match="forbidden channel"):
        sqlite_ledger.record_delivery_failure(out.reference, message_id="ACK1", reason="bounced", reporter=SMS)
    with pytest.raises(ValidationError, match="inbound contact"):
        sqlite_ledger.record_delivery_failure(out.reference, message_id="C1", reason="bounced", reporter=MAIL)


def test_an_erased_customers_pending_messages_are_never_handed_out(sqlite_ledger: CaseLedger) -> None:
    """The key is gone: a message issued before the erasure cannot be opened, so it is not delivered afterwards."""
    out = sqlite_ledger.record_contact(draft("m-1"))
    other = sqlite_ledger.record_contact(ContactDraft(channel="email", channel_message_id="m-2", items=("Hello",),
                                                      identity=Identity.parse("email:sam@example.com")))
    assert {m["reference"] for m in _pending(sqlite_ledger, "email")} == {out.reference, other.reference}
    sqlite_ledger.erase_customer(out.customer_id, reason="art. 17 request of 2026-12-01, ticket 4711")
    assert [m["reference"] for m in _pending(sqlite_ledger, "email")] == [other.reference]
    # the same identity writing again is a new customer whose new acknowledgement is handed out, to them
    again = sqlite_ledger.record_contact(draft("m-3"))
    assert [m["reference"] for m in _pending(sqlite_ledger, "email")] == [other.reference, again.reference]


def test_the_cursor_resumes_after_the_last_position_looked_at(sqlite_ledger: CaseLedger) -> None:
    for n in range(5):
        sqlite_ledger.record_contact(draft(f"m-{n}") if n % 2 else ContactDraft(
            channel="sms", channel_message_id=f"m-{n}", items=("Call me",),
            identity=Identity.parse("phone:+33612345678")))
    feed = OutboundFeed(sqlite_ledger)
    first = feed.page(channels=["sms"], limit=2)
    assert [m.message_id for m in first.messages] == ["ACK1", "ACK1"]
    assert all(m.address == "phone:+33612345678" for m in first.messages)
    rest = feed.page(channels=["sms"], after=first.position)
    assert len(rest.messages) == 1 and rest.messages[0].position > first.position
    assert feed.page(channels=["sms"], after=rest.position).messages == []


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["email", "sms", "chat"]), st.sampled_from(["none", "delivered", "failed"])),
                min_size=1, max_size=8),
       st.integers(min_value=1, max_value=3))
def test_any_history_each_pending_message_is_handed_out_once_to_its_channel_only(
    tmp_path_factory: pytest.TempPathFactory, history: list[tuple[str, str]], limit: int,
) -> None:
    """Paging through the feed with its cursor hands out each message exactly once, to its channel's reader
    only, and only while it is neither delivered nor reported failed."""
    where = tmp_path_factory.mktemp("outbound")
    ledger = CaseLedger(ledger_settings(database=str(where / "o.sqlite")), clock=FakeClock())
    try:
        expected: dict[str, set[str]] = {"email": set(), "sms": set(), "chat": set()}
        for n, (channel, outcome) in enumerate(history):
            identity = "phone:+3361234567" + str(n % 10) if channel == "sms" else f"email:c{n}@example.com"
            out = ledger.record_contact(ContactDraft(channel=channel, channel_message_id=f"m-{n}", items=("Help",),
                                                     identity=Identity.parse(identity)))
            reporter = Reporter(actor=Actor(kind=ActorKind.SYSTEM, id=channel), adapter=True, channels=(channel,))
            if outcome == "delivered":
                ledger.record_delivery(out.reference, message_id="ACK1", delivered_at=ledger.clock(),
                                       reporter=reporter)
            elif outcome == "failed":
                ledger.record_delivery_failure(out.reference, message_id="ACK1", reason="rejected", reporter=reporter)
            else:
                expected[channel].add(out.reference)
        for channel in expected:
            seen: list[str] = []
            after = 0
            while True:
                page = OutboundFeed(ledger).page(channels=[channel], after=after, limit=limit)
                seen += [m.reference for m in page.messages]
                assert all(m.channel == channel for m in page.messages)
                if page.position == after:
                    break
                after = page.position
            assert sorted(seen) == sorted(expected[channel])
    finally:
        ledger.close()


def test_the_cli_records_a_failure_and_case_show_tells_the_agent(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from caseledger.cli.app import app

    def run(*args: str, code: int = 0) -> str:
        result = CliRunner().invoke(app, ["--database", str(tmp_path / "c.sqlite"), *args],
                                    env={"COLUMNS": "200", "TZ": "UTC"})
        assert result.exit_code == code, result.stdout + result.stderr
        return result.stdout + result.stderr

    out = json.loads(run("contact", "record", "-c", "email", "-m", "m-1", "--from", JANE, "--item", "Refund?",
                         "--json"))
    refused = run("message", "failed", out["reference"], "ACK1", "--reason", "550 mailbox full", code=2)
    assert "bounced, invalid_address" in refused
    run("--as", "system:mailer", "message", "failed", out["reference"], "ACK1", "--reason", "bounced")
    assert "not delivered: bounced" in run("case", "show", out["reference"])
    (ack,) = [m for m in json.loads(run("case", "show", out["reference"], "--json"))["messages"]
              if m["message_id"] == "ACK1"]
    assert ack["failure"] == "bounced"
