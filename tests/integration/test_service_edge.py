"""The server holds under attack: idle sockets, endless bodies, headers a path could forge, logs that would leak.

Each test is a finding of issue 22 ("The server falls over"), tried against a real ``caseledger serve``
on loopback, with raw sockets where an HTTP client would hide the attack.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import select
import socket
import time
import uuid
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from caseledger.ledger.domain.permissions import Role
from caseledger.ledger.service.api import ServiceState
from caseledger.ledger.service.gate import Gate
from tests.support.environment import ledger_settings
from tests.support.service_server import (
    Service,
    is_closed,
    read_response,
    serve_in_thread,
    start_service,
    stop_service,
)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The server as ``caseledger serve`` starts it, default limits."""
    running = start_service(tmp_path_factory.mktemp("edge"))
    yield running
    stop_service(running)


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A server with a 1-second header deadline and room for 50 connections."""
    running = start_service(tmp_path_factory.mktemp("edge-strict"),
                            extra_args=("--header-timeout", "1", "--max-connections", "50"))
    yield running
    stop_service(running)


def customer_of(service: Service, identity: str) -> str:
    """A customer's id, as a caller finds it: an identity goes in a body, never in a URL."""
    with service.client(Role.AGENT) as agent:
        answer = agent.post("/v1/customers/resolve", json={"identity": identity})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["customer_id"])


def new_case(service: Service, **fields: object) -> str:
    body = {"channel": "email", "channel_message_id": f"m-{uuid.uuid4()}", "from": "email:jane@example.com",
            "subject": "Card blocked", "items": ["Why is my card blocked?"], **fields}
    with service.client(Role.AGENT) as agent:
        answer = agent.post("/v1/contacts", json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["reference"])


# -- connections ---------------------------------------------------------------------------------------------


def test_a_thousand_idle_connections_lock_out_nobody(service: Service) -> None:
    """Finding: 1,000 idle TCP connections, no token: every request, /healthz included, got 503."""
    ref = new_case(service)
    idle = [service.connect() for _ in range(1000)]
    try:
        time.sleep(0.5)  # the server has accepted them all
        assert httpx.get(f"{service.url}/healthz", timeout=10).status_code == 200
        with service.client(Role.AGENT) as agent:
            assert agent.get(f"/v1/cases/{ref}").status_code == 200
            assert agent.get("/v1/whoami").status_code == 200
    finally:
        for connection in idle:
            connection.close()


def test_a_connection_that_never_finishes_its_headers_is_closed(strict: Service) -> None:
    """Finding: no header-read timeout. Silent, trickling and idle keep-alive connections are closed."""
    silent = strict.connect()
    trickling = strict.connect()
    trickling.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    for _ in range(4):  # a header line every 0.4 s, never the blank line that ends them
        time.sleep(0.4)
        try:
            trickling.sendall(b"X-Slow: 1\r\n")
        except OSError:
            break
    assert is_closed(trickling, within=3) and time.monotonic() - started < 4
    assert is_closed(silent, within=3)
    # After a response, the next request's headers are due as well (keep-alive).
    kept = strict.connect()
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert kept.recv(65536).startswith(b"HTTP/1.1 200")
    kept.sendall(b"GET /healthz HTTP/1.1\r\n")
    assert is_closed(kept, within=3)


def test_idle_connections_make_room_for_work_when_the_cap_is_reached(strict: Service) -> None:
    """Past --max-connections the longest-idle connection is closed, never the one that brings a request."""
    idle = [strict.connect() for _ in range(80)]
    try:
        time.sleep(0.3)
        with strict.client(Role.AGENT) as agent:
            assert agent.get("/v1/whoami").status_code == 200
        closed = sum(is_closed(c, within=0.05) for c in idle[:30])
        assert closed >= 25  # the oldest were evicted as the newer ones came
    finally:
        for connection in idle:
            connection.close()


@pytest.mark.parametrize("protocol", ["GuardedH11Protocol", "GuardedHttpToolsProtocol"])
def test_both_http_protocols_keep_the_header_deadline_and_evict_idle_connections(
        protocol: str, tmp_path: Path) -> None:
    """uvicorn[standard] selects httptools; without it, h11: the same rules hold on both."""
    from caseledger.ledger.service import connections

    connections.configure(connections.ConnectionLimits(header_timeout_s=0.5, max_connections=20))
    try:
        state = ServiceState(ledger_settings(database=str(tmp_path / "l.sqlite")))
        with serve_in_thread(state, http=f"caseledger.ledger.service.connections:{protocol}") as url:
            host, port = url.removeprefix("http://").split(":")
            silent = socket.create_connection((host, int(port)))
            assert is_closed(silent, within=3)
            idle = [socket.create_connection((host, int(port))) for _ in range(30)]
            assert httpx.get(f"{url}/healthz").status_code == 200
            assert sum(is_closed(c, within=0.1) for c in idle[:10]) >= 8
            for connection in idle:
                connection.close()
    finally:
        connections.configure(connections.ConnectionLimits())


