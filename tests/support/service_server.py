"""The ledger service as tests meet it: ``caseledger serve`` started on a free loopback port, principals
of every role, and an OIDC identity provider whose JWKS a real loopback HTTP server serves."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from caseledger.ledger.access.principals import PrincipalRegistry
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.permissions import Role
from tests.support.environment import ledger_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class IdentityProvider:
    """An OIDC provider in miniature: an RSA key, its JWKS on a loopback HTTP server, JWTs it signs."""

    issuer: str = "https://idp.test.example"
    audience: str = "caseledger-test"
    key: Any = field(default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))
    kid: str = "test-key-1"
    url: str = ""
    # What the provider does, changed by tests: more keys, drop its own key, fail, hang.
    extra_keys: list[dict[str, Any]] = field(default_factory=list)
    serves_own_key: bool = True
    status: int = 200
    hang: threading.Event | None = None  # set: answers only once it is cleared (or after 60 s)
    fetches: int = 0
    _server: ThreadingHTTPServer | None = None

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        own = [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}] if self.serves_own_key else []
        return {"keys": own + self.extra_keys}

    def start(self) -> IdentityProvider:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.fetches += 1
                if provider.hang is not None:
                    deadline = time.monotonic() + 60
                    while provider.hang is not None and provider.hang.is_set() and time.monotonic() < deadline:
                        time.sleep(0.05)
                body = json.dumps(provider.jwks()).encode()
                self.send_response(provider.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def token(self, sub: str, roles: Any, *, expires_in: int = 300, key: Any = None, kid: str | None = None,
              **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": self.audience, "sub": sub, "iat": now, "exp": now + expires_in,
                   "roles": roles, **claims}
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid})


@dataclass
class Service:
    """A running ``caseledger serve`` and a token for every role."""

    url: str
    database: str
    tokens: dict[Role, str]
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self, role: Role | None = None, *, token: str | None = None, **options: Any) -> httpx.Client:
        headers = {}
        chosen = token if token is not None else (self.tokens[role] if role is not None else None)
        if chosen is not None:
            headers["Authorization"] = f"Bearer {chosen}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **options)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def connect(self, *, timeout: float = 10) -> socket.socket:
        """A raw TCP connection to the server (for what an HTTP client would not send)."""
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def rss_bytes(self) -> int:
        """The server process's resident memory (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc/PID/status")

    def ledger(self) -> CaseLedger:
        return CaseLedger(ledger_settings(database=self.database))


def read_response(connection: socket.socket, *, timeout: float = 10) -> bytes:
    """What the server sent on a raw connection until it closed it, or until ``timeout`` passed."""
    connection.settimeout(timeout)
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def is_closed(connection: socket.socket, *, within: float) -> bool:
    """Whether the server closes ``connection`` within ``within`` seconds (whatever it still sends before)."""
    deadline = time.monotonic() + within
    try:
        while (left := deadline - time.monotonic()) > 0:
            connection.settimeout(left)
            if connection.recv(65536) == b"":
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return False


def start_service(where: Path, *, database: str | None = None, env: dict[str, str] | None = None,
                  extra_args: tuple[str, ...] = ()) -> Service:
    """Principals of every role in a fresh ledger, then ``caseledger serve`` on a free loopback port."""
    database = database or str(where / "ledger.sqlite")
    ledger = CaseLedger(ledger_settings(database=database))
    try:
        registry = PrincipalRegistry(ledger.principal_store)
        tokens = {role: registry.add(f"{role.value}-1", role).token for role in Role}
    finally:
        ledger.close()
    port = free_port()
    log_path = where / "serve.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "caseledger.cli.app", "--database", database, "serve", "--host", "127.0.0.1",
         "--port", str(port), *extra_args],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"caseledger serve did not start:\n{log_path.read_text()}")
        time.sleep(0.1)
    return Service(url=url, database=database, tokens=tokens, process=process, log_path=log_path)


@contextmanager
def serve_in_thread(state: Any, *, http: str = "auto") -> Iterator[str]:
    """The app of ``state`` on uvicorn in a thread of this process (for tests that look inside it); its URL."""
    import uvicorn

    from caseledger.ledger.service.asgi import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, http=http, limit_concurrency=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start in its thread")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def stop_service(service: Service) -> None:
    service.process.terminate()
    try:
        service.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait()


@dataclass
class Running:
    service: Service
    idp: IdentityProvider


def running_service(where: Path, *, env: dict[str, str] | None = None) -> Iterator[Running]:
    idp = IdentityProvider().start()
    env = {"CASELEDGER_OIDC_JWKS_URL": idp.url, "CASELEDGER_OIDC_ISSUER": idp.issuer,
           "CASELEDGER_OIDC_AUDIENCE": idp.audience, **(env or {})}
    service = start_service(where, env=env)
    try:
        yield Running(service, idp)
    finally:
        stop_service(service)
        idp.stop()


def add_adapter_key(service: Service, name: str, channels: list[str]) -> None:
    """Register an adapter key (public half only) so that adapter principal NAME reports for ``channels``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from caseledger.ledger.intake.signatures import AdapterKeys

    raw = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw,
                                                                 serialization.PublicFormat.Raw)
    ledger = service.ledger()
    try:
        AdapterKeys(ledger.storage.adapter_keys()).add(name, channels, public_key=raw)
    finally:
        ledger.close()
