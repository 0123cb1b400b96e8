"""The ledger's clock over HTTP (issue 22), against a real ``caseledger serve`` on loopback: no caller
chooses "now", no client dates what it records outside the documented bounds, and ``tick`` names who
ran it and erases only when that caller may erase."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.permissions import Role
from caseledger.ledger.domain.policy import ResponsePolicy
from caseledger.ledger.domain.values import Actor, Channel, ContactDraft, Identity
from tests.support.clock import FakeClock
from tests.support.environment import ledger_settings
from tests.support.service_server import (
    Running,
    Service,
    add_adapter_key,
    running_service,
    start_service,
    stop_service,
)

FUTURE = "2099-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    for running in running_service(tmp_path_factory.mktemp("clock")):
        add_adapter_key(running.service, "adapter-1", [c.value for c in Channel])  # it reports deliveries
        yield running


@pytest.fixture(scope="module")
def service(running: Running) -> Service:
    return running.service


def new_case(service: Service, who: str, **fields: Any) -> dict[str, Any]:
    body = {"channel": "email", "channel_message_id": f"m-{uuid.uuid4()}", "from": who, "subject": "Card",
            "items": ["Why is my card blocked?"], **fields}
    with service.client(Role.ADAPTER) as adapter:
        answer = adapter.post("/v1/contacts", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def case_events(service: Service, reference: str) -> list[Any]:
    ledger = service.ledger()
    try:
        return list(ledger.events.get(ledger.get_case(reference).id))
    finally:
        ledger.close()


def refused(answer: Any, field: str, *, secret: str) -> str:
    """The 400 problem a claimed time out of bounds gets: it names the field, never personal data."""
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["type"] == "urn:caseledger:problem:invalid" and problem["exit_code"] == 2
    assert field in problem["detail"] and secret not in problem["detail"]
    return str(problem["detail"])


# -- no caller chooses "now" ------------------------------------------------------------------------------


def test_a_tick_with_a_now_is_refused_and_erases_nobody(service: Service) -> None:
    """Before: an automation token's tick with now=2099 answered 200, erased a customer whose case had
    closed minutes earlier (5-year retention) and recorded DeadlineMissed dated 2099."""
    who = f"email:tick-{uuid.uuid4().hex[:8]}@example.com"
    opened = new_case(service, who)
    ref = opened["reference"]
    with service.client(Role.AGENT) as agent:
        closed = agent.post(f"/v1/cases/{ref}/close", json={"reason": "done", "notice": "Closed.",
                                                            "waive": {"Q1": "answered by phone"}})
        assert closed.status_code == 200, closed.text
    for role in (Role.AUTOMATION, Role.SUPERVISOR, Role.ADMIN):
        with service.client(role) as client:
            answer = client.post("/v1/tick", json={"now": FUTURE})
        detail = refused(answer, "now", secret=who.split(":")[1])
        assert "ledger's clock" in detail
    with service.client(Role.SUPERVISOR) as supervisor:
        keys = supervisor.get(f"/v1/customers/{opened['customer_id']}/keys").json()  # by id (issue 24)
        assert keys["keys"] and not any(k["destroyed_at"] for k in keys["keys"])  # nothing erased
        ticked = supervisor.post("/v1/tick", json={})
    assert ticked.status_code == 200 and opened["customer_id"] not in ticked.json()["erased"]  # 5 years to go
    now = datetime.fromisoformat(ticked.json()["now"])
    assert abs(now - datetime.now(UTC)) < timedelta(minutes=1)  # the ledger's clock
    assert not [e for e in case_events(service, ref) if type(e).__name__ == "DeadlineMissed"]


def test_what_a_tick_records_names_the_principal_that_ran_it(service: Service) -> None:
    """Before: DeadlineMissed was recorded under system:caseledger whoever ticked."""
    ref = new_case(service, "email:jane@example.com")["reference"]
    with service.client(Role.AGENT) as agent:
        due = datetime.now(UTC) + timedelta(seconds=1)
        made = agent.post(f"/v1/cases/{ref}/promises", json={"channel": "email", "kind": "callback",
                                                             "terms": "call back", "due_at": due.isoformat()})
        assert made.status_code == 201, made.text
    time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.2)
    with service.client(Role.SUPERVISOR) as supervisor:
        ticked = supervisor.post("/v1/tick", json={})
    assert ticked.status_code == 200 and ticked.json()["missed"].get("promise", 0) >= 1, ticked.text
    missed = [e for e in case_events(service, ref) if type(e).__name__ == "DeadlineMissed"]
    assert [(e.deadline_kind, e.actor_kind, e.actor_id, e.actor_authentication) for e in missed] == [
        ("promise", "agent", "supervisor-1", "token")]
    assert abs(missed[0].timestamp - datetime.now(UTC)) < timedelta(minutes=1)


def test_an_automation_tick_says_retention_was_skipped_and_why(service: Service) -> None:
    with service.client(Role.AUTOMATION) as bot:
        answer = bot.post("/v1/tick", json={})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["erased"] == [] and "customer.erase" in body["retention_skipped"]
    with service.client(Role.SUPERVISOR) as supervisor:
        assert supervisor.post("/v1/tick", json={}).json()["retention_skipped"] is None


# -- no client dates what it records out of bounds ----------------------------------------------------------


def test_clients_cannot_date_what_they_record_outside_the_bounds(service: Service) -> None:
    """Before: a response dated 2001, a contact dated year 0001, deliveries dated 1990 (adapter) and 2999
    (automation) and a chatbot wait since 0001 were all recorded."""
    who = f"email:dates-{uuid.uuid4().hex[:8]}@example.com"
    secret = who.split(":")[1]
    with service.client(Role.ADAPTER) as adapter:
        answer = adapter.post("/v1/contacts", json={
            "channel": "email", "channel_message_id": f"m-{uuid.uuid4()}", "from": who, "items": ["Hello?"],
            "occurred_at": "0001-01-01T00:00:00Z"})
        assert "horizon" in refused(answer, "occurred_at", secret=secret)
    ref = new_case(service, who)["reference"]
    version = len(case_events(service, ref))
    cases = f"/v1/cases/{ref}"
    attempts: list[tuple[Role, str, dict[str, Any], str]] = [
        (Role.AGENT, f"{cases}/responses", {"body": "x", "answers": ["Q1"], "occurred_at": "2001-01-01T00:00:00Z"},
         "occurred_at"),
        (Role.AGENT, f"{cases}/promises", {"channel": "phone", "kind": "callback", "terms": "t",
                                           "due_at": FUTURE, "occurred_at": "2001-01-01T00:00:00Z"}, "occurred_at"),
        (Role.ADAPTER, f"{cases}/messages/ACK1/delivered", {"delivered_at": "1990-01-01T00:00:00Z"}, "delivered_at"),
        (Role.AUTOMATION, f"{cases}/messages/ACK1/delivered", {"delivered_at": "2999-01-01T00:00:00Z"},
         "delivered_at"),
        (Role.ADAPTER, f"{cases}/messages/ACK1/read", {"read_at": "2999-01-01T00:00:00Z"}, "read_at"),
        (Role.ADAPTER, f"{cases}/escalate", {"bot_id": "bot-1", "waiting_since": "0001-01-01T00:00:00Z",
                                             "reason": "asked for a human"}, "waiting_since"),
        (Role.AGENT, f"{cases}/escalate", {"bot_id": "bot-1", "reason": "asked for a human",
                                           "waiting_since": (datetime.now(UTC) - timedelta(days=2)).isoformat()},
         "waiting_since"),
    ]
    for role, path, body, field in attempts:
        with service.client(role) as client:
            refused(client.post(path, json=body), field, secret=secret)
    assert len(case_events(service, ref)) == version  # nothing recorded
    with service.client(Role.AGENT) as agent:  # within the bounds: recorded, the claim kept beside the recording
        said = datetime.now(UTC) - timedelta(seconds=30)
        answer = agent.post(f"{cases}/responses", json={"body": "Done.", "answers": ["Q1"],
                                                        "occurred_at": said.isoformat()})
        assert answer.status_code == 201, answer.text
    response = case_events(service, ref)[-1]
    assert response.occurred_at == said and response.timestamp > said


# -- retention through tick: only a role that may erase ------------------------------------------------------


@pytest.fixture(scope="module")
def aged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, dict[str, str]]]:
    """A service whose policy keeps data 1 day, over a ledger where two customers' cases ended 3 days ago."""
    where = tmp_path_factory.mktemp("retention")
    database = str(where / "ledger.sqlite")
    policy_file = where / "policy.toml"
    policy_file.write_text(ResponsePolicy.default_text().replace('after_last_case = "5y"', 'after_last_case = "1d"'))
    ledger = CaseLedger(ledger_settings(database=database), clock=FakeClock(datetime.now(UTC) - timedelta(days=3)))
    customers = {}
    try:
        for name in ("ann", "bob"):
            out = ledger.record_contact(ContactDraft(channel="email", channel_message_id=f"{name}-1",
                                                     identity=Identity.parse(f"email:{name}@example.com"),
                                                     items=("Close my account",)))
            ledger.close_case(out.reference, actor=Actor.parse("agent:alice"), reason="done", notice="Closed.",
                              waive={"Q1": "done by phone"})
            customers[name] = out.customer_id
    finally:
        ledger.close()
    service = start_service(where, database=database, env={"CASELEDGER_POLICY": str(policy_file)})
    try:
        yield service, customers
    finally:
        stop_service(service)


