"""Contract tests of the ledger's rules: each runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.avro.codec import MAGIC, event_hash
from caseledger.ledger.domain.directory import case_id_for
from caseledger.ledger.domain.values import Actor, Attachment, ContactDraft, Identity
from caseledger.ledger.errors import ConflictError, NotFound, RuleViolation, ValidationError
from tests.support.clock import FakeClock
from tests.support.environment import ledger_settings

ALICE = Actor.parse("agent:alice")
BOB = Actor.parse("agent:bob")
RULE = Actor.parse("automation:limits-rule")


def draft(msg: str = "m1", channel: str = "email", items: tuple[str, ...] = ("Where is my refund?",), **kw: Any) -> ContactDraft:
    kw.setdefault("identity", Identity.parse("email:jane@example.com"))
    return ContactDraft(channel=channel, channel_message_id=msg, items=items, subject=kw.pop("subject", "Refund"), **kw)


def stored_count(ledger: CaseLedger) -> int:
    return ledger.recorder.max_notification_id() or 0


def event_types(ledger: CaseLedger, reference: str) -> list[str]:
    return [type(e).__name__ for e in ledger.events.get(case_id_for(reference))]


# -- S1, S2, S3: intake ----------------------------------------------------------------------------


def test_contact_opens_case_with_acknowledgement_in_same_transaction(ledger: CaseLedger, clock: FakeClock) -> None:
    out = ledger.record_contact(draft(items=("Q one", "Q two"), subject="Refund"))
    assert out.opened_case and not out.duplicate
    assert out.reference.startswith("CL-")
    assert event_types(ledger, out.reference) == ["CaseOpened", "ContactReceived", "AcknowledgementIssued"]
    ack = list(ledger.events.get(out.case_id))[2]
    assert ack.reference == out.reference
    assert "Q one" in ack.request_copy and "Q two" in ack.request_copy
    assert ack.respond_by == ledger.policy.respond_by(channel="email", category=None, received_at=clock.now)
    assert ack.respond_by > clock.now
    assert out.reference in out.acknowledgement


def test_resubmission_records_nothing_and_returns_same_acknowledgement(ledger: CaseLedger) -> None:
    first = ledger.record_contact(draft())
    before = stored_count(ledger)
    again = ledger.record_contact(draft())
    assert again.duplicate
    assert (again.reference, again.acknowledgement_id, again.respond_by) == (
        first.reference, first.acknowledgement_id, first.respond_by)
    assert again.acknowledgement == first.acknowledgement
    assert stored_count(ledger) == before


def test_same_message_id_on_another_channel_is_another_contact(ledger: CaseLedger) -> None:
    a = ledger.record_contact(draft(channel="email"))
    b = ledger.record_contact(draft(channel="sms"))
    assert a.reference != b.reference


def test_case_is_found_by_reference_message_and_identity(ledger: CaseLedger) -> None:
    out = ledger.record_contact(draft(msg="form-77", channel="web_form"))
    assert ledger.get_case(out.reference.lower()).id == out.case_id
    assert ledger.find_by_message("web_form", "form-77").reference == out.reference
    assert [c.reference for c in ledger.cases_of("email:JANE@example.com")] == [out.reference]
    with pytest.raises(NotFound, match="no case with reference"):
        ledger.get_case("CL-00000-00000")
    with pytest.raises(NotFound):
        ledger.find_by_message("web_form", "nope")
    with pytest.raises(NotFound, match="no customer known"):
        ledger.cases_of("email:nobody@example.com")


def test_contact_with_case_reference_joins_case_and_counts_follow_up(ledger: CaseLedger) -> None:
    out = ledger.record_contact(draft())
    again = ledger.record_contact(draft(msg="m2", channel="phone", items=("Still waiting",), case_reference=out.reference, follow_up=True))
    assert again.reference == out.reference and not again.opened_case
    case = ledger.get_case(out.reference)
    assert case.follow_ups == 1
    assert case.open_item_ids() == ["Q1", "Q2"]
    assert again.acknowledgement_id == "ACK2"


def test_contact_referencing_another_customers_case_is_refused(ledger: CaseLedger) -> None:
    out = ledger.record_contact(draft())
    before = stored_count(ledger)
    with pytest.raises(RuleViolation, match="another customer"):
        ledger.record_contact(draft(msg="x", identity=Identity.parse("email:eve@example.com"), case_reference=out.reference))
    assert stored_count(ledger) == before


def test_explicit_customer_id_and_attachments(ledger: CaseLedger) -> None:
    att = Attachment(ref="s3://bucket/a.pdf", sha256="a" * 64, size=10, media_type="application/pdf", filename="a.pdf")
    out = ledger.record_contact(draft(customer_id="crm-42", attachments=(att,)))
    assert out.customer_id == "crm-42"
    received = list(ledger.events.get(out.case_id))[1]
    assert received.attachments[0]["sha256"] == "a" * 64
    assert [c.reference for c in ledger.cases_of("crm-42")] == [out.reference]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channel": "fax"}, "unknown channel"),
        ({"items": ()}, "at least one item"),
        ({"msg": " "}, "channel message id"),
        ({"body": "x" * 100_001}, "limit"),
    ],
)
def test_invalid_contacts_are_refused_before_anything_is_recorded(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        draft(**kwargs)


def test_contact_from_the_future_is_refused(ledger: CaseLedger, clock: FakeClock) -> None:
    with pytest.raises(ValidationError, match="future"):
        ledger.record_contact(draft(occurred_at=clock.now + timedelta(hours=2)))
    assert stored_count(ledger) == 0


# -- S4: items, responses, closing ---------------------------------------------------------------


def test_items_answered_individually_and_close_needs_all(ledger: CaseLedger) -> None:
    ref = ledger.record_contact(draft(items=("a", "b", "c"))).reference
    assert ledger.respond(ref, actor=ALICE, body="answer to a", answers=["Q1"]) == "R1"
    version = ledger.get_case(ref).version
    with pytest.raises(RuleViolation, match="unanswered items Q2, Q3"):
        ledger.close_case(ref, actor=ALICE, reason="done", notice="closed")
    assert ledger.get_case(ref).version == version  # nothing partial
    with pytest.raises(RuleViolation, match="already answered"):
        ledger.respond(ref, actor=ALICE, body="again", answers=["Q1"])
    with pytest.raises(RuleViolation, match="no item Q9"):
        ledger.respond(ref, actor=ALICE, body="x", answers=["Q9"])
    ledger.respond(ref, actor=ALICE, body="b and c", answers=["Q2", "Q3"])
    ledger.close_case(ref, actor=ALICE, reason="all answered", notice="We closed your case")
    assert ledger.get_case(ref).status == "closed"


def test_close_with_waivers_records_each_waiver(ledger: CaseLedger) -> None:
    ref = ledger.record_contact(draft(items=("a", "b"))).reference
    with pytest.raises(ValidationError, match="reason"):
        ledger.close_case(ref, actor=ALICE, reason="done", notice="n", waive={"Q1": " "})
    ledger.close_case(ref, actor=ALICE, reason="done", notice="n", waive={"Q1": "duplicate question", "Q2": "withdrawn"})
    assert event_types(ledger, ref)[-3:] == ["ItemWaived", "ItemWaived", "CaseClosed"]
    assert ledger.get_case(ref).items["Q1"].waived_reason == "duplicate question"


def test_close_and_status_changes_need_reason_and_notice(ledger: CaseLedger) -> None:
    ref = ledger.record_contact(draft()).reference
    ledger.waive_item(ref, actor=ALICE, item_id="Q1", reason="answered by phone")
    for reason, notice, match in (("", "n", "reason"), ("r", "", "notice")):
        with pytest.raises(ValidationError, match=match):
            ledger.close_case(ref, actor=ALICE, reason=reason, notice=notice)
        with pytest.raises(ValidationError, match=match):
            ledger.change_status(ref, actor=ALICE, to_status="on_hold", reason=reason, notice=notice)
    with pytest.raises(ValidationError, match="case close"):
        ledger.change_status(ref, actor=ALICE, to_status="closed", reason="r", notice="n")
    ledger.change_status(ref, actor=ALICE, to_status="on_hold", reason="waiting for bank", notice="We wait for the bank")
    assert ledger.get_case(ref).status == "on_hold"


def test_cancel_needs_promises_withdrawn_and_reopen_needs_reason(ledger: CaseLedger, clock: FakeClock) -> None:
    ref = ledger.record_contact(draft()).reference
    ledger.make_promise(ref, actor=ALICE, channel="email", kind="refund", terms="refund 20 EUR", due_at=clock.now + timedelta(days=3))
    with pytest.raises(RuleViolation, match="withdraw"):
        ledger.cancel_case(ref, actor=ALICE, reason="customer asked", notice="Cancelled as you asked")
    with pytest.raises(ValidationError, match="notice"):
        ledger.withdraw_promise(ref, actor=ALICE, promise_id="P1", reason="cancelled", notice="")
    ledger.withdraw_promise(ref, actor=ALICE, promise_id="P1", reason="customer cancels", notice="No refund is due any more")
    ledger.cancel_case(ref, actor=ALICE, reason="customer asked", notice="Cancelled as you asked")
    case = ledger.get_case(ref)
    assert case.status == "cancelled"
    with pytest.raises(RuleViolation, match="cancelled; reopen"):
        ledger.respond(ref, actor=ALICE, body="hello", answers=[])
    with pytest.raises(ValidationError, match="reason"):
        ledger.reopen_case(ref, actor=ALICE, reason="", notice="n")
    ledger.reopen_case(ref, actor=ALICE, reason="customer changed mind", notice="Your case is open again")
    assert ledger.get_case(ref).status == "open"


def test_contact_on_closed_case_reopens_it(ledger: CaseLedger) -> None:
    ref = ledger.record_contact(draft()).reference
    ledger.close_case(ref, actor=ALICE, reason="r", notice="n", waive={"Q1": "dup"})
    ledger.record_contact(draft(msg="m9", items=("again",), case_reference=ref))
    assert ledger.get_case(ref).status == "open"
    assert event_types(ledger, ref)[-3:] == ["CaseReopened", "ContactReceived", "AcknowledgementIssued"]


# -- S5: promises -----------------------------------------------------------------------------------


def test_phone_promise_gets_written_confirmation_email_promise_does_not(ledger: CaseLedger, clock: FakeClock) -> None:
    ref = ledger.record_contact(draft()).reference
    due = clock.now + timedelta(days=1)
    pid, confirmation = ledger.make_promise(ref, actor=ALICE, channel="phone", kind="callback", terms="call back at 10", due_at=due)
    assert (pid, confirmation) == ("P1", "W1")
    written = list(ledger.events.get(case_id_for(ref)))[-1]
    assert type(written).__name__ == "WrittenConfirmationIssued"
    assert "call back at 10" in written.text and written.channel == "email"
    assert ledger.make_promise(ref, actor=ALICE, channel="email", kind="refund", terms="20 EUR", due_at=due) == ("P2", None)
    with pytest.raises(ValidationError, match="not after"):
        ledger.make_promise(ref, actor=ALICE, channel="chat", kind="x", terms="y", due_at=clock.now - timedelta(hours=1))
    with pytest.raises(ValidationError, match="evidence"):
        ledger.keep_promise(ref, actor=ALICE, promise_id="P1", evidence="")
    ledger.keep_promise(ref, actor=ALICE, promise_id="P1", evidence="call log 123")
    ledger.break_promise(ref, actor=ALICE, promise_id="P2", reason="refund system down")
    case = ledger.get_case(ref)
    assert (case.promises["P1"].status, case.promises["P2"].status) == ("kept", "broken")
    with pytest.raises(RuleViolation, match="already kept"):
        ledger.withdraw_promise(ref, actor=ALICE, promise_id="P1", reason="r", notice="n")


def test_promise_in_branch_confirmed_by_letter_without_written_contact(ledger: CaseLedger, clock: FakeClock) -> None:
    ref = ledger.record_contact(draft(channel="branch")).reference
    _, confirmation = ledger.make_promise(ref, actor=ALICE, channel="branch", kind="repair", terms="fix card", due_at=clock.now + timedelta(days=2))
    assert confirmation == "W1"
    assert list(ledger.events.get(case_id_for(ref)))[-1].channel == "letter"


# -- S7, S10: handoff and escalation ---------------------------------------------------------------


def test_handoff_carries_brief(ledger: CaseLedger, clock: FakeClock) -> None:
    ref = ledger.record_contact(draft(items=("refund?", "address change"))).reference
    ledger.record_contact(draft(msg="c1", channel="chat", items=("any news?",), case_reference=ref, follow_up=True))
    ledger.make_promise(ref, actor=ALICE, channel="phone", kind="callback", terms="call tomorrow", due_at=clock.now + timedelta(days=1))
    ledger.respond(ref, actor=ALICE, body="address changed", answers=["Q2"])
    ledger.assign(ref, actor=ALICE, assignee="alice", team="billing")
    brief = ledger.hand_off(ref, actor=ALICE, to_assignee="bob", to_team="refunds", note="customer is upset")
    assert [i["item_id"] for i in brief["open_items"]] == ["Q1", "Q3"]
    assert [p["terms"] for p in brief["open_promises"]] == ["call tomorrow"]
    assert {c["channel"] for c in brief["last_contacts"]} == {"email", "chat"}
    handed = list(ledger.events.get(case_id_for(ref)))[-1]
    assert handed.brief == brief and handed.from_assignee == "alice"
    case = ledger.get_case(ref)
    assert (case.assignee, case.team) == ("bob", "refunds")


def test_chatbot_escalation_records_wait(ledger: CaseLedger, clock: FakeClock) -> None:
    ref = ledger.record_contact(draft(channel="chatbot")).reference
    waited_from = clock.now
    clock.advance(minutes=17)
    wait = ledger.escalate_to_human(ref, actor=Actor.parse("system:chatbot"), bot_id="bot-1", waiting_since=waited_from, to_team="support", reason="customer asked for a human")
    assert wait == 17 * 60
    event = list(ledger.events.get(case_id_for(ref)))[-1]
    assert event.wait_seconds == 1020 and event.waiting_since == waited_from


# -- S9: automation proposes, humans decide ----------------------------------------------------------


def test_automation_cannot_act_on_customer_only_propose(ledger: CaseLedger) -> None:
    ref = ledger.record_contact(draft()).reference
    for attempt in (
        lambda: ledger.change_status(ref, actor=RULE, to_status="on_hold", reason="r", notice="n"),
        lambda: ledger.respond(ref, actor=RULE, body="auto", answers=["Q1"]),
        lambda: ledger.cancel_case(ref, actor=RULE, reason="r", notice="n"),
    ):
        with pytest.raises(RuleViolation, match="propose"):
            attempt()
    x1 = ledger.propose_action(ref, actor=RULE, rule_id="limits-v2", action="lower_card_limit", params={"limit": "500"}, rationale="risk score 0.91")
    with pytest.raises(RuleViolation, match="human"):
        ledger.approve_action(ref, actor=RULE, proposal_id=x1)
    with pytest.raises(RuleViolation, match="only an action a human approved"):
        ledger.record_action_executed(ref, actor=Actor.parse("system:cards"), proposal_id=x1, result="done")
    assert ledger.approve_action(ref, actor=ALICE, proposal_id=x1, note="checked") == "approved"
    ledger.record_action_executed(ref, actor=Actor.parse("system:cards"), proposal_id=x1, result="limit 500")
    x2 = ledger.propose_action(ref, actor=RULE, rule_id="limits-v2", action="lower_card_limit", params={}, rationale="r")
    with pytest.raises(ValidationError, match="reason"):
        ledger.reject_action(ref, actor=ALICE, proposal_id=x2, reason="")
    ledger.reject_action(ref, actor=ALICE, proposal_id=x2, reason="customer travels")
    case = ledger.get_case(ref)
    assert (case.proposals["X1"].status, case.proposals["X2"].status) == ("executed", "rejected")
    assert case.proposals["X1"].rule_id == "limits-v2"


def test_approved_ledger_action_executes_in_same_transaction(ledger: CaseLedger) -> None:
    ref = ledger.record_contact(draft()).reference
    x = ledger.propose_action(ref, actor=RULE, rule_id="idle", action="change_status",
                              params={"to": "waiting_on_customer", "reason": "no reply 7d", "notice": "We wait for you"}, rationale="idle")
    assert ledger.approve_action(ref, actor=ALICE, proposal_id=x) == "executed"
    assert event_types(ledger, ref)[-3:] == ["ActionApproved", "StatusChanged", "ActionExecuted"]
    assert ledger.get_case(ref).status == "waiting_on_customer"


def test_approval_of_invalid_ledger_action_records_nothing(ledger: CaseLedger) -> None:
    ref = ledger.record_contact(draft()).reference
    x = ledger.propose_action(ref, actor=RULE, rule_id="r", action="close", params={"reason": "r", "notice": "n"}, rationale="idle")
    version = ledger.get_case(ref).version
    with pytest.raises(RuleViolation, match="unanswered"):
        ledger.approve_action(ref, actor=ALICE, proposal_id=x)
    assert ledger.get_case(ref).version == version
    assert ledger.get_case(ref).proposals[x].status == "proposed"


# -- deadlines, deliveries, reads -----------------------------------------------------------------------


def test_tick_records_each_missed_deadline_once(ledger: CaseLedger, clock: FakeClock) -> None:
    ref = ledger.record_contact(draft(items=("a", "b"))).reference
    other = ledger.record_contact(draft(msg="m2", channel="chat")).reference
    ledger.record_delivery(other, message_id="ACK1", delivered_at=clock.now)
    ledger.make_promise(ref, actor=ALICE, channel="phone", kind="callback", terms="t", due_at=clock.now + timedelta(hours=1))
    assert ledger.tick().total == 0
    clock.advance(days=30)
    report = ledger.tick()
    assert report.missed == {"acknowledgement": 1, "response": 2, "promise": 1, "confirmation": 1}
    assert report.cases_checked == 2
    clock.advance(days=1)
    assert ledger.tick().total == 0
    missed = [e for e in ledger.events.get(case_id_for(ref)) if type(e).__name__ == "DeadlineMissed"]
    assert sorted((e.deadline_kind, e.target_id) for e in missed) == [
        ("acknowledgement", "ACK1"), ("confirmation", "W1"), ("promise", "P1"), ("response", "C1")]


def test_answered_contact_and_kept_promise_are_not_missed(ledger: CaseLedger, clock: FakeClock) -> None:
    ref = ledger.record_contact(draft()).reference
    ledger.record_delivery(ref, message_id="ACK1", delivered_at=clock.now)
    ledger.respond(ref, actor=ALICE, body="done", answers=["Q1"])
    clock.advance(days=30)
    assert ledger.tick().total == 0


def test_deliveries_and_reads_are_recorded(ledger: CaseLedger, clock: FakeClock) -> None:
    ref = ledger.record_contact(draft()).reference
    ledger.record_delivery(ref, message_id="ack1", delivered_at=clock.now)
    with pytest.raises(RuleViolation, match="already reported"):
        ledger.record_delivery(ref, message_id="ACK1", delivered_at=clock.now)
    with pytest.raises(ValidationError, match="inbound"):
        ledger.record_delivery(ref, message_id="C1", delivered_at=clock.now)
    ledger.record_read(ref, actor=Actor.parse("customer:jane"), message_id="ACK1")
    ledger.record_read(ref, actor=ALICE, message_id="C1")
    with pytest.raises(RuleViolation, match="no message R7"):
        ledger.record_read(ref, actor=ALICE, message_id="R7")
    case = ledger.get_case(ref)
    assert case.messages["ACK1"].read_by == [f"customer:{case.customer_id}"]  # by customer id (issue 24)
    assert case.messages["C1"].read_by == ["agent:alice"]


# -- storage: concurrency, bytes, chain -----------------------------------------------------------------


def test_concurrent_commands_on_one_case_one_wins_other_conflicts(make_ledger: Any) -> None:
    first, second = make_ledger(), make_ledger()
    ref = first.record_contact(draft(items=("a", "b"))).reference
    case_a, case_b = first.get_case(ref), second.get_case(ref)
    from caseledger.ledger.domain.events import Context

    case_a.respond(ctx=Context(actor=ALICE), body="a", answers=["Q1"])
    case_b.respond(ctx=Context(actor=BOB), body="b", answers=["Q2"])
    first.record(case_a)
    with pytest.raises(ConflictError, match="retry"):
        second.record(case_b)
    case = second.get_case(ref)
    assert case.items["Q1"].status == "answered" and case.items["Q2"].status == "open"
    second.respond(ref, actor=BOB, body="b", answers=["Q2"])  # the retry succeeds
    assert second.get_case(ref).open_item_ids() == []


def test_concurrent_contacts_on_one_case_are_all_recorded(make_ledger: Any) -> None:
    apps = [make_ledger() for _ in range(4)]
    ref = apps[0].record_contact(draft()).reference
    errors: list[BaseException] = []

    def send(app: CaseLedger, n: int) -> None:
        try:
            for k in range(5):
                app.record_contact(draft(msg=f"t{n}-{k}", channel="chat", items=(f"q{n}{k}",), case_reference=ref))
                app.record_contact(draft(msg=f"t{n}-{k}", channel="chat", items=(f"q{n}{k}",), case_reference=ref))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=send, args=(app, n)) for n, app in enumerate(apps)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    case = apps[0].get_case(ref)
    assert len(case.contacts) == 1 + 4 * 5
    assert sorted(c.channel_message_id for c in case.contacts.values())[:2] == ["m1", "t0-0"]


def test_stored_bytes_are_avro_and_chained(ledger: CaseLedger) -> None:
    ref = ledger.record_contact(draft(items=("a", "b"))).reference
    ledger.respond(ref, actor=ALICE, body="x", answers=["Q1"])
    stored = ledger.recorder.select_events(case_id_for(ref))
    assert all(bytes(s.state).startswith(MAGIC) for s in stored)
    events = list(ledger.events.get(case_id_for(ref)))
    assert events[0].previous_hash is None
    for before, event, raw in zip(stored, events[1:], stored[1:], strict=False):
        assert event.previous_hash == event_hash(bytes(before.state))
        assert raw.topic.startswith("caseledger.events.")
    assert ledger.get_case(ref).chain_head == event_hash(bytes(stored[-1].state))


def test_a_fresh_ledger_on_the_same_store_sees_everything(make_ledger: Any) -> None:
    first = make_ledger()
    ref = first.record_contact(draft()).reference
    first.respond(ref, actor=ALICE, body="x", answers=["Q1"])
    second = make_ledger()
    case = second.get_case(ref)
    assert case.open_item_ids() == [] and case.version == 4
    # and it continues the chain where the first one stopped
    second.close_case(ref, actor=ALICE, reason="r", notice="n")
    events = list(second.events.get(case_id_for(ref)))
    assert events[-1].previous_hash == event_hash(bytes(second.recorder.select_events(case_id_for(ref))[-2].state))


def test_history_lists_every_event_of_a_customer_across_cases(ledger: CaseLedger, clock: FakeClock) -> None:
    a = ledger.record_contact(draft(msg="1", channel="email")).reference
    clock.advance(minutes=1)
    b = ledger.record_contact(draft(msg="2", channel="sms", identity=Identity.parse("email:jane@example.com"))).reference
    clock.advance(minutes=1)
    ledger.respond(a, actor=ALICE, body="x", answers=["Q1"])
    history = ledger.history("email:jane@example.com")
    names = [type(e).__name__ for e in history]
    assert names.count("ContactReceived") == 2 and names.count("CaseOpened") == 2
    assert history == sorted(history, key=lambda e: (e.timestamp, e.originator_version))
    assert {getattr(e, "reference", None) for e in history} >= {a, b}


# -- units of work (batched intake) ----------------------------------------------------------------------


def test_unit_of_work_saves_every_command_and_its_tracking_together(ledger: CaseLedger) -> None:
    from eventsourcing.persistence import Tracking

    with ledger.unit_of_work(Tracking(application_name="intake/t/0", notification_id=7)):
        first = ledger.record_contact(draft(msg="a"))
        again = ledger.record_contact(draft(msg="a"))  # recognised inside the same unit
        with pytest.raises(NotFound):
            ledger.record_contact(draft(msg="b", case_reference="CL-00000-00000"))
        ledger.record_contact(draft(msg="c", items=("more",), case_reference=first.reference))
        ledger.respond(first.reference, actor=ALICE, body="x", answers=["Q1"])
        assert stored_count(ledger) == 0  # nothing is written before the unit ends
    assert again.duplicate and again.reference == first.reference
    assert ledger.recorder.max_tracking_id("intake/t/0") == 7
    case = ledger.get_case(first.reference)
    assert len(case.contacts) == 2 and case.items["Q1"].status == "answered"
    assert event_types(ledger, first.reference).count("ContactReceived") == 2


def test_failed_command_in_unit_of_work_leaves_no_trace(ledger: CaseLedger) -> None:
    from eventsourcing.persistence import Tracking

    ref = ledger.record_contact(draft()).reference
    x = ledger.propose_action(ref, actor=RULE, rule_id="r", action="close", params={"reason": "r", "notice": "n"},
                              rationale="idle")
    version = ledger.get_case(ref).version
    with ledger.unit_of_work(Tracking(application_name="intake/t/0", notification_id=1)):
        # approving triggers ActionApproved, then closing fails: the unit must forget both
        with pytest.raises(RuleViolation):
            ledger.approve_action(ref, actor=ALICE, proposal_id=x)
        ledger.respond(ref, actor=ALICE, body="answer", answers=["Q1"])
    case = ledger.get_case(ref)
    assert case.version == version + 1
    assert case.proposals[x].status == "proposed" and case.items["Q1"].status == "answered"


def test_tracking_position_never_goes_back(ledger: CaseLedger) -> None:
    from eventsourcing.persistence import Tracking

    with ledger.unit_of_work(Tracking(application_name="intake/t/1", notification_id=10)):
        ledger.record_contact(draft(msg="z"))
    with pytest.raises(ConflictError), ledger.unit_of_work(Tracking(application_name="intake/t/1", notification_id=10)):
        ledger.record_contact(draft(msg="y"))  # a redelivered batch is refused whole
    with pytest.raises(NotFound):
        ledger.find_by_message("email", "y")


def test_prefetch_in_unit_of_work_sees_stored_and_new_aggregates(ledger: CaseLedger) -> None:
    from eventsourcing.persistence import Tracking

    from caseledger.ledger.domain.directory import ChannelMessage, Customer
    from caseledger.ledger.domain.values import Channel

    first = ledger.record_contact(draft(msg="a"))
    customer = Customer.id_for(first.customer_id)  # a pseudonym, not the identity (docs/privacy.md)
    assert first.customer_id.startswith("cus-") and "jane" not in first.customer_id
    (known,) = ledger.pseudonyms.message_ids_for(Channel.EMAIL, "a")  # keyed by its lookup secret (issue 24)
    new = ChannelMessage.id_for(Channel.EMAIL, "b")  # recorded nowhere
    stored = ledger.recorder.select_events_after({known, new, customer})
    assert set(stored) == {known, customer}
    assert [e.originator_version for e in stored[known]] == [1]
    assert [e.originator_version for e in stored[customer]] == [1, 2]
    with ledger.unit_of_work(Tracking(application_name="intake/p/0", notification_id=1)):
        ledger.prefetch({known, new, customer})
        prefetched = ledger.load(customer)
        stored_customer = ledger.repository.get(customer)
        assert vars(prefetched) == vars(stored_customer)  # same state, version and chain head
        again = ledger.record_contact(draft(msg="a"))
        other = ledger.record_contact(draft(msg="b"))
    assert again.duplicate and again.reference == first.reference
    assert not other.duplicate and ledger.find_by_message("email", "b").reference == other.reference
    assert [c.reference for c in ledger.cases_of("email:jane@example.com")] == [first.reference, other.reference]


def test_unit_of_work_records_one_tracking_record_per_partition(ledger: CaseLedger) -> None:
    from eventsourcing.persistence import Tracking

    with ledger.unit_of_work([Tracking("intake/t/0", 5), Tracking("intake/t/1", 9), Tracking("intake/t/2", 3)]):
        ledger.record_contact(draft(msg="a"))
    assert [ledger.recorder.max_tracking_id(f"intake/t/{p}") for p in range(3)] == [5, 9, 3]
    # a redelivery of any one of the partitions refuses the whole unit
    with pytest.raises(ConflictError), ledger.unit_of_work([Tracking("intake/t/0", 6), Tracking("intake/t/1", 9)]):
        ledger.record_contact(draft(msg="b"))
    assert ledger.recorder.max_tracking_id("intake/t/0") == 5
    with pytest.raises(NotFound):
        ledger.find_by_message("email", "b")


def test_stored_events_after_a_known_version(ledger: CaseLedger) -> None:
    from caseledger.ledger.domain.directory import Customer

    ledger.record_contact(draft(msg="a"))
    ledger.record_contact(draft(msg="b"))
    customer = Customer.id_for(ledger.resolve_customer("email:jane@example.com"))
    assert [e.originator_version for e in ledger.recorder.select_events_after([customer])[customer]] == [1, 2, 3]
    assert [e.originator_version for e in ledger.recorder.select_events_after([customer], after={customer: 2})[customer]] == [3]
    assert ledger.recorder.select_events_after([customer], after={customer: 3}) == {}


def test_kept_aggregates_follow_other_writers_and_never_keep_a_failed_unit(
    make_ledger: Any,
) -> None:
    """Aggregates kept between units equal the stored ones, whoever wrote meanwhile, whatever failed."""
    from eventsourcing.persistence import Tracking

    from caseledger.ledger.domain.directory import Customer

    worker, agent = make_ledger(), make_ledger()
    worker.keep_aggregates(100)
    customer = Customer.id_for(worker.customer_id_for(Identity.parse("email:jane@example.com")))
    with worker.unit_of_work(Tracking("intake/k/0", 1)):
        first = worker.record_contact(draft(msg="a"))
    assert worker._cache is not None and len(worker._cache) >= 3  # the customer, its claim, the case...
    agent.record_contact(draft(msg="b"))  # another writer adds a case to the same customer
    with worker.unit_of_work(Tracking("intake/k/0", 2)):
        third = worker.record_contact(draft(msg="c"))
    assert len(agent.cases_of("email:jane@example.com")) == 3
    # a unit that fails on save (a redelivered position) must not leave its changes in the cache
    with pytest.raises(ConflictError), worker.unit_of_work(Tracking("intake/k/0", 2)):
        worker.record_contact(draft(msg="d"))
        worker.respond(first.reference, actor=ALICE, body="x", answers=["Q1"])
    with worker.unit_of_work(Tracking("intake/k/0", 3)):
        worker.prefetch([customer, first.case_id, third.case_id])
        for aggregate_id in (customer, first.case_id, third.case_id):
            assert vars(worker.load(aggregate_id)) == vars(agent.repository.get(aggregate_id))
    assert worker.get_case(first.reference).items["Q1"].status != "answered"


def test_a_new_customer_is_registered_with_the_identity_it_first_used(ledger: CaseLedger) -> None:
    from caseledger.ledger.domain.directory import Customer

    ledger.record_contact(draft(msg="a", customer_id="C-7"))
    ledger.record_contact(draft(msg="b", customer_id="C-7", identity=Identity.parse("phone:+33612345678")))
    events = list(ledger.events.get(Customer.id_for("C-7")))
    assert [type(e).__name__ for e in events] == ["CustomerRegistered", "CaseLinked", "IdentityLinked", "CaseLinked"]
    assert events[0].identity == {"kind": "email", "value": "jane@example.com"}
    assert ledger.repository.get(Customer.id_for("C-7")).identities == ["email:jane@example.com", "phone:+33612345678"]
    assert ledger.resolve_customer("phone:+33612345678") == ledger.resolve_customer("email:jane@example.com") == "C-7"


def test_a_customer_registered_before_the_identity_field_keeps_its_identities() -> None:
    """History written with the retired CustomerRegistered schema (identity linked separately) replays the same."""
    from io import BytesIO

    from fastavro import schemaless_writer

    from caseledger.ledger.avro.codec import (
        AvroEventCodec,
        history_files,
        parse_event_schema,
        schema_fingerprint,
    )
    from caseledger.ledger.domain.directory import Customer
    from caseledger.ledger.domain.events import Context
    from caseledger.ledger.domain.values import SYSTEM

    codec = AvroEventCodec()
    retired = next(text for name, text in history_files() if name.startswith("CustomerRegistered."))
    writer = parse_event_schema(retired, codec.envelope)
    customer = Customer.register(customer_id="C-1", segment=None, ctx=Context(actor=SYSTEM))
    customer.link_identity(Identity.parse("email:a@b.example"), ctx=Context(actor=SYSTEM))
    registered, linked = customer.collect_events()
    record = codec.decode_record("CustomerRegistered", codec.encode(registered))
    assert record.pop("identity") is None
    out = BytesIO()
    out.write(MAGIC + schema_fingerprint(writer))
    schemaless_writer(out, writer, record)
    old = codec.decode("CustomerRegistered", out.getvalue())
    assert old.identity is None
    assert linked.mutate(old.mutate(None)).identities == ["email:a@b.example"]


def test_case_references_use_all_32_symbols_and_readable_format() -> None:
    import re
    from collections import Counter

    from caseledger.ledger.domain.case_references import _REFERENCE_ALPHABET, new_reference

    refs = [new_reference() for _ in range(4000)]
    assert all(re.fullmatch(r"CL-[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}", r) for r in refs)
    assert len(set(refs)) == len(refs)
    counts = Counter(ch for r in refs for ch in r[3:].replace("-", ""))
    assert set(counts) == set(_REFERENCE_ALPHABET)  # every symbol is drawn, none outside the alphabet
    assert min(counts.values()) > 0.7 * 40_000 / 32  # roughly uniform: no symbol starved


def test_services_started_together_on_an_empty_store_all_start(database: str) -> None:
    """intake, publisher and projections started at once each create the tables: none may fail."""
    import subprocess
    import sys

    code = ("import os, sys; from caseledger.ledger.application import CaseLedger; "
            "from caseledger.ledger.settings import LedgerSettings, Settings; "
            "CaseLedger(LedgerSettings.resolve(database=sys.argv[1], settings=Settings.from_environ(os.environ))).close()")
    starts = [subprocess.Popen([sys.executable, "-c", code, database], stderr=subprocess.PIPE) for _ in range(6)]
    failures = [p.stderr.read().decode()[-400:] for p in starts if p.wait(120) != 0]  # type: ignore[union-attr]
    assert failures == []
    ledger = CaseLedger(ledger_settings(database=database))
    try:
        assert ledger.record_contact(draft(msg="after-start")).opened_case
    finally:
        ledger.close()


def test_side_tables_first_used_together_are_created_without_a_conflict(database: str) -> None:
    """Finding (CI): one of three intake workers started together on a new database died at start with
    "another command changed the same case first": each created the adapter-key table on first use, and
    PostgreSQL's CREATE TABLE IF NOT EXISTS run by two sessions at once fails the loser's (a duplicate
    pg_type row). Every side table created on first use, first used by several processes at once."""
    ledgers = [CaseLedger(ledger_settings(database=database)) for _ in range(6)]  # the event tables exist
    try:
        uses: list[Callable[[CaseLedger], object]] = [
            lambda ledger: ledger.storage.adapter_keys(),
            lambda ledger: ledger.storage.idempotency(),
            lambda ledger: ledger.storage.principals(),
            lambda ledger: ledger.storage.cosignatures(),
            lambda ledger: (table := ledger.storage.case_snapshots()).dialect.create(table.create_statements),  # type: ignore[attr-defined]
            lambda ledger: ledger.storage.merkle(),
        ]
        for use in uses:
            start = threading.Barrier(len(ledgers))
            failures: list[BaseException] = []

            def first_use(ledger: CaseLedger, use: Callable[[CaseLedger], object] = use,
                          start: threading.Barrier = start, failures: list[BaseException] = failures) -> None:
                start.wait()
                try:
                    use(ledger)
                except BaseException as error:
                    failures.append(error)

            threads = [threading.Thread(target=first_use, args=(ledger,)) for ledger in ledgers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert failures == []
    finally:
        for ledger in ledgers:
            ledger.close()


def test_a_lost_table_creation_race_is_retried(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loser of the race sees eventsourcing's IntegrityError on the migration record; it looks again."""
    from eventsourcing.persistence import IntegrityError

    database = str(tmp_path / "race.sqlite")
    CaseLedger(ledger_settings(database=database)).close()  # the winner created everything
    original = CaseLedger.construct_recorder
    calls = []

    def losing_once(self: CaseLedger) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise IntegrityError("Failed to record tracking for __migration__ 1")
        return original(self)

    monkeypatch.setattr(CaseLedger, "construct_recorder", losing_once)
    ledger = CaseLedger(ledger_settings(database=database))
    try:
        assert len(calls) == 2 and ledger.record_contact(draft(msg="m")).opened_case
    finally:
        ledger.close()
    monkeypatch.setattr(CaseLedger, "construct_recorder",
                        lambda self: (_ for _ in ()).throw(IntegrityError("always")))
    with pytest.raises(ConflictError):
        CaseLedger(ledger_settings(database=database))


