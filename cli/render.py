"""How the command line shows ledger objects: one-line event descriptions, case views, JSON.

Nothing here decides anything; it only turns what the ledger returns into text a person (or a
script, with ``--json``) can read. Datetimes are UTC inside the ledger and shown in the user's
zone here.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime, tzinfo
from enum import Enum
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ledger.domain import Case

__all__ = [
    "case_record",
    "describe_event",
    "duration",
    "event_record",
    "event_type",
    "fmt_time",
    "local_zone",
    "plain",
    "render_brief",
    "render_case",
    "render_cases",
    "render_history",
    "to_json",
]

SUMMARY_TEXT_LIMIT = 70


# -- values ---------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """``value`` with only JSON types: datetimes as ISO-8601, UUIDs as strings, bytes as hex."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [plain(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    return value


def to_json(value: Any) -> str:
    """Pretty JSON of ``value`` after :func:`plain`."""
    return json.dumps(plain(value), indent=2, ensure_ascii=False)


def local_zone(name: str | None = None) -> tzinfo:
    """The zone to show times in: ``name``, else the ``TZ`` environment variable, else the system's.

    Raises ``ZoneInfoNotFoundError`` (a ``KeyError``) for an unknown ``name``.
    """
    if name:
        return ZoneInfo(name)
    env = os.environ.get("TZ", "").lstrip(":")
    if env:
        try:
            return ZoneInfo(env)
        except (ZoneInfoNotFoundError, ValueError):
            pass  # a POSIX rule such as CET-1CEST: the system already applies it
    try:
        # The system's rules, so that times in another season get their own offset (DST).
        with open("/etc/localtime", "rb") as rules:
            return ZoneInfo.from_file(rules, key="localtime")
    except (OSError, ValueError):
        return datetime.now().astimezone().tzinfo or UTC


def fmt_time(value: datetime | None, tz: tzinfo | None = None, *, seconds: bool = False) -> str:
    """``2026-11-24 10:00 CET``: a UTC instant in ``tz`` (UTC when None), with its zone name."""
    if value is None:
        return "-"
    shown = value.astimezone(tz or UTC)
    text = shown.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    zone = shown.strftime("%Z") or shown.strftime("%z")
    return f"{text} {zone}"


