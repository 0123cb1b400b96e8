"""The agent's workspace in Debian's headless Chromium, as the stories have it (issue 28; S4, S5, S7, S8, S9).

Alice signs in, finds the most urgent case at the top of her queue, answers one item of three, makes a
promise on the phone and hands the case off to Bob; Bob's page of that case, open all along, updates
by itself and shows her brief; Bob approves what an automation proposed. Screenshots of the queue and
of the case page are written to the test's folder and, when ``CASELEDGER_SCREENSHOTS=DIR`` is set, to
DIR (the README's images: ``CASELEDGER_SCREENSHOTS=docs/images``).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from caseledger.ledger.access.principals import PrincipalRegistry
from caseledger.ledger.domain.permissions import Role
from tests.support.accessibility import assert_accessible, watch_page
from tests.support.service_server import Service, start_service, stop_service

SCREENSHOTS_ENV = "CASELEDGER_SCREENSHOTS"
VIEWPORT = {"width": 1200, "height": 900}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    running = start_service(tmp_path_factory.mktemp("workspace"))
    yield running
    stop_service(running)


def post(service: Service, role: Role, path: str, body: dict[str, Any]) -> dict[str, Any]:
    with service.client(role) as client:
        answer = client.post(path, json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
    assert answer.status_code in (200, 201), (path, answer.text)
    return dict(answer.json())


def open_case(service: Service, customer: str, subject: str, items: list[str], channel: str = "email") -> str:
    body = {"channel": channel, "channel_message_id": f"{channel}-{uuid.uuid4()}", "from": customer,
            "subject": subject, "items": items}
    return str(post(service, Role.AGENT, "/v1/contacts", body)["reference"])


def browse_as(chromium: Any, service: Service, token: str, path: str) -> Any:
    """A page of a fresh context (an agent's own browser), signed in at /login and back at ``path``."""
    page = chromium.new_context(viewport=VIEWPORT, locale="en-GB", timezone_id="Europe/Paris").new_page()
    page.goto(f"{service.url}{path}")
    assert "/login" in page.url
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    page.locator("#live-state", has_text=re.compile("^live")).wait_for(timeout=15_000)
    return page


def act(page: Any, form: str, fields: dict[str, str]) -> str:
    """Open the form's disclosure, fill it, send it; the flash that says what was done."""
    page.click(f"#details-{form} > summary")
    for name, value in fields.items():
        control = page.locator(f"#{form}-{name}")
        if control.evaluate("e => e.tagName") == "SELECT":
            control.select_option(value)
        else:
            control.fill(value)
    page.click(f"#{form}-submit")
    page.wait_for_selector("#flash")
    return str(page.text_content("#flash"))


def screenshot(page: Any, name: str, where: Path) -> Path:
    shot = where / name
    page.screenshot(path=str(shot))
    if os.environ.get(SCREENSHOTS_ENV):
        target = Path(os.environ[SCREENSHOTS_ENV])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target / name)
    return shot


def test_an_agent_works_the_most_urgent_case_and_hands_it_off(
    service: Service, chromium: Any, tmp_path: Path
) -> None:
    # The morning's cases: the card case has a call-back due within the hour (made yesterday by phone), and an
    # automation proposes to lower the card's limit; two others wait for their answer.
    urgent = open_case(service, "email:jane.doe@example.com", "Card blocked", ["Why is my card blocked?", "When can I use it again?",
                                                  "Will I be charged for the new card?"], channel="phone")
    post(service, Role.AGENT, f"/v1/cases/{urgent}/promises", {
        "channel": "phone", "kind": "callback", "terms": "Call back once the fraud team has looked",
        "due_at": (datetime.now(UTC) + timedelta(minutes=50)).isoformat()})
    post(service, Role.AUTOMATION, f"/v1/cases/{urgent}/actions", {
        "rule": "fraud-limit", "action": "lower_limit", "params": {"limit": "500"},
        "rationale": "three declined payments abroad in an hour"})
    others = [open_case(service, "email:sam.martin@example.com", "Address change", ["Please update my address"]),
              open_case(service, "phone:+33612345678", "Statement missing", ["Where is my March statement?"],
                        channel="web_form")]
    with service.ledger() as ledger:
        bob_token = PrincipalRegistry(ledger.principal_store).add("bob", Role.AGENT).token

    # Bob already has the case open (a colleague's screen): it must follow without a reload.
    bob = browse_as(chromium, service, bob_token, f"/cases/{urgent}")
    bob.evaluate("() => { window.__notReloaded = true; }")

    # Alice signs in and finds the most urgent case first in her queue.
    alice = chromium.new_context(viewport=VIEWPORT, locale="en-GB", timezone_id="Europe/Paris").new_page()
    watch = watch_page(alice)
    alice.goto(f"{service.url}/")
    alice.fill("input[name=token]", service.tokens[Role.AGENT])
    alice.click("button[type=submit]")
    alice.wait_for_selector("#cases tbody tr")
    rows = alice.locator("#cases tbody tr")
    assert rows.count() == 3 and set(rows.evaluate_all("rs => rs.map(r => r.dataset.reference)")) == {urgent, *others}
    first = rows.first
    assert first.get_attribute("data-reference") == urgent
    assert "promise due P1" in first.inner_text()  # the call-back due within the hour puts it first
    alice.locator("#live-state", has_text=re.compile("^live")).wait_for(timeout=15_000)
    queue_shot = screenshot(alice, "queue.png", tmp_path)
    first.locator("a").first.click()
    alice.wait_for_selector("#reference")
    assert alice.text_content("#reference") == urgent

    # One item of three answered; a promise made on the phone; the case handed off to Bob with a note.
    assert "R1" in act(alice, "respond-Q1", {"body": "A fraud check after three declined payments abroad."})
    assert "answered" in alice.text_content("#item-Q1") and "open" in alice.text_content("#item-Q2")
    due = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT10:00")
    assert "P2" in act(alice, "promise", {"kind": "callback", "terms": "Call back once the new card is sent",
                                          "due": due, "channel": "phone"})
    assert "Call back once the new card" in alice.text_content("#promises")
    note = "Q2 and Q3 still open; she prefers e-mail after 18:00"
    assert "H1" in act(alice, "handoff", {"to": "bob", "note": note})

    # Bob's page shows it all, live, with Alice's brief at the top.
    bob.locator("#brief", has_text=note).wait_for(timeout=15_000)
    assert bob.evaluate("() => window.__notReloaded === true")
    assert "Call back once the new card" in bob.text_content("#promises")
    assert "answered" in bob.text_content("#item-Q1")
    brief = bob.text_content("#brief")
    assert "When can I use it again?" in brief and "Will I be charged" in brief  # the open items, as text

    # A human approves what the automation proposed; Alice's page, still open, sees it.
    assert "X1" in act(bob, "approve-X1", {"note": "Confirmed with the customer on the phone"})
    assert "approved" in bob.text_content("#proposal-X1")
    alice.locator("#proposal-X1", has_text="approved").wait_for(timeout=15_000)
    case_shot = screenshot(bob, "case-page.png", tmp_path)

    assert_accessible(bob)  # the page as it ends: flash, forms, brief
    assert watch.foreign(service.url) == [] and watch.violations(alice) == []
    assert queue_shot.stat().st_size > 10_000 and case_shot.stat().st_size > 10_000
