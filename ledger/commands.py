"""What a caller may ask of the ledger, typed once: every command and read, its arguments, its HTTP route, its permission.

:class:`LedgerCommands` is implemented twice: by :class:`~caseledger.ledger.application.CaseLedger`
on its own store, and by :class:`~caseledger.ledger.service.client.LedgerClient` over HTTP (the
CLI's ``--api``). The CLI types its ledger as this Protocol, so a command is written once and
runs either way; ``tests/unit/test_command_protocol.py`` checks that both implement every method
with its signature, and that the service has each route declared here.

Who acts: every command names its ``actor``. The embedded ledger records it; over HTTP the
service records the token's principal (a token cannot act as anyone else), so the client does
not send it — docs/api.md, "Who acts".

:class:`ServiceCommands` are the reads (and ``tick``) only the service answers through the client (from its
projections' views, its audit and its clock); the embedded CLI reads its own views instead.
Commands that must stay local (``cli.common.local_only``) are in neither.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from string import Formatter
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import quote

from caseledger.ledger.domain.permissions import Operation

if TYPE_CHECKING:
    from caseledger.ledger.access.principals import IssuedToken
    from caseledger.ledger.domain.texts import Audience
    from caseledger.ledger.domain.values import Actor, ContactDraft
    from caseledger.ledger.intake.contacts import ContactOutcome
    from caseledger.ledger.privacy.erasure import ErasureReport
    from caseledger.ledger.store_ports import PrincipalRow

__all__ = ["ROUTES", "LedgerCommands", "Route", "ServiceCommands", "route"]

O = Operation  # noqa: E741 -- short: every command names one
F = TypeVar("F", bound=Callable[..., Any])
_ROUTE = "__caseledger_route__"


@dataclass(frozen=True)
class Route:
    """Where a command goes over HTTP; the braces of ``path`` are filled with the command's arguments."""

    method: str  # GET, POST or DELETE
    path: str
    operation: Operation | None  # the permission it needs; None: any authenticated principal

    @property
    def writes(self) -> bool:
        return self.method != "GET"

    @property
    def segments(self) -> list[str]:
        """The names in braces, in order: ``/v1/cases/{reference}/items/{item_id}/waive`` → reference, item_id."""
        return [name for _text, name, _spec, _conv in Formatter().parse(self.path) if name]

    @property
    def x_operation(self) -> str:
        """The operation as the OpenAPI schema names it (``x-operation``)."""
        return self.operation.value if self.operation is not None else "authenticated"

    def url(self, **segments: str) -> str:
        """The path with each segment escaped as given (a customer id, reference, id; never an identity)."""
        return self.path.format(**{k: quote(v, safe=":@") for k, v in segments.items()})


def route(method: str, path: str, operation: Operation | None) -> Callable[[F], F]:
    """Declare the HTTP route of a command of the Protocol (the client sends it there, the service serves it)."""

    def mark(command: F) -> F:
        setattr(command, _ROUTE, Route(method, path, operation))
        return command

    return mark


