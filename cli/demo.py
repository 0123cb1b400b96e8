"""``caseledger demo``: the stories of DESIGN.md (S1–S11) played through a real ledger.

Each story calls the ledger's commands on a fresh SQLite file (or an empty database the user
names) with a simulated clock, then shows what it returned from three points of view:

* **Customer sees** — acknowledgements, responses, written confirmations, notices;
* **Agent sees** — the case state an agent works from;
* **Auditor sees** — the events the story recorded, one line each, read back from the store.

The clock starts on Monday 2 March 2026 at 09:00 in Paris and is moved by hand between steps,
so every run prints the same story; only the random case references differ.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from caseledger.cli.render import describe_event, event_type
from caseledger.ledger.application import CaseLedger, ContactOutcome
from caseledger.ledger.domain.case import Case, LedgerEvent
from caseledger.ledger.domain.catalog import topic_of
from caseledger.ledger.domain.values import Actor, ActorKind, Channel, ContactDraft, Identity
from caseledger.ledger.errors import CaseLedgerError, ConfigurationError
from caseledger.ledger.settings import LedgerSettings

__all__ = ["TITLES", "SimulatedClock", "run_demo"]

PARIS = ZoneInfo("Europe/Paris")
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # Monday 2 March 2026, 09:00 in Paris

CUSTOMER_ID = "cust-1042"
SEGMENT = "retail"
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

TITLES: dict[str, str] = {
    "S1": "a contact is durable and findable",
    "S2": "acknowledgement with reference, copy and deadline",
    "S3": "a resubmitted form is never duplicated",
    "S4": "every item answered before closing",
    "S5": "a phone promise gets a written trace",
    "S6": "no cancellation without reason and notice",
    "S7": "a handoff carries a brief",
    "S8": "a contact is visible within a second",
    "S9": "automation proposes, a human decides",
    "S10": "chatbot escalation and response times",
    "S11": "the customer's full history",
}
"""Each story's short title, printed as ``S1 — <title>``."""

CUSTOMER_STYLE = "green"
AGENT_STYLE = "cyan"
AUDITOR_STYLE = "magenta"


# -- clock and formatting -------------------------------------------------------------------------


class SimulatedClock:
    """The ledger's clock during the demo: it only moves when the demo moves it."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        """Move the clock forward (``minutes=5``, ``days=7`` …) and return the new time."""
        self.now += timedelta(**delta)
        return self.now

    def set_local(self, day: int, hour: int, minute: int = 0) -> datetime:
        """Move the clock to ``day`` March 2026 at ``hour:minute`` Paris time (never backwards)."""
        target = datetime(2026, 3, day, hour, minute, tzinfo=PARIS).astimezone(UTC)
        if target < self.now:
            raise ValueError(f"the demo clock cannot go back from {self.now} to {target}")
        self.now = target
        return self.now


def at(value: datetime | None) -> str:
    """``Mon 02 Mar 09:00``: an instant in Paris time."""
    return value.astimezone(PARIS).strftime("%a %d %b %H:%M") if value else "-"


def duration(value: timedelta) -> str:
    """``2 h 05 min``, ``9 min`` or ``40 s``."""
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min" + (f" {secs:02d} s" if secs else "")
    return f"{secs} s"


def facts(rows: Iterable[tuple[str, Any]]) -> Table:
    """A two-column label / value grid."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    for label, value in rows:
        grid.add_row(label, value if isinstance(value, Text | Table) else Text(str(value)))
    return grid


# -- the demo session ---------------------------------------------------------------------------


