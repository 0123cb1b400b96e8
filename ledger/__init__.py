"""caseledger's ledger: what a channel adapter author needs, in one place.

::

    import os

    from caseledger.ledger import ContactDraft, Identity, KafkaIntakeClient, KafkaSettings

    with KafkaIntakeClient(KafkaSettings.from_environ(os.environ), adapter="mail-gateway-1") as intake:
        receipt = intake.submit(ContactDraft(channel="email", channel_message_id="<m-1@mail.example>",
                                             identity=Identity.parse("email:jane@example.com"),
                                             items=("Where is my refund?",)))

What an adapter may see go wrong, and what to do (every one a ``CaseLedgerError``; no Kafka client's own
exception leaves the SDK)::

    ValidationError      the draft is refused before anything is published (the field is named): fix it;
                         never resubmit it as it is
    IntakeUnavailable    Kafka unreachable, no acknowledgement in time, topic missing: the record may or may not
                         be stored — resubmit the same draft (a BackendError; safe: a resubmission is traced)
    ConfigurationError   settings, a key file or a missing extra: fix the configuration
    SchemaError          a value does not fit the intake schema (a ValidationError)

and, for an adapter that also calls the service or records directly: ``AuthenticationError``,
``PermissionDenied``, ``NotFound``, ``RuleViolation``, ``ConflictError`` (retry), ``MessageIdCollision``
(recorded, not applied: send it with a new channel message id), ``BackendError``.

Everything else under ``caseledger.ledger`` is internal: ``domain`` (the Case aggregate, the
directory, values, the response policy), ``avro`` (how an event becomes bytes), ``store_ports`` and
``store`` (the store's ports, and all its SQL: one provider per backend), ``kafka`` (the Kafka edge: intake client, intake worker, publisher), ``audit`` (one
module per guarantee), ``export``, ``services`` (the supervisor of ``caseledger run``), ``bench``.
Names are loaded on first use, so importing this package (e.g. for its errors) does not import a
Kafka client.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger, ContactOutcome
    from caseledger.ledger.avro.event_reader import DecodedEvent, decode_event
    from caseledger.ledger.domain.values import (
        Actor,
        ActorKind,
        Attachment,
        Channel,
        ContactDraft,
        DeliveryFailure,
        Identity,
    )
    from caseledger.ledger.errors import (
        AuthenticationError,
        BackendError,
        CaseLedgerError,
        ConfigurationError,
        ConflictError,
        IntakeUnavailable,
        MessageIdCollision,
        NotFound,
        PermissionDenied,
        RuleViolation,
        SchemaError,
        ValidationError,
    )
    from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient, Receipt
    from caseledger.ledger.intake.outbound import OutboundMessage
    from caseledger.ledger.intake.outbound_client import OutboundClient
    from caseledger.ledger.intake.records import DeliveryReport, IntakeCodec, ReadReceipt
    from caseledger.ledger.intake.signatures import AdapterSigner
    from caseledger.ledger.intake.verdicts import (
        Applied,
        Collision,
        PublicReason,
        Recorded,
        Rejected,
        Resubmission,
        Verdict,
        VerdictTimeout,
    )
    from caseledger.ledger.settings import KafkaSettings, LedgerSettings

_WHERE = {
    # intake: what an adapter publishes, and the client that publishes it
    "KafkaIntakeClient": "caseledger.ledger.intake.adapter_sdk",
    "Receipt": "caseledger.ledger.intake.adapter_sdk",
    "AdapterSigner": "caseledger.ledger.intake.signatures",
    "KafkaSettings": "caseledger.ledger.settings",
    "IntakeCodec": "caseledger.ledger.intake.records",
    "DeliveryReport": "caseledger.ledger.intake.records",
    "ReadReceipt": "caseledger.ledger.intake.records",
    # the ledger's verdict on each record (submit(..., wait=SECONDS))
    "Verdict": "caseledger.ledger.intake.verdicts",
    "Recorded": "caseledger.ledger.intake.verdicts",
    "Resubmission": "caseledger.ledger.intake.verdicts",
    "Collision": "caseledger.ledger.intake.verdicts",
    "Rejected": "caseledger.ledger.intake.verdicts",
    "Applied": "caseledger.ledger.intake.verdicts",
    "PublicReason": "caseledger.ledger.intake.verdicts",
    "VerdictTimeout": "caseledger.ledger.intake.verdicts",
    # outbound: what an adapter must deliver, and the client that reads it and reports the outcome
    "OutboundClient": "caseledger.ledger.intake.outbound_client",
    "OutboundMessage": "caseledger.ledger.intake.outbound",
    "DeliveryFailure": "caseledger.ledger.domain.values",
    # drafts and the values they carry
    "ContactDraft": "caseledger.ledger.domain.values",
    "Identity": "caseledger.ledger.domain.values",
    "Attachment": "caseledger.ledger.domain.values",
    "Channel": "caseledger.ledger.domain.values",
    "Actor": "caseledger.ledger.domain.values",
    "ActorKind": "caseledger.ledger.domain.values",
    # the ledger itself, for adapters that record directly (embedded use)
    "CaseLedger": "caseledger.ledger.application",
    "ContactOutcome": "caseledger.ledger.application",
    "LedgerSettings": "caseledger.ledger.settings",
    # reading events: stored bytes or an events-topic record, in one call (docs/analysts.md)
    "decode_event": "caseledger.ledger.avro.event_reader",
    "DecodedEvent": "caseledger.ledger.avro.event_reader",
    # errors
    "CaseLedgerError": "caseledger.ledger.errors",
    "ConfigurationError": "caseledger.ledger.errors",
    "ValidationError": "caseledger.ledger.errors",
    "SchemaError": "caseledger.ledger.errors",
    "RuleViolation": "caseledger.ledger.errors",
    "NotFound": "caseledger.ledger.errors",
    "ConflictError": "caseledger.ledger.errors",
    "MessageIdCollision": "caseledger.ledger.errors",
    "BackendError": "caseledger.ledger.errors",
    "IntakeUnavailable": "caseledger.ledger.errors",
    "AuthenticationError": "caseledger.ledger.errors",
    "PermissionDenied": "caseledger.ledger.errors",
}

__all__ = [
    "Actor",
    "ActorKind",
    "AdapterSigner",
    "Applied",
    "Attachment",
    "AuthenticationError",
    "BackendError",
    "CaseLedger",
    "CaseLedgerError",
    "Channel",
    "Collision",
    "ConfigurationError",
    "ConflictError",
    "ContactDraft",
    "ContactOutcome",
    "DecodedEvent",
    "DeliveryFailure",
    "DeliveryReport",
    "Identity",
    "IntakeCodec",
    "IntakeUnavailable",
    "KafkaIntakeClient",
    "KafkaSettings",
    "LedgerSettings",
    "MessageIdCollision",
    "NotFound",
    "OutboundClient",
    "OutboundMessage",
    "PermissionDenied",
    "PublicReason",
    "ReadReceipt",
    "Receipt",
    "Recorded",
    "Rejected",
    "Resubmission",
    "RuleViolation",
    "SchemaError",
    "ValidationError",
    "Verdict",
    "VerdictTimeout",
    "decode_event",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'caseledger.ledger' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
