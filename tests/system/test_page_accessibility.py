"""The agent's pages in Debian's headless Chromium: WCAG 2.2 AA (axe-core), the keyboard, self-contained, no script.

One service and one browser for the module; each test opens its own context (its own cookies).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from caseledger.ledger.domain.permissions import Role
from tests.support.accessibility import FOCUSABLE, assert_accessible, focus_ring, tab_through, watch_page
from tests.support.service_server import Service, start_service, stop_service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    running = start_service(tmp_path_factory.mktemp("a11y"))
    yield running
    stop_service(running)


@pytest.fixture(scope="module")
def case_ref(service: Service) -> str:
    """A case with what the page lists: three items, one answered, a promise, a second channel, a handoff."""
    body = {"channel": "phone", "channel_message_id": f"call-{uuid.uuid4()}", "from": "phone:+33612345678",
            "subject": "Card blocked", "items": ["Why is my card blocked?", "When can I use it again?",
                                                  "Will I be charged?"]}
    with service.client(Role.AGENT) as agent:
        answer = agent.post("/v1/contacts", json=body)
        assert answer.status_code == 201, answer.text
        ref = str(answer.json()["reference"])
        for path, payload in ((f"/v1/cases/{ref}/responses", {"body": "A fraud check.", "answers": ["Q1"]}),
                              (f"/v1/cases/{ref}/promises", {"channel": "phone", "kind": "callback", "terms": "call back",
                                                              "due_at": soon(days=1)}),
                              (f"/v1/cases/{ref}/handoff", {"to": "agent:bob", "note": "Q2 and Q3 open"})):
            done = agent.post(path, json=payload, headers={"Idempotency-Key": str(uuid.uuid4())})
            assert done.status_code in (200, 201), (path, done.text)
    return ref


def soon(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def signed_in(chromium: Any, service: Service, path: str, *, role: Role = Role.AGENT, **context: Any) -> Any:
    """A fresh page of a fresh context, signed in through /login, at ``path``."""
    page = chromium.new_context(**context).new_page()
    page.goto(f"{service.url}{path}")
    assert "/login" in page.url
    page.fill("input[name=token]", service.tokens[role])
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return page


def test_the_sign_in_page_meets_wcag_2_2_aa(service: Service, chromium: Any) -> None:
    page = chromium.new_context().new_page()
    page.goto(f"{service.url}/login")
    assert_accessible(page)
    page.fill("input[name=token]", "clt_" + "C" * 43)  # the page again, with its error message
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "unknown or revoked token" in page.content()
    assert_accessible(page)


def test_the_case_page_meets_wcag_2_2_aa(service: Service, chromium: Any, case_ref: str) -> None:
    page = signed_in(chromium, service, f"/cases/{case_ref}")
    page.wait_for_selector("#reference")
    assert_accessible(page)


def test_a_french_agents_pages_meet_wcag_2_2_aa_and_say_they_are_french(
        service: Service, chromium: Any, case_ref: str) -> None:
    """Issue 28: ``lang="fr-FR"`` was set over English words; now the words are French and the rest is marked."""
    page = signed_in(chromium, service, f"/cases/{case_ref}", locale="fr-FR", timezone_id="Europe/Paris")
    page.wait_for_selector("#reference")
    assert page.locator("html").get_attribute("lang") == "fr-FR"
    assert page.text_content("#brief-heading") == "Passation" and page.locator('#items [lang=""]').count() >= 3
    assert_accessible(page)  # valid-lang, html-lang-valid among its rules
    page.goto(f"{service.url}/")
    page.wait_for_selector(f'tr[data-reference="{case_ref}"]')
    assert page.locator("html").get_attribute("lang") == "fr-FR" and page.text_content("h1") == "File d’attente"
    assert_accessible(page)


def visible_focusables(page: Any) -> list[str]:
    """The page's focusable, visible elements, in document order (as ids or tag names)."""
    return list(page.evaluate(
        "(sel) => Array.from(document.querySelectorAll(sel)).filter(e => e.checkVisibility())"
        ".map(e => e.id || e.getAttribute('name') || e.tagName.toLowerCase())", FOCUSABLE))


def assert_tab_order(page: Any) -> list[dict[str, Any]]:
    """Tab reaches every control and link once, in document order (no tabindex trap), each with a focus ring."""
    stops = tab_through(page)
    reached = [s["id"] or s["name"] or s["tag"] for s in stops]
    assert reached == visible_focusables(page), f"Tab went {reached}, the page holds {visible_focusables(page)}"
    unringed = [s for s in stops if not focus_ring(s)]
    assert not unringed, f"no visible focus indicator on {unringed}"
    return stops


