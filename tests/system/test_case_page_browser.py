"""The case page in Debian's headless Chromium: an agent answers one item of three from the page; a second open page
of the case shows it live, and keeps what its own agent was typing."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from caseledger.ledger.domain.permissions import Role
from tests.support.service_server import Service, start_service, stop_service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    running = start_service(tmp_path_factory.mktemp("case-page-browser"))
    yield running
    stop_service(running)


def open_case(service: Service) -> str:
    body = {"channel": "email", "channel_message_id": f"m-{uuid.uuid4()}", "from": "email:jane@example.com",
            "subject": "Card blocked", "items": ["Why is my card blocked?", "When can I use it?", "Any fees?"]}
    with service.client(Role.AGENT) as agent:
        answer = agent.post("/v1/contacts", json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["reference"])


def sign_in(browser: Any, service: Service, ref: str, role: Role) -> Any:
    page = browser.new_context(locale="fr-FR", timezone_id="Europe/Paris").new_page()
    page.goto(f"{service.url}/cases/{ref}")
    page.fill("input[name=token]", service.tokens[role])
    page.click("button[type=submit]")
    page.wait_for_selector("#reference")
    page.locator("#live-state", has_text=re.compile("^en direct")).wait_for(timeout=15_000)  # a French agent's
    return page


def test_an_answer_given_on_one_page_shows_live_on_another(service: Service, chromium: Any) -> None:
    ref = open_case(service)
    agent = sign_in(chromium, service, ref, Role.AGENT)
    watcher = sign_in(chromium, service, ref, Role.SUPERVISOR)
    watcher.click("#details-handoff summary")
    watcher.fill("#handoff-to", "carol")
    watcher.fill("#handoff-note", "typed while the page changes")  # the second agent is writing a note
    agent.click("#details-respond-Q2 summary")
    agent.fill("#respond-Q2-body", "Tomorrow at 9.")
    sent = time.monotonic()
    agent.click("#respond-Q2-submit")
    agent.wait_for_selector("#flash")
    assert "Réponse R1 envoyée" in agent.text_content("#flash")  # issue 28: the flash in the page's language
    assert "Tomorrow at 9." in agent.text_content("#item-Q2")
    watcher.locator("#item-Q2", has_text="Tomorrow at 9.").wait_for(timeout=15_000)
    latency = time.monotonic() - sent
    assert "répondu" in watcher.text_content("#item-Q2") and "ouvert" in watcher.text_content("#item-Q1")
    assert watcher.input_value("#handoff-note") == "typed while the page changes"  # kept across the update
    assert watcher.locator("#details-handoff").get_attribute("open") is not None
    key = watcher.input_value("#form-handoff input[name=key]")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", key)  # /live.js
    # The second agent's form, filled in by /live.js after the update, is accepted.
    watcher.click("#handoff-submit")
    watcher.wait_for_selector("#flash")
    assert "typed while the page changes" in watcher.text_content("#brief")
    print(f"answer on one page → on the other in {latency * 1000:.0f} ms")


def test_reading_works_without_javascript(service: Service, chromium: Any) -> None:
    ref = open_case(service)
    context = chromium.new_context(java_script_enabled=False, locale="en-GB")
    page = context.new_page()
    page.goto(f"{service.url}/cases/{ref}")
    page.fill("input[name=token]", service.tokens[Role.AGENT])
    page.click("button[type=submit]")
    page.wait_for_selector("#brief")
    assert "When can I use it?" in page.text_content("#brief")
    page.click("#details-waive-Q3 summary")
    page.fill("#waive-Q3-reason", "Asked again in Q1")
    page.click("#waive-Q3-submit")
    page.wait_for_selector("#flash")
    assert "waived" in page.text_content("#item-Q3")
