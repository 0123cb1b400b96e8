"""The agent's queue at / over a real ``caseledger serve``: sign-in returns to it, the overdue case comes first,
filters and counts work without a script, a new contact arrives on its event stream, a role without case.read
gets a page saying so, and no customer's data reaches a role that may not read it, nor outlives an erasure."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.permissions import Role
from caseledger.ledger.domain.values import ContactDraft, Identity
from tests.support.environment import ledger_settings
from tests.support.service_server import Service, start_service, stop_service

OLD_SUBJECT = "Refund still missing"
NEW_SUBJECT = "Card blocked at the till"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A ledger holding a case received ten days ago (overdue now), served."""
    where = tmp_path_factory.mktemp("queue")
    database = str(where / "ledger.sqlite")
    past = datetime.now(UTC) - timedelta(days=10)
    old = CaseLedger(ledger_settings(database=database), clock=lambda: past, simulated_clock=True)
    try:
        old.record_contact(ContactDraft(channel="email", channel_message_id="old-1", items=("Where is my refund?",),
                                        identity=Identity.parse("email:old.customer@example.com"),
                                        subject=OLD_SUBJECT, segment="premium"))
    finally:
        old.close()
    running = start_service(where, database=database)
    yield running
    stop_service(running)


def contact(service: Service, *, channel: str = "chat", subject: str = NEW_SUBJECT,
            sender: str = "email:jane.doe@example.com") -> str:
    body = {"channel": channel, "channel_message_id": f"m-{uuid.uuid4()}", "from": sender, "subject": subject,
            "items": ["Why?"]}
    answer = httpx.post(f"{service.url}/v1/contacts", json=body,
                        headers={"Authorization": f"Bearer {service.tokens[Role.AGENT]}"})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["reference"])


def sign_in(service: Service, token: str, next_path: str) -> httpx.Client:
    client = httpx.Client(base_url=service.url, timeout=30)
    form = client.get("/login", params={"next": next_path})
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    answer = client.post("/login", data={"token": token, "next": next_path, "csrf": csrf.group(1)},
                         headers={"Origin": service.url, "Sec-Fetch-Site": "same-origin"})
    assert answer.status_code == 303 and answer.headers["location"] == next_path, answer.text
    return client


def references(page: str) -> list[str]:
    return re.findall(r'<tr data-reference="([^"]+)"', page)


def test_sign_in_leads_to_the_queue_with_the_overdue_case_first(service: Service) -> None:
    """Finding: there was no list of cases to start from, and the session cookie covered /cases only."""
    new = contact(service)
    anonymous = httpx.get(f"{service.url}/?channel=email", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login?next=%2F%3Fchannel%3Demail"
    browser = sign_in(service, service.tokens[Role.AGENT], "/?status=active")
    (cookie,) = [c for c in browser.cookies.jar if c.name == "caseledger_session"]
    assert cookie.path == "/" and cookie.get_nonstandard_attr("SameSite") == "strict"
    assert cookie.has_nonstandard_attr("HttpOnly")
    page = browser.get("/?status=active", headers={"Accept-Language": "fr-FR,fr;q=0.9"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
    found = references(page.text)
    assert found.index(new) > 0 and re.search(r'class=overdue><td><a href="/cases/([^"]+)"', page.text)
    first = found[0]
    assert f'<tr data-reference="{first}" class=overdue>' in page.text and "En retard :" in page.text
    assert re.search(r"il y a \d+ (jours|semaines?)", page.text) and " à " in page.text  # times in French, in words
    assert f'href="/cases/{new}"' in page.text and NEW_SUBJECT in page.text and OLD_SUBJECT in page.text
    assert "<script>" not in page.text and "style=" not in page.text  # no inline script or style
    browser.close()


def test_filters_and_counts_work_without_a_script(service: Service) -> None:
    chat = contact(service, channel="chat")
    agent = service.client(Role.AGENT)
    emails = agent.get("/", params={"channel": "email"}).text
    assert chat not in references(emails) and references(emails)
    # the channel in words, in the service's default language (the policy's, French: issue 28)
    assert all("<td>e-mail</td>" in row for row in re.findall(r"<tr data-reference.*?</tr>", emails))
    overdue = agent.get("/", params={"state": "overdue"}).text
    assert chat not in references(overdue) and len(references(overdue)) >= 1
    counts = dict(re.findall(r'data-state="([a-z_]+)">[^<]*<b>(\d+)</b>', agent.get("/").text))
    assert int(counts["all"]) == len(references(agent.get("/").text)) and int(counts["overdue"]) >= 1
    mine = agent.get("/", params={"who": "me"}).text
    assert references(mine) == [] and 'id="empty"' in mine
    odd = agent.get("/", params={"status": "'; drop table agent_queue; --", "zone": "Mars/Olympus"})
    assert odd.status_code == 200 and references(odd.text)  # junk is the whole queue, never a 500
    agent.close()


def test_a_new_contact_arrives_on_the_queues_stream(service: Service) -> None:
    """Finding: the agent had to reload to see new contacts (S8)."""
    seen: list[str] = []
    ready = threading.Event()

    def read() -> None:
        with httpx.Client(timeout=httpx.Timeout(30, read=30)) as client, client.stream(
                "GET", f"{service.url}/queue/events", params={"channel": "sms"},
                headers={"Authorization": f"Bearer {service.tokens[Role.SUPERVISOR]}"}) as answer:
            assert answer.status_code == 200
            for line in answer.iter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:])["html"])
                    ready.set()
                    if len(seen) >= 2:
                        return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert ready.wait(20) and seen
    started = time.monotonic()
    new = contact(service, channel="sms", subject="Stream me")
    reader.join(20)
    assert len(seen) == 2 and new in seen[1] and new not in seen[0], seen
    assert time.monotonic() - started < 5


