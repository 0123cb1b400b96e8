"""Issue 24, "no copy forgotten": the copies of a customer's data kept beside the events.

Idempotency answers (sealed, keyed, expiring), customers' acts named by pseudonym, senders known only
from a collision or a rejection reached by erasure and retention, identities out of URL paths, and
reasons that are codes, not free text.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