class LedgerCommands(Protocol):
    """Every command and read the CLI does, on the ledger's store or through the ledger service."""

    # -- intake -----------------------------------------------------------------------------------------

    @route("POST", "/v1/contacts", O.CONTACT_RECORD)
    def record_contact(self, draft: ContactDraft, *, actor: Actor | None = None) -> ContactOutcome:
        """Record an inbound contact with its acknowledgement; the same request again is "already recorded"."""
        ...

    @route("GET", "/v1/cases/{reference}/contacts/{contact_id}/receipt", O.CONTACT_RECEIPT_READ)
    def contact_receipt(self, reference: str, contact_id: str = "C1") -> str:
        """The signed receipt of a recorded contact (``CLR1.…``), as its acknowledgement carried it."""
        ...

    @route("GET", "/v1/cases/{reference}/contacts/{contact_id}/receipt/proof", O.CONTACT_RECEIPT_READ)
    def contact_receipt_proof(self, reference: str, contact_id: str = "C1",
                              tree_size: int | None = None) -> dict[str, Any]:
        """The contact's leaf index and inclusion proof against the latest signed checkpoint (or the one of
        ``tree_size``), with it: the file that proves its receipt in the log offline."""
        ...

    # -- working a case ---------------------------------------------------------------------------------

    @route("POST", "/v1/cases/{reference}/responses", O.RESPOND)
    def respond(self, reference: str, *, actor: Actor, body: str, answers: Sequence[str] = (),
                channel: str | None = None, occurred_at: datetime | None = None) -> str:
        """Send a response answering the given items; returns the response id (R1, R2 …)."""
        ...

    @route("POST", "/v1/cases/{reference}/items/{item_id}/waive", O.ITEM_WAIVE)
    def waive_item(self, reference: str, *, actor: Actor, item_id: str, reason: str) -> None:
        """Waive an item with a reason."""
        ...

    @route("POST", "/v1/cases/{reference}/promises", O.PROMISE_MAKE)
    def make_promise(self, reference: str, *, actor: Actor, channel: str, kind: str, terms: str, due_at: datetime,
                     confirmation_channel: str | None = None,
                     occurred_at: datetime | None = None) -> tuple[str, str | None]:
        """Record a promise; returns (promise id, written confirmation id or None)."""
        ...

    @route("POST", "/v1/cases/{reference}/promises/{promise_id}/keep", O.PROMISE_KEEP)
    def keep_promise(self, reference: str, *, actor: Actor, promise_id: str, evidence: str) -> None:
        """A promise was kept."""
        ...

    @route("POST", "/v1/cases/{reference}/promises/{promise_id}/withdraw", O.PROMISE_WITHDRAW)
    def withdraw_promise(self, reference: str, *, actor: Actor, promise_id: str, reason: str, notice: str) -> None:
        """Withdraw a promise, telling the customer."""
        ...

    @route("POST", "/v1/cases/{reference}/promises/{promise_id}/break", O.PROMISE_BREAK)
    def break_promise(self, reference: str, *, actor: Actor, promise_id: str, reason: str) -> None:
        """A promise was broken."""
        ...

    @route("POST", "/v1/cases/{reference}/status", O.CASE_STATUS)
    def change_status(self, reference: str, *, actor: Actor, to_status: str, reason: str, notice: str) -> None:
        """Change a case's status."""
        ...

    @route("POST", "/v1/cases/{reference}/close", O.CASE_CLOSE)
    def close_case(self, reference: str, *, actor: Actor, reason: str, notice: str,
                   waive: dict[str, str] | None = None) -> None:
        """Close a case; ``waive`` maps item or promise ids (Q…, P…) to the reason they are waived."""
        ...

    @route("POST", "/v1/cases/{reference}/cancel", O.CASE_CANCEL)
    def cancel_case(self, reference: str, *, actor: Actor, reason: str, notice: str) -> None:
        """Cancel a case."""
        ...

    @route("POST", "/v1/cases/{reference}/reopen", O.CASE_REOPEN)
    def reopen_case(self, reference: str, *, actor: Actor, reason: str, notice: str) -> None:
        """Reopen a case."""
        ...

    @route("POST", "/v1/cases/{reference}/assign", O.CASE_ASSIGN)
    def assign(self, reference: str, *, actor: Actor, assignee: str | None, team: str | None = None) -> None:
        """Assign a case."""
        ...

    @route("POST", "/v1/cases/{reference}/handoff", O.CASE_HANDOFF)
    def hand_off(self, reference: str, *, actor: Actor, to_assignee: str | None, to_team: str | None = None,
                 note: str = "") -> dict[str, Any]:
        """Hand a case over; returns the brief the next agent receives."""
        ...

    @route("POST", "/v1/cases/{reference}/escalate", O.CASE_ESCALATE)
    def escalate_to_human(self, reference: str, *, actor: Actor, bot_id: str, waiting_since: datetime,
                          to_team: str | None = None, reason: str) -> int:
        """A chatbot passes the customer to a human; returns how many seconds they waited."""
        ...

    @route("POST", "/v1/cases/{reference}/actions", O.ACTION_PROPOSE)
    def propose_action(self, reference: str, *, actor: Actor, rule_id: str, action: str, params: dict[str, str],
                       rationale: str) -> str:
        """Automation proposes an action; nothing happens until a human approves it. Returns its id (X1 …)."""
        ...

    @route("POST", "/v1/cases/{reference}/actions/{proposal_id}/approve", O.ACTION_APPROVE)
    def approve_action(self, reference: str, *, actor: Actor, proposal_id: str, note: str = "") -> str:
        """A human approves a proposal: ``executed`` (a ledger action, done at once) or ``approved``."""
        ...

    @route("POST", "/v1/cases/{reference}/actions/{proposal_id}/reject", O.ACTION_REJECT)
    def reject_action(self, reference: str, *, actor: Actor, proposal_id: str, reason: str) -> None:
        """A human rejects a proposed action."""
        ...

    @route("POST", "/v1/cases/{reference}/actions/{proposal_id}/executed", O.ACTION_EXECUTED)
    def record_action_executed(self, reference: str, *, actor: Actor, proposal_id: str, result: str) -> None:
        """An outside system executed an approved action."""
        ...

    @route("POST", "/v1/cases/{reference}/messages/{message_id}/delivered", O.MESSAGE_DELIVERED)
    def record_delivery(self, reference: str, *, actor: Actor, message_id: str, delivered_at: datetime) -> None:
        """A message to the customer was delivered."""
        ...

    @route("POST", "/v1/cases/{reference}/messages/{message_id}/failed", O.MESSAGE_FAILED)
    def record_delivery_failure(self, reference: str, *, actor: Actor, message_id: str, reason: str,
                                failed_at: datetime | None = None) -> None:
        """A message to the customer could not be delivered (reason: bounced, invalid_address, rejected …)."""
        ...

    @route("POST", "/v1/cases/{reference}/messages/{message_id}/read", O.MESSAGE_READ)
    def record_read(self, reference: str, *, actor: Actor, message_id: str, read_at: datetime | None = None) -> None:
        """A message was read."""
        ...

    # -- a customer's personal data and language -------------------------------------------------------------

    @route("POST", "/v1/customers/{customer}/erase", O.CUSTOMER_ERASE)
    def erase_customer(self, who: str, *, reason: str, actor: Actor | None = None) -> ErasureReport:
        """Erase a customer's personal data (their data keys destroyed); refused under a legal hold."""
        ...

    @route("POST", "/v1/customers/{customer}/hold", O.CUSTOMER_HOLD)
    def place_legal_hold(self, who: str, *, reason: str, actor: Actor | None = None) -> None:
        """Keep a customer's data whatever is asked (a legal obligation or claim) until released."""
        ...

    @route("POST", "/v1/customers/{customer}/release", O.CUSTOMER_HOLD)
    def release_legal_hold(self, who: str, *, reason: str, actor: Actor | None = None) -> None:
        """Release a customer's legal hold."""
        ...

    @route("POST", "/v1/customers/{customer}/locale", O.CUSTOMER_LOCALE)
    def set_customer_locale(self, who: str, *, actor: Actor, locale: str | None,
                            time_zone: str | None) -> tuple[str, Audience, bool]:
        """Set the language and time zone of a customer's texts: (customer id, their audience now, changed?)."""
        ...

    @route("GET", "/v1/customers/{customer}/keys", O.CUSTOMER_KEYS_READ)
    def customer_privacy(self, who: str) -> dict[str, Any]:
        """A customer's data keys (ids and dates, never key material) and legal hold."""
        ...

    # -- reads, as records (what ``--json`` prints) ---------------------------------------------------------

    @route("GET", "/v1/cases/{reference}", O.CASE_READ)
    def case_record(self, reference: str) -> dict[str, Any]:
        """A case as ``case show --json`` has it."""
        ...

    @route("GET", "/v1/cases", O.CASE_READ)
    def find_record(self, channel: str, message_id: str) -> dict[str, Any]:
        """The case a channel message was recorded on."""
        ...

    @route("GET", "/v1/customers/{customer}/cases", O.CASE_READ)
    def case_records_of(self, who: str) -> list[dict[str, Any]]:
        """A customer's cases (by customer id or identity), oldest first."""
        ...

    @route("GET", "/v1/intake/collisions", O.INTAKE_KEPT_READ)
    def collision_records(self) -> list[dict[str, Any]]:
        """Requests kept because their channel message id was already another request's."""
        ...

    @route("GET", "/v1/intake/rejections", O.INTAKE_KEPT_READ)
    def rejection_records(self) -> list[dict[str, Any]]:
        """Intake records that could not be applied, with their reason and raw bytes."""
        ...

    # -- principals (an admin's) -----------------------------------------------------------------------------

    @route("POST", "/v1/principals", O.PRINCIPALS_MANAGE)
    def add_principal(self, name: str, role: str, *, team: str | None = None, zone: str | None = None,
                      locale: str | None = None) -> IssuedToken:
        """Add a principal (optionally its team, IANA zone and BCP 47 locale); its token is in the answer, once
        (the ledger keeps only its hash)."""
        ...

    @route("PATCH", "/v1/principals/{name}", O.PRINCIPALS_MANAGE)
    def update_principal(self, name: str, *, team: str | None = None, zone: str | None = None,
                         locale: str | None = None) -> PrincipalRow:
        """Change a principal's team, zone or locale (None: unchanged; "": cleared)."""
        ...

    @route("DELETE", "/v1/principals/{name}", O.PRINCIPALS_MANAGE)
    def revoke_principal(self, name: str) -> None:
        """Revoke a principal's token at once; its name is never reused."""
        ...

    @route("GET", "/v1/principals", O.PRINCIPALS_MANAGE)
    def principals(self) -> list[PrincipalRow]:
        """Principals: name, role, created, revoked (never a token)."""
        ...


