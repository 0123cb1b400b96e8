"""The write routes of the HTTP API: one per command of the CLI, each under an Idempotency-Key.

Each serves a command of :class:`~caseledger.ledger.commands.LedgerCommands` at the route declared
there (:data:`~caseledger.ledger.commands.ROUTES`), the one the service client sends it to.

The actor of every event is the authenticated principal (:meth:`Principal.actor`); no body field
can name another. A contact is the customer's act, relayed by the principal
(:meth:`Principal.relaying`), so its events name the customer *and* the principal that sent it.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable
from typing import Annotated, Any
from uuid import UUID

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from caseledger.ledger.access.principals import Principal
from caseledger.ledger.application import CaseLedger, normalise_reference
from caseledger.ledger.commands import ROUTES
from caseledger.ledger.domain.directory import case_id_for
from caseledger.ledger.domain.permissions import Operation, Role, allowed
from caseledger.ledger.domain.values import (
    MAX_ATTACHMENT_BYTES,
    Actor,
    ActorKind,
    Attachment,
    Channel,
    ContactDraft,
    Identity,
    check_text,
)
from caseledger.ledger.intake.delivery_reports import Reporter
from caseledger.ledger.reports.describe import plain
from caseledger.ledger.service.api import ServiceState, principal_for, problem_response
from caseledger.ledger.service.group_commit import Write
from caseledger.ledger.service.idempotency import request_digest
from caseledger.ledger.service.problems import problem_for
from caseledger.ledger.store_ports import PrincipalRow

O = Operation  # noqa: E741 -- short: every route names one
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, data: Any) -> Any:
        """No lone surrogate anywhere (a JSON ``\\ud800`` escape): no event could hold it."""
        _refuse_surrogates(data)
        return data


def _refuse_surrogates(value: Any) -> None:
    if isinstance(value, str):
        check_text(value, "a text field")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_surrogates(key)
            _refuse_surrogates(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_surrogates(item)


def claimed(what: str, *, required: bool = False) -> Any:
    """A time the client claims: kept as said, bounded, never what a deadline or a figure reads (docs/api.md)."""
    return Field(default=... if required else None, description=(
        f"{what}, as the client claims it; within the ledger's bounds (docs/api.md, Times), else 400. "
        "Deadlines and figures use the ledger's own time of recording."))


class AttachmentIn(Body):
    ref: str
    sha256: str
    size: int = Field(ge=0, le=MAX_ATTACHMENT_BYTES, description="bytes, at most 2^63-1 (an Avro long)")
    media_type: str
    filename: str | None = None


class ContactIn(Body):
    channel: str
    channel_message_id: str
    identity: str = Field(alias="from", description="How the customer is known: email:…, phone:…, handle:…")
    items: list[str]
    subject: str = ""
    body: str = ""
    case_reference: str | None = None
    follow_up: bool = False
    category: str | None = None
    customer_id: str | None = None
    segment: str | None = None
    occurred_at: AwareDatetime | None = claimed("When the customer sent it")
    metadata: dict[str, str] = Field(default_factory=dict)
    attachments: list[AttachmentIn] = Field(default_factory=list)


class RespondIn(Body):
    body: str
    answers: list[str] = Field(default_factory=list)
    channel: str | None = None
    occurred_at: AwareDatetime | None = claimed("When the response was given")


class ReasonIn(Body):
    reason: str


class ReasonNoticeIn(Body):
    reason: str
    notice: str


class StatusIn(ReasonNoticeIn):
    to: str


class CloseIn(ReasonNoticeIn):
    waive: dict[str, str] = Field(default_factory=dict, description="Q…/P… → the reason it is waived")


class PromiseIn(Body):
    channel: str
    kind: str
    terms: str
    due_at: AwareDatetime
    confirmation_channel: str | None = None
    occurred_at: AwareDatetime | None = claimed("When the promise was made")


class KeepIn(Body):
    evidence: str


class AssignIn(Body):
    assignee: str | None = None
    team: str | None = None


class HandoffIn(Body):
    to: str | None = None
    team: str | None = None
    note: str = ""


class EscalateIn(Body):
    bot_id: str
    waiting_since: AwareDatetime = claimed("Since when the customer waits for a human", required=True)
    to_team: str | None = None
    reason: str


class ProposeIn(Body):
    rule: str
    action: str
    params: dict[str, str] = Field(default_factory=dict)
    rationale: str


class ApproveIn(Body):
    note: str = ""


class ExecutedIn(Body):
    result: str


class DeliveredIn(Body):
    delivered_at: AwareDatetime = claimed("When the channel delivered the message", required=True)


class FailedIn(Body):
    reason: str = Field(description="why: bounced, invalid_address, rejected, opted_out, unreachable, expired, other "
                        "(a code, never the channel's own words)")
    failed_at: AwareDatetime | None = claimed("When the channel gave up")


class ReadIn(Body):
    read_at: AwareDatetime | None = claimed("When the message was read")


class TickIn(Body):
    """Nothing to say: tick runs on the ledger's clock."""

    @model_validator(mode="before")
    @classmethod
    def _no_now(cls, data: Any) -> Any:
        if isinstance(data, dict) and "now" in data:
            raise ValueError(
                "now is not accepted: tick runs on the ledger's clock, which no caller chooses; send {} "
                "(a simulated clock is the embedded CLI's --now, on a local file)"
            )
        return data


