"""What the customer must receive, for the adapter that delivers it: the outbound feed.

Every text the ledger issues to a customer — an acknowledgement (``ACKn``), a response (``Rn``), a
written confirmation (``Wn``), a notice (``Nn``) — is an event whose text is sealed under the
customer's data key (docs/privacy.md). The adapter of the message's channel must read it in clear,
with the address to send it to and its deadline, and report it delivered or not. :class:`OutboundFeed`
opens, for one adapter's channels, the messages issued after a store position that are still
pending (neither delivered nor reported failed), on the ledger's side: the service answers them to the
authenticated ``adapter`` principal only (``GET /v1/outbound``), and nothing in clear is written
anywhere (no topic, table or log). A message whose customer was erased cannot be opened (the key is
gone), so it is never handed out.

A message recorded without a channel (a response given without naming one) goes to the case's written
channel: the last one the customer wrote on, else a letter. The address is the customer's identity for the message's channel: the identity the customer last wrote
from on that channel in the case; else, for e-mail and SMS, the last e-mail address or phone number
the case or the customer is known by; else none (a letter: the adapter finds the postal address under
the customer id in its own records, or reports ``invalid_address``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from caseledger.ledger.domain.catalog import topic_of
from caseledger.ledger.domain.directory import Customer
from caseledger.ledger.domain.personal import is_erased
from caseledger.ledger.privacy.sealing import UNREADABLE

if TYPE_CHECKING:
    from caseledger.ledger.core import LedgerCore
    from caseledger.ledger.domain.case import Case

__all__ = ["OUTBOUND_EVENTS", "OutboundFeed", "OutboundMessage", "OutboundPage"]

#: The events that issue a message to the customer, and the kind of message each issues.
OUTBOUND_EVENTS: dict[str, str] = {
    "AcknowledgementIssued": "acknowledgement",
    "ResponseSent": "response",
    "WrittenConfirmationIssued": "written_confirmation",
    "StatusChanged": "notice",
    "CaseClosed": "notice",
    "CaseCancelled": "notice",
    "CaseReopened": "notice",
    "PromiseWithdrawn": "notice",
}
#: The identity kind a channel delivers to when the case has no contact on that channel.
_ADDRESS_KIND = {"email": "email", "sms": "phone", "phone": "phone"}
MAX_PAGE = 500
MAX_SCAN = 5_000  # issuing events one page looks at, at most: a rare channel's reader is answered in bounded time


@dataclass(frozen=True, kw_only=True)
class OutboundMessage:
    """One message to deliver: what, to whom, by when, and the ids to report its delivery against."""

    position: int  # the store position of the event that issued it (the feed's cursor)
    reference: str  # the case (CL-…): with message_id, what the delivery report names
    message_id: str  # ACK1, R2, W1, N3 …
    kind: str  # acknowledgement, response, written_confirmation, notice
    channel: str
    customer_id: str  # the company's or the ledger's pseudonym of the customer, never an identity
    address: str | None  # the customer's identity for this channel (email:…, phone:…), None when unknown
    subject: str  # the case's subject, for a mail's subject line
    in_reply_to: str | None  # the channel message id of the contact this answers (a mail's Message-ID), if any
    text: str  # exactly as recorded
    locale: str | None  # the text's language
    deliver_by: datetime | None  # the deadline the ledger holds against it; None: no deadline, deliver promptly
    issued_at: datetime  # when the ledger recorded it

    def as_record(self) -> dict[str, Any]:
        return {
            "position": self.position, "reference": self.reference, "message_id": self.message_id,
            "kind": self.kind, "channel": self.channel, "customer_id": self.customer_id, "address": self.address,
            "subject": self.subject, "in_reply_to": self.in_reply_to, "text": self.text, "locale": self.locale,
            "deliver_by": self.deliver_by.isoformat() if self.deliver_by else None,
            "issued_at": self.issued_at.isoformat(),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> OutboundMessage:
        """The message :meth:`as_record` gave (what ``GET /v1/outbound`` answers)."""
        def when(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        return cls(
            position=int(record["position"]), reference=record["reference"], message_id=record["message_id"],
            kind=record["kind"], channel=record["channel"], customer_id=record["customer_id"],
            address=record["address"], subject=record["subject"], in_reply_to=record["in_reply_to"],
            text=record["text"], locale=record["locale"], deliver_by=when(record["deliver_by"]),
            issued_at=datetime.fromisoformat(record["issued_at"]),
        )


@dataclass(frozen=True)
class OutboundPage:
    """Messages to deliver, oldest first, and the position to ask from next (``after=position``)."""

    messages: list[OutboundMessage]
    position: int


class OutboundFeed:
    """Pending messages of some channels after a store position, opened (see the module docstring)."""

    def __init__(self, core: LedgerCore) -> None:
        self.core = core

    def page(self, *, channels: Collection[str], after: int = 0, limit: int = 100) -> OutboundPage:
        """Up to ``limit`` pending messages of ``channels`` issued after store position ``after``.

        ``position`` is the last store position looked at: nothing of these channels before it is left
        to hand out (a page may be empty with a position that moved on: ask again from there). The keys
        opened for this page are forgotten before it returns, so an erasure made meanwhile by any process
        holds from the next page on.
        """
        limit = max(1, min(limit, MAX_PAGE))
        wanted = {str(c) for c in channels}
        topics = [topic_of(name) for name in OUTBOUND_EVENTS]
        found: list[tuple[int, Any]] = []
        position = max(after, 0)
        scanned = 0
        try:
            while len(found) < limit and scanned < MAX_SCAN:
                batch = self.core.recorder.select_notifications(start=position + 1, limit=limit, topics=topics)
                if not batch:
                    break
                scanned += len(batch)
                self.core.preload_keys(bytes(n.state) for n in batch)
                for notification in batch:
                    position = notification.id
                    event: Any = self.core.mapper.to_domain_event(notification)
                    # a message recorded without a channel (a response) goes to the case's written channel
                    if event.channel is None or str(event.channel) in wanted:
                        found.append((notification.id, event))
                        if len(found) == limit:
                            break
            return OutboundPage(self._pending(found, wanted), position)
        finally:
            self.core.data_keys.forget()

    def _pending(self, found: list[tuple[int, Any]], wanted: set[str]) -> list[OutboundMessage]:
        if not found:
            return []
        cases = self._cases(dict.fromkeys(event.originator_id for _, event in found))
        customers: dict[str, list[str]] = {}
        messages = []
        for position, event in found:
            case, contacts = cases[event.originator_id]
            message_id = _message_id(event)
            state = case.messages.get(message_id)
            if state is None or state.delivered_at is not None or state.failure is not None:
                continue
            channel = str(event.channel or case.written_channel())
            if channel not in wanted:
                continue
            text = event.body if type(event).__name__ == "ResponseSent" else (
                event.text or getattr(event, "notice", ""))
            subject = case.subject
            if _erased(text, subject):
                continue  # the customer's key is gone: nothing to deliver, ever
            reply = _contact_for(case, event, channel)
            address = contacts.get(reply) if reply else None
            if address is None and channel in _ADDRESS_KIND:
                address = self._address_of(case, contacts, channel, customers)
            messages.append(OutboundMessage(
                position=position, reference=case.reference, message_id=message_id,
                kind=OUTBOUND_EVENTS[type(event).__name__], channel=channel, customer_id=case.customer_id,
                address=address, subject=subject,
                in_reply_to=case.contacts[reply].channel_message_id if reply else None, text=text,
                locale=getattr(event, "locale", None), deliver_by=_deliver_by(case, event, message_id),
                issued_at=event.timestamp,
            ))
        return messages

    def _cases(self, case_ids: Iterable[UUID]) -> dict[UUID, tuple[Case, dict[str, str]]]:
        """Each case as of now, and the identity each of its contacts came from (contact id → ``kind:value``)."""
        stored = self.core.recorder.select_events_after(list(case_ids))
        self.core.preload_keys(bytes(e.state) for events in stored.values() for e in events)
        cases = {}
        for case_id, events in stored.items():
            case: Any = None
            contacts: dict[str, str] = {}
            for stored_event in events:
                event: Any = self.core.mapper.to_domain_event(stored_event)
                case = event.mutate(case)
                if type(event).__name__ == "ContactReceived" and not _erased(event.identity["value"]):
                    contacts[event.contact_id] = f"{event.identity['kind']}:{event.identity['value']}"
            cases[case_id] = (case, contacts)
        return cases

    def _address_of(self, case: Case, contacts: dict[str, str], channel: str,
                    customers: dict[str, list[str]]) -> str | None:
        """The last identity of the channel's kind that the case's contacts, else the customer, are known by."""
        kind = _ADDRESS_KIND[channel] + ":"
        for contact_id in reversed(list(case.contacts)):
            identity = contacts.get(contact_id, "")
            if identity.startswith(kind):
                return identity
        if case.customer_id not in customers:
            customer = self.core.get_optional(Customer.id_for(case.customer_id))
            customers[case.customer_id] = list(customer.identities) if customer is not None else []
        return next((i for i in reversed(customers[case.customer_id]) if i.startswith(kind)), None)


def _message_id(event: Any) -> str:
    for name in ("acknowledgement_id", "response_id", "confirmation_id", "notice_id"):
        value = getattr(event, name, None)
        if value:
            return str(value)
    raise AssertionError(f"{type(event).__name__} issues no message")


def _contact_for(case: Case, event: Any, channel: str) -> str | None:
    """The contact a message answers on its channel: the acknowledged one, else the case's last on that channel."""
    acknowledged = getattr(event, "contact_id", None)
    if acknowledged and case.contacts[acknowledged].channel == channel:
        return str(acknowledged)
    return case.last_contact_by_channel.get(channel)


def _deliver_by(case: Case, event: Any, message_id: str) -> datetime | None:
    """The message's own deadline (acknowledgement, written confirmation); a response's, the earliest respond-by
    of the contacts it answers."""
    due = case.messages[message_id].due_at
    if due is not None or type(event).__name__ != "ResponseSent":
        return due
    answered = {case.items[i].contact_id for i in event.answers if i in case.items}
    times = [case.contacts[c].respond_by for c in answered if case.contacts[c].respond_by is not None]
    return min(times, default=None)  # type: ignore[type-var]


def _erased(*values: str) -> bool:
    """Whether a value could not be opened: its key was destroyed (the marker), or it does not authenticate."""
    return any(is_erased(value) or value == UNREADABLE for value in values)