@dataclass
class Demo:
    """A ledger, its simulated clock and the console the stories print on."""

    console: Console
    ledger: CaseLedger
    clock: SimulatedClock
    position: int = 0
    references: dict[UUID, str] = field(default_factory=dict)
    cases: dict[str, str] = field(default_factory=dict)

    # -- reading back what was recorded --------------------------------------------------------------

    def event_count(self) -> int:
        """How many events the store holds (the notification log's last position)."""
        return self.ledger.recorder.max_notification_id() or 0

    def new_events(self) -> list[LedgerEvent]:
        """Every event recorded since the previous call, read back from the store in order."""
        events: list[LedgerEvent] = []
        while True:
            batch = self.ledger.recorder.select_notifications(start=self.position + 1, limit=500)
            if not batch:
                break
            for notification in batch:
                event = self.ledger.mapper.to_domain_event(notification)
                if event_type(event) == "CaseOpened":
                    self.references[event.originator_id] = event.reference  # type: ignore[attr-defined]
                events.append(event)  # type: ignore[arg-type]
            self.position = batch[-1].id
        return events

    def reference_of(self, event: LedgerEvent) -> str:
        return str(self.references.get(event.originator_id) or getattr(event, "reference", ""))

    def history(self) -> list[LedgerEvent]:
        return self.ledger.history(CUSTOMER_ID)

    # -- commands the stories share ------------------------------------------------------------------

    def contact(
        self, channel: Channel, message_id: str, identity: Identity, items: Sequence[str], *,
        subject: str = "", body: str = "", reference: str | None = None, follow_up: bool = False,
        deliver: bool = True,
    ) -> ContactOutcome:
        """The customer contacts us; the channel adapter reports the acknowledgement delivered."""
        draft = ContactDraft(
            channel=channel, channel_message_id=message_id, identity=identity, items=tuple(items),
            subject=subject, body=body, case_reference=reference, follow_up=follow_up,
            customer_id=CUSTOMER_ID, segment=SEGMENT, occurred_at=self.clock(),
        )
        outcome = self.ledger.record_contact(draft)
        if deliver:
            self.deliver(outcome.reference, outcome.acknowledgement_id, channel)
        return outcome

    def deliver(self, reference: str, message_id: str, channel: Channel) -> None:
        """The channel adapter confirms our message (e.g. an acknowledgement) reached the customer."""
        self.ledger.record_delivery(
            reference, message_id=message_id, delivered_at=self.clock(),
            actor=Actor(kind=ActorKind.SYSTEM, id=f"{channel.value}-adapter"),
        )

    # -- printing ---------------------------------------------------------------------------------------

    def story(self, number: str, what: str) -> None:
        """Open a story: its rule ``S1 — <title>`` and one line of what happens."""
        self.console.print()
        self.console.print(Rule(f"[bold]{number} — {TITLES[number]}[/]", align="left"))
        self.console.print(Text(what, style="italic dim"))

    def part(self, label: str, style: str, *body: RenderableType) -> None:
        self.console.print(Panel(Group(*body), title=f"[bold {style}]{label}[/]", title_align="left",
                                 border_style=style))

    def customer_sees(self, *body: RenderableType) -> None:
        self.part("Customer sees", CUSTOMER_STYLE, *body)

    def agent_sees(self, *body: RenderableType) -> None:
        self.part("Agent sees", AGENT_STYLE, *body)

    def auditor_sees(self, events: Sequence[LedgerEvent], *notes: RenderableType) -> None:
        """The events, one row each: when, type, actor, channel and the fields that matter."""
        body: list[RenderableType] = [*notes]
        if events:
            body.append(self.events_table(events))
        else:
            body.append(Text("no event recorded", style="bold"))
        self.part(f"Auditor sees — {plural(len(events), 'event')}", AUDITOR_STYLE, *body)

    @staticmethod
    def events_table(events: Sequence[LedgerEvent]) -> Table:
        table = plain_table("when", "event · actor · channel — key fields")
        table.columns[0].no_wrap = True
        for event in events:
            line = Text.assemble(
                (event_type(event), "bold"), f" · {event.actor_kind}:{event.actor_id} · {event.channel or '-'} — ",
                describe_event(event, tz=PARIS),
            )
            table.add_row(at(event.occurred_at), line)
        return table


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def plain_table(*columns: str) -> Table:
    """A borderless table with dim headers, to sit inside a panel."""
    table = Table(box=None, pad_edge=False, header_style="dim")
    for column in columns:
        table.add_column(column)
    return table


