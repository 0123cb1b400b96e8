"""Every malformed input is a 4xx problem (RFC 9457), never a 500: the findings one by one, then hypothesis
driving every route of the OpenAPI schema with arbitrary JSON bodies, path parameters and headers."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caseledger.ledger.domain.permissions import PERMISSIONS, Role
from caseledger.ledger.domain.values import Attachment, ContactDraft, Identity
from caseledger.ledger.errors import ValidationError
from tests.support.service_server import Service, start_service, stop_service

SHA = "ab" * 32


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    running = start_service(tmp_path_factory.mktemp("malformed"))
    yield running
    stop_service(running)


@pytest.fixture(scope="module")
def ref(service: Service) -> str:
    body = {"channel": "email", "channel_message_id": f"m-{uuid.uuid4()}", "from": "email:jane@example.com",
            "subject": "Card blocked", "items": ["Why?", "When?"]}
    with service.client(Role.AGENT) as agent:
        answer = agent.post("/v1/contacts", json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["reference"])


def post_raw(service: Service, path: str, body: Any, role: Role = Role.SUPERVISOR) -> httpx.Response:
    """POST ``body`` as JSON escaped to ASCII: a lone surrogate travels as ``\\ud800``, as any JSON encoder may send it."""
    with service.client(role) as client:
        return client.post(path, content=json.dumps(body, ensure_ascii=True),
                           headers={"Content-Type": "application/json"})


def assert_problem(answer: httpx.Response, status: int = 400) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["status"] == status and answer.json()["detail"]


LONE = "\ud800"


def test_a_lone_surrogate_in_any_text_field_is_a_400(service: Service, ref: str) -> None:
    """Finding: a lone surrogate in any of 7 text fields was a 500 with a traceback."""
    contact = {"channel": "email", "channel_message_id": "m-s", "from": "email:s@example.com", "items": ["?"]}
    attachment = {"ref": "s3://a", "sha256": SHA, "size": 1, "media_type": "text/plain"}
    cases = [
        ("/v1/contacts", {**contact, "subject": f"a{LONE}b"}),
        ("/v1/contacts", {**contact, "body": LONE}),
        ("/v1/contacts", {**contact, "items": [f"why{LONE}"]}),
        ("/v1/contacts", {**contact, "channel_message_id": f"m-{LONE}"}),
        ("/v1/contacts", {**contact, "metadata": {"k": LONE}}),
        ("/v1/contacts", {**contact, "customer_id": f"c{LONE}"}),
        ("/v1/contacts", {**contact, "attachments": [{**attachment, "filename": f"f{LONE}.txt"}]}),
        ("/v1/contacts", {**contact, "attachments": [{**attachment, "ref": f"s3://{LONE}"}]}),
        (f"/v1/cases/{ref}/responses", {"body": f"ok{LONE}", "answers": []}),
        (f"/v1/cases/{ref}/items/Q2/waive", {"reason": LONE}),
        (f"/v1/cases/{ref}/promises", {"channel": "email", "kind": "callback", "terms": LONE,
                                        "due_at": "2099-01-01T00:00:00Z"}),
        (f"/v1/cases/{ref}/status", {"to": "in_progress", "reason": LONE, "notice": "n"}),
        (f"/v1/cases/{ref}/handoff", {"note": LONE}),
        (f"/v1/cases/{ref}/assign", {"assignee": f"bob{LONE}"}),
    ]
    for path, body in cases:
        answer = post_raw(service, path, body, role=Role.AGENT)
        assert_problem(answer)
        assert "surrogate" in answer.json()["detail"], answer.text
    assert "Traceback" not in service.log()


def test_the_domain_refuses_lone_surrogates_so_intake_refuses_them_with_a_reason() -> None:
    good = {"channel": "email", "channel_message_id": "m-1", "identity": Identity.parse("email:a@b.example"),
            "items": ("Why?",)}
    for field, value in (("subject", LONE), ("body", LONE), ("items", (f"a{LONE}",)), ("channel_message_id", LONE),
                         ("metadata", {"k": LONE}), ("customer_id", LONE), ("segment", LONE), ("category", LONE)):
        with pytest.raises(ValidationError, match="surrogate"):
            ContactDraft(**{**good, field: value})
    with pytest.raises(ValidationError, match="surrogate"):
        Identity.parse(f"handle:x{LONE}")
    with pytest.raises(ValidationError, match="surrogate"):
        Attachment(ref="s3://inbox/r", sha256=SHA, size=1, media_type="text/plain", filename=LONE)


def test_an_attachment_size_must_fit_an_avro_long(service: Service) -> None:
    """Finding: an attachment size >= 2^63 was a 500."""
    for size in (2**63, 2**64 + 5, 10**30):
        body = {"channel": "email", "channel_message_id": f"m-{uuid.uuid4()}", "from": "email:a@b.example",
                "items": ["?"], "attachments": [{"ref": "s3://a", "sha256": SHA, "size": size,
                                                 "media_type": "application/pdf"}]}
        assert_problem(post_raw(service, "/v1/contacts", body, role=Role.AGENT))
    with pytest.raises(ValidationError, match="2\\^63"):
        Attachment(ref="s3://inbox/r", sha256=SHA, size=2**63, media_type="text/plain")


def test_a_huge_last_event_id_is_a_400(service: Service, ref: str) -> None:
    """Finding: a 5,000-digit Last-Event-ID was a 500."""
    headers = {"Authorization": f"Bearer {service.tokens[Role.AGENT]}", "Last-Event-ID": "9" * 5000}
    with httpx.stream("GET", f"{service.url}/cases/{ref}/events", headers=headers, timeout=10) as answer:
        answer.read()
        assert_problem(answer)


# -- every route, arbitrary input ------------------------------------------------------------------------------

_text = st.text(st.characters(codec=None, exclude_categories=[]), max_size=20)  # surrogates and controls too
_json = st.recursive(st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats(allow_nan=False) | _text,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
                     max_leaves=6)
_nasty = st.sampled_from([LONE, f"a{LONE}b", "\udfff", "\x00", "line\r\nbreak", "\u202eevil", "😀", "x" * 300])
_times = st.sampled_from(["2026-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59+14:00",
                          "2026-13-45T25:61:00Z", "2026-01-01", "yesterday", "2026-01-01T00:00:00"])


# Values a well-formed request would carry, by property name: most examples get past validation into the ledger.
_PLAUSIBLE: dict[str, list[Any]] = {
    "channel": ["email", "phone", "chat", "letter"], "from": ["email:jane@example.com", "phone:+33612345678"],
    "channel_message_id": ["m-1", "m-2"], "items": [["Why?"], ["Why?", "When?"]], "answers": [["Q1"], []],
    "kind": ["callback", "refund"], "to": ["in_progress", "waiting_customer", "resolved"], "role": ["agent", "admin"],
    "name": ["fuzz-1", "agent-1"], "rule": ["limits"], "action": ["lower_card_limit", "send_message"],
    "due_at": ["2099-01-01T00:00:00Z"], "delivered_at": ["2026-01-01T00:00:00Z"], "waiting_since": ["2026-01-01T00:00:00Z"],
    "locale": ["fr_FR", ""], "time_zone": ["Europe/Paris", ""], "case_reference": [None],
}


def _mostly(usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any], *, out_of: int = 4) -> st.SearchStrategy[Any]:
    """``usual``, but ``other`` once in ``out_of`` (``st.one_of`` would not weigh a strategy given twice)."""
    # The last choice is the rare one: hypothesis draws (and shrinks towards) the first more often.
    return st.sampled_from(range(out_of)).flatmap(lambda i: other if i == out_of - 1 else usual)


def _value(schema: dict[str, Any], components: dict[str, Any], name: str = "") -> st.SearchStrategy[Any]:
    """A value of roughly the schema's shape (often valid, often not)."""
    plausible = st.sampled_from(_PLAUSIBLE[name]) if name in _PLAUSIBLE else None
    if "$ref" in schema:
        return _body(components[schema["$ref"].rsplit("/", 1)[1]], components)
    if "anyOf" in schema:
        shaped = st.one_of(*[_value(s, components) for s in schema["anyOf"]])
    elif schema.get("type") == "string":
        words = st.sampled_from(["email", "Q1", "P1", "ACK1", "X1", "r", "agent-1", "email:jane@example.com", ""])
        shaped = (_times if schema.get("format") == "date-time" else words) | _text | _nasty
    elif schema.get("type") == "integer":
        shaped = st.integers(0, 10) | st.integers(-(2**70), 2**70)
    elif schema.get("type") == "boolean":
        shaped = st.booleans()
    elif schema.get("type") == "array":
        shaped = st.lists(_value(schema.get("items", {}), components), max_size=3)
    elif schema.get("type") == "object":
        shaped = st.dictionaries(_text, _text, max_size=3)
    else:
        shaped = _json
    return _mostly(plausible, shaped) if plausible is not None else shaped