def test_a_role_without_case_read_gets_a_page_saying_so(service: Service) -> None:
    refused = httpx.get(f"{service.url}/", headers={"Authorization": f"Bearer {service.tokens[Role.ADAPTER]}"})
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("text/html")
    assert "may not case.read" in refused.text and "Traceback" not in refused.text
    stream = httpx.get(f"{service.url}/queue/events",
                       headers={"Authorization": f"Bearer {service.tokens[Role.ADAPTER]}"})
    assert stream.status_code == 403
    wrong = httpx.get(f"{service.url}/", headers={"Authorization": "Bearer clt_not-a-token"})
    assert wrong.status_code == 401 and "Traceback" not in wrong.text


def test_no_customer_data_for_a_role_that_may_not_read_it_nor_after_erasure(service: Service) -> None:
    """Privacy: the queue names no customer; subjects only for roles that read histories, [erased] after."""
    sender = f"email:erase.me.{uuid.uuid4().hex[:6]}@example.com"
    ref = contact(service, subject="Private matter of Erin", sender=sender)
    automation = httpx.get(f"{service.url}/", headers={"Authorization": f"Bearer {service.tokens[Role.AUTOMATION]}"})
    assert automation.status_code == 200 and ref in references(automation.text)
    for secret in ("Private matter", NEW_SUBJECT, OLD_SUBJECT, "enc:1:", "@example.com", "cus-"):
        assert secret not in automation.text, secret
    agent = service.client(Role.AGENT)
    page = agent.get("/").text
    assert "Private matter of Erin" in page and "@example.com" not in page and "cus-" not in page
    frames: list[str] = []
    watching = threading.Event()

    def watch() -> None:  # a queue left open across the erasure: it must not go on showing the subject
        with httpx.Client(timeout=httpx.Timeout(30, read=30)) as client, client.stream(
                "GET", f"{service.url}/queue/events", params={"order": "recent"},
                headers={"Authorization": f"Bearer {service.tokens[Role.AGENT]}"}) as answer:
            for line in answer.iter_lines():
                if line.startswith("data: "):
                    frames.append(json.loads(line[6:])["html"])
                    watching.set()
                    if "[erased]" in frames[-1]:
                        return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert watching.wait(20) and "Private matter of Erin" in frames[0]
    supervisor = service.client(Role.SUPERVISOR)
    customer = supervisor.post("/v1/customers/resolve", json={"identity": sender}).json()["customer_id"]
    erased = supervisor.post(f"/v1/customers/{customer}/erase", json={"reason": "art. 17 request, ticket 4711"},
                             headers={"Idempotency-Key": str(uuid.uuid4())})
    assert erased.status_code in (200, 201), erased.text
    after = agent.get("/").text
    row = re.search(rf'<tr data-reference="{ref}".*?</tr>', after)
    assert row and "[erased]" in row.group(0) and "Private matter" not in after
    watcher.join(20)
    assert "[erased]" in frames[-1] and "Private matter" not in frames[-1]
    assert "Private matter" not in service.log() and sender.split(":")[1] not in service.log()
    agent.close()
    supervisor.close()