def refused(error: CaseLedgerError) -> Text:
    """How a refused command shows: the error's class and its message."""
    return Text.assemble(("refused ", "bold red"), (f"{type(error).__name__}: ", "red"), str(error))


def attempt(command: Callable[[], object]) -> Text:
    """Run a command the ledger must refuse and return what it said; a success is a demo bug."""
    try:
        command()
    except CaseLedgerError as error:
        return refused(error)
    raise RuntimeError("the ledger accepted a command the demo expected it to refuse")


def items_view(case: Case) -> Table:
    table = plain_table("item", "status", "by / why", "question")
    for item in case.items.values():
        table.add_row(item.item_id, item.status, item.answered_by or item.waived_reason or "-", item.text)
    return table


def promises_view(case: Case) -> Table:
    table = plain_table("promise", "status", "due", "made", "written", "terms")
    for p in case.promises.values():
        table.add_row(p.promise_id, p.status, at(p.due_at), f"{p.made_by} on {p.channel}",
                      p.confirmation_id or "-", p.terms)
    return table


def missed_view(case: Case) -> str:
    return ", ".join(f"{kind} {target}" for kind, target in sorted(case.missed)) or "none"


def of_type(events: Iterable[LedgerEvent], *names: str) -> list[Any]:
    return [e for e in events if event_type(e) in names]


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
        " (shown only after the ledger stored the contact)",
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
    demo.auditor_sees(demo.new_events())


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
        ("respond by", f"{at(contact.respond_by)} (web form: 2 business days)"),
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
    report = demo.ledger.tick(demo.clock())
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


def brief_view(brief: dict[str, Any]) -> Table:
    rows: list[tuple[str, Any]] = []
    rows += [(f"open item {i['item_id']}", f"{i['text']} (from {i['contact_id']})") for i in brief["open_items"]]
    rows += [(f"open promise {p['promise_id']}", f"{p['terms']}, due {at(p['due_at'])}")
             for p in brief["open_promises"]]
    rows += [(f"last {c['channel']}", f"{c['contact_id']} {at(c['received_at'])} “{c['subject']}”")
             for c in brief["last_contacts"]]
    return facts(rows)


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


def response_times(history: Sequence[LedgerEvent]) -> Table:
    """Per channel and segment: contacts, how many were answered, median and slowest first answer.

    A contact's first answer is the first response on its case that answers one of its items.
    """
    segments = {e.originator_id: e.segment for e in of_type(history, "CaseOpened")}
    responses = of_type(history, "ResponseSent")
    waits: dict[tuple[str, str], list[timedelta | None]] = {}
    for contact in of_type(history, "ContactReceived"):
        asked = {item["item_id"] for item in contact.items}
        answered_at = [r.occurred_at for r in responses
                       if r.originator_id == contact.originator_id and asked & set(r.answers)]
        key = (contact.channel, segments.get(contact.originator_id) or "-")
        waits.setdefault(key, []).append(min(answered_at) - contact.occurred_at if answered_at else None)
    table = plain_table("channel", "segment", "contacts", "answered", "median", "slowest")
    for column in table.columns[2:]:
        column.justify = "right"
    for (channel, segment), values in sorted(waits.items()):
        done = [v for v in values if v is not None]
        table.add_row(channel, segment, str(len(values)), str(len(done)),
                      duration(_median(done)) if done else "-", duration(max(done)) if done else "-")
    return table


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


def history_table(demo: Demo, history: Sequence[LedgerEvent]) -> Table:
    """One line per event: when, case, type, actor, channel (the stories above show the fields)."""
    table = plain_table("when", "case", "event", "actor", "channel")
    for event in history:
        table.add_row(event.occurred_at.astimezone(PARIS).strftime("%d %b %H:%M"), demo.reference_of(event),
                      event_type(event), f"{event.actor_kind}:{event.actor_id}", event.channel or "-")
    return table


