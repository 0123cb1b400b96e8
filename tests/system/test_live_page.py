"""The live case page in Debian's headless Chromium: a contact published on the intake topic appears by itself."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from caseledger.ledger.domain.permissions import Role
from caseledger.ledger.domain.values import ContactDraft, Identity
from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
from caseledger.ledger.intake.worker import KafkaIntakeWorker
from tests.support.kafka_topics import fresh_topics
from tests.support.service_server import Service, start_service, stop_service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    running = start_service(tmp_path_factory.mktemp("live"))
    yield running
    stop_service(running)


def open_case(service: Service, **fields: Any) -> str:
    body = {"channel": "phone", "channel_message_id": f"call-{uuid.uuid4()}", "from": "phone:+33612345678",
            "subject": "Card blocked", "items": ["Why is my card blocked?"], **fields}
    with service.client(Role.AGENT) as agent:
        answer = agent.post("/v1/contacts", json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["reference"])


def sign_in(browser: Any, service: Service, ref: str, role: Role = Role.AGENT) -> Any:
    page = browser.new_context().new_page()
    page.goto(f"{service.url}/cases/{ref}")
    assert "/login" in page.url  # no token yet: the sign-in form, then back to the case
    page.fill("input[name=token]", service.tokens[role])
    page.click("button[type=submit]")
    page.wait_for_selector("#reference")
    return page


@pytest.mark.kafka
def test_a_contact_published_on_the_intake_topic_appears_on_the_open_page(
    service: Service, chromium: Any, kafka_bootstrap: str
) -> None:
    ref = open_case(service)
    page = sign_in(chromium, service, ref)
    assert page.text_content("#reference") == ref
    # The page's CSP allows no eval, so wait with a locator, not wait_for_function.
    page.locator("#live-state", has_text=re.compile("^live")).wait_for(timeout=15_000)
    suffix = uuid.uuid4().hex[:8]
    kafka = fresh_topics(kafka_bootstrap, partitions=1)
    ledger = service.ledger()
    worker = KafkaIntakeWorker(ledger, kafka, poll_timeout_ms=50)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        with KafkaIntakeClient(kafka, adapter="mail-gateway") as client:
            client.submit(ContactDraft(channel="email", channel_message_id=f"mail-{suffix}",
                                       identity=Identity.parse("phone:+33612345678"), case_reference=ref,
                                       follow_up=True, subject="Still blocked", items=("Is it unblocked now?",)))
            sent = time.monotonic()
            page.wait_for_selector(f"#contacts >> text=mail-{suffix}", timeout=15_000)
            latency = time.monotonic() - sent
    finally:
        stop.set()
        thread.join(30)
        ledger.close()
    assert "Is it unblocked now?" in page.text_content("#items")
    assert "email" in page.text_content("#last-contacts")
    print(f"contact on the intake topic → on the open page in {latency * 1000:.0f} ms")
    assert latency < 10


def test_the_page_needs_a_principal_that_may_read_cases(service: Service, chromium: Any) -> None:
    ref = open_case(service)
    assert httpx.get(f"{service.url}/cases/{ref}", follow_redirects=False).status_code == 303
    assert httpx.get(f"{service.url}/cases/{ref}/events").status_code == 401
    adapter = httpx.get(f"{service.url}/cases/{ref}", headers={"Authorization": f"Bearer {service.tokens[Role.ADAPTER]}"})
    assert adapter.status_code == 403
    page = sign_in(chromium, service, ref, Role.AUDITOR)  # auditors read
    assert page.text_content("#reference") == ref
    bad = chromium.new_context().new_page()
    bad.goto(f"{service.url}/login?next=/cases/{ref}")
    bad.fill("input[name=token]", "clt_" + "C" * 43)
    bad.click("button[type=submit]")
    assert "unknown or revoked token" in bad.content() and "clt_CCCC" not in bad.content()


def test_customer_text_on_the_page_is_escaped(service: Service, chromium: Any) -> None:
    ref = open_case(service, subject="<img src=x onerror=alert(1)><script>window.pwned=1</script>")
    page = sign_in(chromium, service, ref)
    assert page.evaluate("window.pwned === undefined")
    assert "<script>window.pwned=1</script>" in page.text_content("h1")
    assert page.query_selector("h1 img") is None


def test_the_live_events_stream_sends_the_case_again_when_it_changes(service: Service) -> None:
    ref = open_case(service)
    headers = {"Authorization": f"Bearer {service.tokens[Role.AGENT]}"}
    seen: list[str] = []
    with httpx.stream("GET", f"{service.url}/cases/{ref}/events", headers=headers, timeout=30) as stream:
        lines = stream.iter_lines()
        for line in lines:
            if line.startswith("event: case"):
                seen.append(line)
                break
        with service.client(Role.AGENT) as agent:
            assert agent.post(f"/v1/cases/{ref}/responses", json={"body": "Unblocked.", "answers": ["Q1"]}
                              ).status_code == 201
        for line in lines:
            if (line.startswith("data:") and "Unblocked." in line) or (line.startswith("data:") and "answered" in line):
                seen.append(line)
                break
    assert len(seen) == 2


def test_tokens_never_reach_the_service_log(service: Service) -> None:
    log = service.log()
    assert all(token not in log for token in service.tokens.values())
    assert Path(service.log_path).stat().st_size > 0
