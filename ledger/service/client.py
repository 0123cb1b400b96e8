"""The ledger service seen from a client: the CLI's ``--api URL`` acts through it instead of a local file.

:class:`LedgerClient` has the command methods of :class:`~ledger.application.CaseLedger` the CLI
calls, with the same arguments and results, and sends each as an HTTP request with a bearer token.
The ``actor`` argument is not sent: the server names the authenticated principal. Every write
carries a fresh Idempotency-Key and is retried with the same key when the connection fails or the
server asks to retry, so a retry never records twice. Problems come back as the ledger's own
errors, so the CLI's exit codes are the same either way.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode
from uuid import UUID

import httpx

from caseledger.ledger.access.principals import IssuedToken
from caseledger.ledger.domain.values import ContactDraft
from caseledger.ledger.errors import BackendError, ConfigurationError, ConflictError
from caseledger.ledger.intake.contacts import ContactOutcome
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

    def __getattr__(self, name: str) -> Any:
        # Every command either has its method here or refuses --api itself (cli.common.local_only).
        raise ConfigurationError(
            f"this command is not available through --api (the client has no {name!r}); run it on the ledger's "
            f"own database (its --help says why), or read {self.url}/openapi.json for the routes"
        )

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

    def _get(self, path: str, **query: str | None) -> Any:
        given = {k: v for k, v in query.items() if v is not None}
        return self._send("GET", f"{path}?{urlencode(given)}" if given else path)

    def _case(self, reference: str, tail: str, body: dict[str, Any]) -> Any:
        return self._send("POST", f"/v1/cases/{reference}/{tail}", body)

    # -- commands (the arguments and results of CaseLedger's) ------------------------------------------

    def record_contact(self, draft: ContactDraft, **_: Any) -> ContactOutcome:
        body = {
            "channel": draft.channel.value, "channel_message_id": draft.channel_message_id,
            "from": str(draft.identity), "items": list(draft.items), "subject": draft.subject, "body": draft.body,
            "case_reference": draft.case_reference, "follow_up": draft.follow_up, "category": draft.category,
            "customer_id": draft.customer_id, "segment": draft.segment, "occurred_at": _iso(draft.occurred_at),
            "metadata": dict(draft.metadata),
            "attachments": [{"ref": a.ref, "sha256": a.sha256, "size": a.size, "media_type": a.media_type,
                             "filename": a.filename} for a in draft.attachments],
        }
        o = self._send("POST", "/v1/contacts", body)
        return ContactOutcome(
            reference=o["reference"], case_id=UUID(o["case_id"]), customer_id=o["customer_id"],
            contact_id=o["contact_id"], acknowledgement_id=o["acknowledgement_id"],
            acknowledgement=o["acknowledgement"], respond_by=datetime.fromisoformat(o["respond_by"]),
            duplicate=o["duplicate"], opened_case=o["opened_case"],
        )

    def respond(self, reference: str, *, body: str, answers: Any = (), channel: str | None = None,
                occurred_at: datetime | None = None, **_: Any) -> str:
        return str(self._case(reference, "responses", {"body": body, "answers": list(answers), "channel": channel,
                                                       "occurred_at": _iso(occurred_at)})["response_id"])

    def waive_item(self, reference: str, *, item_id: str, reason: str, **_: Any) -> None:
        self._case(reference, f"items/{item_id}/waive", {"reason": reason})

    def make_promise(self, reference: str, *, channel: str, kind: str, terms: str, due_at: datetime,
                     confirmation_channel: str | None = None, occurred_at: datetime | None = None,
                     **_: Any) -> tuple[str, str | None]:
        o = self._case(reference, "promises", {"channel": channel, "kind": kind, "terms": terms,
                                               "due_at": _iso(due_at), "confirmation_channel": confirmation_channel,
                                               "occurred_at": _iso(occurred_at)})
        return o["promise_id"], o["confirmation_id"]

    def keep_promise(self, reference: str, *, promise_id: str, evidence: str, **_: Any) -> None:
        self._case(reference, f"promises/{promise_id}/keep", {"evidence": evidence})

    def withdraw_promise(self, reference: str, *, promise_id: str, reason: str, notice: str, **_: Any) -> None:
        self._case(reference, f"promises/{promise_id}/withdraw", {"reason": reason, "notice": notice})

    def break_promise(self, reference: str, *, promise_id: str, reason: str, **_: Any) -> None:
        self._case(reference, f"promises/{promise_id}/break", {"reason": reason})

    def change_status(self, reference: str, *, to_status: str, reason: str, notice: str, **_: Any) -> None:
        self._case(reference, "status", {"to": to_status, "reason": reason, "notice": notice})

    def close_case(self, reference: str, *, reason: str, notice: str, waive: dict[str, str] | None = None,
                   **_: Any) -> None:
        self._case(reference, "close", {"reason": reason, "notice": notice, "waive": dict(waive or {})})

    def cancel_case(self, reference: str, *, reason: str, notice: str, **_: Any) -> None:
        self._case(reference, "cancel", {"reason": reason, "notice": notice})

    def reopen_case(self, reference: str, *, reason: str, notice: str, **_: Any) -> None:
        self._case(reference, "reopen", {"reason": reason, "notice": notice})

    def assign(self, reference: str, *, assignee: str | None, team: str | None = None, **_: Any) -> None:
        self._case(reference, "assign", {"assignee": assignee, "team": team})

    def hand_off(self, reference: str, *, to_assignee: str | None, to_team: str | None = None, note: str = "",
                 **_: Any) -> dict[str, Any]:
        return dict(self._case(reference, "handoff", {"to": to_assignee, "team": to_team, "note": note})["brief"])

    def escalate_to_human(self, reference: str, *, bot_id: str, waiting_since: datetime, to_team: str | None = None,
                          reason: str, **_: Any) -> int:
        return int(self._case(reference, "escalate", {"bot_id": bot_id, "waiting_since": _iso(waiting_since),
                                                      "to_team": to_team, "reason": reason})["waited_seconds"])

    def propose_action(self, reference: str, *, rule_id: str, action: str, params: dict[str, str], rationale: str,
                       **_: Any) -> str:
        return str(self._case(reference, "actions", {"rule": rule_id, "action": action, "params": params,
                                                     "rationale": rationale})["proposal_id"])

    def approve_action(self, reference: str, *, proposal_id: str, note: str = "", **_: Any) -> str:
        return str(self._case(reference, f"actions/{proposal_id}/approve", {"note": note})["outcome"])

    def reject_action(self, reference: str, *, proposal_id: str, reason: str, **_: Any) -> None:
        self._case(reference, f"actions/{proposal_id}/reject", {"reason": reason})

    def record_action_executed(self, reference: str, *, proposal_id: str, result: str, **_: Any) -> None:
        self._case(reference, f"actions/{proposal_id}/executed", {"result": result})

    def record_delivery(self, reference: str, *, message_id: str, delivered_at: datetime, **_: Any) -> None:
        self._case(reference, f"messages/{message_id}/delivered", {"delivered_at": _iso(delivered_at)})

    def record_read(self, reference: str, *, message_id: str, read_at: datetime | None = None, **_: Any) -> None:
        self._case(reference, f"messages/{message_id}/read", {"read_at": _iso(read_at)})

    def erase_customer(self, who: str, *, reason: str, **_: Any) -> Any:
        from caseledger.ledger.privacy.erasure import ErasureReport

        answer = self._send("POST", f"/v1/customers/{who}/erase", {"reason": reason})
        return ErasureReport(customer_id=answer["customer_id"], erased_at=datetime.fromisoformat(answer["erased_at"]),
                             key_ids=answer["key_ids"], already_erased=answer["already_erased"])

    def place_legal_hold(self, who: str, *, reason: str, **_: Any) -> None:
        self._send("POST", f"/v1/customers/{who}/hold", {"reason": reason})

    def release_legal_hold(self, who: str, *, reason: str, **_: Any) -> None:
        self._send("POST", f"/v1/customers/{who}/release", {"reason": reason})

    def customer_privacy(self, who: str) -> dict[str, Any]:
        return self._send("GET", f"/v1/customers/{who}/keys")  # type: ignore[no-any-return]

    def set_customer_locale(self, who: str, *, locale: str | None, time_zone: str | None, **_: Any) -> Any:
        from caseledger.ledger.domain.texts import Audience

        o = self._send("POST", f"/v1/customers/{_seg(who)}/locale", {"locale": locale, "time_zone": time_zone})
        return o["customer_id"], Audience(**o["audience"]), o["changed"]

    def whoami(self) -> dict[str, Any]:
        return dict(self._send("GET", "/v1/whoami"))

    # -- reads (the CLI renders what they return as it renders the embedded ledger's) ----------------------

    def case_record(self, reference: str) -> dict[str, Any]:
        """A case as ``case show --json`` has it (``caseledger.ledger.reports.describe.case_record``)."""
        return dict(self._send("GET", f"/v1/cases/{_seg(reference)}"))

    def find_record(self, channel: str, message_id: str) -> dict[str, Any]:
        return dict(self._get("/v1/cases", channel=channel, message_id=message_id))

    def case_records_of(self, who: str) -> list[dict[str, Any]]:
        return list(self._send("GET", f"/v1/customers/{_seg(who)}/cases"))

    def history_rows(self, who: str) -> list[dict[str, Any]]:
        """A customer's timeline rows (times as datetimes), as the customer timeline projection gives them."""
        return [{**row, "recorded_at": _time(row["recorded_at"]), "occurred_at": _time(row["occurred_at"])}
                for row in self._send("GET", f"/v1/customers/{_seg(who)}/history")]

    def export(self, who: str, fmt: str) -> tuple[bytes, bool]:
        """A customer's history file in ``fmt`` and whether the server's audit verified it."""
        answer = self._http.get(f"/v1/customers/{_seg(who)}/export", params={"format": fmt})
        if answer.status_code >= 400:
            raise error_from_problem(self._problem(answer))
        return answer.content, answer.headers.get("X-Caseledger-Verified") == "true"

    def overdue_rows(self, kind: str | None = None) -> list[dict[str, Any]]:
        return list(self._get("/v1/overdue", kind=kind))

    def metrics_rows(self, by: str) -> list[dict[str, Any]]:
        return list(self._get("/v1/metrics", by=by))

    def audit_report(self, customer: str | None = None) -> dict[str, Any]:
        return dict(self._get("/v1/audit/verify", customer=customer))

    def collision_records(self) -> list[dict[str, Any]]:
        return list(self._send("GET", "/v1/intake/collisions"))

    def rejection_records(self) -> list[dict[str, Any]]:
        return list(self._send("GET", "/v1/intake/rejections"))

    def tick_record(self) -> dict[str, Any]:
        """Record the deadlines past due, on the ledger's clock (``tick --json``'s record)."""
        return dict(self._send("POST", "/v1/tick", {}))

    # -- principals (an admin's token) ----------------------------------------------------------------------

    def add_principal(self, name: str, role: str) -> IssuedToken:
        from caseledger.ledger.domain.permissions import Role

        o = self._send("POST", "/v1/principals", {"name": name, "role": role})
        return IssuedToken(o["name"], Role(o["role"]), o["token"])

    def revoke_principal(self, name: str) -> None:
        self._send("DELETE", f"/v1/principals/{_seg(name)}")

    def principals(self) -> list[PrincipalRow]:
        return [PrincipalRow(name=r["name"], role=r["role"], token_sha256=None, created_at=_time(r["created_at"]),
                             revoked_at=_time(r["revoked_at"]) if r["revoked_at"] else None)
                for r in self._send("GET", "/v1/principals")]


def _seg(text: str) -> str:
    """A path segment: a customer id, identity or reference as given, escaped."""
    return quote(text, safe=":@")


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)
