"""The HTTP API against a real ``caseledger serve`` on loopback: principals, the role matrix, problems,
idempotency, and the actor of every event being the authenticated principal."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from caseledger.ledger.domain.permissions import PERMISSIONS, Operation, Role, allowed
from caseledger.ledger.domain.values import Channel
from tests.support.service_server import Running, Service, add_adapter_key, running_service

O = Operation  # noqa: E741
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    for running in running_service(tmp_path_factory.mktemp("service")):
        # adapter-1 reports deliveries and reads for the channels of its adapter key (ledger.delivery_reports).
        add_adapter_key(running.service, "adapter-1", [c.value for c in Channel])
        yield running


@pytest.fixture(scope="module")
def service(running: Running) -> Service:
    return running.service


def new_contact(service: Service, *, role: Role = Role.AGENT, message_id: str | None = None, **fields: Any) -> dict[str, Any]:
    body = {"channel": "email", "channel_message_id": message_id or f"m-{uuid.uuid4()}",
            "from": "email:jane@example.com", "subject": "Card blocked",
            "items": ["Why is my card blocked?", "When can I use it again?"], **fields}
    with service.client(role) as client:
        answer = client.post("/v1/contacts", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def soon(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def request_for(operation: Operation, ref: str, customer: str) -> tuple[str, str, dict[str, Any] | None]:
    """(method, path, JSON body) of a well-formed request for ``operation`` on case ``ref`` of ``customer`` (an id)."""
    c = f"/v1/cases/{ref}"
    table: dict[Operation, tuple[str, str, dict[str, Any] | None]] = {
        O.CONTACT_RECORD: ("POST", "/v1/contacts", {
            "channel": "web_form", "channel_message_id": f"wf-{uuid.uuid4()}", "from": "email:max@example.com",
            "items": ["Where is my parcel?"]}),
        O.CASE_READ: ("GET", c, None),
        O.CONTACT_RECEIPT_READ: ("GET", f"{c}/contacts/C1/receipt", None),
        # Customers by customer id: an identity never goes in a URL (issue 24); jane's is a case's customer_id.
        O.HISTORY_READ: ("GET", f"/v1/customers/{customer}/history", None),
        O.HISTORY_EXPORT: ("GET", f"/v1/customers/{customer}/export?format=json", None),
        O.RESPOND: ("POST", f"{c}/responses", {"body": "We unblocked it.", "answers": ["Q1"]}),
        O.ITEM_WAIVE: ("POST", f"{c}/items/Q2/waive", {"reason": "answered by phone"}),
        O.PROMISE_MAKE: ("POST", f"{c}/promises", {"channel": "email", "kind": "callback", "terms": "call back",
                                                   "due_at": soon(days=2)}),
        O.PROMISE_KEEP: ("POST", f"{c}/promises/P1/keep", {"evidence": "called"}),
        O.PROMISE_WITHDRAW: ("POST", f"{c}/promises/P1/withdraw", {"reason": "r", "notice": "n"}),
        O.PROMISE_BREAK: ("POST", f"{c}/promises/P1/break", {"reason": "r"}),
        O.CASE_STATUS: ("POST", f"{c}/status", {"to": "on_hold", "reason": "r", "notice": "n"}),
        O.CASE_CLOSE: ("POST", f"{c}/close", {"reason": "r", "notice": "n"}),
        O.CASE_CANCEL: ("POST", f"{c}/cancel", {"reason": "r", "notice": "n"}),
        O.CASE_REOPEN: ("POST", f"{c}/reopen", {"reason": "r", "notice": "n"}),
        O.CASE_ASSIGN: ("POST", f"{c}/assign", {"assignee": "alice"}),
        O.CASE_HANDOFF: ("POST", f"{c}/handoff", {"to": "bob", "note": "over to you"}),
        O.CASE_ESCALATE: ("POST", f"{c}/escalate", {"bot_id": "bot-1", "waiting_since": soon(minutes=-5),
                                                    "reason": "customer asked for a human"}),
        O.ACTION_PROPOSE: ("POST", f"{c}/actions", {"rule": "limits", "action": "lower_card_limit",
                                                    "params": {"limit": "500"}, "rationale": "3 declines"}),
        O.ACTION_APPROVE: ("POST", f"{c}/actions/X1/approve", {"note": "ok"}),
        O.ACTION_REJECT: ("POST", f"{c}/actions/X1/reject", {"reason": "no"}),
        O.ACTION_EXECUTED: ("POST", f"{c}/actions/X1/executed", {"result": "done"}),
        O.MESSAGE_DELIVERED: ("POST", f"{c}/messages/ACK1/delivered", {"delivered_at": soon(minutes=-1)}),
        O.MESSAGE_FAILED: ("POST", f"{c}/messages/ACK1/failed", {"reason": "bounced"}),
        O.MESSAGE_READ: ("POST", f"{c}/messages/ACK1/read", {}),
        O.OUTBOUND_READ: ("GET", "/v1/outbound", None),
        O.TICK: ("POST", "/v1/tick", {}),
        O.OVERDUE_READ: ("GET", "/v1/overdue", None),
        O.METRICS_READ: ("GET", "/v1/metrics", None),
        O.AUDIT_VERIFY: ("GET", "/v1/audit/verify", None),
        O.AUDIT_CHECKPOINT_READ: ("GET", "/v1/audit/checkpoints/latest", None),
        O.AUDIT_PROOF_READ: ("GET", "/v1/audit/proofs/consistency?old=1&new=1", None),
        O.INTAKE_KEPT_READ: ("GET", "/v1/intake/collisions", None),
        O.INTAKE_VERDICT_READ: ("POST", "/v1/intake/verdict", {"topic": "caseledger.intake", "partition": 0,
                                                               "offset": 0}),
        O.LOG_READ: ("GET", "/v1/log/checkpoint", None),  # the tiles: tests/unit/test_tlog_tiles.py
        O.PRINCIPALS_MANAGE: ("GET", "/v1/principals", None),
        # A customer nobody knows: the matrix is checked (403 or not) without erasing the module's customers.
        O.CUSTOMER_ERASE: ("POST", f"/v1/customers/cus-nobody-{uuid.uuid4().hex[:8]}/erase", {"reason": "r"}),
        O.CUSTOMER_HOLD: ("POST", f"/v1/customers/cus-nobody-{uuid.uuid4().hex[:8]}/hold", {"reason": "r"}),
        O.CUSTOMER_KEYS_READ: ("GET", f"/v1/customers/cus-nobody-{uuid.uuid4().hex[:8]}/keys", None),
        O.CUSTOMER_LOCALE: ("POST", f"/v1/customers/cus-nobody-{uuid.uuid4().hex[:8]}/locale",
                            {"locale": "fr_FR"}),
    }
    return table[operation]


# -- the matrix ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_every_role_may_do_exactly_what_the_matrix_says(service: Service, role: Role) -> None:
    """Every (role, operation) pair: refused with 403 exactly when the matrix says no, never 401 or 5xx."""
    contact = new_contact(service)
    ref = contact["reference"]
    with service.client(role) as client:
        for operation in Operation:
            method, path, body = request_for(operation, ref, contact["customer_id"])
            answer = client.request(method, path, json=body)
            if allowed(role, operation):
                assert answer.status_code not in (401, 403), (role, operation, answer.text)
                assert answer.status_code < 500, (role, operation, answer.text)
            else:
                assert answer.status_code == 403, (role, operation, answer.status_code, answer.text)
                assert answer.headers["content-type"].startswith("application/problem+json")
                problem = answer.json()
                assert problem["type"] == "urn:caseledger:problem:forbidden" and problem["exit_code"] == 2
                assert operation.value in problem["detail"]


def test_every_route_of_the_openapi_schema_names_an_operation_of_the_matrix(service: Service) -> None:
    """Finding: 11 GET routes lacked x-operation. Every route of the schema names its operation, or a documented
    marker: ``unauthenticated`` (/healthz only) or ``authenticated`` (any principal: whoami, the schema)."""
    with service.client(Role.AUDITOR) as client:
        schema = client.get("/openapi.json").json()
    markers = {o.value for o in Operation} | {"unauthenticated", "authenticated"}
    routes = [(path, method, op) for path, methods in schema["paths"].items() for method, op in methods.items()]
    missing = [(method, path) for path, method, op in routes if op.get("x-operation") not in markers]
    assert not missing, missing
    assert {path for path, _m, op in routes if op["x-operation"] == "unauthenticated"} == {"/healthz"}
    assert {"/cases/{reference}", "/cases/{reference}/events", "/v1/whoami", "/openapi.json"} <= schema["paths"].keys()
    # What the schema says is what the server does: without a token, only the unauthenticated route answers.
    for path, method, op in routes:
        url = path.replace("{", "").replace("}", "")  # any value will do for a path parameter
        answer = httpx.request(method.upper(), f"{service.url}{url}", json={} if method != "get" else None)
        if op["x-operation"] == "unauthenticated":
            assert answer.status_code == 200, (method, path)
        elif path in ("/cases/{reference}", "/"):  # the pages a browser opens: to the sign-in form
            assert answer.status_code == 303 and answer.headers["location"].startswith("/login"), (method, path)
        else:
            assert answer.status_code == 401, (method, path, answer.status_code)
    named = {op["x-operation"] for methods in schema["paths"].values() for op in methods.values()
             if "x-operation" in op}
    writes = {path for path, methods in schema["paths"].items() if "post" in methods}
    assert "/v1/contacts" in writes and "/v1/cases/{reference}/actions/{proposal_id}/approve" in writes
    # Every command of the CLI has its route (reads are checked by the matrix test above).
    commands = {o.value for o in Operation} - {"case.read", "history.read", "history.export", "overdue.read",
                                                "metrics.read", "audit.verify", "intake.kept.read"}
    assert commands <= named | {"principals.manage"}, commands - named


def test_no_docs_pages_and_the_schema_only_to_a_principal(service: Service) -> None:
    """Finding: /docs, /redoc and /openapi.json answered without a token (and the pages load a third-party CDN)."""
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert httpx.get(f"{service.url}{path}").status_code in (401, 404), path
    anonymous = httpx.get(f"{service.url}/openapi.json")
    assert anonymous.status_code == 401 and anonymous.json()["type"] == "urn:caseledger:problem:unauthenticated"
    for role in Role:
        with service.client(role) as client:
            assert client.get("/openapi.json").json()["info"]["title"] == "caseledger", role


def test_the_matrix_in_the_docs_is_the_one_in_the_code() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    roles = [r.value for r in Role]
    header = next(line for line in text.splitlines() if line.startswith("| operation |"))
    assert [c.strip() for c in header.strip("|").split("|")][1:] == roles
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^\| `([a-z.]+)` \|(.*)\|$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    assert set(rows) == {o.value for o in Operation}
    for operation in Operation:
        assert rows[operation.value] == ["yes" if allowed(Role(r), operation) else "" for r in roles], operation
    assert PERMISSIONS[Role.AUDITOR] <= {o for o in Operation if o.value.endswith((".read", ".export", ".verify"))}


# -- authentication ------------------------------------------------------------------------------------------


def test_missing_malformed_unknown_and_revoked_tokens_get_401(service: Service) -> None:
    ref = new_contact(service)["reference"]
    with service.client(Role.ADMIN) as admin:
        issued = admin.post("/v1/principals", json={"name": f"temp-{uuid.uuid4().hex[:8]}", "role": "agent"}).json()
    with service.client(token=issued["token"]) as client:
        assert client.get(f"/v1/cases/{ref}").status_code == 200
    with service.client(Role.ADMIN) as admin:
        assert admin.delete(f"/v1/principals/{issued['name']}").status_code == 200
    bad = {
        "missing": None,
        "not bearer": f"Basic {issued['token']}",
        "empty bearer": "Bearer",
        "malformed": "Bearer clt_tooshort",
        "garbage": "Bearer hello world",
        "unknown": "Bearer clt_" + "A" * 43,
        "revoked": f"Bearer {issued['token']}",
    }
    for why, header in bad.items():
        headers = {"Authorization": header} if header is not None else {}
        answer = httpx.get(f"{service.url}/v1/cases/{ref}", headers=headers)
        assert answer.status_code == 401, why
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.json()["type"] == "urn:caseledger:problem:unauthenticated"
        assert issued["token"] not in answer.text and "clt_AAAA" not in answer.text, why
    assert issued["token"] not in service.log()


def test_oidc_jwts_are_checked_against_the_jwks(running: Running) -> None:
    service, idp = running.service, running.idp
    ref = new_contact(service)["reference"]
    good = idp.token("carol", ["agent"])
    with service.client(token=good) as client:
        me = client.get("/v1/whoami").json()
        # The issuer's namespace (its label, from the issuer URL): never an issued principal's name.
        assert me["name"] == "idp.test.example/carol" and me["role"] == "agent" and me["authentication"] == "oidc"
        assert client.get(f"/v1/cases/{ref}").status_code == 200
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = {
        "expired": idp.token("carol", ["agent"], expires_in=-120),
        "wrongly signed": idp.token("carol", ["agent"], key=other_key),
        "unknown key id": idp.token("carol", ["agent"], kid="other"),
        "other audience": idp.token("carol", ["agent"], aud="someone-else"),
        "other issuer": idp.token("carol", ["agent"], iss="https://evil.example"),
        "no role": idp.token("carol", ["viewer"]),
        "two roles": idp.token("carol", ["agent", "admin"]),
        "tampered": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
    }
    for why, token in bad.items():
        answer = httpx.get(f"{service.url}/v1/cases/{ref}", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401, (why, answer.text)
        assert token not in answer.text
        assert token not in service.log(), why
    # An automation's JWT is an automation, whatever name it carries.
    with service.client(token=idp.token("agent-x", ["automation"])) as client:
        assert client.get("/v1/whoami").json()["actor"] == "automation:idp.test.example/agent-x"


# -- the actor is the principal --------------------------------------------------------------------------------


def test_the_actor_of_every_event_is_the_authenticated_principal(service: Service) -> None:
    outcome = new_contact(service, role=Role.ADAPTER)
    ref = outcome["reference"]
    with service.client(Role.AGENT) as agent:
        # A body naming another actor is refused, not obeyed.
        sneaky = agent.post(f"/v1/cases/{ref}/responses", json={"body": "x", "answers": ["Q1"],
                                                                 "actor": "agent:mallory"})
        assert sneaky.status_code == 400
        assert agent.post(f"/v1/cases/{ref}/responses", json={"body": "Done.", "answers": ["Q1"]}).status_code == 201
    ledger = service.ledger()
    try:
        case = ledger.get_case(ref)
        events = list(ledger.events.get(case.id))
    finally:
        ledger.close()
    opened = next(e for e in events if type(e).__name__ == "ContactReceived")
    assert (opened.actor_kind, opened.actor_authentication, opened.actor_principal) == (
        "customer", "token", "adapter-1")
    response = next(e for e in events if type(e).__name__ == "ResponseSent")
    assert (response.actor_kind, response.actor_id, response.actor_authentication, response.actor_principal) == (
        "agent", "agent-1", "token", None)


def test_automation_cannot_approve_its_own_proposal_over_http(running: Running) -> None:
    service, idp = running.service, running.idp
    ref = new_contact(service)["reference"]
    with service.client(Role.AUTOMATION) as bot:
        proposal = bot.post(f"/v1/cases/{ref}/actions", json={
            "rule": "limits", "action": "lower_card_limit", "params": {"limit": "500"}, "rationale": "declines"})
        assert proposal.status_code == 201
        pid = proposal.json()["proposal_id"]
        # Naming itself an agent in the body is refused; the role decides, and automation may not approve.
        assert bot.post(f"/v1/cases/{ref}/actions/{pid}/approve", json={"note": "", "actor": "agent:x"}
                        ).status_code in (400, 403)
        assert bot.post(f"/v1/cases/{ref}/actions/{pid}/approve", json={"note": "me"}).status_code == 403
    # An OIDC token of the automation with an agent-looking name is still an automation.
    with service.client(token=idp.token("agent-alice", ["automation"])) as fake:
        assert fake.post(f"/v1/cases/{ref}/actions/{pid}/approve", json={}).status_code == 403
    with service.client(Role.AGENT) as agent:
        assert agent.post(f"/v1/cases/{ref}/actions/{pid}/approve", json={"note": "checked"}).status_code == 200
    with service.client(Role.AGENT) as agent:
        case = agent.get(f"/v1/cases/{ref}").json()
    (decided,) = case["proposals"]
    assert decided["status"] == "approved" and decided["decided_by"] == "agent:agent-1"


def test_an_oidc_subject_never_acts_as_the_issued_principal_of_the_same_name(running: Running) -> None:
    """Finding: a JWT with sub=automation-1 (the issued automation's name), role agent, approved that automation's
    own proposal, recorded as agent:automation-1. OIDC names live in the issuer's namespace."""
    service, idp = running.service, running.idp
    ref = new_contact(service)["reference"]
    with service.client(Role.AUTOMATION) as bot:
        pid = bot.post(f"/v1/cases/{ref}/actions", json={
            "rule": "limits", "action": "lower_card_limit", "params": {"limit": "500"}, "rationale": "declines"},
        ).json()["proposal_id"]
    namesake = idp.token("automation-1", ["agent"])
    with service.client(token=namesake) as fake:
        me = fake.get("/v1/whoami").json()
        assert me["name"] != "automation-1" and me["actor"] == "agent:idp.test.example/automation-1"
        approved = fake.post(f"/v1/cases/{ref}/actions/{pid}/approve", json={"note": "mine"})
    assert approved.status_code == 200, approved.text  # another principal: an agent may approve an automation
    with service.client(Role.AGENT) as agent:
        (decided,) = agent.get(f"/v1/cases/{ref}").json()["proposals"]
    assert decided["decided_by"] == "agent:idp.test.example/automation-1"
    assert decided["decided_by"] != "agent:automation-1"
    # One OIDC subject holding both roles is still one principal: it may not approve what it proposed.
    with service.client(token=idp.token("bot-9", ["automation"])) as bot:
        pid = bot.post(f"/v1/cases/{ref}/actions", json={
            "rule": "limits", "action": "lower_card_limit", "params": {"limit": "400"}, "rationale": "declines"},
        ).json()["proposal_id"]
    with service.client(token=idp.token("bot-9", ["agent"])) as same:
        refused = same.post(f"/v1/cases/{ref}/actions/{pid}/approve", json={"note": "self"})
        assert refused.status_code == 422 and "another human must approve" in refused.json()["detail"], refused.text
        assert same.post(f"/v1/cases/{ref}/actions/{pid}/reject", json={"reason": "self"}).status_code == 422


@pytest.mark.parametrize("issuer, label", [
    ("https://idp.test.example", "idp.test.example"),
    ("https://login.example.com/tenant-1/v2.0/", "login.example.com.tenant-1.v2.0"),
    ("http://127.0.0.1:8080/realms/bank", "127.0.0.1-8080.realms.bank"),
])
def test_oidc_names_carry_the_issuer_label_and_issued_names_cannot(issuer: str, label: str) -> None:
    from caseledger.ledger.access.principals import OidcSettings, check_name
    from caseledger.ledger.errors import ConfigurationError, ValidationError

    settings = OidcSettings.resolve(jwks_url="https://x/jwks", issuer=issuer, audience="a")
    assert settings is not None and settings.label == label
    name = settings.principal_name("alice")
    assert name == f"{label}/alice"
    with pytest.raises(ValidationError):
        check_name(name)  # no issued principal can ever be named so
    chosen = OidcSettings.resolve(jwks_url="https://x/jwks", issuer=issuer, audience="a", label="corp-idp")
    assert chosen is not None and chosen.principal_name("alice") == "corp-idp/alice"
    with pytest.raises(ConfigurationError, match="CASELEDGER_OIDC_LABEL"):
        OidcSettings.resolve(jwks_url="https://x/jwks", issuer=issuer, audience="a", label="bad/label")


# -- problems, limits --------------------------------------------------------------------------------------------


def test_errors_are_problem_details_with_the_cli_exit_code(service: Service) -> None:
    ref = new_contact(service)["reference"]
    with service.client(Role.AGENT) as agent:
        missing = agent.get("/v1/cases/CL-AAAAA-AAAAA")
        invalid = agent.post("/v1/contacts", json={"channel": "pigeon", "channel_message_id": "x",
                                                   "from": "email:a@b.example", "items": ["?"]})
        refused = agent.post(f"/v1/cases/{ref}/close", json={"reason": "r", "notice": "n"})
        no_json = agent.post(f"/v1/cases/{ref}/close", content=b"{", headers={"Content-Type": "application/json"})
    for answer, status, slug in ((missing, 404, "not-found"), (invalid, 400, "invalid"), (refused, 422, "refused"),
                                 (no_json, 400, "invalid")):
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        body = answer.json()
        assert body["type"] == f"urn:caseledger:problem:{slug}" and body["status"] == status
        assert body["exit_code"] == 2 and body["detail"]


def test_oversized_requests_are_refused_and_no_cors_is_offered(service: Service) -> None:
    with service.client(Role.AGENT) as agent:
        big = agent.post("/v1/contacts", content=b"{" + b" " * 2_000_000 + b"}",
                         headers={"Content-Type": "application/json"})
        assert big.status_code == 413 and big.json()["type"] == "urn:caseledger:problem:too-large"
        preflight = agent.options("/v1/contacts", headers={"Origin": "https://evil.example",
                                                           "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers
        plain = agent.get("/v1/whoami", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in plain.headers


# -- idempotency -------------------------------------------------------------------------------------------------


def _event_count(service: Service) -> int:
    ledger = service.ledger()
    try:
        return int(ledger.recorder.max_notification_id() or 0)
    finally:
        ledger.close()


def test_a_retried_write_returns_the_first_response_and_records_nothing_twice(service: Service) -> None:
    ref = new_contact(service)["reference"]
    key = str(uuid.uuid4())
    body = {"channel": "phone", "kind": "callback", "terms": "call back tomorrow", "due_at": soon(days=1)}
    with service.client(Role.AGENT) as agent:
        first = agent.post(f"/v1/cases/{ref}/promises", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == 201
        before = _event_count(service)
        again = agent.post(f"/v1/cases/{ref}/promises", json=body, headers={"Idempotency-Key": key})
        assert (again.status_code, again.json()) == (201, first.json())
        assert again.headers["idempotency-replayed"] == "true"
        assert _event_count(service) == before
        other = agent.post(f"/v1/cases/{ref}/promises", json={**body, "terms": "other"},
                           headers={"Idempotency-Key": key})
        assert other.status_code == 422
        assert other.json()["type"] == "urn:caseledger:problem:idempotency-key-reused"
        assert len(agent.get(f"/v1/cases/{ref}").json()["promises"]) == 1


def test_concurrent_retries_with_one_key_record_once(service: Service) -> None:
    ref = new_contact(service)["reference"]
    key = str(uuid.uuid4())
    answers: list[httpx.Response] = []

    def send() -> None:
        with service.client(Role.AGENT) as agent:
            answers.append(agent.post(f"/v1/cases/{ref}/responses", json={"body": "Refunded.", "answers": ["Q1"]},
                                      headers={"Idempotency-Key": key}))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [a for a in answers if a.status_code == 201]
    assert ok and all(a.status_code in (201, 409) for a in answers), [a.text for a in answers]
    assert len({a.json()["response_id"] for a in ok}) == 1
    with service.client(Role.AGENT) as agent:
        case = agent.get(f"/v1/cases/{ref}").json()
    assert len([m for m in case["messages"] if str(m.get("id", m.get("message_id", ""))).startswith("R")]) <= 1
    ledger = service.ledger()
    try:
        events = [type(e).__name__ for e in ledger.events.get(ledger.get_case(ref).id)]
    finally:
        ledger.close()
    assert events.count("ResponseSent") == 1


def test_a_failed_write_releases_its_key(service: Service) -> None:
    ref = new_contact(service)["reference"]
    key = str(uuid.uuid4())
    with service.client(Role.AGENT) as agent:
        # Q9 does not exist: refused, nothing recorded, and the key is free for the corrected request.
        wrong = agent.post(f"/v1/cases/{ref}/items/Q9/waive", json={"reason": "r"}, headers={"Idempotency-Key": key})
        assert wrong.status_code in (404, 422)
        right = agent.post(f"/v1/cases/{ref}/items/Q9/waive", json={"reason": "r"}, headers={"Idempotency-Key": key})
        assert right.status_code == wrong.status_code  # ran again, not replayed
        assert "idempotency-replayed" not in right.headers


def test_a_collision_is_recorded_once_and_its_problem_replayed(service: Service) -> None:
    message_id = f"m-{uuid.uuid4()}"
    new_contact(service, message_id=message_id)
    key = str(uuid.uuid4())
    body = {"channel": "email", "channel_message_id": message_id, "from": "email:other@example.com",
            "items": ["Something else"]}
    with service.client(Role.ADAPTER) as adapter:
        first = adapter.post("/v1/contacts", json=body, headers={"Idempotency-Key": key})
        again = adapter.post("/v1/contacts", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 409
    assert first.json()["type"] == "urn:caseledger:problem:collision" and first.json()["exit_code"] == 6
    assert again.json() == first.json() and again.headers["idempotency-replayed"] == "true"
    ledger = service.ledger()
    try:
        mine = [e for e in ledger.collisions() if e.channel_message_id == message_id]
    finally:
        ledger.close()
    assert len(mine) == 1


def test_a_supervisor_erases_a_customer_through_the_api_and_an_agent_may_not(service: Service) -> None:
    """Erasure over HTTP: refused to agents, refused under a hold, done once, then a no-op; keys never shown."""
    contact = new_contact(service, **{"from": f"email:erase-{uuid.uuid4().hex[:8]}@example.com",
                                      "subject": "Secret subject 7Q"})
    ref, who = contact["reference"], contact["customer_id"]  # by customer id: no identity in a URL (issue 24)
    with service.client(Role.AGENT) as agent:
        refused = agent.post(f"/v1/customers/{who}/erase", json={"reason": "art. 17"})
        assert refused.status_code == 403 and "customer.erase" in refused.json()["detail"]
    with service.client(Role.SUPERVISOR) as supervisor:
        assert supervisor.post(f"/v1/customers/{who}/hold", json={"reason": "litigation 7"}).status_code == 200
        held = supervisor.post(f"/v1/customers/{who}/erase", json={"reason": "art. 17"})
        assert held.status_code == 422 and "litigation 7" in held.json()["detail"], held.text
        assert supervisor.post(f"/v1/customers/{who}/release", json={"reason": "over"}).status_code == 200
        erased = supervisor.post(f"/v1/customers/{who}/erase", json={"reason": "art. 17"},
                                 headers={"Idempotency-Key": "erase-1"})
        assert erased.status_code == 200 and erased.json()["erased"], erased.text
        again = supervisor.post(f"/v1/customers/{who}/erase", json={"reason": "art. 17"})
        assert again.json()["already_erased"] is True
        keys = supervisor.get(f"/v1/customers/{who}/keys").json()
        assert keys["keys"] and all(k["destroyed_at"] for k in keys["keys"]) and "wrapped" not in str(keys)
        case = supervisor.get(f"/v1/cases/{ref}").json()
        assert "Secret subject 7Q" not in str(case) and "[erased]" in str(case)


# -- delivery and read reports over HTTP (ledger.delivery_reports) -------------------------------------------------------


def _register_adapter(service: Service, channels: list[str]) -> str:
    """An adapter principal and an adapter key of the same name for ``channels``; returns its token."""
    name = f"gw-{uuid.uuid4().hex[:8]}"
    with service.client(Role.ADMIN) as admin:
        token = admin.post("/v1/principals", json={"name": name, "role": "adapter"}).json()["token"]
    if channels:
        add_adapter_key(service, name, channels)
    return str(token)


def _case_events(service: Service, ref: str, name: str) -> list[Any]:
    ledger = service.ledger()
    try:
        return [e for e in ledger.events.get(ledger.get_case(ref).id) if type(e).__name__ == name]
    finally:
        ledger.close()


def test_an_adapter_principal_reports_only_for_its_channels_and_reads_are_the_customers(service: Service) -> None:
    """Over HTTP, the same rules as on the intake topic: channels of the adapter key of the principal's name."""
    outcome = new_contact(service)  # an e-mail case
    ref, customer_id = outcome["reference"], outcome["customer_id"]
    chat_only = _register_adapter(service, ["chat"])
    with service.client(token=chat_only) as chat:
        for verb, body in (("delivered", {"delivered_at": soon(minutes=-1)}), ("read", {})):
            refused = chat.post(f"/v1/cases/{ref}/messages/ACK1/{verb}", json=body)
            assert refused.status_code == 403, refused.text
            assert "forbidden channel" in refused.json()["detail"] and "email" in refused.json()["detail"]
    with service.client(token=_register_adapter(service, [])) as unregistered:
        refused = unregistered.post(f"/v1/cases/{ref}/messages/ACK1/read", json={})
        assert refused.status_code == 403 and "caseledger adapters add" in refused.json()["detail"], refused.text
    with service.client(token=_register_adapter(service, ["email"])) as mail:
        assert mail.post(f"/v1/cases/{ref}/messages/ACK1/read", json={}).status_code == 200
        again = mail.post(f"/v1/cases/{ref}/messages/ACK1/read", json={})
        assert again.status_code == 422 and "already recorded as read" in again.json()["detail"]
        own = mail.post(f"/v1/cases/{ref}/messages/C1/read", json={})
        assert own.status_code == 422 and "customer's own contact" in own.json()["detail"]
    assert _case_events(service, ref, "MessageDelivered") == []
    (read,) = _case_events(service, ref, "MessageRead")
    assert (read.reader_kind, read.reader_id, read.actor_kind, read.actor_id, read.actor_authentication) == (
        "customer", customer_id, "customer", customer_id, "token")
    assert read.actor_principal.startswith("gw-")


def test_an_agent_reports_its_own_reading_of_the_customers_contacts_once(service: Service) -> None:
    ref = new_contact(service)["reference"]
    with service.client(Role.AGENT) as agent:
        theirs = agent.post(f"/v1/cases/{ref}/messages/ACK1/read", json={})
        assert theirs.status_code == 422 and "only the customer reads it" in theirs.json()["detail"]
        assert agent.post(f"/v1/cases/{ref}/messages/C1/read", json={}).status_code == 200
        assert agent.post(f"/v1/cases/{ref}/messages/C1/read", json={}).status_code == 422
    with service.client(Role.SUPERVISOR) as supervisor:
        assert supervisor.post(f"/v1/cases/{ref}/messages/C1/read", json={}).status_code == 200
    reads = _case_events(service, ref, "MessageRead")
    assert [(e.message_id, e.reader_kind, e.reader_id) for e in reads] == [
        ("C1", "agent", "agent-1"), ("C1", "agent", "supervisor-1")]


def test_only_the_adapter_role_reports_as_system() -> None:
    """Reporter.of_principal takes a principal acting as system:NAME for an adapter: no other role that may
    report deliveries or reads acts as system."""
    from caseledger.ledger.domain.permissions import ACTOR_KIND
    from caseledger.ledger.domain.values import ActorKind

    reporters = {r for r in Role if allowed(r, O.MESSAGE_DELIVERED) or allowed(r, O.MESSAGE_READ)}
    assert {r for r in reporters if ACTOR_KIND[r] is ActorKind.SYSTEM} == {Role.ADAPTER}
