"""What every HTTP request passes before the routes: body limit, timeout, in-flight cap, headers, access log.

A pure ASGI middleware (no ``BaseHTTPMiddleware``: it would read nothing itself, but it costs a task
and a memory stream per request):

- **Body limit while streaming.** A declared ``Content-Length`` over the limit is answered 413 at
  once; a chunked body is counted as the app reads it, and the 413 goes out the moment the count
  passes the limit — before authentication (FastAPI reads the body before it resolves the
  principal), with ``Connection: close`` so that the rest of the body is never read.
- **Request timeout.** No response started within ``request_timeout_s``: 503 ``timeout`` (the
  route may still finish in its thread; its answer is dropped). A started response (the live
  page's event stream) is not timed.
- **In-flight cap.** At most ``max_in_flight`` requests between their headers and their response's
  start; beyond, 503 with ``Retry-After`` (``/healthz`` is never refused).
- **Paths and queries without control characters.** A CR, LF or any other control character in the
  decoded path or query is 400 before any route sees it, so none can reach a header.
- **Headers.** ``X-Content-Type-Options: nosniff`` on every response; a Content-Security-Policy on
  every HTML response that does not bring its own (no third-party asset may load).
- **Access log** (logger ``caseledger.access``): method, path, status, duration. Never the query
  string (it may hold customer identities) and never a header; the customer segment of
  ``/v1/customers/{customer}/…`` is logged as ``{customer}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, unquote

from caseledger.ledger.domain.values import Identity
from caseledger.ledger.errors import ValidationError
from caseledger.ledger.service.problems import MEDIA_TYPE, problem

__all__ = ["DEFAULT_CSP", "Gate", "loggable_path"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("caseledger.access")

# For HTML that brings no policy of its own (the HTML export, error pages): nothing runs, nothing loads
# from anywhere but this server, inline styles allowed (the export is one self-contained file).
DEFAULT_CSP = ("default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
               "frame-ancestors 'none'; base-uri 'none'")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CUSTOMER = re.compile(r"^(/v1/customers/)[^/]*")
_CUSTOMER_SEGMENT = re.compile(r"^/v1/customers/([^/]+)/")
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
UNLIMITED_PATHS = frozenset({"/healthz"})


def loggable_path(path: str) -> str:
    """The path as the access log shows it: no customer id, no control character, at most 200 characters."""
    shown = _CUSTOMER.sub(r"\1{customer}", path)
    return _CONTROL.sub("?", shown)[:200]


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def _problem(status: int, slug: str, title: str, detail: str, *, exit_code: int,
             headers: tuple[tuple[bytes, bytes], ...] = ()) -> Answer:
    body = json.dumps(problem(status, slug, title, detail, exit_code=exit_code)).encode()
    return status, [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode()),
                    *headers], body


def _names_an_identity(scope: Scope) -> bool:
    """Whether a ``/v1/customers/{customer}`` path, or a ``customer`` query parameter, is an identity."""
    named = [m.group(1)] if (m := _CUSTOMER_SEGMENT.match(scope.get("path", ""))) else []
    named += [v for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1")) if k == "customer"]
    for value in named:
        try:
            Identity.parse(value)
        except ValidationError:
            continue
        return True
    return False


class Gate:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app: App, *, max_body_bytes: int, request_timeout_s: float, max_in_flight: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.request_timeout_s = request_timeout_s
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(self, scope, receive, send)
        try:
            await exchange.run()
        finally:
            access_log.info("%s %s %s %.1fms", scope.get("method", "?"), loggable_path(scope.get("path", "")),
                            exchange.status, (time.perf_counter() - exchange.began) * 1000)

    def too_large(self) -> Answer:
        return _problem(413, "too-large", "Request too large", f"the body may be at most {self.max_body_bytes} "
                        "bytes; send attachments by reference", exit_code=2, headers=((b"connection", b"close"),))


class _Exchange:
    """One request's way through the gate."""

    def __init__(self, gate: Gate, scope: Scope, receive: Receive, send: Send) -> None:
        self.gate, self.scope, self._receive, self._send = gate, scope, receive, send
        self.began = time.perf_counter()
        self.status: int | str = "-"
        self.started = False  # a response start went out (ours or the app's)
        self.closed = False  # we answered in the app's place: drop what the app still sends
        self.received = 0
        self.counted = False
        self._start: asyncio.Future[None] | None = None

    async def run(self) -> None:
        gate, scope = self.gate, self.scope
        refusal = self._refusal()
        if refusal is not None:
            await self._answer(*refusal)
            return
        limited = scope.get("path") not in UNLIMITED_PATHS
        if limited and gate.in_flight >= gate.max_in_flight:
            await self._answer(*_problem(503, "unavailable", "Server busy", f"more than {gate.max_in_flight} "
                                         "requests are in progress; retry in a second", exit_code=4,
                                         headers=((b"retry-after", b"1"),)))
            return
        if limited:
            gate.in_flight += 1
            self.counted = True
        loop = asyncio.get_running_loop()
        self._start = loop.create_future()
        task: asyncio.Task[None] = loop.create_task(_invoke(gate.app, scope, self.receive, self.send))
        task.add_done_callback(self._responded)
        try:
            await asyncio.wait([self._start], timeout=gate.request_timeout_s)
            if not self._start.done():
                task.cancel()  # a route in a thread finishes there; whatever it sends is dropped
                await self._answer(*_problem(
                    503, "timeout", "Request timed out", f"no answer within {gate.request_timeout_s:.0f} s; a write "
                    "may still complete: retry it with the same Idempotency-Key", exit_code=4,
                    headers=((b"connection", b"close"),)))
                return
            await task
        except Exception:
            self.status = 500 if not self.started else self.status
            raise
        finally:
            self._release()
            if not task.done():
                task.cancel()

    def _refusal(self) -> Answer | None:
        scope = self.scope
        query = unquote(scope.get("query_string", b"").decode("latin-1"))
        if _CONTROL.search(scope.get("path", "")) or _CONTROL.search(query):
            return _problem(400, "invalid", "Invalid request", "the path or query holds a control character "
                            "(CR, LF, NUL …); percent-encode only printable text", exit_code=2)
        if _names_an_identity(scope):
            return _problem(400, "identity-in-url", "Identity in the URL", (
                "a customer's identity (email:…, phone:…) never goes in a URL (paths and queries end up in access "
                "logs and proxies); name the customer by customer id (cus-…), found with POST /v1/customers/resolve "
                '{"identity": "email:…"}'), exit_code=2)
        length = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > self.gate.max_body_bytes):
            return self.gate.too_large()
        return None

    def _release(self) -> None:
        if self.counted:
            self.counted = False
            self.gate.in_flight -= 1

    def _responded(self, task: asyncio.Task[None] | None = None) -> None:
        if task is not None and not task.cancelled():
            task.exception()  # retrieved (and raised by ``await task``) when we still wait for it
        self._release()
        if self._start is not None and not self._start.done():
            self._start.set_result(None)

    async def receive(self) -> Message:
        if self.closed:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.gate.max_body_bytes:
                # Answer now, in the app's place; the app sees the client gone and stops reading.
                await self._answer(*self.gate.too_large())
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.closed:
            return
        if message["type"] == "http.response.start":
            message = {**message, "headers": _secured(list(message.get("headers", ())))}
            self.status = int(message["status"])
            self.started = True
            self._responded()
        await self._send(message)

    async def _answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if self.started or self.closed:
            self.closed = True
            return
        self.closed = True
        self.started = True
        self.status = status
        self._responded()
        await self._send({"type": "http.response.start", "status": status, "headers": _secured(headers)})
        await self._send({"type": "http.response.body", "body": body})


async def _invoke(app: App, scope: Scope, receive: Receive, send: Send) -> None:
    await app(scope, receive, send)


def _secured(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    names = {k.lower() for k, _ in headers}
    if b"x-content-type-options" not in names:
        headers.append((b"x-content-type-options", b"nosniff"))
    html = any(k.lower() == b"content-type" and v.lower().startswith(b"text/html") for k, v in headers)
    if html and b"content-security-policy" not in names:
        headers.append((b"content-security-policy", DEFAULT_CSP.encode()))
    return headers
