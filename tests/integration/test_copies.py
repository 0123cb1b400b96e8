"""Issue 24, "no copy forgotten": the copies of a customer's data kept beside the events.

Idempotency answers (sealed, keyed, expiring), customers' acts named by pseudonym, senders known only
from a collision or a rejection reached by erasure and retention, identities out of URL paths, and
reasons that are codes, not free text.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from caseledger.ledger.access.principals import PrincipalRegistry
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.service.api import ServiceState
from caseledger.ledger.service.asgi import create_app
from caseledger.ledger.service.idempotency import request_digest
from caseledger.ledger.settings import LedgerSettings
from caseledger.ledger.store_ports import IDEMPOTENCY_WINDOW
from tests.support.environment import ledger_settings
from tests.support.personal_data import BODY, ITEM, JANE, SUBJECT


def service(database: str, role: str = "supervisor") -> tuple[LedgerSettings, ServiceState, dict[str, str]]:
    settings = ledger_settings(database=database)
    setup = CaseLedger(settings)
    token = PrincipalRegistry(setup.principal_store).add("caller-1", role).token
    setup.close()
    return settings, ServiceState(settings), {"Authorization": f"Bearer {token}"}


def jane_body(message_id: str) -> dict[str, Any]:
    return {"channel": "email", "channel_message_id": message_id, "from": str(JANE), "subject": SUBJECT,
            "body": BODY, "items": [ITEM]}


def idempotency_rows(database: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database) as conn:
        return conn.execute("SELECT key_id, request_sha256, status, response, created_at "
                            "FROM caseledger_idempotency").fetchall()


# -- idempotency answers --------------------------------------------------------------------------------------


def test_an_idempotency_answer_is_kept_sealed_and_a_retry_still_gets_it(tmp_path: Path) -> None:
    """Before: ``response`` held the acknowledgement quoting subject, items and body in clear, forever."""
    database = str(tmp_path / "ledger.sqlite")
    _settings, state, headers = service(database)
    key = str(uuid.uuid4())
    with TestClient(create_app(state)) as client:
        first = client.post("/v1/contacts", json=jane_body("m-1"), headers={**headers, "Idempotency-Key": key})
        assert first.status_code == 201, first.text
        assert SUBJECT in first.json()["acknowledgement"]
        again = client.post("/v1/contacts", json=jane_body("m-1"), headers={**headers, "Idempotency-Key": key})
        assert again.status_code == 201 and again.json() == first.json()
        assert again.headers["Idempotency-Replayed"] == "true"
    (row,) = idempotency_rows(database)
    kept = repr(row)
    for secret in (SUBJECT, BODY, ITEM, JANE.value, "Lisbon", first.json()["reference"]):
        assert secret not in kept
    # The request's digest is keyed: whoever guesses the request cannot test the guess against the row.
    guessed = json.dumps(jane_body("m-1")).encode()
    assert bytes(row[1]) != request_digest("POST", "/v1/contacts", guessed)


def test_idempotency_rows_expire_after_their_window_and_the_key_is_not_run_twice(tmp_path: Path) -> None:
    """Before: rows were never deleted; now ``tick`` deletes them after the window, and the key is refused."""
    database = str(tmp_path / "ledger.sqlite")
    _settings, state, headers = service(database)
    key = str(uuid.uuid4())
    with TestClient(create_app(state)) as client:
        first = client.post("/v1/contacts", json=jane_body("m-1"), headers={**headers, "Idempotency-Key": key})
        assert first.status_code == 201, first.text
        old = datetime.now(UTC) - IDEMPOTENCY_WINDOW - timedelta(minutes=1)
        with sqlite3.connect(database) as conn:
            conn.execute("UPDATE caseledger_idempotency SET created_at = ?", (old.isoformat(),))
        ticked = client.post("/v1/tick", json={}, headers=headers)
        assert ticked.status_code == 200, ticked.text
        assert idempotency_rows(database) == []
        late = client.post("/v1/contacts", json=jane_body("m-1"), headers={**headers, "Idempotency-Key": key})
        assert late.status_code == 422, late.text
        assert late.json()["type"].endswith("idempotency-key-expired") and "new key" in late.json()["detail"]
    ledger = CaseLedger(ledger_settings(database=database))
    try:
        assert len(ledger.cases_of(str(JANE))) == 1
    finally:
        ledger.close()


# -- logs: a whole scenario, every log searched ------------------------------------------------------------------

PLANTED_EMAIL = "zoe.planted-5521@example.org"
PLANTED_PHONE = "+33699887766"
PLANTED = [PLANTED_EMAIL, "zoe.planted-5521", PLANTED_PHONE, "33699887766", "Planchard", "Marseille", "77120"]


def planted_contact(message_id: str, identity: str = f"email:{PLANTED_EMAIL}") -> Any:
    from caseledger.ledger.domain.values import ContactDraft, Identity

    return ContactDraft(channel="email", channel_message_id=message_id, identity=Identity.parse(identity),
                        subject="Zoé Planchard, account 77120", body="At the Marseille branch they refused me.",
                        items=("Why was Zoé Planchard refused?",))


@pytest.mark.kafka
def test_no_log_line_of_a_whole_scenario_carries_personal_data(
    tmp_path: Path, kafka: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    """CLI, the service on loopback, the intake worker on Kafka: every log (and every CLI output) searched.

    Before: the worker logged ``rejected intake record …: ValidationError: 'zoe…@examplexorg' is not an email
    address``, quoting the record's identity.
    """
    from typer.testing import CliRunner

    from caseledger.cli.app import app
    from caseledger.ledger.domain.permissions import Role
    from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
    from caseledger.ledger.intake.records import IntakeCodec
    from caseledger.ledger.intake.worker import KafkaIntakeWorker
    from tests.support.kafka_topics import drain
    from tests.support.service_server import start_service, stop_service

    caplog.set_level(logging.INFO)  # the level the product runs at (kafka-python logs record values at DEBUG)
    service = start_service(tmp_path)
    outputs: list[str] = []
    try:
        database = service.database
        runner = CliRunner()
        base = ["--database", database]
        for args in (
            ["contact", "record", "-c", "email", "-m", "cli-1", "--from", f"email:{PLANTED_EMAIL}",
             "--subject", "Zoé Planchard, account 77120", "--item", "At the Marseille branch?"],
            ["contact", "record", "-c", "email", "-m", "cli-2", "--from", "email:zoe.planted-5521@examplexorg",
             "--item", "Marseille"],  # refused: not an e-mail address
            ["contact", "record", "-c", "sms", "-m", "cli-1", "--from", f"phone:{PLANTED_PHONE}", "--item", "Marseille"],
            ["history", f"email:{PLANTED_EMAIL}"],
            ["customer", "erase", f"email:{PLANTED_EMAIL}", "--reason", "art. 17 request"],
            ["customer", "erase", "email:nobody.planted-5521@example.org", "--reason", "art. 17 request"],
        ):
            result = runner.invoke(app, [*base, *args])
            # What a command prints on success is the customer's data, asked for; an error must quote none of it.
            outputs.append(result.output if result.exit_code != 0 else "")
        with service.client(Role.AGENT) as agent:
            body = {"channel": "web_form", "channel_message_id": "api-1", "from": f"phone:{PLANTED_PHONE}",
                    "subject": "Zoé Planchard", "body": "Marseille", "items": ["account 77120?"]}
            assert agent.post("/v1/contacts", json=body).status_code == 201
            bad = agent.post("/v1/contacts", json={**body, "from": "email:zoe.planted-5521@examplexorg"})
            assert bad.status_code == 400
            outputs.append(bad.text)
            found = agent.post("/v1/customers/resolve", json={"identity": f"phone:{PLANTED_PHONE}"})
            assert found.status_code == 200, found.text
            assert agent.get(f"/v1/customers/{found.json()['customer_id']}/cases").status_code == 200
        with KafkaIntakeClient(kafka, adapter="planted-gateway") as client:
            client.submit(planted_contact("kafka-1"))
            client.submit(planted_contact("kafka-1", identity=f"phone:{PLANTED_PHONE}"))  # a collision
        # A record whose identity is no e-mail address: the adapter SDK would refuse it, a broken adapter does not.
        raw = IntakeCodec().encode(planted_contact("kafka-2"), adapter="broken-gateway")
        raw = raw.replace(b"@example.org", b"@examplexorg")
        from kafka import KafkaProducer

        producer = KafkaProducer(**kafka.client_options())
        producer.send(kafka.intake_topic, key=b"x", value=raw)
        producer.flush()
        producer.close()
        ledger = CaseLedger(ledger_settings(database=database))
        try:
            worker = KafkaIntakeWorker(ledger, kafka)
            drain(worker, until=3)
            assert worker.stats.rejected == 1 and worker.stats.collisions == 1
        finally:
            ledger.close()
    finally:
        stop_service(service)
    assert sum(1 for o in outputs if o) == 3  # the two refused contacts, the unknown customer
    logs = {"caplog": caplog.text, "the server's output": service.log(), "CLI and API outputs": "\n".join(outputs)}
    assert "rejected intake record" in caplog.text
    for where, text in logs.items():
        for secret in PLANTED:
            assert secret not in text, f"{secret!r} in {where}"


# -- identities out of URLs -------------------------------------------------------------------------------------


def test_an_identity_in_a_customer_path_or_query_is_refused_with_how_to_call(tmp_path: Path) -> None:
    """Before: ``/v1/customers/email:…/erase`` was served, and the identity was in every access log on the way."""
    _settings, state, headers = service(str(tmp_path / "ledger.sqlite"))
    with TestClient(create_app(state)) as client:
        client.post("/v1/contacts", json=jane_body("m-1"), headers=headers)
        for method, path in (("POST", f"/v1/customers/{JANE}/erase"), ("GET", f"/v1/customers/{JANE}/history"),
                             ("GET", f"/v1/customers/{JANE.value}/cases"), ("GET", f"/v1/audit/verify?customer={JANE}")):
            answer = client.request(method, path, json={"reason": "r"} if method == "POST" else None, headers=headers)
            assert answer.status_code == 400, (path, answer.text)
            assert "customers/resolve" in answer.json()["detail"] and JANE.value not in answer.text
        found = client.post("/v1/customers/resolve", json={"identity": str(JANE)}, headers=headers)
        assert found.status_code == 200, found.text
        customer_id = found.json()["customer_id"]
        assert customer_id.startswith("cus-")
        assert client.get(f"/v1/customers/{customer_id}/cases", headers=headers).status_code == 200
        unknown = client.post("/v1/customers/resolve", json={"identity": "email:nobody@example.com"}, headers=headers)
        assert unknown.status_code == 404 and "nobody" not in unknown.text


def test_an_answer_kept_by_an_earlier_release_is_still_replayed_within_its_window(tmp_path: Path) -> None:
    """Rows written before issue 24 (request digest and answer in clear) answer their retries until purged."""
    from caseledger.ledger.service.idempotency import Idempotency

    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "ledger.sqlite")))
    try:
        store = ledger.storage.idempotency()
        digest = request_digest("POST", "/v1/contacts", b'{"a": 1}')
        key_id = Idempotency.key_id("caller-1", "key-1")
        assert store.insert_idempotency(key_id, digest, datetime.now(UTC))
        store.complete_idempotency(key_id, 201, '{"reference": "CL-OLD"}')

        def never() -> tuple[int, Any]:
            raise AssertionError("a replay runs nothing")

        answer = Idempotency(store).run(ledger, principal="caller-1", key="key-1", digest=digest, execute=never,
                                        problem=lambda error: {})
        assert answer == (201, {"reference": "CL-OLD"}, True)
        assert Idempotency(store).purge(datetime.now(UTC) + IDEMPOTENCY_WINDOW + timedelta(seconds=1)) == 1
    finally:
        ledger.close()