# -- PostgreSQL: how writers are serialized -------------------------------------------------------------


def test_postgres_writers_are_not_blocked_by_vacuum_but_are_serialized(postgres: Any, clock: FakeClock) -> None:
    """VACUUM/ANALYZE's lock must not stop writes; writers still take turns (insert order = commit order)."""
    import psycopg

    database = postgres.new_database()
    ledger = CaseLedger(ledger_settings(database=database), clock=clock)

    def write(msg: str) -> tuple[threading.Thread, threading.Event]:
        """Record a contact in a thread; the event is set once it is recorded."""
        done = threading.Event()
        writer = threading.Thread(target=lambda: (ledger.record_contact(draft(msg=msg)), done.set()))
        writer.start()
        return writer, done

    try:
        ledger.record_contact(draft(msg="a"))
        table = ledger.recorder.events_table_name
        key = ledger.recorder.writers_lock_key
        with psycopg.connect(database) as vacuum:
            # what (auto)vacuum and analyze hold on the table while they run
            vacuum.execute(f"LOCK TABLE {table} IN SHARE UPDATE EXCLUSIVE MODE")
            writer, done = write("b")
            writer.join(20)
            assert done.is_set(), "a write waited for a vacuum's lock"
            vacuum.rollback()
        # another writer holds the writers' lock; then an older version's writer locks the table instead
        for holder, release in ((f"SELECT pg_advisory_lock({key})", f"SELECT pg_advisory_unlock({key})"),
                                (f"LOCK TABLE {table} IN EXCLUSIVE MODE", "ROLLBACK")):
            with psycopg.connect(database, autocommit=True) as other:
                if holder.startswith("LOCK"):
                    other.execute("BEGIN")
                other.execute(holder)
                writer, done = write(f"after {holder}")
                writer.join(1.0)
                assert not done.is_set(), f"a writer did not wait while another held: {holder}"
                other.execute(release)
                writer.join(20)
                assert done.is_set()
        assert ledger.find_by_message("email", f"after LOCK TABLE {table} IN EXCLUSIVE MODE").reference
    finally:
        ledger.close()