def test_the_queue_meets_wcag_2_2_aa(service: Service, chromium: Any, case_ref: str) -> None:
    page = signed_in(chromium, service, "/")
    page.wait_for_selector(f'tr[data-reference="{case_ref}"]')
    assert_accessible(page)
    assert_tab_order(page)


def test_the_keyboard_alone_signs_in_and_reaches_every_control_in_order(
    service: Service, chromium: Any, case_ref: str
) -> None:
    page = chromium.new_context().new_page()
    page.goto(f"{service.url}/cases/{case_ref}")
    stops = assert_tab_order(page)
    assert [s["id"] or s["tag"] for s in stops] == ["token", "button"]
    page.keyboard.press("Tab")  # round to the token field
    page.keyboard.type(service.tokens[Role.AGENT])
    page.keyboard.press("Enter")
    page.wait_for_selector("#reference")
    assert page.text_content("#reference") == case_ref
    assert_tab_order(page)


STRICT = {"default-src": "'none'", "frame-ancestors": "'none'", "base-uri": "'none'"}


def assert_strict_csp(header: str | None) -> None:
    assert header, "no Content-Security-Policy"
    policy = {d.split()[0]: d.split()[1:] for d in (p.strip() for p in header.split(";")) if d}
    for directive, value in STRICT.items():
        assert policy.get(directive) == [value], f"{directive} should be {value}: {header}"
    for directive, sources in policy.items():
        assert all(s == "'none'" or s == "'self'" or s.startswith("data:") for s in sources), (
            f"{directive} lets more than this server in: {header}")
        assert directive not in ("script-src", "style-src") or sources == ["'self'"], (
            f"{directive} must be 'self' alone (no inline code, no eval): {header}")


def test_the_pages_load_nothing_from_elsewhere_under_a_strict_csp(
    service: Service, chromium: Any, case_ref: str
) -> None:
    page = chromium.new_context().new_page()
    watch = watch_page(page)
    login = page.goto(f"{service.url}/cases/{case_ref}")
    assert_strict_csp(login.headers.get("content-security-policy"))
    page.fill("input[name=token]", service.tokens[Role.AGENT])
    with page.expect_response(f"{service.url}/cases/{case_ref}") as case_page:
        page.click("button[type=submit]")
    assert_strict_csp(case_page.value.headers.get("content-security-policy"))
    page.locator("#live-state", has_text="live").wait_for(timeout=15_000)  # the script ran, the stream is open
    with service.client(Role.AGENT) as agent:  # a change pushed into the page
        agent.post(f"/v1/cases/{case_ref}/responses", json={"body": "Soon.", "answers": ["Q2"]},
                   headers={"Idempotency-Key": str(uuid.uuid4())}).raise_for_status()
    page.locator("#items", has_text="answered").first.wait_for()
    queue = page.goto(f"{service.url}/")
    assert_strict_csp(queue.headers.get("content-security-policy"))
    page.locator("#live-state", has_text="live").wait_for(timeout=15_000)
    assert watch.requests, "the page made no request at all: nothing was watched"
    assert watch.foreign(service.url) == []
    assert watch.violations(page) == []


def test_reading_works_without_javascript(service: Service, chromium: Any, case_ref: str) -> None:
    page = chromium.new_context(java_script_enabled=False).new_page()
    page.goto(f"{service.url}/cases/{case_ref}")
    page.fill("input[name=token]", service.tokens[Role.AGENT])
    page.click("button[type=submit]")
    page.wait_for_selector("#reference")
    assert page.text_content("#reference") == case_ref
    assert "When can I use it again?" in page.text_content("#items")
    assert "call back" in page.text_content("#promises")
    assert "Will I be charged?" in page.text_content("#brief")
    page.goto(f"{service.url}/")  # the queue, and a link from it to the case
    page.click(f'tr[data-reference="{case_ref}"] a')
    page.wait_for_selector("#reference")
    assert page.text_content("#reference") == case_ref
    # (axe-core cannot run where script is off; the same markup is checked with script on above)


def test_the_accessibility_check_finds_what_it_should(chromium: Any) -> None:
    """The check itself: a page with an unlabelled field, a missing lang and low contrast fails, each named."""
    page = chromium.new_context().new_page()
    page.set_content('<html><head><title>t</title></head><body><main><h1>x</h1><input name="q">'
                     '<p style="color:#bbb">faint</p></main></body></html>')
    with pytest.raises(AssertionError) as failed:
        assert_accessible(page)
    for rule in ("label", "html-has-lang", "color-contrast"):
        assert f"- {rule} (" in str(failed.value)
