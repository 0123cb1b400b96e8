"""The HTTP API of the ledger: the service's state, who calls, and the read routes, behind principals and roles.

Every route names the :class:`~ledger.domain.permissions.Operation` it performs; the
``principal`` dependency authenticates the caller and checks the matrix before the route runs.
Writes are in :mod:`ledger.service.write_routes` (Idempotency-Key, the actor from the principal);
:mod:`ledger.service.asgi` composes both, and the live page, into the app.
Errors are problem details (:mod:`ledger.service.problems`). A request that needs a ledger takes
one from a bounded pool for its duration (:mod:`ledger.service.ledger_pool`): a ledger's unit of
work belongs to one user at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from caseledger.ledger.access.principals import Authenticator, OidcSettings, Principal
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.case_references import normalise_reference
from caseledger.ledger.domain.permissions import Operation, Role
from caseledger.ledger.domain.values import Identity
from caseledger.ledger.errors import AuthenticationError, NotFound, PermissionDenied, ValidationError
from caseledger.ledger.intake.verdict_reads import read_verdict, verdict_json
from caseledger.ledger.reports.describe import plain
from caseledger.ledger.service.callers import Callers
from caseledger.ledger.service.case_cache import CaseCache
from caseledger.ledger.service.group_commit import GroupCommitter
from caseledger.ledger.service.idempotency import SECRET_SUBJECT, Idempotency
from caseledger.ledger.service.ledger_pool import LedgerPool, current_request_ledger
from caseledger.ledger.service.problems import MEDIA_TYPE
from caseledger.ledger.settings import LedgerSettings

__all__ = ["ServiceState", "add_read_routes", "principal_for", "problem_response"]

COMMITTER_CACHE = 20_000  # aggregates the committer keeps between batches (customers, claims, registrations)

log = logging.getLogger("caseledger.service")
O = Operation  # noqa: E741 -- short: every route names one

MAX_BODY_BYTES = 1_048_576
REQUEST_TIMEOUT_S = 30.0
MAX_IN_FLIGHT = 512  # requests between their headers and their response's start, per server process
# Worker threads running the (synchronous) routes, and as many ledgers for the requests (each with its own
# connections): more than a few only adds ledger start-ups and lock contention on a small machine.
THREADS = 8
# The x-operation of the routes outside the permission matrix: answered without credentials (/healthz), and
# answered to any authenticated principal, whatever its role (/v1/whoami, /openapi.json).
UNAUTHENTICATED = "unauthenticated"
AUTHENTICATED = "authenticated"


@dataclass
class ServiceState:
    """What every request shares: the settings, the pool of ledgers lent to requests, the authenticator."""

    settings: LedgerSettings
    oidc: OidcSettings | None = None
    views: str | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    request_timeout_s: float = REQUEST_TIMEOUT_S
    max_in_flight: int = MAX_IN_FLIGHT
    threads: int = THREADS
    clock: Callable[[], datetime] | None = None
    cases: CaseCache = field(init=False)
    pool: LedgerPool = field(init=False)
    _own: CaseLedger | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.cases = CaseCache(lambda: CaseLedger(self.settings, clock=self.clock))
        self.pool = LedgerPool(lambda: CaseLedger(self.settings, clock=self.clock), size=self.threads,
                               wait_s=self.request_timeout_s)

    def ledger(self) -> CaseLedger:
        """The ledger of the request being served: taken from the pool on its first call, given back when the route
        returns. Outside a request (start-up, a streamed body, a test) the service's own ledger."""
        request = current_request_ledger()
        ledger = request.ledger() if request is not None else None
        return ledger if ledger is not None else self.own_ledger()

    @contextmanager
    def leased_ledger(self) -> Iterator[CaseLedger]:
        """A ledger of the pool for the block's duration, for work outside requests (the live page's watcher)."""
        with self.pool.lease() as ledger:
            yield ledger

    def own_ledger(self) -> CaseLedger:
        """The service's own ledger, for what outlives a request (the authenticator's principal store); closed by
        :meth:`close`."""
        with self._lock:
            if self._own is None:
                self._own = CaseLedger(self.settings, clock=self.clock)
            return self._own

    def warm(self) -> None:
        """Build the ledgers of the committer and the case reader now (~0.1 s each), not in the first requests'
        time. The worker threads' ledgers are built when first needed: each holds a pool of connections."""
        self.committer.warm()
        self.cases.warm()
        self.idempotency_secret()  # made on the first start, so that no keyed write makes it in its own time

    def authenticator(self) -> Authenticator:
        auth: Authenticator | None = getattr(self, "_authenticator", None)
        if auth is None:
            auth = Authenticator(self.own_ledger().principal_store, oidc=self.oidc)
            self._authenticator = auth
        return auth

    @property
    def callers(self) -> Callers:
        callers: Callers | None = getattr(self, "_callers", None)
        if callers is None:
            callers = self._callers = Callers(lambda header: self.authenticator().authenticate(header))
        return callers

    async def principal(self, authorization: str | None) -> Principal:
        """The caller: from the callers cache on the event loop, else looked up in a worker thread."""
        found = self.callers.cached(authorization)
        if found is None:
            found = await run_in_threadpool(self.callers.authenticate, authorization)
        return found

    @property
    def committer(self) -> GroupCommitter:
        committer: GroupCommitter | None = getattr(self, "_committer", None)
        if committer is None:
            with self._lock:
                committer = getattr(self, "_committer", None)
                if committer is None:
                    committer = self._committer = GroupCommitter(self._committer_ledger,
                                                                  secret=self.idempotency_secret)
        return committer

    def _committer_ledger(self) -> CaseLedger:
        """The committer's ledger: it keeps customers, identity claims and message registrations between
        batches (what another process stored meanwhile is read on each take), not cases: a case holds
        customer texts that an erasure elsewhere must not leave readable in this process."""
        ledger = CaseLedger(self.settings, clock=self.clock)
        ledger.keep_aggregates(COMMITTER_CACHE, cases=False)
        return ledger

    def idempotency(self) -> Idempotency:
        return Idempotency(self.ledger().storage.idempotency(), secret=self.idempotency_secret())

    def idempotency_secret(self) -> bytes:
        """The ledger's idempotency secret (ledger.service.idempotency), read once from the key store."""
        found: bytes | None = getattr(self, "_idempotency_secret", None)
        if found is None:  # made once for good under a fixed id: two threads reading it at once read the same
            found = self._idempotency_secret = self.own_ledger().data_keys.ledger_secret(SECRET_SUBJECT)
        return found

    @contextmanager
    def open_views(self) -> Iterator[Any]:
        from caseledger.projections.catchup import views_url
        from caseledger.projections.view_stores import open_views

        with open_views(views_url(database=self.settings.store.database, views=self.views)) as views:
            yield views

    def close(self) -> None:
        committer: GroupCommitter | None = getattr(self, "_committer", None)
        if committer is not None:
            committer.close()
        self.cases.close()
        self.pool.close()
        with self._lock:
            own, self._own = self._own, None
        if own is not None:
            own.close()


class IdentityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    identity: str = Field(description="How the customer is known: email:…, phone:…, handle:…")


class VerdictQuery(BaseModel):
    """One intake record of the calling adapter: where the SDK's receipt says it was stored."""

    model_config = ConfigDict(extra="forbid")
    topic: str = Field(min_length=1, max_length=249, description="The intake topic")
    partition: int = Field(ge=0, le=1_000_000)
    offset: int = Field(ge=0)
    channel: str | None = Field(default=None, max_length=40, description="A contact's channel (with its id)")
    channel_message_id: str | None = Field(default=None, max_length=2000,
                                           description="A contact's channel message id: finds its registration")
    case_reference: str | None = Field(default=None, max_length=40,
                                       description="A delivery or read report's case reference: finds its event")


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    if body["status"] == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="caseledger"'}
    return JSONResponse(body, status_code=int(body["status"]), media_type=MEDIA_TYPE, headers=headers)


def principal_for(operation: Operation) -> Any:
    """A dependency: the authenticated principal, allowed to perform ``operation``.

    Asynchronous, so that a caller known to the callers cache costs no thread hop: the route's
    own hop is the only one.
    """

    async def dependency(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
        state: ServiceState = request.app.state.ledger_service
        principal = await state.principal(authorization)
        principal.require(operation)
        return principal

    dependency.__name__ = f"principal_for_{operation.name.lower()}"
    return Depends(dependency)


async def authenticated(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    state: ServiceState = request.app.state.ledger_service
    return await state.principal(authorization)


def add_read_routes(app: FastAPI, state: ServiceState) -> None:
    @app.get("/healthz", tags=["service"], openapi_extra={"x-operation": UNAUTHENTICATED})
    def healthz() -> dict[str, str]:
        """Liveness: answers without authentication and without touching the database."""
        return {"status": "ok"}

    @app.get("/openapi.json", tags=["service"], openapi_extra={"x-operation": AUTHENTICATED})
    def openapi_schema(_p: Annotated[Principal, Depends(authenticated)]) -> dict[str, Any]:
        """The OpenAPI schema of this API, to any authenticated principal."""
        return app.openapi()

    @app.post("/v1/customers/resolve", tags=["customers"], openapi_extra={"x-operation": AUTHENTICATED})
    def customer_id_of(body: IdentityIn, _p: Annotated[Principal, Depends(authenticated)]) -> dict[str, str]:
        """The customer id of an identity, for the ``/v1/customers/{customer}`` routes (no identity in a URL)."""
        # A sender known only from requests kept as collisions is found too: erasure must reach them.
        return {"customer_id": state.ledger().erasure.data_subject(str(Identity.parse(body.identity)))}

    @app.get("/v1/whoami", tags=["service"], openapi_extra={"x-operation": AUTHENTICATED})
    def whoami(principal: Annotated[Principal, Depends(authenticated)]) -> dict[str, Any]:
        """Who the token is: name, role, how it was authenticated, team, zone and locale, and what the role may do."""
        from caseledger.ledger.domain.permissions import PERMISSIONS

        return {"name": principal.name, "role": principal.role.value,
                "authentication": principal.authentication.value, "actor": str(principal.actor()),
                "team": principal.team, "zone": principal.zone, "locale": principal.locale,
                "may": sorted(o.value for o in PERMISSIONS[principal.role])}

    @app.get("/v1/cases/{reference}", tags=["cases"], openapi_extra={"x-operation": O.CASE_READ.value})
    async def case_show(reference: str, _p: Principal = principal_for(O.CASE_READ)) -> Any:
        """A case: items, promises, messages, proposals, deadlines missed."""
        data = await asyncio.wrap_future(state.cases.record_json(reference))
        return Response(data, media_type="application/json")

    @app.get("/v1/cases/{reference}/brief", tags=["cases"], openapi_extra={"x-operation": O.CASE_READ.value})
    async def case_brief(reference: str, _p: Principal = principal_for(O.CASE_READ)) -> Any:
        """The handoff brief of a case: open items, open promises, the last contact per channel."""
        return await asyncio.wrap_future(state.cases.read(reference, lambda entry: plain(entry.case.brief())))

    @app.get("/v1/cases/{reference}/contacts/{contact_id}/receipt", tags=["cases"],
             openapi_extra={"x-operation": O.CONTACT_RECEIPT_READ.value})
    def contact_receipt(reference: str, contact_id: str,
                        principal: Principal = principal_for(O.CONTACT_RECEIPT_READ)) -> dict[str, str]:
        """The signed receipt of a recorded contact, for the adapter to hand to the customer (docs/audit.md).
        An adapter reads only its channels' contacts' receipts."""
        ledger = state.ledger()
        adapter_scope(ledger, principal, reference, contact_id)
        return {"reference": reference, "contact_id": contact_id,
                "receipt": ledger.contact_receipt(reference, contact_id)}

    @app.get("/v1/cases/{reference}/contacts/{contact_id}/receipt/proof", tags=["cases"],
             openapi_extra={"x-operation": O.CONTACT_RECEIPT_READ.value})
    def contact_receipt_proof(reference: str, contact_id: str,
                              tree_size: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
                              principal: Principal = principal_for(O.CONTACT_RECEIPT_READ)) -> dict[str, Any]:
        """The contact's leaf index and inclusion proof against the latest signed checkpoint (or the one of
        ``tree_size``), with it: with the receipt, the customer proves the contact in the log (docs/audit.md).
        An adapter reads only its channels' contacts' proofs."""
        ledger = state.ledger()
        adapter_scope(ledger, principal, reference, contact_id)
        return ledger.contact_receipt_proof(reference, contact_id, tree_size)

    @app.get("/v1/cases", tags=["cases"], openapi_extra={"x-operation": O.CASE_READ.value})
    def case_find(
        channel: Annotated[str, Query()], message_id: Annotated[str, Query()],
        _p: Principal = principal_for(O.CASE_READ),
    ) -> Any:
        """The case a channel message was recorded on."""
        return state.ledger().find_record(channel, message_id)

    @app.get("/v1/customers/{customer}/cases", tags=["cases"], openapi_extra={"x-operation": O.CASE_READ.value})
    def customer_cases(customer: str, _p: Principal = principal_for(O.CASE_READ)) -> Any:
        """A customer's cases (by customer id or identity such as email:jane@example.com), oldest first."""
        return state.ledger().case_records_of(customer)

    @app.get("/v1/customers/{customer}/history", tags=["cases"], openapi_extra={"x-operation": O.HISTORY_READ.value})
    def customer_history(customer: str, _p: Principal = principal_for(O.HISTORY_READ)) -> Any:
        """Every event of a customer in the store's order (the customer timeline, caught up first)."""
        from caseledger.projections.queries import customer_timeline

        ledger = state.ledger()
        customer_id = ledger.data_subject(customer)  # a sender known only from kept requests too
        with state.open_views() as views:
            rows = customer_timeline(views, customer_id, ledger=lambda: ledger)
        return [plain({k: row[k] for k in ("event_type", "case_reference", "actor", "recorded_at", "occurred_at",
                                           "channel", "customer_id", "line", "event_id", "aggregate_id",
                                           "aggregate_version", "previous_hash", "position") if k in row}) for row in rows]

    @app.get("/v1/customers/{customer}/export", tags=["cases"], openapi_extra={"x-operation": O.HISTORY_EXPORT.value})
    def customer_export(
        customer: str, format: Annotated[str, Query(pattern="^(json|avro|html)$")] = "json",
        kept: Annotated[int | None, Query(ge=0, le=2**63 - 1, description="the tree size of a checkpoint you kept")]
        = None,
        occurred_from: Annotated[datetime | None, Query(description="ISO-8601 with its offset: show the events that "
                                                        "occurred from then on (the others by hash and bytes)")] = None,
        occurred_until: Annotated[datetime | None, Query(description="ISO-8601 with its offset: … until then "
                                                         "(excluded)")] = None,
        _p: Principal = principal_for(O.HISTORY_EXPORT),
    ) -> Response:
        """A customer's verified history as a file: json, avro (object container) or html; with ``kept``, the file
        carries the consistency proof from that tree size to its checkpoint (``caseledger.verify … --kept``); with
        an occurred range, it shows the events that occurred in it and proves completeness for it."""
        from caseledger.ledger.reports.export import OccurredRange, export_history

        occurred = None
        if occurred_from is not None or occurred_until is not None:
            for name, value in (("occurred_from", occurred_from), ("occurred_until", occurred_until)):
                if value is not None and value.tzinfo is None:
                    raise ValidationError(f"{name}: give the time with its UTC offset (e.g. 2026-01-01T00:00:00Z)",
                                          field=name)
            occurred = OccurredRange(occurred_from, occurred_until)

        media = {"json": "application/json", "avro": "application/avro", "html": "text/html; charset=utf-8"}[format]
        with tempfile.TemporaryDirectory(prefix="caseledger-export-") as where:
            path = Path(where) / f"history.{format}"
            report = export_history(state.ledger(), customer, format, path, kept=kept, occurred=occurred)
            data = path.read_bytes()
        headers = {"Content-Disposition": attachment(f"{report.customer_id}.{format}"),
                   "X-Caseledger-Verified": "true" if report.verified else "false"}
        if format == "html":  # one self-contained file: its own inline style, nothing runs, nothing loads
            headers["Content-Security-Policy"] = EXPORT_CSP
        return Response(data, media_type=media, headers=headers)

    @app.get("/v1/overdue", tags=["deadlines"], openapi_extra={"x-operation": O.OVERDUE_READ.value})
    def overdue(kind: str | None = None, _p: Principal = principal_for(O.OVERDUE_READ)) -> Any:
        """Deadlines past due and still pending, the most overdue first."""
        from caseledger.projections.queries import overdue_deadlines

        ledger = state.ledger()
        now = ledger.clock()
        with state.open_views() as views:
            rows = overdue_deadlines(views, now, ledger=lambda: ledger)
        if kind:
            rows = [r for r in rows if r["kind"] == kind.strip().lower()]
        return plain([{**r, "overdue_seconds": int((now - r["due_at"]).total_seconds()), "recorded": bool(r["missed"])}
                      for r in rows])

    @app.get("/v1/metrics", tags=["deadlines"], openapi_extra={"x-operation": O.METRICS_READ.value})
    def metrics(by: Annotated[str, Query(pattern="^(channel|segment|both)$")] = "channel",
                month: bool = False, zone: Annotated[str, Query(max_length=64)] = "UTC",
                _p: Principal = principal_for(O.METRICS_READ)) -> Any:
        """Service per channel and/or segment: acknowledgement and response times (mean, p50, p90, p99), resolution
        times, promises kept …; with ``month``, per month in ``zone`` (an IANA name, UTC by default)."""
        from caseledger.projections.queries import channel_summary

        groups = {"channel": ("channel",), "segment": ("segment",), "both": ("channel", "segment")}[by]
        ledger = state.ledger()
        with state.open_views() as views:
            return plain(channel_summary(views, by=groups, ledger=lambda: ledger, month=month, zone=zone))

    @app.get("/v1/intake/collisions", tags=["audit"], openapi_extra={"x-operation": O.INTAKE_KEPT_READ.value})
    def intake_collisions(_p: Principal = principal_for(O.INTAKE_KEPT_READ)) -> Any:
        """Requests kept because their channel message id was already another request's."""
        return state.ledger().collision_records()

    @app.get("/v1/intake/rejections", tags=["audit"], openapi_extra={"x-operation": O.INTAKE_KEPT_READ.value})
    def intake_rejections(_p: Principal = principal_for(O.INTAKE_KEPT_READ)) -> Any:
        """Intake records that could not be applied, with their reason and raw bytes."""
        return state.ledger().rejection_records()

    @app.post("/v1/intake/verdict", tags=["intake"], openapi_extra={"x-operation": O.INTAKE_VERDICT_READ.value})
    def intake_verdict(body: VerdictQuery, principal: Principal = principal_for(O.INTAKE_VERDICT_READ)) -> Any:
        """The verdict of one of the calling adapter's own intake records (a POST: a channel message id is personal
        data, never in a URL). Not found: not applied yet, or another adapter's."""
        return verdict_json(read_verdict(state.ledger(), adapter=principal.name, topic=body.topic,
                                         partition=body.partition, offset=body.offset, channel=body.channel,
                                         channel_message_id=body.channel_message_id,
                                         case_reference=body.case_reference))


def adapter_scope(ledger: CaseLedger, principal: Principal, reference: str, contact_id: str) -> None:
    """An adapter principal reads a contact only when it came on one of its registered channels: another
    channel's contact, an unknown contact and an unknown case read alike, not found (nothing says which exists);
    an adapter with no registered channels is refused."""
    if principal.role is not Role.ADAPTER:
        return
    row = ledger.storage.adapter_keys().select_adapter(principal.name)
    if row is None or row.revoked_at is not None:
        raise PermissionDenied(
            f"adapter principal {principal.name!r} has no registered channels, so it reads no contact: register them "
            f"with `caseledger adapters add {principal.name} --channels email,chat --public-key FILE`")
    try:
        contact = ledger.get_case(reference).contacts.get(contact_id)
    except NotFound:
        contact = None
    if contact is None or contact.channel not in row.channels:
        raise NotFound(f"no contact {contact_id} of case {normalise_reference(reference)} on this adapter's channels "
                       f"({', '.join(row.channels)})", field="contact_id")


EXPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; sandbox"
_FILENAME_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def attachment(filename: str) -> str:
    """``Content-Disposition`` for a download (RFC 6266): ``filename*`` in UTF-8, percent-encoded, and an
    ASCII ``filename`` for old clients; neither can carry a quote, a CR/LF or any character outside its rules."""
    fallback = _FILENAME_SAFE.sub("_", filename)[:200] or "download"
    encoded = quote(filename.encode("utf-8", "replace"), safe="")[:600]
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def json_body(text: bytes) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        raise ValidationError("the body is not JSON") from None


def now_utc() -> datetime:
    return datetime.now(UTC)


def refuse_unauthenticated() -> AuthenticationError:
    return AuthenticationError("no credentials: send Authorization: Bearer <token>")