class ServiceCommands(Protocol):
    """The reads (and tick) only the ledger service answers through the client: from its views, its audit, its clock."""

    @route("POST", "/v1/customers/resolve", None)
    def customer_id_of(self, identity: str) -> str:
        """The customer id of an identity (email:…, phone:…): what the ``/v1/customers/{customer}`` routes take,
        since an identity never goes in a URL (paths and queries end up in logs)."""
        ...

    @route("GET", "/v1/whoami", None)
    def whoami(self) -> dict[str, Any]:
        """Who the token is: name, role, how it was authenticated, and what the role may do."""
        ...

    @route("GET", "/v1/customers/{customer}/history", O.HISTORY_READ)
    def history_rows(self, who: str) -> list[dict[str, Any]]:
        """A customer's timeline rows, as the customer timeline projection gives them."""
        ...

    @route("GET", "/v1/customers/{customer}/export", O.HISTORY_EXPORT)
    def export(self, who: str, fmt: str, *, kept: int | None = None,
               occurred: tuple[datetime | None, datetime | None] = (None, None)) -> tuple[bytes, bool]:
        """A customer's history file in ``fmt`` and whether the service's audit verified it; ``kept``: the tree size of
        a checkpoint the reader kept, which the file then carries a consistency proof from; ``occurred``: the range
        of occurred time the file shows in full (either end open), completeness proved for it."""
        ...

    @route("GET", "/v1/overdue", O.OVERDUE_READ)
    def overdue_rows(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Deadlines past due and still pending, the most overdue first."""
        ...

    @route("GET", "/v1/metrics", O.METRICS_READ)
    def metrics_rows(self, by: str, *, month: bool = False, zone: str = "UTC") -> list[dict[str, Any]]:
        """Service per channel and/or segment; with ``month``, per month in ``zone``."""
        ...

    @route("GET", "/v1/audit/verify", O.AUDIT_VERIFY)
    def audit_report(self, customer: str | None = None, *, since: datetime | None = None,
                     until: datetime | None = None, seal: str | None = None, checkpoint: str | None = None,
                     key: str | None = None, listed: bool = False) -> dict[str, Any]:
        """The audit's report of the service's store, or of one customer: within recorded times, against a seal or a
        checkpoint the auditor kept (its note and the verifier key), ``listed``: with the events recorded without
        authentication or on a simulated clock."""
        ...

    @route("GET", "/v1/audit/key", O.AUDIT_CHECKPOINT_READ)
    def audit_key_record(self) -> dict[str, str]:
        """The verifier key checkpoints are signed with, and the log's origin (``audit key --json``'s record)."""
        ...

    @route("GET", "/v1/audit/checkpoints/latest", O.AUDIT_CHECKPOINT_READ)
    def latest_checkpoint_note(self) -> str:
        """The latest signed checkpoint (a fresh one when the service holds the signing key and the log grew)."""
        ...

    @route("GET", "/v1/audit/checkpoints/{size}", O.AUDIT_CHECKPOINT_READ)
    def checkpoint_note(self, size: int) -> str:
        """The signed checkpoint of this tree size."""
        ...

    @route("GET", "/v1/audit/proofs/inclusion", O.AUDIT_PROOF_READ)
    def inclusion_record(self, customer: str) -> dict[str, Any]:
        """Each of a customer's events with its inclusion proof against the latest signed checkpoint."""
        ...

    @route("GET", "/v1/audit/proofs/consistency", O.AUDIT_PROOF_READ)
    def consistency_record(self, old: int, new: int) -> dict[str, Any]:
        """The RFC 9162 consistency proof from tree size ``old`` to ``new``."""
        ...

    @route("POST", "/v1/tick", O.TICK)
    def tick_record(self) -> dict[str, Any]:
        """Record the deadlines past due, on the service's clock (``tick --json``'s record)."""
        ...


def _routes(*protocols: type) -> dict[str, Route]:
    return {name: getattr(member, _ROUTE) for protocol in protocols for name, member in vars(protocol).items()
            if hasattr(member, _ROUTE)}


ROUTES: dict[str, Route] = _routes(LedgerCommands, ServiceCommands)
"""Every command and read of both Protocols by name: its route."""