def test_my_team_my_cases_and_my_zone_and_language_whatever_the_browser_says(service: Service) -> None:
    """Findings: principals had no team, zone or locale, so the queue offered a free team filter instead of "my
    team", and an agent's zone and language could only come from the browser."""
    s = uuid.uuid4().hex[:6]
    admin = service.client(Role.ADMIN)
    refused = admin.post("/v1/principals", json={"name": f"jo-{s}", "role": "agent", "zone": "Mars/Olympus"})
    assert refused.status_code in (400, 422) and "IANA" in refused.text and "Traceback" not in refused.text
    made = admin.post("/v1/principals", json={"name": f"ines-{s}", "role": "agent", "team": f"billing-{s}",
                                              "zone": "Asia/Tokyo", "locale": "de-DE"})
    assert made.status_code == 201, made.text
    listed = {p["name"]: p for p in admin.get("/v1/principals").json()}
    assert f"jo-{s}" not in listed and listed[f"ines-{s}"]["team"] == f"billing-{s}"  # nothing written when refused
    ours, theirs, hers, nobodys = (contact(service, subject=f"{what} {s}") for what in ("ours", "theirs", "hers", "x"))
    supervisor = service.client(Role.SUPERVISOR)
    for ref, body in ((ours, {"team": f"billing-{s}"}), (theirs, {"team": f"loans-{s}"}),
                      (hers, {"assignee": f"ines-{s}"})):
        assert supervisor.post(f"/v1/cases/{ref}/assign", json=body).status_code in (200, 201)
    browser = sign_in(service, made.json()["token"], "/")  # the session carries the principal's team, zone, locale
    french = {"Accept-Language": "fr-FR,fr;q=0.9"}
    team = browser.get("/", params={"who": "team"}, headers=french).text
    assert references(team) == [ours] and re.search(r'data-state="all">[^<]*<b>1</b>', team)
    assert references(browser.get("/", params={"who": "me"}).text) == [hers]
    default = browser.get("/", headers=french)  # mine, my team's and the unassigned: not another team's
    assert {ours, hers, nobodys} <= set(references(default.text)) and theirs not in references(default.text)
    assert '<option value="mine" selected>' in default.text and '<option value="team">mon équipe</option>' in default.text
    # issue 28 (i18n): the principal's de-DE has no words in the workspace, so the next language it reads is the
    # browser's French, for the words and the times alike; the zone stays the principal's
    assert '<html lang="fr-FR"' in default.text and "heures de Asia/Tokyo" in default.text
    assert theirs in references(browser.get("/", params={"who": "all"}).text)
    case = browser.get(f"/cases/{ours}", params={"zone": "Europe/Paris"}, headers=french).text
    assert '<html lang="fr-FR"' in case and "events?zone=Asia/Tokyo&" in case
    without = service.client(Role.AGENT).get("/", params={"who": "team"}).text  # no team: the whole queue
    assert theirs in references(without) and '<option value="team">' not in without
    changed = admin.patch(f"/v1/principals/ines-{s}", json={"team": f"loans-{s}", "locale": "fr-FR"})
    assert changed.status_code == 200 and changed.json()["zone"] == "Asia/Tokyo", changed.text
    now_theirs = browser.get("/", params={"who": "team"}).text  # the open session follows the change
    assert references(now_theirs) == [theirs] and '<html lang="fr-FR"' in now_theirs
    for client in (admin, supervisor, browser):
        client.close()


@pytest.mark.postgres
def test_the_queue_on_postgresql(tmp_path: Path, postgres: Any) -> None:
    """The queue's SQL (its order, counts and lists) on the other backend."""
    running = start_service(tmp_path, database=postgres.new_database())
    try:
        refs = [contact(running, channel=channel) for channel in ("chat", "email", "chat")]
        agent = running.client(Role.AGENT)
        page = agent.get("/", params={"channel": "chat"})
        assert page.status_code == 200 and sorted(references(page.text)) == sorted(refs[::2])
        counts = dict(re.findall(r'data-state="([a-z_]+)">[^<]*<b>(\d+)</b>', page.text))
        assert counts["all"] == "2" and counts["overdue"] == "0"
        recent = agent.get("/", params={"order": "recent"}).text
        assert references(recent) == refs[::-1] and '<option value="email">' in recent
        agent.close()
    finally:
        stop_service(running)
