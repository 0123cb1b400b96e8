"""The case page over a real service: what a person reads (times in words, the brief first, the customer's timeline,
the customer named only as the ledger may), and acting from it (each form once, under the matrix, not from another
site, bad input answered with the form)."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from caseledger.ledger.domain.permissions import Role
from tests.support.service_server import Service, start_service, stop_service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    running = start_service(tmp_path_factory.mktemp("case-page"))
    yield running
    stop_service(running)


def api(service: Service, role: Role = Role.AGENT) -> httpx.Client:
    """An English-speaking agent's client (the service's own default language is the policy's, French)."""
    client = service.client(role)
    client.headers["Accept-Language"] = "en"
    return client


def open_case(service: Service, who: str = "email:jane@example.com", channel: str = "email",
              items: tuple[str, ...] = ("Why is my card blocked?", "When can I use it?", "Any fees?"),
              subject: str = "Card blocked") -> str:
    body = {"channel": channel, "channel_message_id": f"m-{uuid.uuid4()}", "from": who, "subject": subject,
            "items": list(items)}
    with api(service) as agent:
        answer = agent.post("/v1/contacts", json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["reference"])


def case_json(service: Service, ref: str) -> dict[str, Any]:
    with api(service) as agent:
        return agent.get(f"/v1/cases/{ref}").json()  # type: ignore[no-any-return]


def sign_in(service: Service, role: Role = Role.AGENT, *, token: str | None = None) -> httpx.Client:
    """A browser-like client signed in through the form."""
    client = httpx.Client(base_url=service.url, timeout=30, headers={"Accept-Language": "en"})  # as api()
    form = client.get("/login", params={"next": "/cases/x"})
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    answer = client.post("/login", data={"token": token or service.tokens[role], "next": "/cases/x",
                                         "csrf": csrf.group(1)},
                         headers={"Origin": service.url, "Sec-Fetch-Site": "same-origin"})
    assert answer.status_code == 303, answer.text
    return client


