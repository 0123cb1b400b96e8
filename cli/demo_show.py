"""The demo's stage: its clock, the customer, and how it shows what each party sees.

:class:`Demo` holds the ledger, the simulated clock and the console; the helpers turn what the
ledger returned into the panels the stories print (:mod:`cli.demo_stories` plays them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
from caseledger.ledger.domain.case import Case
from caseledger.ledger.domain.events import LedgerEvent
from caseledger.ledger.domain.values import Actor, ActorKind, Channel, ContactDraft, Identity
from caseledger.ledger.errors import CaseLedgerError

PARIS = ZoneInfo("Europe/Paris")
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # Monday 2 March 2026, 09:00 in Paris

CUSTOMER_ID = "cust-1042"
SEGMENT = "retail"
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


# -- what the stories show ---------------------------------------------------------------------------


def brief_view(brief: dict[str, Any]) -> Table:
    rows: list[tuple[str, Any]] = []
    rows += [(f"open item {i['item_id']}", f"{i['text']} (from {i['contact_id']})") for i in brief["open_items"]]
    rows += [(f"open promise {p['promise_id']}", f"{p['terms']}, due {at(p['due_at'])}")
             for p in brief["open_promises"]]
    rows += [(f"last {c['channel']}", f"{c['contact_id']} {at(c['received_at'])} “{c['subject']}”")
             for c in brief["last_contacts"]]
    return facts(rows)


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


def _median(values: list[timedelta]) -> timedelta:
    """The median of durations (statistics.median averages them too, but is typed for numbers)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
