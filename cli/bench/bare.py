"""The bare-framework ceiling of ``bench api``: one FastAPI endpoint behind a bearer check, nothing else.

Served by :func:`caseledger.ledger.service.server.run_uvicorn` (the service's own uvicorn options)
in a process of its own: ``python -m caseledger.cli.bench.bare --port P --workers N`` with the
token in ``CASELEDGER_BENCH_BARE_TOKEN``. What the ledger's routes reach is shown as a share of it.
"""

from __future__ import annotations

import argparse
import hmac
import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request

__all__ = ["TOKEN_ENV", "create_bare_app"]

TOKEN_ENV = "CASELEDGER_BENCH_BARE_TOKEN"


async def bearer(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The bearer check: the token the benchmark gave, compared in constant time."""
    expected: bytes = request.app.state.expected
    if authorization is None or not hmac.compare_digest(authorization.encode(), expected):
        raise HTTPException(401, "unauthenticated", headers={"WWW-Authenticate": "Bearer"})
    return "bench"


def create_bare_app() -> FastAPI:
    """``GET /bare``: 401 without the right bearer token, else a small JSON object."""
    app = FastAPI(openapi_url=None)
    app.state.expected = f"Bearer {os.environ[TOKEN_ENV]}".encode()

    @app.get("/bare")
    async def bare(caller: Annotated[str, Depends(bearer)]) -> dict[str, Any]:
        return {"caller": caller, "ok": True}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    from caseledger.ledger.service.server import ServerSettings, run_uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    given = parser.parse_args()
    server = ServerSettings(port=given.port, workers=given.workers)
    run_uvicorn(f"{__name__}:create_bare_app" if given.workers > 1 else create_bare_app(), server)


if __name__ == "__main__":
    main()