def test_rejections_are_listed_in_store_order_with_their_reason_and_bytes(ledger: CaseLedger) -> None:
    from caseledger.ledger.domain.directory import IntakeSource

    ledger.record_contact(draft())
    for offset, raw in ((4, b"not avro"), (9, b"\xc3\x01 truncated")):
        ledger.reject_intake(IntakeSource("caseledger.intake", 1, offset), reason=f"bad {offset}", raw=raw, kind="unknown")
    rejected = list(ledger.rejections())
    assert [(r.source_offset, r.reason, r.raw) for r in rejected] == [
        (4, "bad 4", b"not avro"), (9, "bad 9", b"\xc3\x01 truncated")]
    assert list(ledger.case_ids()) == [ledger.find_by_message("email", "m1").id]


# -- outbound: what the customer must receive, for the adapter of its channel (ledger/intake/outbound.py) ----------


def test_the_outbound_feed_hands_out_pending_messages_of_a_channel_once_and_forgets_the_erased(
    ledger: CaseLedger, clock: FakeClock,
) -> None:
    from caseledger.ledger.intake.outbound import OutboundFeed

    jane = ledger.record_contact(draft("m1"))
    sam = ledger.record_contact(draft("m2", identity=Identity.parse("email:sam@example.com")))
    ledger.record_contact(draft("s1", channel="sms", identity=Identity.parse("phone:+33612345678")))
    page = OutboundFeed(ledger).page(channels=["email"])
    assert [(m.reference, m.message_id, m.address) for m in page.messages] == [
        (jane.reference, "ACK1", "email:jane@example.com"), (sam.reference, "ACK1", "email:sam@example.com")]
    assert OutboundFeed(ledger).page(channels=["email"], after=page.position).messages == []
    ledger.record_delivery(sam.reference, message_id="ACK1", delivered_at=clock())
    ledger.erase_customer(jane.customer_id, reason="art. 17 request of 2026-12-01, ticket 4711")
    assert OutboundFeed(ledger).page(channels=["email"]).messages == []
    (sms,) = OutboundFeed(ledger).page(channels=["sms"]).messages
    assert sms.address == "phone:+33612345678" and sms.deliver_by is not None