# -- bodies ----------------------------------------------------------------------------------------------------


def _chunked_post_until_answered(service: Service, *, limit: int) -> tuple[bytes, int]:
    """POST an endless chunked body without a token; (the answer, bytes sent before it came)."""
    connection = service.connect(timeout=10)
    connection.sendall(b"POST /v1/contacts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    sent = 0
    try:
        while sent < limit:
            readable, writable, _ = select.select([connection], [connection], [], 5)
            if readable:
                break
            if writable:
                sent += connection.send(chunk)  # may be partial: only counts matter here
    except OSError:
        pass  # closed by the server after its answer
    answer = read_response(connection, timeout=10)
    connection.close()
    return answer, sent


def test_a_chunked_body_is_refused_while_it_streams_before_authentication(service: Service) -> None:
    """Finding: chunked bodies were read whole before the size check and before authentication (two
    unauthenticated 256 MiB posts took the server from 101 to 852 MiB)."""
    before = service.rss_bytes()
    for _ in range(2):
        answer, sent = _chunked_post_until_answered(service, limit=64 * 1024 * 1024)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"urn:caseledger:problem:too-large" in answer
        assert sent < 8 * 1024 * 1024, f"{sent} bytes went in before the 413"
    assert service.rss_bytes() - before < 48 * 1024 * 1024
    assert httpx.get(f"{service.url}/healthz").status_code == 200


# -- what reaches a header, a log line, a browser --------------------------------------------------------------


def test_a_control_character_in_a_path_never_reaches_a_header(service: Service) -> None:
    """Finding: a CRLF in the customer id of an export got no answer at all."""
    with service.client(Role.SUPERVISOR) as supervisor:
        for path in ("/v1/customers/a%0d%0aSet-Cookie:%20x=1/export", "/v1/customers/a%00b/export?format=html",
                     "/cases/CL-AAAAA-AAAAA%0d%0aX:%20y", "/v1/cases?channel=email&message_id=a%0d%0ab"):
            answer = supervisor.get(path)
            assert answer.status_code == 400, (path, answer.text)
            assert answer.json()["type"] == "urn:caseledger:problem:invalid"
            assert "set-cookie" not in answer.headers and "x" not in answer.headers
    # A sign-in's "next" (a form field, not the path) becomes a Location header: percent-encoded there.
    with httpx.Client(base_url=service.url, timeout=30) as browser:
        csrf = re.search(r'name="csrf" value="([^"]+)"', browser.get("/login").text)
        assert csrf is not None
        login = browser.post("/login", data={"token": service.tokens[Role.AGENT], "csrf": csrf.group(1),
                                             "next": "/cases/A\r\nSet-Cookie: x=1"})
    assert login.status_code == 303, login.text
    assert "\r" not in login.headers["location"] and "\n" not in login.headers["location"]
    assert "x=1" not in login.headers.get("set-cookie", "")


def _filename(disposition: str) -> tuple[str, str]:
    message = Message()
    message["content-disposition"] = disposition
    star = re.search(r"filename\*=UTF-8''([^;\s]+)", disposition)
    assert star is not None, disposition
    return str(message.get_param("filename", header="content-disposition")), unquote(star.group(1))


def test_the_export_names_any_customer_id_safely(service: Service) -> None:
    """Findings: customer_id landed unescaped in Content-Disposition; a non-latin-1 one was a 500."""
    for customer in ("kunde-ñ-客户-1", 'evil";filename="x.exe'):
        new_case(service, customer_id=customer)
        with service.client(Role.SUPERVISOR) as supervisor:
            answer = supervisor.get(f"/v1/customers/{customer}/export", params={"format": "json"})
        assert answer.status_code == 200, answer.text
        fallback, full = _filename(answer.headers["content-disposition"])
        assert full == f"{customer}.json"
        assert fallback.isascii() and '"' not in fallback and fallback.endswith(".json")


def test_every_html_response_has_a_csp_and_nosniff(service: Service) -> None:
    """Finding: the HTML export had no CSP or nosniff."""
    ref, customer = new_case(service), customer_of(service, "email:jane@example.com")
    token = {"Authorization": f"Bearer {service.tokens[Role.SUPERVISOR]}"}
    answers = [
        httpx.get(f"{service.url}/v1/customers/{customer}/export?format=html", headers=token),
        httpx.get(f"{service.url}/login"),
        httpx.get(f"{service.url}/cases/{ref}", headers=token),
    ]
    for answer in answers:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html"), answer.url
        assert answer.headers["x-content-type-options"] == "nosniff"
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "http" not in csp and "'unsafe-eval'" not in csp, csp
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", answer.text), answer.url  # no third-party asset
    assert httpx.get(f"{service.url}/healthz").headers["x-content-type-options"] == "nosniff"


def test_the_access_log_keeps_no_query_string_customer_or_token(service: Service) -> None:
    """Finding: the access log kept query strings (customer identities, message ids)."""
    new_case(service, channel_message_id="mid-secret-42")
    with service.client(Role.AGENT) as agent:
        assert agent.get("/v1/cases", params={"channel": "email", "message_id": "mid-secret-42"}).status_code == 200
        jane = customer_of(service, "email:jane@example.com")
        assert agent.get(f"/v1/customers/{jane}/cases").status_code == 200
        # An identity in the path is refused before anything runs, and never logged (issue 24).
        refused = agent.get("/v1/customers/email:jane@example.com/cases")
        assert refused.status_code == 400 and "customers/resolve" in refused.json()["detail"]
        agent.get("/v1/whoami", params={"access_token": "clt_querytoken"})
    time.sleep(0.2)
    log = service.log()
    assert "GET /v1/customers/{customer}/cases 200" in log
    assert re.search(r"GET /v1/cases 200 \d+(\.\d+)?ms", log)
    for secret in ("mid-secret-42", "jane@example.com", "clt_querytoken", "message_id=", *service.tokens.values()):
        assert secret not in log, secret


def test_unknown_routes_and_methods_are_problems(service: Service) -> None:
    with service.client(Role.AGENT) as agent:
        for answer, status in ((agent.get("/v1/nothing-here"), 404), (agent.put("/v1/contacts", json={}), 405)):
            assert answer.status_code == status
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert answer.json()["status"] == status


def test_healthz_answers_through_a_burst_of_raw_garbage(service: Service) -> None:
    """Bytes that are not HTTP get a 400 or a closed connection, never a stuck server."""
    for garbage in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, b"GET / HTTP/9.9\r\n\r\n",
                    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"):
        connection = service.connect(timeout=5)
        with contextlib.suppress(OSError):
            connection.sendall(garbage)
        answer = read_response(connection, timeout=5)
        connection.close()
        assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:80]
    assert httpx.get(f"{service.url}/healthz").status_code == 200