def customer_line(event: Any) -> str | None:
    """What an event meant for the customer, or None for the ledger's internal bookkeeping."""
    name = event_type(event)
    if name == "ContactReceived":
        asked = "; ".join(f"{i['item_id']} {i['text']}" for i in event.items)
        return f"{'You followed up' if event.follow_up else 'You wrote'}: {asked}"
    if name == "AcknowledgementIssued":
        return f"We acknowledged {event.contact_id}: reference {event.reference}, answer by {at(event.respond_by)}"
    if name == "ResponseSent":
        return f"We answered {', '.join(event.answers) or 'you'}: {event.body}"
    if name == "PromiseMade":
        return f"We promised ({event.promise_id}): {event.terms}, by {at(event.due_at)}"
    if name == "WrittenConfirmationIssued":
        return f"Written confirmation {event.confirmation_id} of {event.promise_id}"
    if name == "PromiseKept":
        return f"Promise {event.promise_id} kept: {event.evidence}"
    if name == "EscalatedToHuman":
        return f"The chatbot passed you to a person after {duration(timedelta(seconds=event.wait_seconds))}"
    if name in ("CaseClosed", "CaseCancelled", "CaseReopened", "StatusChanged", "PromiseWithdrawn"):
        return f"Notice {event.notice_id}: {event.notice}"
    return None


# -- running it ------------------------------------------------------------------------------------------


def open_fresh_ledger(database: str, clock: SimulatedClock) -> CaseLedger:
    """A ledger on ``database``, refused (ConfigurationError) when it already holds events."""
    ledger = CaseLedger(LedgerSettings.resolve(database=database), clock=clock)
    held = ledger.recorder.max_notification_id() or 0
    if held:
        where = ledger.settings.store.describe()
        ledger.close()
        raise ConfigurationError(
            f"{where} already holds {held} events; the demo needs an empty ledger — give a new file "
            "with --database, or none to use a temporary one"
        )
    return ledger


def summary(demo: Demo) -> str:
    recorder = demo.ledger.recorder
    customers = recorder.select_notifications(start=1, limit=10_000, topics=[topic_of("CustomerRegistered")])
    cases = sum(1 for _ in demo.ledger.case_ids())
    return (f"{plural(demo.event_count(), 'event')} recorded, {plural(cases, 'case')}, "
            f"{plural(len(customers), 'customer')}")


STORIES: tuple[Callable[[Demo], None], ...] = (
    story_s1, story_s2, story_s3, story_s4, story_s5, story_s6, story_s7, story_s8, story_s9, story_s10, story_s11,
)


def run_demo(console: Console, *, database: str | None = None, keep: bool = False) -> None:
    """Play stories S1–S7 and S9–S11 on a fresh ledger and show what each party sees.

    ``database`` names an empty store to use (refused if it holds events); without it the demo
    uses a SQLite file in a temporary directory, deleted at the end unless ``keep``.
    """
    tempdir = None if database else Path(tempfile.mkdtemp(prefix="caseledger-demo-"))
    path = database or str(Path(tempdir or ".") / "demo.sqlite")
    clock = SimulatedClock()
    try:
        ledger = open_fresh_ledger(path, clock)
        try:
            demo = Demo(console=console, ledger=ledger, clock=clock)
            console.print(Panel(
                Text.assemble(
                    ("caseledger demo", "bold"), " — one customer, Jane Martin (", CUSTOMER_ID, "), on every channel\n",
                    f"ledger: {ledger.settings.store.describe()}\n",
                    f"simulated clock from {at(START)} ({START:%Y-%m-%dT%H:%MZ}); times shown in Paris time",
                ),
                border_style="blue",
            ))
            for story in STORIES:
                story(demo)
            console.print()
            console.print(Rule(f"[bold]Done: {summary(demo)}[/]", align="left"))
        finally:
            ledger.close()
        if keep:
            console.print(Text(f"Kept the demo ledger: {path}"))
    finally:
        if tempdir is not None and not keep:
            shutil.rmtree(tempdir, ignore_errors=True)


def _median(values: list[timedelta]) -> timedelta:
    """The median of durations (statistics.median averages them too, but is typed for numbers)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
