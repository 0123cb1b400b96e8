"""The ledger service seen from a client: the CLI's ``--api URL`` acts through it instead of a local file.

:class:`LedgerClient` has the command methods of :class:`~ledger.application.CaseLedger` the CLI
calls, with the same arguments and results, and sends each as an HTTP request with a bearer token.
The ``actor`` argument is not sent: the server names the authenticated principal. Every write
carries a fresh Idempotency-Key and is retried with the same key when the connection fails or the
server asks to retry, so a retry never records twice. Problems come back as the ledger's own
errors, so the CLI's exit codes are the same either way.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import httpx

from caseledger.ledger.access.principals import IssuedToken
from caseledger.ledger.commands import ROUTES
from caseledger.ledger.domain.permissions import Role
from caseledger.ledger.domain.texts import Audience
from caseledger.ledger.domain.values import Actor, ContactDraft, Identity
from caseledger.ledger.errors import BackendError, ConfigurationError, ConflictError, ValidationError
from caseledger.ledger.intake.contacts import ContactOutcome
from caseledger.ledger.privacy.erasure import ErasureReport
from caseledger.ledger.service.problems import error_from_problem
from caseledger.ledger.settings import ClientSection
from caseledger.ledger.store_ports import PrincipalRow

__all__ = ["LedgerClient", "resolve_token"]

RETRIES = 3


def resolve_token(settings: ClientSection, *, token: str | None = None, token_file: str | None = None) -> str:
    """The bearer token: the option, else CASELEDGER_TOKEN, else the file (option or CASELEDGER_TOKEN_FILE)."""
    chosen = token or settings.token
    path = token_file or settings.token_file
    if not chosen and path:
        try:
            chosen = Path(path).expanduser().read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigurationError(f"cannot read the token file {path}: {error.strerror}") from None
    if not chosen:
        raise ConfigurationError(
            "--api needs a bearer token: set CASELEDGER_TOKEN, give --token-file FILE (or CASELEDGER_TOKEN_FILE), "
            "or --token; an admin issues one with `caseledger principals add NAME --role ROLE`"
        )
    return chosen


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class LedgerClient:
    """The commands of the ledger over HTTP (see the module docstring)."""

    def __init__(self, url: str, token: str, *, timeout_s: float = 60.0, verify: bool | str = True) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"--api {url!r} is not an http:// or https:// URL, e.g. https://ledger.example:8443")
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, verify=verify,
                                  headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self._http.close()

    # -- transport ----------------------------------------------------------------------------------

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Idempotency-Key": str(uuid.uuid4())} if method != "GET" else {}
        for attempt in range(RETRIES):
            try:
                answer = self._http.request(method, path, json=body, headers=headers)
            except httpx.TransportError as error:
                if attempt == RETRIES - 1:
                    raise BackendError(f"the ledger service at {self.url} cannot be reached: "
                                       f"{type(error).__name__}") from None
                time.sleep(0.2 * 2**attempt)
                continue
            if answer.status_code < 400:
                return answer.json()
            failure = error_from_problem(self._problem(answer))
            retry = answer.status_code in (502, 503, 504) or (
                answer.status_code == 409 and isinstance(failure, ConflictError))
            if not retry or attempt == RETRIES - 1:
                raise failure
            time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    @staticmethod
    def _problem(answer: httpx.Response) -> dict[str, Any]:
        try:
            body = answer.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "type" in body:
            return body
        return {"type": "urn:caseledger:problem:unavailable" if answer.status_code >= 500 else "", "status":
                answer.status_code, "detail": f"the ledger service answered HTTP {answer.status_code}"}

    def _call(self, command: str, body: dict[str, Any] | None = None, *, query: dict[str, str | None] | None = None,
              **segments: str) -> Any:
        """Send ``command`` to its declared route, its path filled with ``segments``."""
        route = ROUTES[command]
        path = route.url(**segments)
        given = {k: v for k, v in (query or {}).items() if v is not None}
        return self._send(route.method, f"{path}?{urlencode(given)}" if given else path, body)

    # -- commands (LedgerCommands: the signatures and results of CaseLedger's) -----------------------------

    def record_contact(self, draft: ContactDraft, *, actor: Actor | None = None) -> ContactOutcome:
        body = {
            "channel": draft.channel.value, "channel_message_id": draft.channel_message_id,
            "from": str(draft.identity), "items": list(draft.items), "subject": draft.subject, "body": draft.body,
            "case_reference": draft.case_reference, "follow_up": draft.follow_up, "category": draft.category,
            "customer_id": draft.customer_id, "segment": draft.segment, "occurred_at": _iso(draft.occurred_at),
            "metadata": dict(draft.metadata),
            "attachments": [{"ref": a.ref, "sha256": a.sha256, "size": a.size, "media_type": a.media_type,
                             "filename": a.filename} for a in draft.attachments],
        }
        o = self._call("record_contact", body)
        return ContactOutcome(
            reference=o["reference"], case_id=UUID(o["case_id"]), customer_id=o["customer_id"],
            contact_id=o["contact_id"], acknowledgement_id=o["acknowledgement_id"],
            acknowledgement=o["acknowledgement"], respond_by=datetime.fromisoformat(o["respond_by"]),
            duplicate=o["duplicate"], opened_case=o["opened_case"], receipt=o.get("receipt"),
        )

    def contact_receipt(self, reference: str, contact_id: str = "C1") -> str:
        return str(self._call("contact_receipt", reference=reference, contact_id=contact_id)["receipt"])

    def contact_receipt_proof(self, reference: str, contact_id: str = "C1",
                              tree_size: int | None = None) -> dict[str, Any]:
        return dict(self._call("contact_receipt_proof", query={"tree_size": None if tree_size is None else str(tree_size)},
                               reference=reference, contact_id=contact_id))

    def respond(self, reference: str, *, actor: Actor, body: str, answers: Sequence[str] = (),
                channel: str | None = None, occurred_at: datetime | None = None) -> str:
        sent = {"body": body, "answers": list(answers), "channel": channel, "occurred_at": _iso(occurred_at)}
        return str(self._call("respond", sent, reference=reference)["response_id"])

    def waive_item(self, reference: str, *, actor: Actor, item_id: str, reason: str) -> None:
        self._call("waive_item", {"reason": reason}, reference=reference, item_id=item_id)

    def make_promise(self, reference: str, *, actor: Actor, channel: str, kind: str, terms: str, due_at: datetime,
                     confirmation_channel: str | None = None,
                     occurred_at: datetime | None = None) -> tuple[str, str | None]:
        o = self._call("make_promise", {"channel": channel, "kind": kind, "terms": terms, "due_at": _iso(due_at),
                                        "confirmation_channel": confirmation_channel,
                                        "occurred_at": _iso(occurred_at)}, reference=reference)
        return o["promise_id"], o["confirmation_id"]

    def keep_promise(self, reference: str, *, actor: Actor, promise_id: str, evidence: str) -> None:
        self._call("keep_promise", {"evidence": evidence}, reference=reference, promise_id=promise_id)

    def withdraw_promise(self, reference: str, *, actor: Actor, promise_id: str, reason: str, notice: str) -> None:
        self._call("withdraw_promise", {"reason": reason, "notice": notice}, reference=reference, promise_id=promise_id)

    def break_promise(self, reference: str, *, actor: Actor, promise_id: str, reason: str) -> None:
        self._call("break_promise", {"reason": reason}, reference=reference, promise_id=promise_id)

    def change_status(self, reference: str, *, actor: Actor, to_status: str, reason: str, notice: str) -> None:
        self._call("change_status", {"to": to_status, "reason": reason, "notice": notice}, reference=reference)

    def close_case(self, reference: str, *, actor: Actor, reason: str, notice: str,
                   waive: dict[str, str] | None = None) -> None:
        self._call("close_case", {"reason": reason, "notice": notice, "waive": dict(waive or {})}, reference=reference)

    def cancel_case(self, reference: str, *, actor: Actor, reason: str, notice: str) -> None:
        self._call("cancel_case", {"reason": reason, "notice": notice}, reference=reference)

    def reopen_case(self, reference: str, *, actor: Actor, reason: str, notice: str) -> None:
        self._call("reopen_case", {"reason": reason, "notice": notice}, reference=reference)

    def assign(self, reference: str, *, actor: Actor, assignee: str | None, team: str | None = None) -> None:
        self._call("assign", {"assignee": assignee, "team": team}, reference=reference)

    def hand_off(self, reference: str, *, actor: Actor, to_assignee: str | None, to_team: str | None = None,
                 note: str = "") -> dict[str, Any]:
        return dict(self._call("hand_off", {"to": to_assignee, "team": to_team, "note": note},
                               reference=reference)["brief"])

    def escalate_to_human(self, reference: str, *, actor: Actor, bot_id: str, waiting_since: datetime,
                          to_team: str | None = None, reason: str) -> int:
        sent = {"bot_id": bot_id, "waiting_since": _iso(waiting_since), "to_team": to_team, "reason": reason}
        return int(self._call("escalate_to_human", sent, reference=reference)["waited_seconds"])

    def propose_action(self, reference: str, *, actor: Actor, rule_id: str, action: str, params: dict[str, str],
                       rationale: str) -> str:
        sent = {"rule": rule_id, "action": action, "params": params, "rationale": rationale}
        return str(self._call("propose_action", sent, reference=reference)["proposal_id"])

    def approve_action(self, reference: str, *, actor: Actor, proposal_id: str, note: str = "") -> str:
        return str(self._call("approve_action", {"note": note}, reference=reference, proposal_id=proposal_id)["outcome"])

    def reject_action(self, reference: str, *, actor: Actor, proposal_id: str, reason: str) -> None:
        self._call("reject_action", {"reason": reason}, reference=reference, proposal_id=proposal_id)

    def record_action_executed(self, reference: str, *, actor: Actor, proposal_id: str, result: str) -> None:
        self._call("record_action_executed", {"result": result}, reference=reference, proposal_id=proposal_id)

    def record_delivery(self, reference: str, *, actor: Actor, message_id: str, delivered_at: datetime) -> None:
        self._call("record_delivery", {"delivered_at": _iso(delivered_at)}, reference=reference, message_id=message_id)

    def record_delivery_failure(self, reference: str, *, actor: Actor, message_id: str, reason: str,
                                failed_at: datetime | None = None) -> None:
        self._call("record_delivery_failure", {"reason": reason, "failed_at": _iso(failed_at)}, reference=reference,
                   message_id=message_id)

    def record_read(self, reference: str, *, actor: Actor, message_id: str, read_at: datetime | None = None) -> None:
        self._call("record_read", {"read_at": _iso(read_at)}, reference=reference, message_id=message_id)

    def erase_customer(self, who: str, *, reason: str, actor: Actor | None = None) -> ErasureReport:
        answer = self._call("erase_customer", {"reason": reason}, customer=self._customer(who))
        return ErasureReport(customer_id=answer["customer_id"], erased_at=datetime.fromisoformat(answer["erased_at"]),
                             key_ids=answer["key_ids"], already_erased=answer["already_erased"],
                             pending=answer.get("pending"))

    def place_legal_hold(self, who: str, *, reason: str, actor: Actor | None = None) -> None:
        self._call("place_legal_hold", {"reason": reason}, customer=self._customer(who))

    def release_legal_hold(self, who: str, *, reason: str, actor: Actor | None = None) -> None:
        self._call("release_legal_hold", {"reason": reason}, customer=self._customer(who))

    def set_customer_locale(self, who: str, *, actor: Actor, locale: str | None,
                            time_zone: str | None) -> tuple[str, Audience, bool]:
        o = self._call("set_customer_locale", {"locale": locale, "time_zone": time_zone}, customer=self._customer(who))
        return o["customer_id"], Audience(**o["audience"]), o["changed"]

    def customer_privacy(self, who: str) -> dict[str, Any]:
        return dict(self._call("customer_privacy", customer=self._customer(who)))

    # -- reads as records (the CLI renders them as it renders the embedded ledger's) ------------------------

    def case_record(self, reference: str) -> dict[str, Any]:
        return dict(self._call("case_record", reference=reference))

    def find_record(self, channel: str, message_id: str) -> dict[str, Any]:
        return dict(self._call("find_record", query={"channel": channel, "message_id": message_id}))

    def case_records_of(self, who: str) -> list[dict[str, Any]]:
        return list(self._call("case_records_of", customer=self._customer(who)))

    def collision_records(self) -> list[dict[str, Any]]:
        return list(self._call("collision_records"))

    def rejection_records(self) -> list[dict[str, Any]]:
        return list(self._call("rejection_records"))

    # -- principals (an admin's token) ----------------------------------------------------------------------

    def add_principal(self, name: str, role: str, *, team: str | None = None, zone: str | None = None,
                      locale: str | None = None) -> IssuedToken:
        o = self._call("add_principal", {"name": name, "role": role, "team": team, "zone": zone, "locale": locale})
        return IssuedToken(o["name"], Role(o["role"]), o["token"])

    def update_principal(self, name: str, *, team: str | None = None, zone: str | None = None,
                         locale: str | None = None) -> PrincipalRow:
        r = self._call("update_principal", {"team": team, "zone": zone, "locale": locale}, name=name)
        return _principal_row(r)

    def revoke_principal(self, name: str) -> None:
        self._call("revoke_principal", name=name)

    def principals(self) -> list[PrincipalRow]:
        return [_principal_row(r) for r in self._call("principals")]

    # -- what only the service answers (ServiceCommands) -----------------------------------------------------

    def customer_id_of(self, identity: str) -> str:
        return str(self._call("customer_id_of", {"identity": identity})["customer_id"])

    def _customer(self, who: str) -> str:
        """``who`` as a customer route takes it: an identity is resolved first, never put in a URL."""
        try:
            Identity.parse(who)
        except ValidationError:
            return who
        return self.customer_id_of(who)

    def outbound_page(self, *, after: int, limit: int = 100, wait_s: float = 0.0) -> dict[str, Any]:
        """A page of the outbound feed of the calling adapter (``GET /v1/outbound``, not a command of the CLI):
        ``{"messages": [...], "position": P}``; see :class:`caseledger.ledger.intake.outbound_client.OutboundClient`."""
        query = urlencode({"after": after, "limit": limit, "wait": wait_s})
        return dict(self._send("GET", f"/v1/outbound?{query}"))

    def whoami(self) -> dict[str, Any]:
        return dict(self._call("whoami"))

    def history_rows(self, who: str) -> list[dict[str, Any]]:
        """A customer's timeline rows (times as datetimes), as the customer timeline projection gives them."""
        return [{**row, "recorded_at": _time(row["recorded_at"]), "occurred_at": _time(row["occurred_at"])}
                for row in self._call("history_rows", customer=self._customer(who))]

    def export(self, who: str, fmt: str, *, kept: int | None = None,
               occurred: tuple[datetime | None, datetime | None] = (None, None)) -> tuple[bytes, bool]:
        """A customer's history file in ``fmt`` and whether the server's audit verified it."""
        params: dict[str, str | int] = {"format": fmt}
        if kept is not None:
            params["kept"] = kept
        for name, value in zip(("occurred_from", "occurred_until"), occurred, strict=True):
            if value is not None:
                params[name] = value.isoformat()
        answer = self._raw(ROUTES["export"].url(customer=self._customer(who)), params)
        return answer.content, answer.headers.get("X-Caseledger-Verified") == "true"

    def _raw(self, path: str, params: dict[str, str | int] | None = None) -> httpx.Response:
        """A GET whose answer is not JSON (a file, a signed note): the response, or the problem as the ledger's error."""
        try:
            answer = self._http.get(path, params=params)
        except httpx.TransportError as error:
            raise BackendError(f"the ledger service at {self.url} cannot be reached: {type(error).__name__}") from None
        if answer.status_code >= 400:
            raise error_from_problem(self._problem(answer))
        return answer

    def overdue_rows(self, kind: str | None = None) -> list[dict[str, Any]]:
        return list(self._call("overdue_rows", query={"kind": kind}))

    def metrics_rows(self, by: str, *, month: bool = False, zone: str = "UTC") -> list[dict[str, Any]]:
        query: dict[str, str | None] = {"by": by, "month": "true", "zone": zone} if month else {"by": by}
        return list(self._call("metrics_rows", query=query))

    def audit_report(self, customer: str | None = None, *, since: datetime | None = None,
                     until: datetime | None = None, seal: str | None = None, checkpoint: str | None = None,
                     key: str | None = None, listed: bool = False) -> dict[str, Any]:
        # The kept note travels as base64url: a query holds no newline (the gate refuses control characters).
        note = base64.urlsafe_b64encode(checkpoint.encode()).decode().rstrip("=") if checkpoint is not None else None
        return dict(self._call("audit_report", query={
            "customer": self._customer(customer) if customer else None, "since": _iso(since), "until": _iso(until),
            "seal": seal, "checkpoint": note, "key": key, "listed": "true" if listed else None}))

    def audit_key_record(self) -> dict[str, str]:
        return dict(self._call("audit_key_record", query={"format": "json"}))

    def latest_checkpoint_note(self) -> str:
        return self._raw(ROUTES["latest_checkpoint_note"].url()).text

    def checkpoint_note(self, size: int) -> str:
        return self._raw(ROUTES["checkpoint_note"].url(size=str(size))).text

    def inclusion_record(self, customer: str) -> dict[str, Any]:
        return dict(self._call("inclusion_record", query={"customer": self._customer(customer)}))

    def consistency_record(self, old: int, new: int) -> dict[str, Any]:
        return dict(self._call("consistency_record", query={"old": str(old), "new": str(new)}))

    def tick_record(self) -> dict[str, Any]:
        """Record the deadlines past due, on the ledger's clock (``tick --json``'s record)."""
        return dict(self._call("tick_record", {}))


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _principal_row(r: dict[str, Any]) -> PrincipalRow:
    return PrincipalRow(name=r["name"], role=r["role"], token_sha256=None, created_at=_time(r["created_at"]),
                        revoked_at=_time(r["revoked_at"]) if r["revoked_at"] else None, team=r.get("team"),
                        zone=r.get("zone"), locale=r.get("locale"))