def _body(model: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy[Any]:
    properties = model.get("properties", {})
    required = set(model.get("required", ()))

    def field(name: str, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
        return _mostly(_value(schema, components, name), _json, out_of=10)

    shaped = st.fixed_dictionaries({n: field(n, s) for n, s in properties.items() if n in required},
                                   optional={n: field(n, s) for n, s in properties.items() if n not in required})
    return _mostly(shaped, _json)


def _routes(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, operation) for path, methods in schema["paths"].items()
            for method, operation in methods.items()]


@st.composite
def _requests(draw: Any, schema: dict[str, Any], ref: str, tokens: dict[Role, str]) -> dict[str, Any]:
    method, path, operation = draw(st.sampled_from(_routes(schema)))
    names = {"reference": [ref, "CL-AAAAA-AAAAA"], "customer": ["email:jane@example.com"],
             "item_id": ["Q1", "Q2"], "promise_id": ["P1"], "proposal_id": ["X1"], "message_id": ["ACK1"],
             "name": ["nobody", "fuzz-1"]}  # never a principal the test signs in with

    def segment(name: str) -> str:
        value = draw(_mostly(st.sampled_from(names.get(name, ["x"])), _text | _nasty, out_of=6))
        return quote(value.encode("utf-8", "surrogatepass"), safe="")

    url = re.sub(r"\{(\w+)\}", lambda m: segment(m.group(1)), path)
    query = {p["name"]: draw(_value(p.get("schema", {}), {}).map(str)) for p in operation.get("parameters", [])
             if p.get("in") == "query" and draw(st.booleans())}
    body = None
    if "requestBody" in operation:
        content = operation["requestBody"]["content"]["application/json"]["schema"]
        body = draw(_value(content, schema["components"]["schemas"]))
    latin = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=30)
    operation_name = operation.get("x-operation")
    may = [r for r in Role if operation_name in {o.value for o in PERMISSIONS[r]}] or list(Role)
    valid = st.sampled_from([f"Bearer {tokens[r]}" for r in may])
    junk = latin | latin.map(lambda t: f"Bearer {t}")
    headers = {"Authorization": draw(valid if draw(st.integers(0, 9)) < 8 else junk)}
    headers["Content-Type"] = draw(_mostly(st.just("application/json"), st.sampled_from(
        ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"]), out_of=8))
    for name, values in (("Idempotency-Key", latin), ("Last-Event-ID", st.text("0123456789", max_size=40) | latin)):
        if draw(st.booleans()):
            headers[name] = draw(values)
    return {"method": method, "url": url, "params": query, "body": body, "headers": headers}


def test_no_route_answers_5xx_to_arbitrary_input(service: Service, ref: str) -> None:
    drive_every_route(service, ref, examples=500)


@pytest.mark.postgres
def test_no_route_answers_5xx_to_arbitrary_input_on_postgresql(tmp_path: Path, postgres: Any) -> None:
    running = start_service(tmp_path, database=postgres.new_database())
    try:
        body = {"channel": "email", "channel_message_id": "m-pg", "from": "email:jane@example.com", "items": ["Why?"]}
        with running.client(Role.AGENT) as agent:
            ref = agent.post("/v1/contacts", json=body).json()["reference"]
        drive_every_route(running, ref, examples=150)
    finally:
        stop_service(running)


def drive_every_route(service: Service, ref: str, *, examples: int) -> None:
    with service.client(Role.ADMIN) as admin:
        schema = admin.get("/openapi.json").json()
    assert len(_routes(schema)) > 40
    seen: dict[int, int] = {}

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(request=_requests(schema, ref, service.tokens))
    def drive(request: dict[str, Any]) -> None:
        content = json.dumps(request["body"], ensure_ascii=True) if request["body"] is not None else None
        with httpx.Client(base_url=service.url, timeout=30) as client, client.stream(
                request["method"], request["url"] + "?" + "&".join(
                    f"{k}={quote(v.encode('utf-8', 'surrogatepass'), safe='')}" for k, v in request["params"].items()),
                content=content,
                headers={k: (v.strip(" \t") or "x").encode("latin-1") for k, v in request["headers"].items()}) as answer:
            if not answer.headers.get("content-type", "").startswith("text/event-stream"):
                answer.read()
            seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
            assert answer.status_code < 500, (request, answer.status_code, answer.text if answer.is_closed else "")

    drive()
    print(sorted(seen.items()))
    assert "Traceback" not in service.log()


def test_an_intake_record_carrying_a_surrogate_is_refused_with_a_reason() -> None:
    """The Kafka intake refuses such text too: the bytes of an encoded surrogate are not UTF-8 (the worker
    records the refusal as an IntakeRejected with this reason), and a draft carrying one is never built."""
    from caseledger.ledger.errors import SchemaError
    from caseledger.ledger.intake.records import IntakeCodec

    codec = IntakeCodec()
    draft = ContactDraft(channel="email", channel_message_id="m-1", identity=Identity.parse("email:a@b.example"),
                         items=("Why?",), subject="QQQ")
    data = codec.encode(draft, adapter="mail-1")
    forged = data.replace(b"QQQ", "\ud800".encode("utf-8", "surrogatepass"))  # the same length: still Avro
    with pytest.raises((SchemaError, ValidationError)) as refused:
        codec.decode(forged)
    assert str(refused.value)


def test_the_audit_routes_answer_bad_input_with_problems(service: Service, ref: str) -> None:
    """The auditor's routes (issue 26): a size that is no size, a proof between sizes the tree has not, a seal or a
    kept note that cannot be read, an identity as the customer: each a 4xx problem saying what to fix."""
    with service.client(Role.AUDITOR) as auditor:
        for path in ("/v1/audit/checkpoints/abc", "/v1/audit/checkpoints/-1", f"/v1/audit/checkpoints/{2**64}",
                     "/v1/audit/proofs/consistency?old=0&new=1", "/v1/audit/proofs/consistency?old=2&new=1",
                     "/v1/audit/proofs/consistency?old=1&new=999999999", "/v1/audit/proofs/consistency?old=x&new=1",
                     "/v1/audit/proofs/inclusion", "/v1/audit/verify?seal=12:zz",
                     "/v1/audit/verify?checkpoint=%25%25%25&key=a%2B00000000%2BAAAA",
                     "/v1/audit/verify?checkpoint=Y2FzZWxlZGdlcgo", "/v1/audit/verify?since=2026-11-01T00:00",
                     "/v1/audit/verify?since=2026-11-01T00:00Z&until=2026-10-01T00:00Z",
                     "/v1/audit/key?format=xml"):
            assert_problem(auditor.get(path))
        # No signing key in this service: the key and checkpoints are not found, with what to do.
        assert_problem(auditor.get("/v1/audit/key"), 404)
        assert_problem(auditor.get("/v1/audit/checkpoints/latest"), 404)
        assert_problem(auditor.get("/v1/audit/checkpoints/7"), 404)
        assert_problem(auditor.get("/v1/audit/proofs/inclusion?customer=email:jane@example.com"))
        assert "identity-in-url" in auditor.get("/v1/audit/proofs/inclusion?customer=email%3Ajane%40example.com"
                                                ).json()["type"]
        assert_problem(auditor.get("/v1/audit/proofs/inclusion?customer=cus-nobody"), 404)
