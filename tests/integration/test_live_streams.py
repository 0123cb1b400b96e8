"""The live page's streams and sign-in under attack: caps per principal, revocation, one render per change,
a session cookie that is not the token, and a sign-in form that another site cannot submit."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from caseledger.ledger.access.principals import PrincipalRegistry
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.permissions import Role
from caseledger.ledger.service import live
from caseledger.ledger.service.api import ServiceState
from tests.support.environment import ledger_settings
from tests.support.service_server import Service, serve_in_thread, start_service, stop_service

PER_PRINCIPAL = 10  # live pages one principal may have open (docs/api.md)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    running = start_service(tmp_path_factory.mktemp("streams"))
    yield running
    stop_service(running)


def open_case(url: str, token: str) -> str:
    body = {"channel": "chat", "channel_message_id": f"c-{uuid.uuid4()}", "from": "email:jane@example.com",
            "subject": "Card blocked", "items": ["Why?"]}
    answer = httpx.post(f"{url}/v1/contacts", json=body, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["reference"])


def respond(url: str, token: str, ref: str, text: str) -> None:
    answer = httpx.post(f"{url}/v1/cases/{ref}/responses", json={"body": text, "answers": []},
                        headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 201, answer.text


class Reader(threading.Thread):
    """Reads one event stream, noting each event's id, until it has ``wanted`` of them or the stream ends."""

    def __init__(self, url: str, ref: str, *, wanted: int, headers: dict[str, str] | None = None,
                 cookies: dict[str, str] | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.ref, self.wanted = url, ref, wanted
        self.headers, self.cookies = headers or {}, cookies or {}
        self.ids: list[int] = []
        self.status = 0
        self.ended = False
        self.first = threading.Event()

    def run(self) -> None:
        try:
            with httpx.Client(cookies=self.cookies, timeout=httpx.Timeout(30, read=40)) as client, client.stream(
                    "GET", f"{self.url}/cases/{self.ref}/events", headers=self.headers) as answer:
                self.status = answer.status_code
                if answer.status_code != 200:
                    return
                for line in answer.iter_lines():
                    if line.startswith("id: "):
                        self.ids.append(int(line[4:]))
                        self.first.set()
                        if len(self.ids) >= self.wanted:
                            return
                self.ended = True
        finally:
            self.first.set()


def test_one_principal_may_open_ten_streams_and_the_eleventh_is_429(service: Service) -> None:
    """Finding: one principal opened 999 live-page streams → 503 for everyone."""
    agent = service.tokens[Role.AGENT]
    ref = open_case(service.url, agent)
    with ExitStack() as stack:
        streams = []
        for _ in range(PER_PRINCIPAL):
            client = stack.enter_context(httpx.Client(timeout=30))
            answer = stack.enter_context(client.stream("GET", f"{service.url}/cases/{ref}/events",
                                                       headers={"Authorization": f"Bearer {agent}"}))
            assert answer.status_code == 200
            streams.append(answer)
        refused = httpx.get(f"{service.url}/cases/{ref}/events", headers={"Authorization": f"Bearer {agent}"})
        assert refused.status_code == 429 and refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"] == "urn:caseledger:problem:too-many-streams"
        other = Reader(service.url, ref, wanted=1, headers={"Authorization": f"Bearer {service.tokens[Role.SUPERVISOR]}"})
        other.start()
        other.join(20)
        assert other.status == 200 and other.ids  # another principal is not refused
        assert httpx.get(f"{service.url}/healthz").status_code == 200
        streams[0].close()
    time.sleep(0.5)  # the server notices the closed streams
    again = Reader(service.url, ref, wanted=1, headers={"Authorization": f"Bearer {agent}"})
    again.start()
    again.join(20)
    assert again.status == 200


def test_a_stream_ends_when_its_principal_is_revoked(service: Service) -> None:
    """Finding: a stream went on after its principal was revoked."""
    admin, agent = service.tokens[Role.ADMIN], service.tokens[Role.AGENT]
    name = f"temp-{uuid.uuid4().hex[:8]}"
    issued = httpx.post(f"{service.url}/v1/principals", json={"name": name, "role": "agent"},
                        headers={"Authorization": f"Bearer {admin}"}).json()
    ref = open_case(service.url, agent)
    reader = Reader(service.url, ref, wanted=2, headers={"Authorization": f"Bearer {issued['token']}"})
    reader.start()
    assert reader.first.wait(20) and reader.ids
    assert httpx.delete(f"{service.url}/v1/principals/{name}", headers={"Authorization": f"Bearer {admin}"}
                        ).status_code == 200
    respond(service.url, agent, ref, "after the revocation")
    reader.join(15)
    assert not reader.is_alive() and reader.ended and len(reader.ids) == 1, reader.ids


def sign_in(url: str, token: str, *, next_path: str = "/cases/x") -> httpx.Client:
    """A browser-like client signed in through the form (pre-session cookie, CSRF field, same-origin)."""
    client = httpx.Client(base_url=url, timeout=30)
    form = client.get("/login", params={"next": next_path})
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    answer = client.post("/login", data={"token": token, "next": next_path, "csrf": csrf.group(1)},
                         headers={"Origin": url, "Sec-Fetch-Site": "same-origin"})
    assert answer.status_code == 303, answer.text
    return client


def test_the_session_cookie_is_not_the_token_and_dies_with_the_principal(service: Service) -> None:
    """Finding: the login cookie was the raw bearer token."""
    session_dies_with_its_principal(service)


@pytest.mark.postgres
def test_sessions_and_streams_on_postgresql(tmp_path: Path, postgres: Any) -> None:
    running = start_service(tmp_path, database=postgres.new_database())
    try:
        session_dies_with_its_principal(running)
    finally:
        stop_service(running)


def session_dies_with_its_principal(service: Service) -> None:
    admin, agent = service.tokens[Role.ADMIN], service.tokens[Role.AGENT]
    name = f"temp-{uuid.uuid4().hex[:8]}"
    token = httpx.post(f"{service.url}/v1/principals", json={"name": name, "role": "agent"},
                       headers={"Authorization": f"Bearer {admin}"}).json()["token"]
    ref = open_case(service.url, agent)
    browser = sign_in(service.url, token, next_path=f"/cases/{ref}")
    (cookie,) = [c for c in browser.cookies.jar if c.name == "caseledger_session"]
    assert cookie.value != token and token not in cookie.value and cookie.path == "/"
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite") == "strict"
    assert browser.get(f"/cases/{ref}").status_code == 200
    reader = Reader(service.url, ref, wanted=2, cookies={"caseledger_session": str(cookie.value)})
    reader.start()
    assert reader.first.wait(20) and reader.ids
    assert httpx.delete(f"{service.url}/v1/principals/{name}", headers={"Authorization": f"Bearer {admin}"}
                        ).status_code == 200
    assert browser.get(f"/cases/{ref}").status_code == 401
    respond(service.url, agent, ref, "after the revocation")
    reader.join(15)
    assert reader.ended and len(reader.ids) == 1
    # The session id is no token of the API.
    assert httpx.get(f"{service.url}/v1/whoami", headers={"Authorization": f"Bearer {cookie.value}"}).status_code == 401
    with pytest.raises(AssertionError):  # and the revoked token cannot sign in again
        sign_in(service.url, token)
    browser.close()


def test_another_site_cannot_sign_a_browser_in(service: Service) -> None:
    """Finding: login CSRF was possible (a site could sign the victim's browser in as the attacker)."""
    attacker = service.tokens[Role.AGENT]
    url = service.url
    client = httpx.Client(base_url=url, timeout=30)
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    attempts = {
        "no pre-session, no field": ({}, {}, {"token": attacker}),
        "field without its cookie": ({}, {}, {"token": attacker, "csrf": csrf.group(1)}),
        "another site's origin": ({"caseledger_login": csrf.group(1)}, {"Origin": "https://evil.example"},
                                  {"token": attacker, "csrf": csrf.group(1)}),
        "cross-site fetch": ({"caseledger_login": csrf.group(1)}, {"Sec-Fetch-Site": "cross-site"},
                             {"token": attacker, "csrf": csrf.group(1)}),
        "wrong field": ({"caseledger_login": csrf.group(1)}, {}, {"token": attacker, "csrf": "guessed"}),
    }
    for why, (cookies, headers, data) in attempts.items():
        answer = httpx.post(f"{url}/login", data=data, headers=headers, cookies=cookies)
        assert answer.status_code == 401, why
        assert "caseledger_session" not in answer.headers.get("set-cookie", ""), why
    client.close()


def test_a_case_change_is_rendered_once_for_all_its_streams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding: each change was rendered once per stream (50 proposals, 995 streams: 62 s of CPU)."""
    settings = ledger_settings(database=str(tmp_path / "l.sqlite"))
    ledger = CaseLedger(settings)
    try:
        registry = PrincipalRegistry(ledger.principal_store)
        tokens = [registry.add(f"agent-{n}", Role.AGENT).token for n in range(3)]
    finally:
        ledger.close()
    renders: list[int] = []
    real = live.render_case

    def counting(case: Any, *view_and_context: Any) -> str:
        renders.append(case.version)
        return real(case, *view_and_context)

    monkeypatch.setattr(live, "render_case", counting)
    with serve_in_thread(ServiceState(settings)) as url:
        ref = open_case(url, tokens[0])
        readers = [Reader(url, ref, wanted=2, headers={"Authorization": f"Bearer {token}"})
                   for token in tokens for _ in range(8)]
        for reader in readers:
            reader.start()
        assert all(r.first.wait(20) for r in readers) and all(r.ids for r in readers)
        renders.clear()
        respond(url, tokens[0], ref, "one change")
        for reader in readers:
            reader.join(20)
        assert all(len(r.ids) == 2 and r.ids[1] > r.ids[0] for r in readers), [r.ids for r in readers]
        assert len(renders) == 1, renders  # 24 streams, one render
