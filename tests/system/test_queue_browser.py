"""The agent's queue in Debian's headless Chromium: signed in at /, a new contact appears without reload."""

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
    running = start_service(tmp_path_factory.mktemp("queue-browser"))
    yield running
    stop_service(running)


def test_the_queue_updates_itself_without_reload(service: Service, chromium: Any) -> None:
    """Finding: the agent had no queue, and had to reload a page to see a new contact (S8)."""
    page = chromium.new_context(locale="fr-FR", timezone_id="Europe/Paris").new_page()
    page.goto(f"{service.url}/?channel=chat")
    assert "/login" in page.url  # no session yet: the sign-in form, then back to the queue and its filter
    page.fill("input[name=token]", service.tokens[Role.AGENT])
    page.click("button[type=submit]")
    page.wait_for_selector("#queue")
    assert page.url.endswith("/?channel=chat") and page.locator("html").get_attribute("lang") == "fr-FR"
    page.locator("#live-state", has_text=re.compile("^en direct")).wait_for(timeout=15_000)
    # issue 28: lang is true: the queue's own words are French too (not only its times)
    assert page.text_content("h1") == "File d’attente" and "Statut" in page.text_content("#filters")
    body = {"channel": "chat", "channel_message_id": f"chat-{uuid.uuid4()}", "from": "email:jane@example.com",
            "subject": "Card blocked", "items": ["Why is my card blocked?"]}
    with service.client(Role.AGENT) as agent:
        answer = agent.post("/v1/contacts", json=body)
        sent = time.monotonic()
    assert answer.status_code == 201, answer.text
    ref = answer.json()["reference"]
    row = page.locator(f'tr[data-reference="{ref}"]')
    row.wait_for(timeout=15_000)
    latency = time.monotonic() - sent
    assert "Card blocked" in row.inner_text() and "dans" in row.inner_text()  # its deadline in French, in words
    page.click('a[data-state="all"]')  # the counts are links: a plain navigation, the filter in the URL
    page.wait_for_selector(f'tr[data-reference="{ref}"]')
    assert "channel=chat" in page.url and "state=" not in page.url
    print(f"contact recorded → in the open queue in {latency * 1000:.0f} ms")