class _Forms(HTMLParser):
    """The forms of a page: id → (action, {name: value}) of their inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, tuple[str, dict[str, str]]] = {}
        self._current: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self._current = a.get("id") or ""
            self.forms[self._current] = (a.get("action") or "", {})
        elif tag in ("input", "textarea", "select") and self._current is not None and a.get("name"):
            self.forms[self._current][1][a["name"] or ""] = a.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def forms_of(page: str) -> dict[str, tuple[str, dict[str, str]]]:
    parser = _Forms()
    parser.feed(page)
    return parser.forms


def form(client: httpx.Client, ref: str, form_id: str, **values: str) -> tuple[str, dict[str, str]]:
    page = client.get(f"/cases/{ref}")
    assert page.status_code == 200, page.text
    action, fields = forms_of(page.text)[f"form-{form_id}"]
    return action, {**fields, **values}


def post(service: Service, client: httpx.Client, action: str, data: dict[str, str], **headers: str) -> httpx.Response:
    return client.post(action, data=data, headers={"Origin": service.url, "Sec-Fetch-Site": "same-origin", **headers})


def events(service: Service, ref: str, kind: str) -> list[dict[str, Any]]:
    ledger = service.ledger()
    try:
        case = ledger.get_case(ref)
        return [e for e in ledger.history(case.customer_id) if type(e).__name__ == kind
                and getattr(e, "originator_id", None) == case.id]
    finally:
        ledger.close()


# -- what a person reads -------------------------------------------------------------------------------------------


def test_times_are_in_the_agents_language_and_zone_in_words(service: Service) -> None:
    """Finding: raw UTC ISO strings with microseconds (2026-12-07T05:25:57.914095+00:00)."""
    ref = open_case(service)
    year = datetime.now(UTC).year + 1
    due = datetime(year, 3, 10, 8, 0, tzinfo=UTC)  # a Wednesday; 09:00 in Paris, 03:00 in New York
    with api(service) as agent:
        assert agent.post(f"/v1/cases/{ref}/promises", json={"channel": "phone", "kind": "callback",
                          "terms": "Call back about the fees", "due_at": due.isoformat()}).status_code == 201
        fr = agent.get(f"/cases/{ref}", params={"zone": "Europe/Paris"},
                       headers={"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"}).text
        en = agent.get(f"/cases/{ref}", params={"zone": "America/New_York"},
                       headers={"Accept-Language": "en-GB"}).text
    assert f"mercredi 10 mars {year} à 09:00" in fr and "dans " in fr and '<html lang="fr-FR"' in fr
    assert f"Wednesday, 10 March {year} at 03:00" in en and "in " in en and '<html lang="en-GB"' in en
    for page in (fr, en):
        assert not re.search(r">\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+", page)  # no raw ISO time shown as text
        assert f'datetime="{year}-03-10T08:00:00+00:00"' in page  # the machine-readable instant stays


def test_the_brief_is_text_at_the_top_and_items_carry_their_answers(service: Service) -> None:
    """Finding: the handoff brief was a JSON dump at the bottom (S7: the next agent must not start over)."""
    ref = open_case(service)
    with api(service) as agent:
        assert agent.post(f"/v1/cases/{ref}/responses", json={"body": "A fraud check.", "answers": ["Q1"]}
                          ).status_code == 201
        assert agent.post(f"/v1/cases/{ref}/handoff", json={"to": "bob", "note": "She called twice; be kind"}
                          ).status_code == 200
        page = agent.get(f"/cases/{ref}").text
    main = page[page.index('<main id="case"'):]
    assert main.index('id="brief"') < main.index('id="deadlines"') < main.index('id="items"')
    brief = main[main.index('id="brief"'):main.index("</section>")]
    assert "She called twice; be kind" in brief and "by agent-1" in brief and "to bob" in " ".join(brief.split())
    assert "When can I use it?" in brief and "Any fees?" in brief and "Why is my card blocked?" not in brief
    assert '{"open_items"' not in page and "&#34;open_items&#34;" not in page
    items = main[main.index('id="items"'):main.index('id="promises-heading"')]
    assert "A fraud check." in items and "R1" in items


def test_the_timeline_spans_the_customers_cases_and_channels(service: Service) -> None:
    """Finding: no other case or channel of the customer (S11)."""
    who = f"email:tl-{uuid.uuid4().hex[:8]}@example.com"
    first = open_case(service, who, "email", ("Card blocked?",), subject="Card")
    second = open_case(service, who, "chat", ("Loan rate?",), subject="Loan")
    with api(service) as agent:
        timeline = agent.get(f"/cases/{second}").text
        timeline = timeline[timeline.index('id="timeline"'):]
        timeline = timeline[:timeline.index("</ol>")]
    assert first in timeline and second in timeline
    assert "by email" in timeline and "by chat" in timeline and "acknowledged (ACK1" in timeline


def test_the_customer_is_named_for_roles_that_read_history_and_erased_after_erasure(service: Service) -> None:
    """Finding: the customer was shown as cus-…; named now as the ledger may: opened for a role that reads personal
    history, a pseudonym for one that does not, [erased] once erased."""
    who = f"email:named-{uuid.uuid4().hex[:8]}@example.com"
    ref = open_case(service, who)
    customer_id = case_json(service, ref)["customer_id"]
    with api(service, Role.AGENT) as agent, api(service, Role.AUTOMATION) as automation:
        assert who in agent.get(f"/cases/{ref}").text
        machine = automation.get(f"/cases/{ref}").text
        assert who not in machine and who.split(":")[1] not in machine and f"customer {customer_id}" in machine
    with api(service, Role.SUPERVISOR) as supervisor:
        assert supervisor.post(f"/v1/customers/{customer_id}/erase", json={"reason": "art. 17 request, ticket 1"}
                               ).status_code == 200
    with api(service, Role.AGENT) as agent:
        after = agent.get(f"/cases/{ref}").text
    assert who not in after and who.split(":")[1] not in after
    assert re.search(r'<span id="customer">\[erased\]</span>', after)


# -- acting from the page ----------------------------------------------------------------------------------------


def test_each_form_posts_its_command_once_even_when_sent_twice(service: Service) -> None:
    """Finding: no way to act from the page. Each form runs its command as the signed-in principal, once per key."""
    ref = open_case(service)
    with api(service, Role.AUTOMATION) as automation:
        for _ in range(2):
            assert automation.post(f"/v1/cases/{ref}/actions", json={"rule": "r1", "action": "lower_limit",
                                   "rationale": "risk"}).status_code == 201
    due = (datetime.now(UTC) + timedelta(days=3)).astimezone().strftime("%Y-%m-%dT%H:%M")
    steps = [
        ("respond-Q1", {"body": "Unblocked now."}, "ResponseSent", "respond&id=R1"),
        ("waive-Q2", {"reason": "asked again in Q3"}, "ItemWaived", "waive&id=Q2"),
        ("promise", {"kind": "callback", "terms": "Call back tomorrow", "due": due, "channel": "phone"},
         "PromiseMade", "promise&id=P1"),
        ("keep-P1", {"evidence": "called at 10:00"}, "PromiseKept", "keep&id=P1"),
        ("approve-X1", {"note": "fine"}, "ActionApproved", "approve&id=X1"),
        ("reject-X2", {"reason": "not needed"}, "ActionRejected", "reject&id=X2"),
        ("handoff", {"to": "bob", "team": "", "note": "Customer prefers e-mail"}, "HandedOff", "handoff&id=H1"),
        ("status", {"to": "waiting_on_customer", "reason": "waiting for a scan", "notice": "Please send the scan"},
         "StatusChanged", "status"),
    ]
    browser = sign_in(service, Role.AGENT)
    for form_id, values, event, done in steps:
        action, data = form(browser, ref, form_id, **values)
        first = post(service, browser, action, data)
        again = post(service, browser, action, data)  # the back button, a double click
        assert first.status_code == again.status_code == 303, (form_id, first.text)
        assert first.headers["location"] == again.headers["location"]
        assert f"done={done}" in first.headers["location"], first.headers["location"]
        assert len(events(service, ref, event)) == 1, form_id
    recorded = events(service, ref, "ResponseSent")[0]
    assert recorded.actor_id == "agent-1" and recorded.actor_authentication == "token"
    flash = browser.get(first.headers["location"]).text
    assert '<p id="flash" role="status">Status changed</p>' in flash
    promise = case_json(service, ref)["promises"][0]
    typed = datetime.fromisoformat(due).astimezone(UTC)  # typed in the page's zone: the service's default
    assert promise["status"] == "kept" and abs(datetime.fromisoformat(promise["due_at"]) - typed) < timedelta(hours=15)
    # withdraw, close and cancel, on cases of their own
    other = open_case(service, items=("One?",))
    with api(service) as agent:
        agent.post(f"/v1/cases/{other}/responses", json={"body": "Yes.", "answers": ["Q1"]})
    for form_id, values, event in (
        ("close", {"reason": "answered", "notice": "We close your request."}, "CaseClosed"),
        ("reopen", {"reason": "customer wrote", "notice": "We reopen it."}, "CaseReopened"),
        ("cancel", {"reason": "duplicate", "notice": "It duplicates another."}, "CaseCancelled"),
    ):
        action, data = form(browser, other, form_id, **values)
        assert post(service, browser, action, data).status_code == 303
        assert post(service, browser, action, data).status_code == 303
        assert len(events(service, other, event)) == 1, form_id


def test_a_forged_post_is_refused_and_records_nothing(service: Service) -> None:
    """CSRF: without this session's token, with another session's, or from another site: 403, nothing recorded."""
    ref = open_case(service)
    browser, other = sign_in(service), sign_in(service)
    action, data = form(browser, ref, "respond-Q1", body="forged")
    _, theirs = form(other, ref, "respond-Q1", body="forged")
    attempts = {
        "no token": ({**data, "csrf": ""}, {}),
        "another session's token": ({**data, "csrf": theirs["csrf"]}, {}),
        "cross-site origin": (data, {"Origin": "https://evil.example"}),
        "cross-site fetch": (data, {"Sec-Fetch-Site": "cross-site"}),
    }
    for why, (sent, headers) in attempts.items():
        answer = post(service, browser, action, {**sent, "key": str(uuid.uuid4())}, **headers)
        assert answer.status_code == 403, (why, answer.status_code)
        assert "text/html" in answer.headers["content-type"] and "refused" in answer.text, why
    assert events(service, ref, "ResponseSent") == []
    anonymous = httpx.post(f"{service.url}{action}", data=data)
    assert anonymous.status_code == 401 and events(service, ref, "ResponseSent") == []


def test_a_role_without_the_operation_sees_no_form_and_is_refused_anyway(service: Service) -> None:
    ref = open_case(service)
    with api(service, Role.AUDITOR) as auditor:
        page = auditor.get(f"/cases/{ref}").text
        assert "<form" not in page and 'id="items"' in page
        refused = auditor.post(f"/cases/{ref}/act/respond", data={"target": "Q1", "body": "x", "key": "k-1"})
    assert refused.status_code == 403 and "may not respond" in refused.text
    with api(service, Role.AUTOMATION) as automation:
        assert "form-approve" not in automation.get(f"/cases/{ref}").text
        assert automation.post(f"/cases/{ref}/act/waive", data={"target": "Q1", "reason": "x", "key": "k-2"}
                               ).status_code == 403
    assert events(service, ref, "ResponseSent") == [] and events(service, ref, "ItemWaived") == []


def test_bad_input_answers_400_with_the_form_and_what_was_typed(service: Service) -> None:
    ref = open_case(service)
    browser = sign_in(service)
    cases = {
        "empty answer": ("respond-Q1", {"body": "   "}, "empty"),
        "unknown item": ("respond-Q1", {"body": "An answer kept", "target": "Q99"}, "no item Q99"),
        "too long": ("waive-Q1", {"reason": "x" * 5000}, "at most 4000"),
        "bad date": ("promise", {"kind": "callback", "terms": "Terms kept", "due": "next tuesday", "channel": "phone"},
                     "not a date and time"),
        "past date": ("promise", {"kind": "callback", "terms": "Terms kept", "due": "2001-01-01T09:00", "channel": "phone"},
                      "not after"),
        "bad key": ("respond-Q1", {"body": "An answer kept", "key": "k" * 300}, "key"),
    }
    for why, (form_id, values, error) in cases.items():
        action, data = form(browser, ref, form_id, **values)
        answer = post(service, browser, action, data)
        assert answer.status_code == 400, (why, answer.status_code, answer.text[:300])
        assert error in answer.text, (why, re.findall(r'role="alert">[^<]*', answer.text))
        assert 'id="form-error"' in answer.text and f'id="form-{form_id}"' in answer.text, why
        if "kept" in json.dumps(values):
            assert "kept" in answer.text, why  # the values typed are in the form again
    assert case_json(service, ref)["open_items"] == ["Q1", "Q2", "Q3"] and case_json(service, ref)["promises"] == []
    assert "Traceback" not in service.log()


def test_what_a_form_records_is_on_every_open_page_of_the_case(service: Service) -> None:
    """The result is pushed live to another open page (the watcher sees the new events)."""
    ref = open_case(service)
    seen: list[str] = []
    ready = threading.Event()

    def read() -> None:
        headers = {"Authorization": f"Bearer {service.tokens[Role.SUPERVISOR]}", "Accept-Language": "fr"}
        with httpx.stream("GET", f"{service.url}/cases/{ref}/events", headers=headers, timeout=30) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    ready.set()
                    if "Pushed to every page" in line:
                        seen.append(line)
                        return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert ready.wait(20)
    browser = sign_in(service)
    action, data = form(browser, ref, "respond-Q2", body="Pushed to every page")
    sent = time.monotonic()
    assert post(service, browser, action, data).status_code == 303
    reader.join(20)
    assert seen, "the other page never showed the answer"
    frame = json.loads(seen[0][len("data:"):])
    assert "Pushed to every page" in frame["html"] and 'name="key" value=""' in frame["html"]  # keys: /live.js
    print(f"form posted → on another open page in {(time.monotonic() - sent) * 1000:.0f} ms")


def first_frame(service: Service, ref: str, role: Role, *, after: int = -1, timeout: float = 20) -> dict[str, Any]:
    """The first ``case`` event of a stream of ``role`` on ``ref`` whose version is past ``after``."""
    headers = {"Authorization": f"Bearer {service.tokens[role]}"}
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", f"{service.url}/cases/{ref}/events", headers=headers, timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                frame: dict[str, Any] = json.loads(line[len("data:"):])
                if frame["version"] > after:
                    return frame
            if time.monotonic() > deadline:
                break
    raise AssertionError("no frame")


def test_streams_of_one_case_never_show_one_role_what_another_may_see_and_follow_an_erasure(service: Service) -> None:
    """Attack: one render shared by every stream of a case would hand automation the customer's identity an agent's
    stream shows; and a stream opened before an erasure must not go on naming the erased."""
    who = f"email:streams-{uuid.uuid4().hex[:8]}@example.com"
    ref = open_case(service, who)
    frames: dict[Role, dict[str, Any]] = {}
    readers = [threading.Thread(target=lambda r=role: frames.__setitem__(r, first_frame(service, ref, r)))
               for role in (Role.AGENT, Role.AUTOMATION, Role.AGENT)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(30)
    assert who in frames[Role.AGENT]["html"] and who not in frames[Role.AUTOMATION]["html"]
    assert who.split(":")[1] not in frames[Role.AUTOMATION]["html"]
    customer_id = case_json(service, ref)["customer_id"]
    version = frames[Role.AGENT]["version"]
    seen: list[dict[str, Any]] = []

    def watch() -> None:  # one stream, open before the erasure, until it shows the customer erased
        headers = {"Authorization": f"Bearer {service.tokens[Role.AGENT]}"}
        with httpx.stream("GET", f"{service.url}/cases/{ref}/events", headers=headers, timeout=30) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    seen.append(json.loads(line[len("data:"):]))
                    if "[erased]" in seen[-1]["html"]:
                        return

    watching = threading.Thread(target=watch, daemon=True)
    watching.start()
    deadline = time.monotonic() + 20
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen and who in seen[0]["html"]  # open, and naming her
    with api(service, Role.SUPERVISOR) as supervisor:
        assert supervisor.post(f"/v1/customers/{customer_id}/erase", json={"reason": "art. 17 request, ticket 2"}
                               ).status_code == 200
    watching.join(40)
    last = seen[-1]
    assert len(seen) >= 2 and last["version"] == version  # the same version, rendered again from the store
    # a stream without Accept-Language reads the service's language (French): the ledger's "[erased]" says it is English
    assert who not in last["html"] and '<span id="customer" lang="en">[erased]</span>' in last["html"]


def test_the_service_log_holds_no_customer_identity_and_nothing_typed_in_a_form(service: Service) -> None:
    """Attack: the log searched for an e-mail and for what agents typed in the page's forms (this module's)."""
    log = service.log()
    assert "@example.com" not in log
    for typed in ("Unblocked now.", "Pushed to every page", "An answer kept", "Customer prefers e-mail", "forged"):
        assert typed not in log, typed
    assert "Traceback" not in log