class LocaleIn(Body):
    locale: str | None = Field(default=None, description='e.g. fr_FR; "" returns to the policy default')
    time_zone: str | None = Field(default=None, description='an IANA zone, e.g. Europe/Paris; "" for the default')


class PrincipalIn(Body):
    name: str
    role: str
    team: str | None = None
    zone: str | None = None
    locale: str | None = None


class PrincipalChange(Body):
    team: str | None = None  # None: unchanged; "": cleared
    zone: str | None = None
    locale: str | None = None


Execute = Callable[[CaseLedger], tuple[int, Any]]


def principal_out(r: PrincipalRow) -> dict[str, Any]:
    """A principal as the API shows it: never its token's hash."""
    return {"name": r.name, "role": r.role, "created_at": r.created_at, "revoked_at": r.revoked_at, "team": r.team,
            "zone": r.zone, "locale": r.locale}


def at(command: str) -> dict[str, Any]:
    """The path and ``x-operation`` of a command declared in :mod:`caseledger.ledger.commands`, for a route decorator."""
    route = ROUTES[command]
    return {"path": route.path, "openapi_extra": {"x-operation": route.x_operation}}


def done(command: Callable[[], object], answer: Any) -> Any:
    """Run a command that returns nothing, then answer ``answer``."""
    command()
    return answer


