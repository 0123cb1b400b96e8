"""Running the ledger service on uvicorn: where, with which limits, and TLS.

:func:`app_from_environment` is a composition root (the worker processes' app factory): the one module of
``ledger/`` that reads the environment.
"""

from __future__ import annotations

import json
import logging
import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caseledger.ledger.access.principals import OidcSettings
from caseledger.ledger.service.api import MAX_BODY_BYTES, REQUEST_TIMEOUT_S, ServiceState
from caseledger.ledger.service.asgi import create_app
from caseledger.ledger.service.connections import ConnectionLimits, configure, http_protocol
from caseledger.ledger.settings import LedgerSettings, Settings

__all__ = ["ServerSettings", "app_from_environment", "run_uvicorn", "serve"]

_SETTINGS_ENV = "CASELEDGER_SERVE_SETTINGS"


def app_from_environment() -> Any:
    """The app of one uvicorn worker process, from the settings ``serve`` left in the environment.

    A composition root: uvicorn imports this factory in each worker process, which reads its environment here.
    """
    given = json.loads(os.environ[_SETTINGS_ENV])
    settings = Settings.from_environ(os.environ)
    ledger = LedgerSettings.resolve(database=given["database"], policy=given["policy"], origin=given["origin"],
                                    settings=settings)
    _prepare_process(ConnectionLimits(header_timeout_s=given["header_timeout_s"],
                                      max_connections=given["max_connections"]))
    state = ServiceState(ledger, oidc=OidcSettings.resolve(settings.service.oidc), views=given["views"],
                         max_body_bytes=given["max_body_bytes"], request_timeout_s=given["request_timeout_s"])
    return create_app(state)


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """How ``caseledger serve`` listens (TLS when both a certificate and its key are given)."""

    host: str = "127.0.0.1"
    port: int = 8080
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    request_timeout_s: float = REQUEST_TIMEOUT_S
    keep_alive_s: int = 5
    header_timeout_s: float = 10.0  # a connection's request headers must be complete by then
    max_connections: int = 4096  # per process; beyond, the longest-idle connection is closed
    views: str | None = None
    workers: int = 1  # uvicorn worker processes (each with its own threads and ledgers)


def _prepare_process(limits: ConnectionLimits) -> None:
    configure(limits)
    # Every connection is a file descriptor: allow as many as the hard limit permits.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.max_connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard),
                                                    hard))
    # The gate writes the access log (never a query string or a customer id); uvicorn's own is off.
    access = logging.getLogger("caseledger.access")
    if not access.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False


def serve(ledger: LedgerSettings, server: ServerSettings, *, oidc: OidcSettings | None = None) -> None:
    """Serve the API until SIGTERM/Ctrl-C (uvicorn handles both and finishes the requests under way)."""
    state = ServiceState(ledger, oidc=oidc, views=server.views, max_body_bytes=server.max_body_bytes,
                         request_timeout_s=server.request_timeout_s)
    app: Any = create_app(state)
    if server.workers > 1:
        # Worker processes build the app themselves (uvicorn imports a factory): hand them the settings.
        state.close()
        os.environ[_SETTINGS_ENV] = json.dumps({
            "database": ledger.store.database, "policy": str(ledger.policy_path) if ledger.policy_path else None,
            "origin": ledger.origin, "views": server.views, "max_body_bytes": server.max_body_bytes,
            "request_timeout_s": server.request_timeout_s, "header_timeout_s": server.header_timeout_s,
            "max_connections": server.max_connections,
        })
        app = f"{__name__}:app_from_environment"
    try:
        run_uvicorn(app, server)
    finally:
        state.close()


def run_uvicorn(app: Any, server: ServerSettings) -> None:
    """uvicorn with the service's options; ``app`` is a factory's import path when there are several workers.

    ``bench api`` serves its bare-framework ceiling through this too, so both run on the same stack.
    """
    import uvicorn

    _prepare_process(ConnectionLimits(header_timeout_s=server.header_timeout_s, max_connections=server.max_connections))
    options: dict[str, Any] = {"factory": True, "workers": server.workers} if server.workers > 1 else {}
    uvicorn.run(
        app, **options, host=server.host, port=server.port, log_level="info", access_log=False,
        http=http_protocol(), loop="auto",  # httptools and uvloop when installed (uvicorn[standard])
        ssl_certfile=str(server.tls_certfile) if server.tls_certfile else None,
        ssl_keyfile=str(server.tls_keyfile) if server.tls_keyfile else None,
        timeout_keep_alive=server.keep_alive_s, limit_concurrency=None, backlog=2048,
        server_header=False, proxy_headers=False,
    )
