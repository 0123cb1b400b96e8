"""``caseledger serve``: the ledger service (HTTP API, live case page) on uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caseledger.cli.common import local_only, session
from caseledger.cli.options import ViewsOpt

NOT_THROUGH_API = 'it is the ledger service'


@local_only(NOT_THROUGH_API)
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8080,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", exists=True, dir_okay=False,
                                                  help="PEM certificate (chain): serve HTTPS.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", exists=True, dir_okay=False,
                                                 help="PEM private key of --tls-cert.")] = None,
    max_body: Annotated[int, typer.Option("--max-body-bytes", min=1024, help="Largest request body.")] = 1_048_576,
    timeout: Annotated[float, typer.Option("--request-timeout", min=1, help="Seconds before a request gets "
                                           "503 (a write may still complete: retry with its Idempotency-Key).")] = 30,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="uvicorn worker processes (one "
                                         "per core is a good start).")] = 1,
    header_timeout: Annotated[float, typer.Option("--header-timeout", min=0.1, help="Seconds a connection has to "
                                                  "send a request's headers (after opening, or after its last "
                                                  "response); then it is closed.")] = 10,
    max_connections: Annotated[int, typer.Option("--max-connections", min=1, help="Open connections per worker "
                                                 "process; beyond, the longest-idle one is closed.")] = 4096,
    views: ViewsOpt = None,
) -> None:
    """Serve the HTTP API: every command and read, behind bearer tokens and the role matrix (docs/api.md).

    Principals come from `caseledger principals add`; OIDC JWTs are accepted when
    CASELEDGER_OIDC_JWKS_URL, CASELEDGER_OIDC_ISSUER and CASELEDGER_OIDC_AUDIENCE are set.
    No CORS headers are sent: browsers on other origins cannot call it.

    Examples:

    ```
    $ caseledger serve --host 0.0.0.0 --port 8443 --tls-cert cert.pem --tls-key key.pem
    $ curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/v1/cases/CL-7K2QD-M3XPA
    ```
    """
    from caseledger.ledger.access.principals import OidcSettings
    from caseledger.ledger.service.server import ServerSettings
    from caseledger.ledger.service.server import serve as run

    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("give both --tls-cert and --tls-key, or neither", param_hint="'--tls-cert'")
    s = session(ctx)
    settings = s.ledger_settings()
    run(settings, ServerSettings(host=host, port=port, tls_certfile=tls_cert, tls_keyfile=tls_key,
                                 max_body_bytes=max_body, request_timeout_s=timeout, views=views,
                                 workers=workers, header_timeout_s=header_timeout,
                                 max_connections=max_connections),
        oidc=OidcSettings.resolve(s.settings.service.oidc))