def _short(text: str | None, limit: int = SUMMARY_TEXT_LIMIT) -> str:
    one_line = " ".join((text or "").split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def _quote(text: str | None) -> str:
    return f"“{_short(text)}”"


# -- events ---------------------------------------------------------------------------------------


def event_type(event: Any) -> str:
    """The event's schema name (``ContactReceived`` …)."""
    return type(event).__name__


def _items(e: Any, tz: tzinfo | None) -> str:
    listed = "; ".join(f"{i['item_id']} {_short(i['text'], 40)}" for i in e.items)
    kind = "follow-up" if e.follow_up else "contact"
    attachments = f", {len(e.attachments)} attachment(s)" if e.attachments else ""
    ident = f"{e.identity['kind']}:{e.identity['value']}"
    subject = f" “{_short(e.subject, 40)}”" if e.subject else ""
    return f"{kind.capitalize()} {e.contact_id} from {ident}{subject}: {listed}{attachments}"


def _by(who: str | None) -> str:
    return who or "nobody"


_DESCRIBERS: dict[str, Callable[[Any, tzinfo | None], str]] = {
    # case
    "CaseOpened": lambda e, tz: f"Case {e.reference} opened: {_quote(e.subject)}"
    + (f" (category {e.category})" if e.category else "")
    + (f", segment {e.segment}" if e.segment else ""),
    "ContactReceived": _items,
    "AcknowledgementIssued": lambda e, tz: f"Acknowledgement {e.acknowledgement_id} of {e.contact_id} issued: "
    f"respond by {fmt_time(e.respond_by, tz)}, acknowledge by {fmt_time(e.acknowledge_by, tz)}",
    "ResponseSent": lambda e, tz: f"Response {e.response_id} sent"
    + (f" answering {', '.join(e.answers)}" if e.answers else " (holding reply, answers no item)")
    + f": {_quote(e.body)}",
    "ItemWaived": lambda e, tz: f"Item {e.item_id} waived: {_short(e.reason)}",
    "PromiseMade": lambda e, tz: f"Promise {e.promise_id} made ({e.kind}): {_short(e.terms)}, "
    f"due {fmt_time(e.due_at, tz)}",
    "WrittenConfirmationIssued": lambda e, tz: f"Written confirmation {e.confirmation_id} of promise "
    f"{e.promise_id} issued",
    "PromiseKept": lambda e, tz: f"Promise {e.promise_id} kept: {_short(e.evidence)}",
    "PromiseWithdrawn": lambda e, tz: f"Promise {e.promise_id} withdrawn: {_short(e.reason)}; "
    f"notice {e.notice_id} {_quote(e.notice)}",
    "PromiseBroken": lambda e, tz: f"Promise {e.promise_id} broken: {_short(e.reason)}",
    "PromiseWaived": lambda e, tz: f"Promise {e.promise_id} waived: {_short(e.reason)}",
    "StatusChanged": lambda e, tz: f"Status {e.from_status} → {e.to_status}: {_short(e.reason)}; "
    f"notice {e.notice_id} {_quote(e.notice)}",
    "CaseClosed": lambda e, tz: f"Case closed: {_short(e.reason)}; notice {e.notice_id} {_quote(e.notice)}",
    "CaseCancelled": lambda e, tz: f"Case cancelled: {_short(e.reason)}; notice {e.notice_id} "
    f"{_quote(e.notice)}",
    "CaseReopened": lambda e, tz: f"Case reopened: {_short(e.reason)}; notice {e.notice_id} "
    f"{_quote(e.notice)}",
    "CaseAssigned": lambda e, tz: "Assigned to "
    + " / ".join(x for x in (e.assignee and f"agent {e.assignee}", e.team and f"team {e.team}") if x),
    "HandedOff": lambda e, tz: f"Handoff {e.handoff_id} from {_by(e.from_assignee)} to "
    + " / ".join(x for x in (e.to_assignee, e.to_team and f"team {e.to_team}") if x)
    + f" with a brief of {len(e.brief.get('open_items', []))} open item(s), "
    f"{len(e.brief.get('open_promises', []))} open promise(s)"
    + (f": {_quote(e.note)}" if e.note else ""),
    "EscalatedToHuman": lambda e, tz: f"Chatbot {e.bot_id} escalated to a human"
    + (f" (team {e.to_team})" if e.to_team else "")
    + f" after {duration(e.wait_seconds)} waiting: {_short(e.reason)}",
    "ActionProposed": lambda e, tz: f"Action {e.proposal_id} proposed by rule {e.rule_id}: {e.action}"
    + (f" ({', '.join(f'{k}={v}' for k, v in sorted(e.params.items()))})" if e.params else "")
    + f" — {_short(e.rationale, 50)}",
    "ActionApproved": lambda e, tz: f"Action {e.proposal_id} approved"
    + (f": {_short(e.note)}" if e.note else ""),
    "ActionRejected": lambda e, tz: f"Action {e.proposal_id} rejected: {_short(e.reason)}",
    "ActionExecuted": lambda e, tz: f"Action {e.proposal_id} executed: {_short(e.result)}",
    "DeadlineMissed": lambda e, tz: f"Deadline missed: {e.deadline_kind} of {e.target_id} "
    f"was due {fmt_time(e.due_at, tz)}",
    "MessageDelivered": lambda e, tz: f"Message {e.message_id} delivered at {fmt_time(e.delivered_at, tz)}",
    "MessageRead": lambda e, tz: f"Message {e.message_id} read by {e.reader_kind}:{e.reader_id} "
    f"at {fmt_time(e.read_at, tz)}",
    # directory
    "MessageRegistered": lambda e, tz: f"{e.channel} message {e.channel_message_id!r} registered as "
    f"{e.contact_id} of {e.reference}",
    "CustomerRegistered": lambda e, tz: f"Customer {e.customer_id} registered"
    + (f" (segment {e.segment})" if e.segment else ""),
    "IdentityLinked": lambda e, tz: f"Identity {e.identity['kind']}:{e.identity['value']} linked",
    "ResubmissionTraced": lambda e, tz: f"{e.channel} message resubmitted (from {e.source}); "
    "nothing recorded twice",
    "CaseLinked": lambda e, tz: f"Case {e.reference} linked to the customer",
    "IdentityClaimed": lambda e, tz: f"Identity {e.identity['kind']}:{e.identity['value']} claimed "
    f"by customer {e.customer_id}",
    "IntakeRejected": lambda e, tz: f"Intake record {e.source_topic}/{e.source_partition}/{e.source_offset} "
    f"rejected ({e.kind}, {len(e.raw)} bytes kept): {_short(e.reason)}",
}


def duration(seconds: int) -> str:
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {sec:02d} s"
    return f"{sec} s"


def describe_event(event: Any, *, tz: tzinfo | None = None) -> str:
    """One readable line saying what the event records, times shown in ``tz`` (UTC by default).

    >>> describe_event(promise_made)  # doctest: +SKIP
    'Promise P1 made (callback): call back tomorrow, due 2026-11-24 10:00 UTC'
    """
    describe = _DESCRIBERS.get(event_type(event))
    if describe is None:  # an event type newer than this CLI: still say something true
        own = {
            k: v
            for k, v in vars(event).items()
            if not k.startswith("_") and k not in _ENVELOPE_FIELDS and k != "originator_topic"
        }
        return f"{event_type(event)} " + ", ".join(f"{k}={_short(str(plain(v)), 30)}" for k, v in own.items())
    return describe(event, tz)


DESCRIBED_EVENT_TYPES = frozenset(_DESCRIBERS)

_ENVELOPE_FIELDS = {
    "originator_id",
    "originator_version",
    "timestamp",
    "event_id",
    "customer_id",
    "occurred_at",
    "actor_kind",
    "actor_id",
    "channel",
    "correlation_id",
    "causation_id",
    "previous_hash",
}
_RENAMED = {"originator_id": "aggregate_id", "originator_version": "aggregate_version", "timestamp": "recorded_at"}


def event_record(event: Any, *, case_reference: str | None = None) -> dict[str, Any]:
    """Every field of an event under its Avro envelope names, as JSON values."""
    state = {k: v for k, v in vars(event).items() if not k.startswith("_") and k != "originator_topic"}
    record: dict[str, Any] = {
        "type": event_type(event),
        "case_reference": case_reference,
        "actor": f"{state.get('actor_kind')}:{state.get('actor_id')}",
    }
    for key, value in state.items():
        record[_RENAMED.get(key, key)] = value
    return plain(record)  # type: ignore[no-any-return]


def case_references(events: Iterable[Any]) -> dict[UUID, str]:
    """Case id → reference, from the CaseOpened and CaseLinked events among ``events``."""
    refs: dict[UUID, str] = {}
    for event in events:
        name = event_type(event)
        if name == "CaseOpened":
            refs[event.originator_id] = event.reference
        elif name == "CaseLinked":
            refs[event.case_id] = event.reference
    return refs


def event_reference(event: Any, refs: Mapping[UUID, str]) -> str | None:
    """The reference of the case an event belongs to or points at, if any."""
    if event.originator_id in refs:
        return refs[event.originator_id]
    return getattr(event, "reference", None)


def render_history(console: Console, events: list[Any], *, customer: str, tz: tzinfo) -> None:
    """A customer's events as a table, oldest first."""
    refs = case_references(events)
    table = Table(title=f"History of {customer} ({len(events)} events)", title_justify="left")
    table.add_column("recorded at", no_wrap=True)
    table.add_column("case", no_wrap=True)
    table.add_column("event")
    table.add_column("channel")
    table.add_column("actor")
    table.add_column("what happened", ratio=1)
    for event in events:
        table.add_row(
            fmt_time(event.timestamp, tz, seconds=True),
            event_reference(event, refs) or "",
            event_type(event),
            event.channel or "",
            f"{event.actor_kind}:{event.actor_id}",
            Text(describe_event(event, tz=tz)),
        )
    console.print(table)


# -- cases ----------------------------------------------------------------------------------------


def case_record(case: Case) -> dict[str, Any]:
    """Everything ``case show`` tells about a case, as JSON values."""
    per_channel = Counter(c.channel for c in case.contacts.values())
    return plain(  # type: ignore[no-any-return]
        {
            "reference": case.reference,
            "status": case.status,
            "customer_id": case.customer_id,
            "subject": case.subject,
            "category": case.category,
            "segment": case.segment,
            "opened_at": case.opened_at,
            "assignee": case.assignee,
            "team": case.team,
            "follow_ups": case.follow_ups,
            "handoffs": case.handoffs,
            "contacts_per_channel": dict(sorted(per_channel.items())),
            "contacts": list(case.contacts.values()),
            "items": list(case.items.values()),
            "open_items": case.open_item_ids(),
            "promises": list(case.promises.values()),
            "open_promises": case.open_promise_ids(),
            "messages": list(case.messages.values()),
            "proposals": list(case.proposals.values()),
            "missed_deadlines": [{"kind": k, "target_id": t} for k, t in sorted(case.missed)],
            "escalations": [
                {"bot_id": b, "waiting_since": since, "wait_seconds": wait} for b, since, wait in case.escalations
            ],
        }
    )


_STATUS_STYLE = {"open": "yellow", "answered": "green", "waived": "cyan", "kept": "green", "broken": "red",
                 "withdrawn": "magenta", "executed": "green", "approved": "cyan", "rejected": "magenta",
                 "proposed": "yellow", "closed": "green", "cancelled": "magenta"}


def _status(text: str) -> Text:
    return Text(text, style=_STATUS_STYLE.get(text, "bold"))


def _table(title: str, *columns: str, keep: int = 1) -> Table:
    """A table whose first ``keep`` columns (ids, references) are never wrapped or cut."""
    table = Table(title=title, title_justify="left", title_style="bold")
    for n, column in enumerate(columns):
        table.add_column(column, no_wrap=n < keep, min_width=len(column) if n < keep else None)
    return table


def render_case(console: Console, case: Case, *, tz: tzinfo) -> None:
    """The case view an agent works from."""
    head = Text.assemble(
        (case.reference, "bold"), "  ", _status(case.status), "  ", _quote(case.subject)
    )
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    per_channel = Counter(c.channel for c in case.contacts.values())
    rows = [
        ("customer", case.customer_id + (f" (segment {case.segment})" if case.segment else "")),
        ("category", case.category or "-"),
        ("opened", fmt_time(case.opened_at, tz)),
        ("assignee", " / ".join(x for x in (case.assignee, case.team and f"team {case.team}") if x) or "-"),
        ("contacts", ", ".join(f"{ch} {n}" for ch, n in sorted(per_channel.items())) or "-"),
        ("follow-ups", str(case.follow_ups)),
        ("handoffs", str(case.handoffs)),
    ]
    if case.escalations:
        rows.append(("escalations", "; ".join(
            f"{bot} after {duration(wait)}" for bot, _since, wait in case.escalations)))
    missed = ", ".join(f"{kind} {target}" for kind, target in sorted(case.missed))
    rows.append(("missed deadlines", missed or "none"))
    for label, value in rows:
        facts.add_row(label, Text(value))
    parts: list[Any] = [head, facts]

    contacts = _table("Contacts", "id", "channel", "received", "message id", "items", "respond by", "ack")
    for c in case.contacts.values():
        contacts.add_row(
            c.contact_id + ("↺" if c.follow_up else ""), c.channel, fmt_time(c.received_at, tz),
            Text(c.channel_message_id), ", ".join(c.item_ids), fmt_time(c.respond_by, tz), c.acknowledgement_id or "-",
        )
    if case.follow_ups:
        contacts.caption = "↺ follow-up: the customer chased an earlier request"
        contacts.caption_justify = "left"
    parts.append(contacts)

    items = _table("Items", "id", "status", "question", "by / why")
    for i in case.items.values():
        items.add_row(i.item_id, _status(i.status), Text(i.text), Text(i.answered_by or i.waived_reason or ""))
    parts.append(items)

    if case.promises:
        promises = _table("Promises", "id", "status", "kind", "terms", "due", "made", "confirmation", "note")
        for p in case.promises.values():
            promises.add_row(
                p.promise_id, _status(p.status), p.kind, Text(p.terms), fmt_time(p.due_at, tz),
                Text(f"{p.made_by} on {p.channel}"), p.confirmation_id or "-", Text(p.closing_note or ""),
            )
        parts.append(promises)

    messages = _table("Messages", "id", "channel", "due", "delivered", "read by")
    for m in case.messages.values():
        messages.add_row(
            m.message_id, m.channel or "-", fmt_time(m.due_at, tz) if m.due_at else "",
            fmt_time(m.delivered_at, tz) if m.delivered_at else "", Text(", ".join(m.read_by)),
        )
    parts.append(messages)

    if case.proposals:
        proposals = _table("Proposed actions", "id", "status", "rule", "action", "params", "rationale", "decided by")
        for x in case.proposals.values():
            proposals.add_row(
                x.proposal_id, _status(x.status), Text(x.rule_id), Text(x.action),
                Text(", ".join(f"{k}={v}" for k, v in sorted(x.params.items()))), Text(x.rationale),
                x.decided_by or "",
            )
        parts.append(proposals)
    console.print(Group(*parts))


def render_cases(console: Console, cases: list[Case], *, customer: str, tz: tzinfo) -> None:
    """A customer's cases, oldest first."""
    table = _table(f"Cases of {customer}", "reference", "status", "opened", "subject", "open items",
                   "open promises", "assignee", keep=2)
    for case in cases:
        table.add_row(
            case.reference, _status(case.status), fmt_time(case.opened_at, tz), Text(_short(case.subject, 50)),
            ", ".join(case.open_item_ids()) or "-", ", ".join(case.open_promise_ids()) or "-",
            " / ".join(x for x in (case.assignee, case.team and f"team {case.team}") if x) or "-",
        )
    console.print(table)


def render_brief(console: Console, brief: Mapping[str, Any], *, tz: tzinfo) -> None:
    """The handoff brief: what the next agent must know."""
    items = brief.get("open_items", [])
    promises = brief.get("open_promises", [])
    contacts = brief.get("last_contacts", [])
    lines = [Text("Brief for the next agent", style="bold")]
    lines.append(Text(f"Open items ({len(items)}):"))
    lines += [Text(f"  {i['item_id']}  {i['text']}  (from {i['contact_id']})") for i in items] or [Text("  none")]
    lines.append(Text(f"Open promises ({len(promises)}):"))
    lines += [Text(f"  {p['promise_id']}  {p['terms']}  due {fmt_time(p['due_at'], tz)}") for p in promises] or [
        Text("  none")
    ]
    lines.append(Text("Last contact per channel:"))
    lines += [
        Text(f"  {c['channel']}: {c['contact_id']} {fmt_time(c['received_at'], tz)}  {_quote(c['subject'])}")
        for c in contacts
    ] or [Text("  none")]
    console.print(Group(*lines))
