"""The ledger service's ASGI app: the state's lifespan, error handlers and the gate around every route.

:func:`create_app` composes the read routes (:mod:`ledger.service.api`), the write routes
(:mod:`ledger.service.write_routes`), the auditor's (:mod:`ledger.service.audit_routes`), the adapters'
outbound feed (:mod:`ledger.service.outbound_routes`), the transparency log as tiles
(:mod:`ledger.service.tlog_routes`), the live case page (:mod:`ledger.service.live`) and the agent's queue
(:mod:`ledger.service.queue_page`); each of those
imports only what is below it.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from caseledger.ledger.errors import CaseLedgerError
from caseledger.ledger.service import (
    audit_routes,
    live,
    outbound_routes,
    queue_page,
    tlog_routes,
    write_routes,
)
from caseledger.ledger.service.api import ServiceState, add_read_routes, problem_response
from caseledger.ledger.service.gate import Gate
from caseledger.ledger.service.ledger_pool import request_scope
from caseledger.ledger.service.problems import problem, problem_for

__all__ = ["create_app"]

log = logging.getLogger("caseledger.service")


def create_app(state: ServiceState) -> FastAPI:
    """The ledger's HTTP API. Its OpenAPI schema is served at /openapi.json to authenticated principals only;
    there are no /docs or /redoc pages (Swagger UI and ReDoc load their code from a third-party CDN)."""
    stopping: list[Callable[[], None]] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = state.threads
        await run_in_threadpool(state.warm)
        # What start-up built (ledgers, compiled codecs, templates) lives as long as the process: out of the
        # collector's sight, so that a full collection under load does not walk it (seen as ~1 s read tails).
        gc.collect()
        gc.freeze()
        yield
        for stop in stopping:
            stop()
        state.close()

    app = FastAPI(
        lifespan=lifespan,
        title="caseledger", version="1", description="Every contact, promise and status change of a customer "
        "case, as immutable events. Bearer tokens (issued or OIDC); roles and the permission matrix: docs/api.md.",
        docs_url=None, redoc_url=None, openapi_url=None,
        # A request takes a ledger from the pool when it first asks for one, and gives it back when its route returns.
        dependencies=[Depends(request_scope(state.pool), scope="function")],
    )
    app.state.ledger_service = state

    @app.exception_handler(CaseLedgerError)
    async def ledger_error(_request: Request, error: CaseLedgerError) -> JSONResponse:
        return problem_response(problem_for(error))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        # Only where and what; never the input itself (it may hold a token or a customer's text).
        details = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in error.errors())
        return problem_response(problem(400, "invalid", "Invalid request", details, exit_code=2))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error in a request")
        return problem_response(problem(500, "internal", "Unexpected error", "an unexpected error; see the "
                                        "service log", exit_code=1))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        # Starlette's own refusals (no such route, method not allowed, a body it cannot parse), as problems.
        slug = {404: "not-found", 405: "method-not-allowed"}.get(error.status_code, "invalid")
        detail = {404: "no such route; the routes are listed in docs/api.md",
                  405: "this route does not accept this method; docs/api.md lists the routes"}.get(
            error.status_code, "the request could not be read; send a JSON body with Content-Type: application/json")
        return problem_response(problem(error.status_code, slug, str(error.detail), detail, exit_code=2),
                                dict(error.headers or {}))

    app.add_middleware(Gate, max_body_bytes=state.max_body_bytes, request_timeout_s=state.request_timeout_s,
                       max_in_flight=state.max_in_flight)

    write_routes.add_routes(app, state)
    add_read_routes(app, state)
    audit_routes.add_routes(app, state)
    outbound_routes.add_routes(app, state)
    tlog_routes.add_routes(app, state)
    live.add_routes(app, state)
    stopping.append(queue_page.add_routes(app, state))
    return app