def add_routes(app: FastAPI, state: ServiceState) -> None:
    def write(request: Request, principal: Principal, key: str | None, body: Body | None, execute: Execute) -> Any:
        ledger = state.ledger()
        if key is None:
            status, result = execute(ledger)
            return JSONResponse(plain(result), status_code=status)
        payload = body.model_dump_json(by_alias=True).encode() if body is not None else b""
        def run() -> tuple[int, Any]:
            code, answer = execute(ledger)
            return code, plain(answer)

        status, result, replayed = state.idempotency().run(
            ledger, principal=principal.name, key=key, digest=request_digest(request.method, request.url.path, payload),
            execute=run, problem=problem_for,
        )
        headers = {"Idempotency-Replayed": "true"} if replayed else {}
        if status >= 400:
            return problem_response(result, headers)
        return JSONResponse(result, status_code=status, headers=headers)

    async def committed(request: Request, principal: Principal, key: str | None, body: Body | None,
                        execute: Execute, *, lookups: Callable[[CaseLedger], Iterable[UUID]] | None = None) -> Any:
        """``write`` by group commit: recorded with the writes that arrive together (ledger.service.group_commit)."""
        digest = b""
        if key is not None:
            payload = body.model_dump_json(by_alias=True).encode() if body is not None else b""
            digest = request_digest(request.method, request.url.path, payload)
        answer = state.committer.submit(Write(execute, principal.name, key, digest, lookups))
        status, result, replayed = await asyncio.wrap_future(answer)
        headers = {"Idempotency-Replayed": "true"} if replayed else {}
        if status >= 400:
            return problem_response(result, headers)
        return JSONResponse(result, status_code=status, headers=headers)

    def on_case(
        command: str, model: type[Body] | None,
        call: Callable[[CaseLedger, Actor, str, Any], Any], *, summary: str, status: int = 200,
    ) -> None:
        """Serve ``command`` at its declared route, running ``call(ledger, actor, reference, (body, path parameters))``."""
        route = ROUTES[command]
        path, operation = route.path, route.operation
        assert operation is not None, command
        path_params = [name for name in route.segments if name != "reference"]
        params = [
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
            inspect.Parameter("reference", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str),
        ]
        params += [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str)
                   for name in path_params]
        if model is not None:
            params.append(inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=model))
        params += [
            inspect.Parameter("principal", inspect.Parameter.KEYWORD_ONLY, annotation=Principal,
                              default=principal_for(operation)),
            inspect.Parameter("idempotency_key", inspect.Parameter.KEYWORD_ONLY, annotation=IdempotencyKey,
                              default=None),
        ]

        async def endpoint(**kwargs: Any) -> Any:
            request, reference = kwargs.pop("request"), kwargs.pop("reference")
            principal, key = kwargs.pop("principal"), kwargs.pop("idempotency_key")
            body = kwargs.pop("body", None)
            return await committed(request, principal, key, body,
                                   lambda ledger: (status, call(ledger, principal.actor(), reference, (body, kwargs))),
                                   lookups=lambda _ledger: [case_id_for(normalise_reference(reference))])

        endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        endpoint.__name__ = operation.name.lower()
        endpoint.__doc__ = summary
        app.post(path, tags=["commands"], summary=summary, openapi_extra={"x-operation": operation.value})(endpoint)

    # -- intake ---------------------------------------------------------------------------------------

    @app.post(**at("record_contact"), tags=["commands"])
    async def contact_record(request: Request, body: ContactIn, principal: Principal = principal_for(O.CONTACT_RECORD),
                       idempotency_key: IdempotencyKey = None) -> Any:
        """Record an inbound contact and its acknowledgement; the same request again is "already recorded"."""
        draft = ContactDraft(
            channel=Channel.parse(body.channel), channel_message_id=body.channel_message_id,
            identity=Identity.parse(body.identity), items=tuple(body.items), subject=body.subject,
            body=body.body, case_reference=body.case_reference, follow_up=body.follow_up,
            category=body.category, customer_id=body.customer_id, segment=body.segment,
            occurred_at=body.occurred_at, metadata=dict(body.metadata),
            attachments=tuple(Attachment(**a.model_dump()) for a in body.attachments),
        )

        def execute(ledger: CaseLedger) -> tuple[int, Any]:
            customer = Actor(kind=ActorKind.CUSTOMER, id=draft.customer_id or str(draft.identity))
            outcome = ledger.record_contact(draft, actor=principal.relaying(customer))
            return (200 if outcome.duplicate else 201), outcome

        return await committed(request, principal, idempotency_key, body, execute,
                               lookups=lambda ledger: ledger.contact_lookups(draft))

    # -- working a case ---------------------------------------------------------------------------------

    def p(args: Any) -> Any:
        return args[0]

    on_case("respond", RespondIn, summary="Send a response answering items",
            status=201, call=lambda lg, a, ref, x: {"response_id": lg.respond(
                ref, actor=a, body=p(x).body, answers=[i.upper() for i in p(x).answers], channel=p(x).channel,
                occurred_at=p(x).occurred_at)})
    on_case("waive_item", ReasonIn,
            summary="Waive an item with a reason",
            call=lambda lg, a, ref, x: done(lambda: lg.waive_item(ref, actor=a, item_id=x[1]["item_id"].upper(),
                                                     reason=p(x).reason), {"waived": x[1]["item_id"].upper()}))
    on_case("make_promise", PromiseIn, status=201,
            summary="Make a promise (phone and branch promises issue a written confirmation)",
            call=lambda lg, a, ref, x: dict(zip(("promise_id", "confirmation_id"), lg.make_promise(
                ref, actor=a, channel=p(x).channel, kind=p(x).kind, terms=p(x).terms, due_at=p(x).due_at,
                confirmation_channel=p(x).confirmation_channel, occurred_at=p(x).occurred_at), strict=True)))
    on_case("keep_promise", KeepIn,
            summary="A promise was kept",
            call=lambda lg, a, ref, x: done(lambda: lg.keep_promise(ref, actor=a, promise_id=x[1]["promise_id"].upper(),
                                                       evidence=p(x).evidence), {"kept": x[1]["promise_id"].upper()}))
    on_case("withdraw_promise", ReasonNoticeIn,
            summary="Withdraw a promise, telling the customer",
            call=lambda lg, a, ref, x: done(lambda: lg.withdraw_promise(
                ref, actor=a, promise_id=x[1]["promise_id"].upper(), reason=p(x).reason, notice=p(x).notice), {"withdrawn": x[1]["promise_id"].upper()}))
    on_case("break_promise", ReasonIn,
            summary="A promise was broken",
            call=lambda lg, a, ref, x: done(lambda: lg.break_promise(ref, actor=a, promise_id=x[1]["promise_id"].upper(),
                                                        reason=p(x).reason), {"broken": x[1]["promise_id"].upper()}))
    on_case("change_status", StatusIn, summary="Change a case's status",
            call=lambda lg, a, ref, x: done(lambda: lg.change_status(ref, actor=a, to_status=p(x).to, reason=p(x).reason,
                                                        notice=p(x).notice), {"status": p(x).to}))
    on_case("close_case", CloseIn, summary="Close a case",
            call=lambda lg, a, ref, x: done(lambda: lg.close_case(ref, actor=a, reason=p(x).reason, notice=p(x).notice,
                                                     waive={k.upper(): v for k, v in p(x).waive.items()}), {"status": "closed"}))
    on_case("cancel_case", ReasonNoticeIn, summary="Cancel a case",
            call=lambda lg, a, ref, x: done(lambda: lg.cancel_case(ref, actor=a, reason=p(x).reason, notice=p(x).notice), {"status": "cancelled"}))
    on_case("reopen_case", ReasonNoticeIn, summary="Reopen a case",
            call=lambda lg, a, ref, x: done(lambda: lg.reopen_case(ref, actor=a, reason=p(x).reason, notice=p(x).notice), {"status": "reopened"}))
    on_case("assign", AssignIn, summary="Assign a case",
            call=lambda lg, a, ref, x: done(lambda: lg.assign(ref, actor=a, assignee=p(x).assignee, team=p(x).team), {"assignee": p(x).assignee, "team": p(x).team}))
    on_case("hand_off", HandoffIn, summary="Hand a case over, with a brief",
            call=lambda lg, a, ref, x: {"brief": lg.hand_off(ref, actor=a, to_assignee=p(x).to, to_team=p(x).team,
                                                              note=p(x).note)})
    on_case("escalate_to_human", EscalateIn, summary="A chatbot hands over to a human",
            call=lambda lg, a, ref, x: {"waited_seconds": lg.escalate_to_human(
                ref, actor=a, bot_id=p(x).bot_id, waiting_since=p(x).waiting_since, to_team=p(x).to_team,
                reason=p(x).reason)})
    on_case("propose_action", ProposeIn, status=201,
            summary="Automation proposes an action; nothing happens until a human approves it",
            call=lambda lg, a, ref, x: {"proposal_id": lg.propose_action(
                ref, actor=a, rule_id=p(x).rule, action=p(x).action, params=dict(p(x).params),
                rationale=p(x).rationale)})
    on_case("approve_action", ApproveIn,
            summary="A human approves a proposed action (ledger actions execute at once)",
            call=lambda lg, a, ref, x: {"outcome": lg.approve_action(
                ref, actor=a, proposal_id=x[1]["proposal_id"].upper(), note=p(x).note)})
    on_case("reject_action", ReasonIn,
            summary="A human rejects a proposed action",
            call=lambda lg, a, ref, x: done(lambda: lg.reject_action(ref, actor=a, proposal_id=x[1]["proposal_id"].upper(),
                                                        reason=p(x).reason), {"rejected": x[1]["proposal_id"].upper()}))
    on_case("record_action_executed", ExecutedIn,
            summary="An outside system executed an approved action",
            call=lambda lg, a, ref, x: done(lambda: lg.record_action_executed(
                ref, actor=a, proposal_id=x[1]["proposal_id"].upper(), result=p(x).result), {"executed": x[1]["proposal_id"].upper()}))
    on_case("record_delivery", DeliveredIn,
            summary="A message to the customer was delivered",
            call=lambda lg, a, ref, x: done(lambda: lg.record_delivery(ref, actor=a, message_id=x[1]["message_id"],
                                                          delivered_at=p(x).delivered_at,
                                                          reporter=Reporter.of_principal(a, lg.storage.adapter_keys())),
                                            {"delivered": x[1]["message_id"].upper()}))
    on_case("record_delivery_failure", FailedIn,
            summary="A message to the customer could not be delivered: it stays undelivered, its deadline runs on",
            call=lambda lg, a, ref, x: done(lambda: lg.record_delivery_failure(
                ref, actor=a, message_id=x[1]["message_id"], reason=p(x).reason, failed_at=p(x).failed_at,
                reporter=Reporter.of_principal(a, lg.storage.adapter_keys())), {"failed": x[1]["message_id"].upper()}))
    on_case("record_read", ReadIn,
            summary="A message was read: the customer's (reported by their channel's adapter) or a contact by an agent",
            call=lambda lg, a, ref, x: done(lambda: lg.record_read(ref, actor=a, message_id=x[1]["message_id"],
                                                      read_at=p(x).read_at,
                                                      reporter=Reporter.of_principal(a, lg.storage.adapter_keys())),
                                            {"read": x[1]["message_id"].upper()}))

    # -- deadlines and administration ---------------------------------------------------------------------

    @app.post(**at("tick_record"), tags=["commands"])
    def tick(request: Request, body: TickIn, principal: Principal = principal_for(O.TICK),
             idempotency_key: IdempotencyKey = None) -> Any:
        """Record every deadline past due, once, on the ledger's clock; apply retention if the caller may erase."""
        # Retention erases customers: through tick too, only a role that may erase them runs it.
        skipped = None if allowed(principal.role, O.CUSTOMER_ERASE) else (
            f"role {principal.role.value} may not {O.CUSTOMER_ERASE.value}, so this tick erased nobody; "
            f"retention runs when a {' or '.join(r.value for r in Role if allowed(r, O.CUSTOMER_ERASE))} ticks")

        def execute(ledger: CaseLedger) -> tuple[int, Any]:
            report = ledger.tick(actor=principal.actor(), skip_retention=skipped)
            r = report.retention
            for customer_id in r.erased:
                state.cases.forget_customer(customer_id)
            return 200, {"now": report.now, "cases_checked": report.cases_checked, "missed": report.missed,
                         "total": report.total, "erased": r.erased, "held": r.held,
                         "erased_rejection_months": r.rejection_months, "retention_skipped": report.retention_skipped,
                         "erasure_pending": report.erasure_pending}

        return write(request, principal, idempotency_key, body, execute)

    # -- a customer's personal data (docs/privacy.md) and language ----------------------------------------

    def on_customer(command: str, model: type[Body], summary: str,
                    call: Callable[[CaseLedger, Actor, str, Any], Any]) -> None:
        route = ROUTES[command]
        path, operation = route.path, route.operation
        assert operation is not None, command

        def endpoint(request: Request, customer: str, body: Any, principal: Principal = principal_for(operation),
                     idempotency_key: IdempotencyKey = None) -> Any:
            return write(request, principal, idempotency_key, body,
                         lambda ledger: (200, call(ledger, principal.actor(), customer, body)))

        endpoint.__annotations__["body"] = model
        endpoint.__name__ = operation.name.lower()
        endpoint.__doc__ = summary
        app.post(path, tags=["customers"], summary=summary, openapi_extra={"x-operation": operation.value})(endpoint)

    def erasure(report: Any) -> dict[str, Any]:
        state.cases.forget_customer(report.customer_id)
        return {"customer_id": report.customer_id, "erased": report.erased, "already_erased": report.already_erased,
                "key_ids": report.key_ids, "erased_at": report.erased_at, "pending": report.pending}

    on_customer("erase_customer", ReasonIn,
                "Erase a customer's personal data (their data keys destroyed); refused under a legal hold",
                lambda lg, a, who, b: erasure(lg.erase_customer(who, reason=b.reason, actor=a)))
    on_customer("place_legal_hold", ReasonIn, "Place a legal hold on a customer's data",
                lambda lg, a, who, b: done(lambda: lg.place_legal_hold(who, reason=b.reason, actor=a), {"held": who}))
    on_customer("release_legal_hold", ReasonIn, "Release a customer's legal hold",
                lambda lg, a, who, b: done(lambda: lg.release_legal_hold(who, reason=b.reason, actor=a),
                                           {"released": who}))
    on_customer("set_customer_locale", LocaleIn,
                "Set the language and time zone of a customer's texts",
                lambda lg, a, who, b: dict(zip(("customer_id", "audience", "changed"), lg.set_customer_locale(
                    who, actor=a, locale=b.locale, time_zone=b.time_zone), strict=True)))

    @app.get(**at("customer_privacy"), tags=["customers"])
    def customer_keys(customer: str, _p: Principal = principal_for(O.CUSTOMER_KEYS_READ)) -> Any:
        """A customer's data keys (ids and dates, never key material) and legal hold."""
        return plain(state.ledger().customer_privacy(customer))

    @app.post(**at("add_principal"), tags=["principals"], status_code=201)
    def principals_add(body: PrincipalIn, _p: Principal = principal_for(O.PRINCIPALS_MANAGE)) -> Any:
        """Add a principal; the answer carries its token, once (the ledger keeps only its hash)."""
        issued = state.ledger().add_principal(body.name, body.role, team=body.team, zone=body.zone,
                                              locale=body.locale)
        return JSONResponse({"name": issued.name, "role": issued.role.value, "token": issued.token},
                            status_code=201, headers={"Cache-Control": "no-store"})

    @app.get(**at("principals"), tags=["principals"])
    def principals_list(_p: Principal = principal_for(O.PRINCIPALS_MANAGE)) -> Any:
        """Principals: name, role, created, revoked (never a token)."""
        return plain([principal_out(r) for r in state.ledger().principals()])

    @app.patch(**at("update_principal"), tags=["principals"])
    def principals_update(name: str, body: PrincipalChange,
                          _p: Principal = principal_for(O.PRINCIPALS_MANAGE)) -> Any:
        """Change a principal's team, time zone or locale (a field left out is unchanged; "" clears it)."""
        row = state.ledger().update_principal(name, team=body.team, zone=body.zone, locale=body.locale)
        state.callers.forget(name)  # its next request reads the new ones
        return plain(principal_out(row))

    @app.delete(**at("revoke_principal"), tags=["principals"])
    def principals_revoke(name: str, _p: Principal = principal_for(O.PRINCIPALS_MANAGE)) -> Any:
        """Revoke a principal's token at once."""
        state.ledger().revoke_principal(name)
        state.callers.forget(name)
        return {"revoked": name}