# -- the gate alone: in-flight cap and request timeout ---------------------------------------------------------


def _call(gate: Gate, path: str) -> list[dict[str, object]]:
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": []}
    asyncio.run(gate(scope, receive, send))  # type: ignore[arg-type]
    return sent


def test_the_gate_caps_requests_in_flight_and_times_out_slow_ones() -> None:
    async def slow_app(scope: object, receive: object, send: object) -> None:
        await asyncio.sleep(0.5)
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"late"})  # type: ignore[operator]

    timed = Gate(slow_app, max_body_bytes=10, request_timeout_s=0.1, max_in_flight=10)
    sent = _call(timed, "/v1/cases/X")
    assert sent[0]["status"] == 503 and b"timeout" in sent[1]["body"]  # type: ignore[operator]
    assert len(sent) == 2  # what the route sends later is dropped

    async def several() -> list[list[dict[str, object]]]:
        gate = Gate(slow_app, max_body_bytes=10, request_timeout_s=5, max_in_flight=2)
        answers: list[list[dict[str, object]]] = [[] for _ in range(4)]
        paths = ["/a", "/b", "/c", "/healthz"]

        def sender(n: int) -> object:
            async def send(message: dict[str, object]) -> None:
                answers[n].append(message)
            return send

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        await asyncio.gather(*(gate({"type": "http", "method": "GET", "path": p, "query_string": b"", "headers": []},
                                    receive, sender(n)) for n, p in enumerate(paths)))  # type: ignore[arg-type]
        assert gate.in_flight == 0
        return answers

    answers = asyncio.run(several())
    statuses = [a[0]["status"] for a in answers]
    assert statuses == [200, 200, 503, 200], statuses  # the third waits for nobody; /healthz is never refused
    assert (b"retry-after", b"1") in answers[2][0]["headers"]  # type: ignore[operator]
