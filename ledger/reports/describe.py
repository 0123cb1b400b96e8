"""One readable line per ledger event: what an agent, a customer or an auditor reads in a timeline.

Used by the CLI, the demo and the timeline projection, so it lives beside the domain and depends
on nothing but the events themselves.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime, tzinfo
from enum import Enum
from functools import cache
from typing import TYPE_CHECKING, Any
from uuid import UUID

from caseledger.ledger.domain.personal import ERASED
from caseledger.ledger.privacy.sealing import TOKEN_PREFIX, excerpt

if TYPE_CHECKING:
    from caseledger.ledger.domain.case import Case

SUMMARY_TEXT_LIMIT = 70


_AS_IS = frozenset({str, int, float, bool, type(None)})


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@cache
def _dataclass_fields(cls: type) -> tuple[str, ...] | None:
    return _field_names(cls) if is_dataclass(cls) else None


def plain(value: Any) -> Any:
    """``value`` with only JSON types: datetimes as ISO-8601, UUIDs as strings, bytes as hex."""
    kind: type = type(value)
    if kind in _AS_IS:  # most of a case's values: one lookup rather than a row of isinstance
        return value
    names = _dataclass_fields(kind)
    if names is not None:  # field by field (asdict's deep copy is waste here); a text or a number as it is
        return {name: v if type(v) in _AS_IS else plain(v) for name in names for v in (getattr(value, name),)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [v if type(v) in _AS_IS else plain(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    return value


def fmt_time(value: datetime | None, tz: tzinfo | None = None, *, seconds: bool = False) -> str:
    """``2026-11-24 10:00 CET``: a UTC instant in ``tz`` (UTC when None), with its zone name."""
    if value is None:
        return "-"
    shown = value.astimezone(tz or UTC)
    # Formatted by hand: strftime took 3.7 µs a call, a share of every timeline rebuild.
    text = f"{shown.year:04d}-{shown.month:02d}-{shown.day:02d} {shown.hour:02d}:{shown.minute:02d}"
    if seconds:
        text = f"{text}:{shown.second:02d}"
    return f"{text} {shown.tzname() or shown.strftime('%z')}"


OCCURRED_APART_S = 60
"""How far apart (seconds) an event's claimed time of occurrence and its recording must be for the
history and its exports to show both, each labelled: adapters relay within seconds, a backfill by hours."""


def occurred_apart(recorded_at: datetime, occurred_at: datetime | None) -> bool:
    """Whether an event happened (as claimed) more than :data:`OCCURRED_APART_S` away from its recording."""
    return occurred_at is not None and abs((occurred_at - recorded_at).total_seconds()) > OCCURRED_APART_S


def _short(text: str | None, limit: int = SUMMARY_TEXT_LIMIT) -> str:
    if text and text.startswith(TOKEN_PREFIX):  # sealed (a view's event): shortened when revealed
        return excerpt(text, limit)
    one_line = " ".join((text or "").split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def _quote(text: str | None) -> str:
    return f"“{_short(text)}”"


def _noticed(e: Any) -> str:
    """The reason of a change the customer was told about, and the notice they were sent."""
    words = _quote(e.notice) if e.notice else "(the company's text alone)"
    return f"{_short(e.reason)}; notice {e.notice_id} {words}{_written(e)}"


def _written(e: Any) -> str:
    """Which template and locale a customer text was written from (nothing for texts from before templates)."""
    template = getattr(e, "template_id", None)
    return f" [{e.locale}, {template}]" if template else ""


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
    f"respond by {fmt_time(e.respond_by, tz)}, acknowledge by {fmt_time(e.acknowledge_by, tz)}{_written(e)}",
    "ResponseSent": lambda e, tz: f"Response {e.response_id} sent"
    + (f" answering {', '.join(e.answers)}" if e.answers else " (holding reply, answers no item)")
    + f": {_quote(e.body)}",
    "ItemWaived": lambda e, tz: f"Item {e.item_id} waived: {_short(e.reason)}",
    "PromiseMade": lambda e, tz: f"Promise {e.promise_id} made ({e.kind}): {_short(e.terms)}, "
    f"due {fmt_time(e.due_at, tz)}",
    "WrittenConfirmationIssued": lambda e, tz: f"Written confirmation {e.confirmation_id} of promise "
    f"{e.promise_id} issued" + (f", to be delivered by {fmt_time(e.deliver_by, tz)}" if e.deliver_by else "")
    + _written(e),
    "PromiseKept": lambda e, tz: f"Promise {e.promise_id} kept: {_short(e.evidence)}",
    "PromiseWithdrawn": lambda e, tz: f"Promise {e.promise_id} withdrawn: {_noticed(e)}",
    "PromiseBroken": lambda e, tz: f"Promise {e.promise_id} broken: {_short(e.reason)}",
    "PromiseWaived": lambda e, tz: f"Promise {e.promise_id} waived: {_short(e.reason)}",
    "StatusChanged": lambda e, tz: f"Status {e.from_status} → {e.to_status}: {_noticed(e)}",
    "CaseClosed": lambda e, tz: f"Case closed: {_noticed(e)}",
    "CaseCancelled": lambda e, tz: f"Case cancelled: {_noticed(e)}",
    "CaseReopened": lambda e, tz: f"Case reopened: {_noticed(e)}",
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
    "CustomerErased": lambda e, tz: f"Personal data erased ({len(e.key_ids)} data key(s) destroyed): {_short(e.reason)}",
    "LegalHoldPlaced": lambda e, tz: f"Legal hold placed: {_short(e.reason)}",
    "LegalHoldReleased": lambda e, tz: f"Legal hold released: {_short(e.reason)}",
    "DeadlineMissed": lambda e, tz: f"Deadline missed: {e.deadline_kind} of {e.target_id} "
    f"was due {fmt_time(e.due_at, tz)}",
    "MessageDelivered": lambda e, tz: f"Message {e.message_id} delivered at {fmt_time(e.delivered_at, tz)}",
    "MessageDeliveryFailed": lambda e, tz: f"Message {e.message_id} not delivered ({e.reason}) at "
    f"{fmt_time(e.failed_at, tz)}",
    "MessageRead": lambda e, tz: f"Message {e.message_id} read by {e.reader_kind}:{e.reader_id} "
    f"at {fmt_time(e.read_at, tz)}",
    # directory
    "MessageRegistered": lambda e, tz: f"{e.channel} message {e.channel_message_id!r} registered as "
    f"{e.contact_id} of {e.reference}",
    "CustomerRegistered": lambda e, tz: f"Customer {e.customer_id} registered"
    + (f", known as {e.identity['kind']}:{e.identity['value']}" if e.identity else "")
    + (f" (segment {e.segment})" if e.segment else ""),
    "IdentityLinked": lambda e, tz: f"Identity {e.identity['kind']}:{e.identity['value']} linked",
    "CustomerLocaleSet": lambda e, tz: f"Texts for {e.customer_id} in {e.locale or 'the default locale'}, "
    f"times in {e.time_zone or 'the default time zone'} (from {e.source})",
    "ResubmissionTraced": lambda e, tz: f"{e.channel} message resubmitted (from {e.source}); "
    "nothing recorded twice",
    "MessageIdCollided": lambda e, tz: f"{e.channel} message {e.channel_message_id!r} not applied: its id is "
    f"already another request's ({e.kind}); kept as collision {e.originator_id}"
    + (f" (from {e.source})" if e.source else ""),
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
    "actor_authentication",
    "actor_principal",
    "channel",
    "correlation_id",
    "causation_id",
    "previous_hash",
}


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


def collision_record(e: Any) -> dict[str, Any]:
    """A kept message id collision (``MessageIdCollided``) as ``intake collisions --json`` and the API list it."""
    return plain({  # type: ignore[no-any-return]
        "collision_id": str(e.originator_id), "recorded_at": e.timestamp, "occurred_at": e.occurred_at,
        "channel": e.channel, "channel_message_id": e.channel_message_id, "kind": e.kind,
        "reason": e.reason, "customer_id": e.customer_id, "actor": f"{e.actor_kind}:{e.actor_id}",
        "source": e.source or None, "content_digest": e.content_digest,
        # A kept record is never empty: empty is what a destroyed key leaves (the sender was erased).
        "raw_base64": base64.b64encode(e.raw).decode() if e.raw else ERASED,
    })


def rejection_record(e: Any) -> dict[str, Any]:
    """An intake record that could not be applied (``IntakeRejected``), as ``intake rejections --json`` lists it."""
    return plain({  # type: ignore[no-any-return]
        "rejection_id": str(e.originator_id), "recorded_at": e.timestamp, "topic": e.source_topic,
        "partition": e.source_partition, "offset": e.source_offset, "kind": e.kind, "reason": e.reason,
        "bytes": len(e.raw),
        # Kept under its sender's key (a record naming them), it reads empty once they are erased.
        "raw_base64": ERASED if not e.raw and e.customer_id else base64.b64encode(e.raw).decode(),
    })
