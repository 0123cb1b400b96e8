"""Who may do what: the roles of principals and the one permission matrix every path enforces.

The HTTP API, the CLI acting through it and the intake worker all ask :func:`require` before a
command runs; the embedded CLI (a local file, no server) records its events as not authenticated.
``docs/api.md`` shows this matrix as a table (a test checks the two agree).
"""

from __future__ import annotations

from enum import StrEnum

from caseledger.ledger.domain.values import ActorKind
from caseledger.ledger.errors import PermissionDenied, ValidationError


class Role(StrEnum):
    """What a principal is: the channel adapter, the human at a desk, the rule engine, the auditor …"""

    ADAPTER = "adapter"
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    AUTOMATION = "automation"
    AUDITOR = "auditor"
    ADMIN = "admin"


class Authentication(StrEnum):
    """How the actor of an event was authenticated (kept in every event's envelope)."""

    TOKEN = "token"  # a bearer token the ledger issued (caseledger principals add)
    OIDC = "oidc"  # a JWT from the configured identity provider, checked against its JWKS
    ADAPTER_SIGNATURE = "adapter-signature"  # an intake record signed with a registered adapter key
    NONE = "none"  # the embedded CLI on a local file, or recorded before principals existed
    SIMULATED_CLOCK = "simulated-clock"  # the embedded CLI under --now, or the demo: an operator chose the clock


class Operation(StrEnum):
    """Every command and read of the ledger, by the name the matrix and the API use."""

    CONTACT_RECORD = "contact.record"
    CASE_READ = "case.read"
    CONTACT_RECEIPT_READ = "contact.receipt.read"
    HISTORY_READ = "history.read"
    HISTORY_EXPORT = "history.export"
    RESPOND = "respond"
    ITEM_WAIVE = "item.waive"
    PROMISE_MAKE = "promise.make"
    PROMISE_KEEP = "promise.keep"
    PROMISE_WITHDRAW = "promise.withdraw"
    PROMISE_BREAK = "promise.break"
    CASE_STATUS = "case.status"
    CASE_CLOSE = "case.close"
    CASE_CANCEL = "case.cancel"
    CASE_REOPEN = "case.reopen"
    CASE_ASSIGN = "case.assign"
    CASE_HANDOFF = "case.handoff"
    CASE_ESCALATE = "case.escalate"
    ACTION_PROPOSE = "action.propose"
    ACTION_APPROVE = "action.approve"
    ACTION_REJECT = "action.reject"
    ACTION_EXECUTED = "action.executed"
    MESSAGE_DELIVERED = "message.delivered"
    MESSAGE_FAILED = "message.failed"
    MESSAGE_READ = "message.read"
    OUTBOUND_READ = "outbound.read"
    TICK = "tick"
    OVERDUE_READ = "overdue.read"
    METRICS_READ = "metrics.read"
    AUDIT_VERIFY = "audit.verify"
    LOG_READ = "log.read"
    AUDIT_CHECKPOINT_READ = "audit.checkpoint.read"
    AUDIT_PROOF_READ = "audit.proof.read"
    INTAKE_KEPT_READ = "intake.kept.read"
    INTAKE_VERDICT_READ = "intake.verdict.read"
    PRINCIPALS_MANAGE = "principals.manage"
    CUSTOMER_ERASE = "customer.erase"
    CUSTOMER_HOLD = "customer.hold"
    CUSTOMER_KEYS_READ = "customer.keys.read"
    CUSTOMER_LOCALE = "customer.locale"


O = Operation  # noqa: E741 -- short, the matrix below reads as a table
_READS = frozenset({O.CASE_READ, O.CONTACT_RECEIPT_READ, O.HISTORY_READ, O.OVERDUE_READ, O.METRICS_READ})
# The verifier key and the signed checkpoints are the log's public commitments: the more parties hold them, the
# harder it is to show two readers two logs (docs/audit.md), so every role may read them.
_COMMITMENTS = frozenset({O.AUDIT_CHECKPOINT_READ})
# Whoever audits (audit.verify) also reads proofs: a customer's inclusion proofs say which positions are theirs;
# and the log's tiles (log.read: hashes, no personal data), which tell how busy the ledger is.
_AUDIT = frozenset({O.AUDIT_VERIFY, O.AUDIT_PROOF_READ, O.LOG_READ})
_CASE_WORK = frozenset({
    O.CONTACT_RECORD, O.RESPOND, O.ITEM_WAIVE, O.PROMISE_MAKE, O.PROMISE_KEEP, O.PROMISE_WITHDRAW,
    O.PROMISE_BREAK, O.CASE_STATUS, O.CASE_CLOSE, O.CASE_CANCEL, O.CASE_REOPEN, O.CASE_ASSIGN, O.CASE_HANDOFF,
    O.CASE_ESCALATE, O.ACTION_APPROVE, O.ACTION_REJECT, O.ACTION_EXECUTED, O.MESSAGE_DELIVERED, O.MESSAGE_FAILED,
    O.MESSAGE_READ,
})

