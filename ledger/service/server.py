"""Running the ledger service on uvicorn: where, with which limits, and TLS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from caseledger.ledger.principals import OidcSettings
from caseledger.ledger.service.api import MAX_BODY_BYTES, REQUEST_TIMEOUT_S, ServiceState, create_app
from caseledger.ledger.settings import LedgerSettings

__all__ = ["ServerSettings", "serve"]


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
    max_connections: int | None = 1000
    views: str | None = None


def serve(ledger: LedgerSettings, server: ServerSettings, *, oidc: OidcSettings | None = None) -> None:
    """Serve the API until SIGTERM/Ctrl-C (uvicorn handles both and finishes the requests under way)."""
    import uvicorn

    state = ServiceState(ledger, oidc=oidc, views=server.views, max_body_bytes=server.max_body_bytes,
                         request_timeout_s=server.request_timeout_s)
    app = create_app(state)
    try:
        uvicorn.run(
            app, host=server.host, port=server.port, log_level="info", access_log=True,
            ssl_certfile=str(server.tls_certfile) if server.tls_certfile else None,
            ssl_keyfile=str(server.tls_keyfile) if server.tls_keyfile else None,
            timeout_keep_alive=server.keep_alive_s, limit_concurrency=server.max_connections,
            server_header=False, proxy_headers=False,
        )
    finally:
        state.close()
