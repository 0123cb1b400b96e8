"""Finding cases and customers: by reference, by channel message, by identity; a customer's cases and history.

:class:`Lookups` is the service of :class:`~caseledger.ledger.application.CaseLedger` that reads the
ledger itself (not the projections' views): a case's state is its events, replayed, so what it
answers is exact as of the last command. ``*_record`` reads give the same as JSON-ready records, as
the ledger service answers them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from caseledger.ledger.avro.envelope import AvroEnvelopeDecoder
from caseledger.ledger.case_snapshots import CaseSnapshots
from caseledger.ledger.core import LedgerCore
from caseledger.ledger.db_errors import translate_errors
from caseledger.ledger.domain.case import Case
from caseledger.ledger.domain.case_parts import Status
from caseledger.ledger.domain.case_references import normalise_reference
from caseledger.ledger.domain.directory import (
    ChannelMessage,
    Customer,
    IntakeRejection,
    MessageCollision,
    case_id_for,
)
from caseledger.ledger.domain.events import LedgerEvent
from caseledger.ledger.domain.personal import ERASED
from caseledger.ledger.domain.values import Actor, ActorKind, Channel, Identity
from caseledger.ledger.errors import NotFound, ValidationError
from caseledger.ledger.privacy.pseudonyms import Pseudonyms
from caseledger.ledger.reports.describe import case_record, collision_record, rejection_record

__all__ = ["Lookups"]


class Lookups:
    """Cases, customers and what intake kept, read from the ledger's events."""

    def __init__(self, core: LedgerCore, pseudonyms: Pseudonyms) -> None:
        self.core = core
        self.pseudonyms = pseudonyms
        self.snapshots = CaseSnapshots(core)

    def get_case(self, reference: str) -> Case:
        """The case with this reference (from its sealed snapshot and the events after it, outside a unit of
        work: ``ledger/case_snapshots.py``); NotFound says how to look it up otherwise."""
        ref = normalise_reference(reference)
        try:
            with translate_errors(self.core.settings.store.describe()):
                return self.snapshots.load(case_id_for(ref))
        except AggregateNotFoundError:
            raise NotFound(
                f"no case with reference {ref}; find a customer's cases with `caseledger cases CUSTOMER`",
                field="case_reference",
            ) from None

    def find_by_message(self, channel: Channel | str, channel_message_id: str) -> Case:
        """The case a channel message was recorded on."""
        ch = Channel.parse(channel)
        try:
            message = self.pseudonyms.find_message(ch, channel_message_id)
        finally:
            self._forget()
        if message is None:
            raise NotFound(f"no contact was recorded for {ch.value} message {channel_message_id!r}")
        return self.get_case(message.reference)

    def resolve_customer(self, who: str) -> str:
        """A customer id from a customer id or an identity (email:…, phone:…, handle:…)."""
        if self.core.get_optional(Customer.id_for(who)) is not None:
            return who
        try:
            identity = Identity.parse(who)
        except ValidationError:
            identity = None
        if identity is not None:
            try:
                claim = self.pseudonyms.find_claim(identity)
            finally:
                self._forget()
            if claim is not None:
                return claim.customer_id  # type: ignore[no-any-return]
        raise NotFound(
            "no customer known by the customer id or identity given (field customer); give a customer id (cus-…) "
            "or an identity such as email:jane@example.com (an erased customer is found by their customer id only)"
        )

    def _forget(self) -> None:
        """A read keeps no lookup secret in memory: erased in another process, it must find nothing here either."""
        if not self.core.in_unit_of_work:
            self.core.data_keys.forget()

    def acting_as(self, customer_id: str, actor: Actor) -> Actor:
        """``actor`` as recorded on ``customer_id``'s data: a customer acting is named by their customer id
        (a pseudonym), never by what ``--as`` gave.

        Only that customer acts on their case or data as a customer: a name that is another known
        customer's is refused; any other (their identity, a name the ledger does not know) stands for them.
        """
        if actor.kind is not ActorKind.CUSTOMER or actor.id == customer_id:
            return actor
        try:
            named = self.resolve_customer(actor.id)
        except NotFound:
            named = customer_id
        if named != customer_id:
            raise ValidationError(
                "field actor names another customer than the one acted on: a customer acts only on their own cases "
                "and data; act as customer:CUSTOMER_ID (or the customer's own identity), or as an agent"
            )
        return dataclasses.replace(actor, id=customer_id)

    def cases_of(self, who: str) -> list[Case]:
        """Every case of a customer (by customer id or identity), oldest first."""
        with translate_errors(self.core.settings.store.describe()):
            customer = self.core.load(Customer.id_for(self.resolve_customer(who)))
        return [self.get_case(ref) for ref in customer.cases]

    def history(self, who: str) -> list[LedgerEvent]:
        """Every event of a customer across cases, channels and directory entries, in recorded order.

        Events of one aggregate are in their exact recorded order; across aggregates they are
        merged by recording time (the customer timeline projection gives the store's total order).
        """
        customer_id = self.resolve_customer(who)
        with translate_errors(self.core.settings.store.describe()), self._keys_for_one_read():
            customer = self.core.load(Customer.id_for(customer_id))
            ids: list[UUID] = [customer.id]
            ids += [c for i in customer.identities for c in self.pseudonyms.claim_ids_for(Identity.parse(i))]
            ids += [UUID(c) for c in customer.erased_claims]  # identities that read [erased] now
            self._forget()
            events: list[Any] = []
            cases = self._events_of([case_id_for(normalise_reference(ref)) for ref in customer.cases])
            for case_events in cases.values():
                events += case_events
                # A contact's events are correlated by its registration's id (keyed: found even once the
                # channel message id reads [erased]); registrations of earlier releases by the message id.
                for e in case_events:
                    if type(e).__name__ == "ContactReceived":
                        ids.append(e.correlation_id)
                        if e.channel_message_id != ERASED and not e.channel_message_id.startswith("enc:"):
                            ids.append(ChannelMessage.id_for(Channel(str(e.channel)), e.channel_message_id))
            events = [e for e in events if e.customer_id == customer_id]
            for aggregate_events in self._events_of(ids).values():
                events.extend(e for e in aggregate_events if e.customer_id == customer_id)
        # Requests of theirs kept as collisions belong to their history too (no aggregate links them).
        events.extend(self.kept_of(customer_id, "MessageIdCollided"))
        # One command's events share their recorded time: ties in version order keep each aggregate's own.
        events.sort(key=lambda e: (e.timestamp, e.originator_version))
        return events


    def collisions(self) -> Iterator[MessageCollision.MessageIdCollided]:
        """Every recorded message id collision, oldest first."""
        with self._keys_for_one_read():
            for notification in self.core.notifications_of("MessageIdCollided"):
                yield self.core.mapper.to_domain_event(notification)  # type: ignore[misc]

    def rejections(self) -> Iterator[IntakeRejection.IntakeRejected]:
        """Every intake record the ledger could not apply, oldest first, with its reason and raw bytes."""
        with self._keys_for_one_read():
            for notification in self.core.notifications_of("IntakeRejected"):
                yield self.core.mapper.to_domain_event(notification)  # type: ignore[misc]

    def _events_of(self, ids: list[UUID]) -> dict[UUID, list[Any]]:
        """The events of many aggregates, read in one query (a round trip each was a third of a history's time)."""
        stored = self.core.recorder.select_events_after(dict.fromkeys(ids))
        self.core.preload_keys(bytes(e.state) for events in stored.values() for e in events)
        to_event = self.core.mapper.to_domain_event
        return {i: [to_event(e) for e in events] for i, events in stored.items()}

    def kept_of(self, customer_id: str, *kinds: str) -> Iterator[Any]:
        """The requests of one customer the ledger kept (``MessageIdCollided``, ``IntakeRejected``), oldest first
        by kind: each kind read through its index, and only this customer's events opened (another's sealed
        fields are never decrypted for this read; the customer is read from each event's envelope)."""
        envelopes = self._envelopes
        wanted = customer_id.encode()
        with self._keys_for_one_read():
            for kind in kinds or ("MessageIdCollided", "IntakeRejected"):
                for notification in self.core.notifications_of(kind):
                    if envelopes.envelope(bytes(notification.state))[4] == wanted:
                        yield self.core.mapper.to_domain_event(notification)

    @cached_property
    def _envelopes(self) -> AvroEnvelopeDecoder:
        return AvroEnvelopeDecoder(self.core.codec)

    def active_cases(self) -> Iterator[Case]:
        with self._keys_for_one_read():
            for case_id in self.core.case_ids():
                case: Case = self.core.repository.get(case_id)  # type: ignore[assignment]
                if case.status in Status.ACTIVE:
                    yield case

    @contextmanager
    def _keys_for_one_read(self) -> Iterator[None]:
        """Outside a batch, the data keys a read opened are dropped when it ends: an erasure made since by
        another process is in force at the next read (inside a unit of work, the unit's save drops them)."""
        try:
            yield
        finally:
            if not self.core.in_unit_of_work:
                self.core.data_keys.forget()

    # -- the same, as records (what ``--json`` prints and the ledger service answers) ------------------------

    def case_record(self, reference: str) -> dict[str, Any]:
        """A case as ``case show --json`` has it."""
        return case_record(self.get_case(reference))

    def find_record(self, channel: str, message_id: str) -> dict[str, Any]:
        """The case a channel message was recorded on, as a record."""
        return case_record(self.find_by_message(channel, message_id))

    def case_records_of(self, who: str) -> list[dict[str, Any]]:
        """A customer's cases (by customer id or identity), oldest first, as records."""
        return [case_record(c) for c in self.cases_of(who)]

    def collision_records(self) -> list[dict[str, Any]]:
        """Every message id collision kept for an operator, oldest first."""
        return [collision_record(e) for e in self.collisions()]

    def rejection_records(self) -> list[dict[str, Any]]:
        """Every intake record the ledger could not apply, oldest first."""
        return [rejection_record(e) for e in self.rejections()]
