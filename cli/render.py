"""How the command line shows ledger objects: one-line event descriptions, case views, JSON.

Nothing here decides anything; it only turns what the ledger returns into text a person (or a
script, with ``--json``) can read. Datetimes are UTC inside the ledger and shown in the user's
zone here.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from caseledger.ledger.domain.case import Case
from caseledger.ledger.reports.describe import (
    DESCRIBED_EVENT_TYPES,
    _quote,
    _short,
    case_record,
    describe_event,
    duration,
    event_type,
    fmt_time,
    plain,
)

__all__ = [
    "DESCRIBED_EVENT_TYPES",
    "case_record",
    "describe_event",
    "duration",
    "event_type",
    "fmt_time",
    "local_zone",
    "plain",
    "render_brief",
    "render_case",
    "render_cases",
    "to_json",
]



# -- values ---------------------------------------------------------------------------------------


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


# -- cases ----------------------------------------------------------------------------------------


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
            fmt_time(m.delivered_at, tz) if m.delivered_at else (
                Text(f"not delivered: {m.failure}", style="red") if m.failure else ""),
            Text(", ".join(m.read_by)),
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
