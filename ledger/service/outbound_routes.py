"""The outbound feed over HTTP: an adapter principal reads, in clear, what it must deliver on its channels.

``GET /v1/outbound?after=POSITION&limit=N&wait=SECONDS`` answers the pending messages of the channels
registered for the calling adapter (``caseledger adapters add NAME --channels …``), opened on the
service's side (:mod:`caseledger.ledger.intake.outbound`): ``{"messages": [...], "position": P}``;
the next call sends ``after=P``. With ``wait`` it is a long poll: it answers as soon as a message
is there, or empty after ``wait`` seconds. Only the ``adapter`` role may read it (403 otherwise, and for
an adapter with no registered channels); the answer is never cached (``Cache-Control: no-store``), the
query is not in the access log, and nothing of it is written anywhere. The adapter then reports each
message delivered (``…/messages/ID/delivered``) or not (``…/messages/ID/failed``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from caseledger.ledger.access.principals import Principal
from caseledger.ledger.domain.permissions import Operation
from caseledger.ledger.intake.delivery_reports import Reporter
from caseledger.ledger.intake.outbound import MAX_PAGE, OutboundFeed, OutboundPage
from caseledger.ledger.service.api import ServiceState, principal_for

__all__ = ["MAX_WAIT_S", "add_routes"]

MAX_WAIT_S = 20.0  # a long poll answers within the request timeout (30 s by default), whatever is asked
POLL_S = 0.25  # how often a waiting long poll looks at the store again


def add_routes(app: FastAPI, state: ServiceState) -> None:
    def read(principal: Principal, after: int, limit: int) -> OutboundPage:
        with state.leased_ledger() as ledger:
            channels = Reporter.of_principal(principal.actor(), ledger.storage.adapter_keys()).channels or ()
            return OutboundFeed(ledger).page(channels=channels, after=after, limit=limit)

    @app.get("/v1/outbound", tags=["outbound"], openapi_extra={"x-operation": Operation.OUTBOUND_READ.value})
    async def outbound(
        after: Annotated[int, Query(ge=0, le=2**63 - 1, description="the position of the last answer")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        wait: Annotated[float, Query(ge=0, le=60, description="seconds to wait for a message (long poll)")] = 0,
        principal: Principal = principal_for(Operation.OUTBOUND_READ),
    ) -> Any:
        """The messages the calling adapter must deliver on its channels, in clear for it alone, oldest first."""
        until = time.monotonic() + min(wait, MAX_WAIT_S, max(state.request_timeout_s - 5, 0))
        while True:
            page = await run_in_threadpool(read, principal, after, limit)
            if page.messages or time.monotonic() >= until:
                break
            if page.position == after:  # nothing new in the store: wait a little (else scan on at once)
                await asyncio.sleep(POLL_S)
            after = page.position
        return JSONResponse({"messages": [m.as_record() for m in page.messages], "position": page.position},
                            headers={"Cache-Control": "no-store"})
