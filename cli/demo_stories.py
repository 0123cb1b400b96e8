"""The field's stories (S1–S11, the README's table), each played through the demo's ledger and shown three ways."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

from rich.text import Text

from caseledger.cli.demo_show import (
    AUDITOR_STYLE,
    CUSTOMER_ID,
    PARIS,
    SEGMENT,
    Demo,
    at,
    attempt,
    brief_view,
    customer_line,
    duration,
    facts,
    history_table,
    items_view,
    missed_view,
    of_type,
    plain_table,
    plural,
    promises_view,
    response_times,
)
from caseledger.cli.render import event_type
from caseledger.ledger.domain.values import Actor, ActorKind, Channel, ContactDraft, Identity

EMAIL = Identity(kind="email", value="jane.martin@example.com")
FORM_SUBJECT = "Card fees and statement"
FORM_ITEMS = (
    "Why was I charged a 45 EUR card fee twice in February?",
    "Can you send me the February statement as PDF?",
    "How do I add my partner as a card holder?",
)
PHONE = Identity(kind="phone", value="+33 6 12 34 56 78")
ACCOUNT = Identity(kind="account", value="FR-1042")

ALICE = Actor(kind=ActorKind.AGENT, id="alice")
BRUNO = Actor(kind=ActorKind.AGENT, id="bruno")
CHLOE = Actor(kind=ActorKind.AGENT, id="chloe")
DAN = Actor(kind=ActorKind.AGENT, id="dan.backoffice")
RISK_RULE = Actor(kind=ActorKind.AUTOMATION, id="risk-limits-v3")
CHATBOT = Actor(kind=ActorKind.AUTOMATION, id="ava-bot")
CARD_PLATFORM = Actor(kind=ActorKind.SYSTEM, id="card-platform")


# -- the stories --------------------------------------------------------------------------------------


def story_s1(demo: Demo) -> None:
    """A web form contact is durable, has a reference and is found again three ways."""
    demo.story("S1", "Jane sends the web contact form with three questions on Monday morning.")
    outcome = demo.contact(
        Channel.WEB_FORM, "wf-7f3a9c", EMAIL, FORM_ITEMS, subject=FORM_SUBJECT, deliver=False,
    )
    demo.cases["fees"] = outcome.reference
    demo.customer_sees(Text.assemble(
        "Form confirmation page: ", ("Received", "bold"), f" — your reference is {outcome.reference}",
        " (shown only after the ledger stored the contact)\n",
        "Your receipt, signed by the bank (keep it; also in the acknowledgement e-mail, as a QR code on the page):\n",
        (outcome.receipt or "— (the ledger has no signing key)", "bold"),
    ))
    by_reference = demo.ledger.get_case(outcome.reference)
    by_message = demo.ledger.find_by_message("web_form", "wf-7f3a9c")
    customer = demo.ledger.resolve_customer(str(EMAIL))
    cases = [c.reference for c in demo.ledger.cases_of(str(EMAIL))]
    demo.agent_sees(facts([
        ("by reference", f"{by_reference.reference}: {by_reference.status}, “{by_reference.subject}”, "
                         f"{len(by_reference.contacts)} contact, {len(by_reference.items)} items"),
        ("by web_form message wf-7f3a9c", f"{by_message.reference} (contact C1)"),
        (f"by identity {EMAIL}", f"customer {customer}, cases {', '.join(cases)}"),
    ]))
    demo.auditor_sees(demo.new_events(), *receipt_checked(demo, outcome.receipt))


def receipt_checked(demo: Demo, receipt: str | None) -> list[Text]:
    """What anyone with the bank's public key learns from Jane's receipt, offline: its signature, and — from a
    history export the bank hands over later — that the contact is in the signed log."""
    import tempfile
    from pathlib import Path

    from caseledger.ledger.reports.export import export_history
    from caseledger.ledger.transparency.checkpoint_key import load_signer
    from caseledger.verify.history import read_export
    from caseledger.verify.receipts import check_receipt

    signer = load_signer(demo.ledger.settings.transparency)
    if receipt is None or signer is None:
        return []
    with tempfile.TemporaryDirectory(prefix="caseledger-demo-export-") as folder:
        export = Path(folder) / "jane.json"
        export_history(demo.ledger, CUSTOMER_ID, "json", export)
        result = check_receipt(receipt, signer.verifier_key, export=read_export(export))
    return [Text(f"python -m caseledger.verify receipt RECEIPT --key {signer.verifier_key.name}+… --export "
                 "jane.json", style="dim"),
            Text("\n".join(line for line in result.lines if not line.startswith(("event hash", "content digest")))),
            Text(f"receipt: {result.verdict}", style="bold")]


def story_s2(demo: Demo) -> None:
    """Every inbound contact is acknowledged with reference, request copy and respond-by."""
    demo.story("S2",
               "The web form adapter sends the acknowledgement the ledger issued and reports it delivered.")
    demo.clock.advance(minutes=2)
    reference = demo.cases["fees"]
    case = demo.ledger.get_case(reference)
    contact = case.contacts["C1"]
    ack_id = contact.acknowledgement_id or ""
    ack = case.messages[ack_id]
    demo.deliver(reference, ack_id, Channel.WEB_FORM)
    demo.customer_sees(Text(ack.text or ""))
    case = demo.ledger.get_case(reference)
    demo.agent_sees(facts([
        ("acknowledgement", f"{ack_id} of C1, due {at(ack.due_at)}, "
                            f"delivered {at(case.messages[ack_id].delivered_at)}"),
        ("respond by", f"{at(contact.respond_by)} (policy {demo.ledger.policy.name or 'built in'}: web form "
                       f"{demo.ledger.policy._respond_within('web_form', None)._spoken()})"),
    ]))
    issued = of_type(demo.history(), "AcknowledgementIssued")
    copy = " | ".join(line.strip() for line in issued[0].request_copy.splitlines() if line.strip())
    demo.auditor_sees(issued + demo.new_events(), Text(f"request copy kept in {ack_id}: {copy}", style="dim"))


def story_s3(demo: Demo) -> None:
    """Resubmitting the same form (same channel message id) records nothing twice."""
    demo.story("S3", "Jane's session timed out: the browser resends form wf-7f3a9c twice. Then the form "
               "plugin, reset, gives another customer's request the same id.")
    demo.clock.advance(minutes=3)
    before = demo.event_count()
    draft = ContactDraft(
        channel=Channel.WEB_FORM, channel_message_id="wf-7f3a9c", identity=EMAIL, items=FORM_ITEMS,
        subject=FORM_SUBJECT, customer_id=CUSTOMER_ID, segment=SEGMENT, occurred_at=demo.clock(),
    )
    outcomes = [demo.ledger.record_contact(draft) for _ in range(2)]
    after = demo.event_count()
    other = ContactDraft(
        channel=Channel.WEB_FORM, channel_message_id="wf-7f3a9c", identity=Identity.parse("email:paul@example.org"),
        items=("Please close my savings account.",), subject="Closing", occurred_at=demo.clock(),
    )
    collided = attempt(lambda: demo.ledger.record_contact(other))
    demo.customer_sees(*[
        Text(f"Resubmission {n}: reference {o.reference}, respond by {at(o.respond_by)} — the same acknowledgement")
        for n, o in enumerate(outcomes, 1)
    ])
    case = demo.ledger.get_case(demo.cases["fees"])
    demo.agent_sees(facts([
        *[(f"resubmission {n}", f"reference {o.reference}, contact {o.contact_id}, duplicate={o.duplicate}, "
                                f"opened_case={o.opened_case}") for n, o in enumerate(outcomes, 1)],
        ("case", f"still {len(case.contacts)} contact, {len(case.items)} items; "
                 f"Jane has {len(demo.ledger.cases_of(CUSTOMER_ID))} case"),
        ("Paul's form, same id", f"refused, nothing of Jane's case shown: {collided}"),
        ("collisions to review", f"{sum(1 for _ in demo.ledger.collisions())} (caseledger intake collisions)"),
    ]))
    demo.auditor_sees(demo.new_events(), Text(f"events in the store: {before} before, {after} after "
                                              f"(duplicate recognised, nothing recorded twice)"))


def story_s4(demo: Demo) -> None:
    """Items must all be answered (or waived) before a case closes; follow-ups are counted."""
    demo.story("S4", "Alice answers one question of three, tries to close, Jane follows up by email.")
    reference = demo.cases["fees"]
    demo.clock.set_local(2, 11)
    first = "The second 45 EUR fee was a duplicate debit; it is refunded today."
    r1 = demo.ledger.respond(reference, actor=ALICE, body=first, answers=["Q1"], channel="email",
                             occurred_at=demo.clock())
    demo.clock.advance(minutes=5)
    close_refused = attempt(lambda: demo.ledger.close_case(
        reference, actor=ALICE, reason="fee refunded", notice="Your case is closed."))
    demo.clock.set_local(2, 14)
    follow = demo.contact(Channel.EMAIL, "<m-5521@mail.example.com>", EMAIL,
                          ["You answered only my first question: what about the statement and the card holder?"],
                          subject="Re: Card fees and statement", reference=reference, follow_up=True)
    demo.clock.set_local(2, 15, 30)
    second = ("Your February statement is attached. To add a card holder, sign the form in the app "
              "under Cards > Add holder; we pre-filled it for you.")
    r2 = demo.ledger.respond(reference, actor=ALICE, body=second, answers=["Q2", "Q3", "Q4"], channel="email",
                             occurred_at=demo.clock())
    demo.clock.set_local(2, 16)
    demo.ledger.close_case(reference, actor=ALICE, reason="all four questions answered",
                           notice="All your questions are answered; your case is closed. Reply to reopen it.")
    events = demo.new_events()
    closed = of_type(events, "CaseClosed")[0]
    demo.customer_sees(facts([
        (f"{r1} (email)", first),
        (f"follow-up ack {follow.acknowledgement_id}", f"reference {follow.reference}, respond by {at(follow.respond_by)}"),
        (f"{r2} (email)", second),
        (f"closing notice {closed.notice_id}", closed.notice),
    ]))
    case = demo.ledger.get_case(reference)
    demo.agent_sees(
        Text.assemble("first close attempt: ", close_refused),
        items_view(case),
        facts([("follow-ups", str(case.follow_ups)), ("status", case.status)]),
    )
    demo.auditor_sees(events)


def story_s5(demo: Demo) -> None:
    """A promise made on the phone is confirmed in writing, tracked overdue, then kept."""
    demo.story("S5", "Jane calls: Alice promises the refund by Tuesday noon; the refund is late.")
    demo.clock.set_local(2, 16, 30)
    call = demo.contact(Channel.PHONE, "call-20260302-163012", PHONE,
                        ["Make sure the double card fee is really refunded"], subject="Refund of card fee")
    reference = call.reference
    demo.cases["refund"] = reference
    demo.clock.advance(minutes=4)
    due = datetime(2026, 3, 3, 12, 0, tzinfo=PARIS)
    promise_id, confirmation_id = demo.ledger.make_promise(
        reference, actor=ALICE, channel="phone", kind="refund",
        terms="45.00 EUR duplicate card fee refunded to your current account", due_at=due,
        confirmation_channel="email", occurred_at=demo.clock(),
    )
    demo.ledger.respond(reference, actor=ALICE, channel="phone", answers=["Q1"], occurred_at=demo.clock(),
                        body=f"Explained on the call: refund promised ({promise_id}).")
    demo.clock.set_local(3, 14)
    report = demo.ledger.tick()
    overdue = demo.ledger.get_case(reference)
    demo.clock.set_local(3, 15)
    demo.ledger.keep_promise(reference, actor=ALICE, promise_id=promise_id,
                             evidence="refund transfer RF-88213 of 45.00 EUR booked Tue 03 Mar 14:52")
    events = demo.new_events()
    confirmation = next(e for e in events if event_type(e) == "WrittenConfirmationIssued")
    demo.customer_sees(facts([
        (f"written confirmation {confirmation_id} ({confirmation.channel})", getattr(confirmation, "text", "")),
    ]))
    case = demo.ledger.get_case(reference)
    demo.agent_sees(
        facts([
            (f"tick at {at(report.now)}", f"{report.total} deadline missed over {report.cases_checked} cases: "
                                          + ", ".join(f"{k} {n}" for k, n in sorted(report.missed.items()))),
            ("after the tick", f"{promise_id} {overdue.promises[promise_id].status}, "
                               f"missed deadlines: {missed_view(overdue)} (overdue)"),
        ]),
        promises_view(case),
    )
    demo.auditor_sees(events)


def story_s6(demo: Demo) -> None:
    """No cancellation without a reason and a customer-facing notice."""
    demo.story("S6", "Jane re-subscribes an option by chat; a week later the back office cancels it.")
    demo.clock.set_local(3, 16)
    chat = demo.contact(Channel.CHAT, "chat-88412-1", ACCOUNT, ["Please re-subscribe me to the travel insurance option"],
                        subject="Travel insurance option")
    reference = chat.reference
    demo.cases["option"] = reference
    demo.clock.advance(minutes=3)
    answer = "Done: your travel insurance option is active again from today."
    demo.ledger.respond(reference, actor=CHLOE, body=answer, answers=["Q1"], channel="chat",
                        occurred_at=demo.clock())
    demo.clock.set_local(10, 9)
    silent = attempt(lambda: demo.ledger.cancel_case(reference, actor=DAN, reason="", notice=""))
    no_notice = attempt(lambda: demo.ledger.cancel_case(
        reference, actor=DAN, reason="option not available on the Basic account", notice=""))
    demo.ledger.cancel_case(
        reference, actor=DAN,
        reason="travel insurance is not available on the Basic account (product rule PRD-12); no fee charged",
        notice="We had to cancel the travel insurance option you re-subscribed on 3 March: it is not "
               "available on the Basic account. No fee was charged. Reply here to hear about Premium, "
               "which includes travel cover.",
    )
    events = demo.new_events()
    cancelled = of_type(events, "CaseCancelled")[0]
    demo.customer_sees(facts([
        ("chat answer", answer),
        (f"notice {cancelled.notice_id}", cancelled.notice),
    ]))
    case = demo.ledger.get_case(reference)
    demo.agent_sees(
        Text.assemble("cancel without reason: ", silent),
        Text.assemble("cancel without notice: ", no_notice),
        facts([("status", case.status), ("reason", cancelled.reason)]),
    )
    demo.auditor_sees(events)


def story_s7(demo: Demo) -> None:
    """A handoff carries a brief: open items, open promises, last contact per channel."""
    demo.story("S7",
               "Jane's card is blocked abroad: email, then chat, then a call; Alice hands over to Bruno.")
    demo.clock.set_local(10, 9, 30)
    email = demo.contact(Channel.EMAIL, "<m-6034@mail.example.com>", EMAIL,
                         ["Why was my card declined at a Lisbon ATM?",
                          "Please raise my ATM withdrawal limit during my trip"],
                         subject="Card blocked in Lisbon")
    reference = email.reference
    demo.cases["card"] = reference
    demo.ledger.assign(reference, actor=ALICE, assignee="alice", team="cards")
    demo.clock.set_local(10, 10)
    demo.contact(Channel.CHAT, "chat-90117-1", ACCOUNT, ["Unblock my card today, I am at the airport"],
                 subject="Still blocked", reference=reference, follow_up=True)
    demo.clock.set_local(10, 10, 15)
    demo.contact(Channel.PHONE, "call-20260310-101502", PHONE, ["Is my card unblocked now?"],
                 subject="Card still blocked", reference=reference, follow_up=True)
    demo.clock.advance(minutes=5)
    demo.ledger.respond(reference, actor=ALICE, channel="phone", answers=["Q3"], occurred_at=demo.clock(),
                        body="Unblock requested from the card platform while on the call.")
    demo.ledger.make_promise(reference, actor=ALICE, channel="phone", kind="callback",
                             terms="we call you back on your mobile once the card works again",
                             due_at=demo.clock() + timedelta(hours=2), occurred_at=demo.clock())
    demo.clock.advance(minutes=10)
    brief = demo.ledger.hand_off(reference, actor=ALICE, to_assignee="bruno", to_team="cards",
                                 note="Customer is at Lisbon airport; check the unblock, then call back")
    demo.clock.advance(minutes=10)
    reply = ("Hello, I am Bruno and I have taken over your case: your card was declined in Lisbon because "
             "the foreign-use check blocked it; it works again now.")
    demo.ledger.respond(reference, actor=BRUNO, channel="chat", answers=["Q1", "Q4"], occurred_at=demo.clock(),
                        body=reply)
    events = demo.new_events()
    demo.customer_sees(
        facts([(f"written confirmation ({c.channel})", c.text) for c in of_type(events, "WrittenConfirmationIssued")]),
        facts([("Bruno on chat", reply)]),
    )
    demo.agent_sees(Text("Brief Bruno received with the handoff:", style="bold"), brief_view(brief))
    demo.auditor_sees(events)


def story_s8(demo: Demo) -> None:
    """Not played: the delay from publishing to the case view needs Kafka and a clock that runs."""
    demo.story("S8", "Skipped here: S8 is measured against Kafka by `caseledger bench lag`.")


def story_s9(demo: Demo) -> None:
    """Automation only proposes customer-impacting actions; a human approves or rejects them."""
    demo.story("S9", "A risk rule wants to lower Jane's card limit after declined withdrawals abroad.")
    reference = demo.cases["card"]
    demo.clock.set_local(10, 11)
    x1 = demo.ledger.propose_action(
        reference, actor=RISK_RULE, rule_id="risk-limits-v3", action="lower_card_limit",
        params={"card": "**** 4242", "from_eur": "3000", "to_eur": "1000"},
        rationale="3 declined foreign ATM withdrawals within 1 hour",
    )
    self_approval = attempt(lambda: demo.ledger.approve_action(reference, actor=RISK_RULE, proposal_id=x1))
    direct = attempt(lambda: demo.ledger.change_status(
        reference, actor=RISK_RULE, to_status="on_hold", reason="risk score", notice="Your card is on hold."))
    demo.clock.advance(minutes=6)
    decision = demo.ledger.approve_action(reference, actor=BRUNO, proposal_id=x1,
                                          note="customer agreed to a lower limit while travelling")
    demo.clock.advance(minutes=1)
    demo.ledger.record_action_executed(reference, actor=CARD_PLATFORM, proposal_id=x1,
                                       result="limit of card **** 4242 lowered from 3000 to 1000 EUR")
    demo.clock.set_local(10, 11, 30)
    x2 = demo.ledger.propose_action(
        reference, actor=RISK_RULE, rule_id="risk-limits-v3", action="lower_card_limit",
        params={"card": "**** 4242", "from_eur": "1000", "to_eur": "200"},
        rationale="one more declined withdrawal",
    )
    demo.clock.advance(minutes=4)
    demo.ledger.reject_action(reference, actor=BRUNO, proposal_id=x2,
                              reason="that decline happened before the unblock; the customer is travelling")
    events = demo.new_events()
    executed = of_type(events, "ActionExecuted")
    demo.customer_sees(facts(
        [("card limit", e.result) for e in executed]
        + [(f"{x2} (rejected)", "nothing changes for the customer")]
    ))
    case = demo.ledger.get_case(reference)
    table = plain_table("action", "status", "rule", "kind", "params", "decided by")
    for x in case.proposals.values():
        table.add_row(x.proposal_id, x.status, x.rule_id, x.action,
                      ", ".join(f"{k}={v}" for k, v in x.params.items()), x.decided_by or "-")
    demo.agent_sees(
        Text.assemble("rule approves its own proposal: ", self_approval),
        Text.assemble("rule acts on the case directly: ", direct),
        Text(f"bruno approves {x1}: ledger answers “{decision}” (the card platform executes it)"),
        table,
    )
    demo.auditor_sees(events)


def story_s10(demo: Demo) -> None:
    """Chatbot-to-human escalation and wait are recorded; response times per channel are measurable."""
    demo.story("S10",
               "Jane asks the chatbot about a disputed payment; after 9 minutes it passes her to a human.")
    demo.clock.set_local(10, 14)
    bot = demo.contact(Channel.CHATBOT, "bot-session-5531", ACCOUNT,
                       ["How do I dispute a card payment made in a Lisbon shop?"], subject="Dispute a payment")
    reference = bot.reference
    demo.cases["dispute"] = reference
    waiting_since = demo.clock()
    demo.clock.advance(minutes=9)
    waited = demo.ledger.escalate_to_human(reference, actor=CHATBOT, bot_id="ava-bot", waiting_since=waiting_since,
                                           to_team="cards", reason="customer asked twice for a person")
    demo.clock.advance(minutes=3)
    answer = "I am Chloe: I opened the dispute for you, you will get the form by email within the hour."
    demo.ledger.respond(reference, actor=CHLOE, body=answer, answers=["Q1"], channel="chat",
                        occurred_at=demo.clock())
    events = demo.new_events()
    demo.customer_sees(facts([
        ("chatbot", f"reference {bot.reference}; then {duration(timedelta(seconds=waited))} of waiting"),
        ("Chloe on chat", answer),
    ]))
    case = demo.ledger.get_case(reference)
    demo.agent_sees(
        facts([("escalations", "; ".join(f"{b} after {duration(timedelta(seconds=w))}" for b, _, w in case.escalations)),
               ("team", case.team or "-")]),
        Text("Response times computed from Jane's events (contact → first response answering it):",
             style="bold"),
        response_times(demo.history()),
    )
    demo.auditor_sees(events)


def story_s11(demo: Demo) -> None:
    """A customer's full history across every channel and promise, on demand."""
    demo.story("S11", "Jane asks for everything we exchanged; the ledger rebuilds it from her events.")
    history = demo.history()
    timeline = plain_table("when", "case", "channel", "what was exchanged")
    for column in timeline.columns[:-1]:
        column.no_wrap = True
    for event in history:
        line = customer_line(event)
        if line is not None:
            timeline.add_row(at(event.occurred_at), demo.reference_of(event), event.channel or "-", line)
    demo.customer_sees(timeline)
    cases = plain_table("case", "status", "subject", "contacts", "open items", "promises")
    cases.columns[3].no_wrap = True
    for case in demo.ledger.cases_of(CUSTOMER_ID):
        channels = Counter(c.channel for c in case.contacts.values())
        cases.add_row(case.reference, case.status, case.subject,
                      ", ".join(f"{ch} {n}" for ch, n in sorted(channels.items())),
                      ", ".join(case.open_item_ids()) or "-",
                      ", ".join(f"{p.promise_id} {p.status}" for p in case.promises.values()) or "-")
    demo.agent_sees(cases)
    demo.part(f"Auditor sees — the {plural(len(history), 'event')} of {CUSTOMER_ID}, in order", AUDITOR_STYLE,
              history_table(demo, history))


STORIES: tuple[Callable[[Demo], None], ...] = (
    story_s1, story_s2, story_s3, story_s4, story_s5, story_s6, story_s7, story_s8, story_s9, story_s10, story_s11,
)