def test_retention_through_tick_runs_only_for_a_role_that_may_erase_and_names_it(
    aged: tuple[Service, dict[str, str]],
) -> None:
    """Before: any principal that may tick (automation too) erased customers, in the name of system:caseledger."""
    service, customers = aged
    with service.client(Role.AUTOMATION) as bot:
        skipped = bot.post("/v1/tick", json={}).json()
    assert skipped["erased"] == [] and "automation" in skipped["retention_skipped"]
    with service.client(Role.SUPERVISOR) as supervisor:
        assert supervisor.post(f"/v1/customers/{customers['bob']}/hold", json={"reason": "litigation"}).status_code == 200
        first = supervisor.post("/v1/tick", json={}).json()
        assert first["erased"] == [customers["ann"]] and first["held"] == {customers["bob"]: "litigation"}
        assert supervisor.post(f"/v1/customers/{customers['bob']}/release", json={"reason": "over"}).status_code == 200
    with service.client(Role.ADMIN) as admin:
        assert admin.post("/v1/tick", json={}).json()["erased"] == [customers["bob"]]
    ledger = service.ledger()
    try:
        for name, principal in (("ann", "supervisor-1"), ("bob", "admin-1")):
            (erased,) = [e for e in ledger.history(customers[name]) if type(e).__name__ == "CustomerErased"]
            assert (erased.actor_id, erased.actor_authentication) == (principal, "token")
    finally:
        ledger.close()


def test_the_cli_refuses_tick_now_through_the_api(aged: tuple[Service, dict[str, str]], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from caseledger.cli.app import app

    service, _ = aged
    result = CliRunner().invoke(app, ["--api", service.url, "--token", service.tokens[Role.SUPERVISOR], "tick",
                                      "--now", FUTURE])
    assert result.exit_code == 2 and "its own clock" in " ".join(result.stderr.replace("│", " ").split())
