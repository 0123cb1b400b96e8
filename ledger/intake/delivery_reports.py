"""Delivery and read reports: who may report one of a case's messages delivered (or not) or read, and as whom.

A receipt comes from a channel adapter (a signed record on the intake topic, an unsigned one where
signatures are not required, or an ``adapter`` principal over HTTP) or from an agent over HTTP.
:class:`Reporter` is who reports it, and decides:

- an adapter reports only for messages of its channels: those of its registered adapter key
  (``caseledger adapters add NAME --channels …``), else :class:`PermissionDenied`;
- a read an adapter relays is the customer's act: its actor is the case's customer (their
  pseudonymous id), the adapter its principal; only messages sent to the customer (``ACK…``,
  ``R…``, ``W…``, ``N…``) are read by the customer, and a record naming another reader is refused;
- an agent reports its own reading, of the customer's contacts (``C…``) only;
- a receipt is applied once: a message already delivered (the case refuses it), or already read by
  the same reader, is refused with the reason. On the intake topic a refusal is an
  ``IntakeRejected``, so a replayed report is traced, never applied twice.

The embedded CLI (an operator on a local file) reports without a reporter: its actor is ``--as``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from caseledger.ledger.domain.permissions import Authentication
from caseledger.ledger.domain.values import Actor, ActorKind
from caseledger.ledger.errors import PermissionDenied, RuleViolation, ValidationError

if TYPE_CHECKING:
    from caseledger.ledger.domain.case import Case
    from caseledger.ledger.domain.case_parts import MessageState
    from caseledger.ledger.domain.events import Context
    from caseledger.ledger.store_ports import AdapterKeyStore

__all__ = ["Reporter", "inbound_read", "is_inbound", "not_the_customer"]


def is_inbound(message_id: str) -> bool:
    """A customer's own contact (``C1``), as opposed to a message sent to them (``ACK1``, ``R2``, ``W1``, ``N3``)."""
    return message_id.strip().upper().startswith("C")


def not_the_customer(reference: str, reader: Actor) -> str:
    """Why a read an adapter relays may not name ``reader`` (no personal value: its kind only)."""
    return (
        f"field reader is not case {reference}'s customer (reader kind {reader.kind.value}): a read "
        "receipt relayed by an adapter reports the customer's own reading of a message sent to them; "
        "name the customer (customer:CUSTOMER_ID, or customer:IDENTITY such as customer:email:…)"
    )


def inbound_read(message_id: str) -> str:
    """Why a read an adapter relays may not be of ``message_id``, a customer's own contact."""
    return (
        f"{message_id} is the customer's own contact: a customer reads only messages sent to them "
        "(ACK…, R…, W…, N…); field message_id"
    )


@dataclass(frozen=True, kw_only=True)
class Reporter:
    """Who reports a receipt (see the module docstring): the principal, and the channels an adapter serves."""

    actor: Actor
    adapter: bool = False
    channels: tuple[str, ...] | None = None  # an adapter's registered channels; None: any (unsigned intake)

    @classmethod
    def of_principal(cls, actor: Actor, adapters: AdapterKeyStore) -> Reporter:
        """The reporter a principal of the API is. An ``adapter`` principal (the one role allowed to report
        that acts as ``system:NAME``) serves the channels of the adapter key registered under its name."""
        if actor.kind is not ActorKind.SYSTEM:
            return cls(actor=actor)
        row = adapters.select_adapter(actor.id)
        if row is None or row.revoked_at is not None:
            raise PermissionDenied(
                f"adapter principal {actor.id!r} has no registered channels, so it may not report deliveries or "
                f"reads: register them with `caseledger adapters add {actor.id} --channels email,chat --public-key "
                "FILE` (an active adapter key of the same name)"
            )
        return cls(actor=actor, adapter=True, channels=row.channels)

    def delivery(self, case: Case, message_id: str, ctx: Context) -> Context:
        """The context a delivery (or a failure to deliver) is recorded in, once this reporter may report it."""
        self._message(case, message_id)
        return dataclasses.replace(ctx, actor=self.actor)

    def read(self, case: Case, message_id: str, ctx: Context, *, named: Actor | None = None) -> Context:
        """The context a read is recorded in (its actor is the reader), once this reporter may report it.

        ``named`` is the reader an intake record names: it must be the case's customer (their id, or
        an identity the caller resolved to it); it is checked, never recorded.
        """
        message = self._message(case, message_id)
        inbound = is_inbound(message_id)
        if self.adapter:
            if named is not None and (named.kind is not ActorKind.CUSTOMER or named.id != case.customer_id):
                raise ValidationError(not_the_customer(case.reference, named), field="reader")
            if inbound:
                raise RuleViolation(inbound_read(message_id), field="message_id")
            signed = self.actor.authentication != Authentication.NONE.value
            reader = Actor(kind=ActorKind.CUSTOMER, id=case.customer_id, authentication=self.actor.authentication,
                           principal=self.actor.id if signed else None)
        else:
            if not inbound:
                raise RuleViolation(
                    f"{message_id} is a message to the customer: only the customer reads it, as their channel's "
                    "adapter reports; an agent reports reading the customer's contacts (C…)", field="message_id"
                )
            reader = self.actor
        if str(reader) in message.read_by:
            raise RuleViolation(
                f"{message_id} of case {case.reference} is already recorded as read by {reader}: a repeated read "
                "receipt is traced, not applied twice", field="message_id"
            )
        return dataclasses.replace(ctx, actor=reader)

    def _message(self, case: Case, message_id: str) -> MessageState:
        message = case.messages.get(message_id)
        if message is None:
            raise RuleViolation(f"case {case.reference} has no message {message_id}; its messages are "
                                + ", ".join(case.messages), field="message_id")
        if self.channels is not None and message.channel not in self.channels:
            raise PermissionDenied(
                f"forbidden channel: adapter {self.actor.id!r} may report for {', '.join(self.channels)}; "
                f"{message_id} of case {case.reference} is on {message.channel or 'no channel'} (field message_id)",
                field="message_id",
            )
        return message