PERMISSIONS: dict[Role, frozenset[Operation]] = {
    # What a channel publishes: contacts, receipts, the chatbot's hand-over to a human; what it must deliver,
    # read from the outbound feed (its own channels' messages only, ledger/intake/outbound.py); the signed
    # receipt of a contact, to hand to the customer; and the verdicts of its own intake records.
    Role.ADAPTER: _COMMITMENTS | {O.CONTACT_RECORD, O.CONTACT_RECEIPT_READ, O.MESSAGE_DELIVERED, O.MESSAGE_FAILED,
                                  O.MESSAGE_READ, O.CASE_ESCALATE, O.OUTBOUND_READ, O.INTAKE_VERDICT_READ},
    Role.AGENT: _READS | _COMMITMENTS | _CASE_WORK | {O.CUSTOMER_LOCALE},
    # Supervisors also erase a customer's personal data and place or release legal holds (docs/privacy.md).
    Role.SUPERVISOR: _READS | _COMMITMENTS | _AUDIT | _CASE_WORK | {O.HISTORY_EXPORT, O.TICK, O.INTAKE_KEPT_READ,
                                            O.CUSTOMER_LOCALE, O.CUSTOMER_ERASE, O.CUSTOMER_HOLD,
                                            O.CUSTOMER_KEYS_READ},
    # Automation proposes and reports what an outside system executed; it never approves or rejects.
    Role.AUTOMATION: _COMMITMENTS | {O.CASE_READ, O.OVERDUE_READ, O.ACTION_PROPOSE, O.ACTION_EXECUTED,
                                     O.MESSAGE_DELIVERED, O.MESSAGE_FAILED, O.TICK},
    # Auditors only read.
    Role.AUDITOR: _READS | _COMMITMENTS | _AUDIT | {O.HISTORY_EXPORT, O.INTAKE_KEPT_READ, O.CUSTOMER_KEYS_READ},
    # Admins manage principals and adapters, read, and erase or hold (a data protection officer's acts);
    # case work is for agents and supervisors.
    Role.ADMIN: _READS | _COMMITMENTS | _AUDIT | {O.PRINCIPALS_MANAGE, O.HISTORY_EXPORT, O.INTAKE_KEPT_READ, O.TICK,
                                               O.CUSTOMER_ERASE, O.CUSTOMER_HOLD, O.CUSTOMER_KEYS_READ},
}

ACTOR_KIND: dict[Role, ActorKind] = {
    Role.ADAPTER: ActorKind.SYSTEM,
    Role.AGENT: ActorKind.AGENT,
    Role.SUPERVISOR: ActorKind.AGENT,
    Role.AUTOMATION: ActorKind.AUTOMATION,
    Role.AUDITOR: ActorKind.SYSTEM,
    Role.ADMIN: ActorKind.AGENT,
}
"""The kind of actor a principal's events name (its id is the principal's name)."""


def allowed(role: Role, operation: Operation) -> bool:
    """Whether ``role`` may perform ``operation``."""
    return operation in PERMISSIONS[role]


def require(role: Role, operation: Operation, *, name: str) -> None:
    """Refuse with :class:`PermissionDenied` when ``role`` may not perform ``operation``."""
    if not allowed(role, operation):
        may = sorted(r.value for r in Role if allowed(r, operation))
        raise PermissionDenied(
            f"principal {name!r} has role {role.value}, which may not {operation.value}; "
            f"roles that may: {', '.join(may) or 'none'}"
        )


def parse_role(text: str) -> Role:
    """A role by name; the error lists the roles."""
    try:
        return Role(text.strip().lower())
    except ValueError:
        raise ValidationError(f"unknown role {text!r}; use one of: {', '.join(r.value for r in Role)}") from None
