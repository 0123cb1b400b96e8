"""Issue 25's leftover: the secret an Idempotency-Key's answer is sealed under derived from the caller's name and
key alone. A key may be guessable (a form's id, a counter) and the row's id — SHA-256 of principal and key —
confirms a guess, so whoever read the table opened the answer, which quotes the customer's request. The secret is
now derived under the ledger's own idempotency secret (in the key store, wrapped by the key-encryption key)."""

from __future__ import annotations

import base64
import hmac
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.service.idempotency import Idempotency, request_digest
from tests.support.environment import ledger_settings

WORDS = "Jane Doe: why was I charged twice for my card in February?"
REQUEST = request_digest("POST", "/v1/contacts", json.dumps({"body": WORDS}).encode())


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.sqlite")


@pytest.fixture
def ledger(db: str) -> Iterator[CaseLedger]:
    app = CaseLedger(ledger_settings(database=db))
    yield app
    app.close()


def answer(*_: Any) -> tuple[int, Any]:
    return 201, {"acknowledgement": f"We received your request: {WORDS}"}


def never() -> tuple[int, Any]:
    raise AssertionError("a replay runs nothing")


def legacy_secret(principal: str, key: str) -> bytes:
    """The secret as the earlier release derived it: from the principal and the key alone."""
    return hmac.digest(b"caseledger idempotency answer", f"{principal}\0{key}".encode(), "sha256")


def test_whoever_reads_the_table_and_guesses_the_key_cannot_open_the_answer(ledger: CaseLedger) -> None:
    store = ledger.storage.idempotency()
    assert Idempotency(store).run(ledger, principal="mail-1", key="form-1", digest=REQUEST, execute=answer,
                                  problem=lambda e: {})[2] is False
    row = store.select_idempotency(Idempotency.key_id("mail-1", "form-1"))  # the guess is confirmed by the row's id
    assert row is not None and row.response is not None and WORDS not in row.response
    guessed = legacy_secret("mail-1", "form-1")
    sealed = base64.urlsafe_b64decode(row.response.split(":", 2)[2])
    with pytest.raises(InvalidTag):
        AESGCM(guessed).decrypt(sealed[:12], sealed[12:], row.key_id.encode())
    # nor can a guessed request be tested against the digest the row keeps
    assert row.request_sha256 not in (REQUEST, hmac.digest(guessed, REQUEST, "sha256"))
    # the caller's retry is answered as before, by this process and by another one on the same ledger
    assert Idempotency(store).run(ledger, principal="mail-1", key="form-1", digest=REQUEST, execute=never,
                                  problem=lambda e: {}) == (*answer(), True)
    other = CaseLedger(ledger_settings(database=ledger.settings.store.database))
    try:
        assert Idempotency(other.storage.idempotency()).run(other, principal="mail-1", key="form-1", digest=REQUEST,
                                                            execute=never, problem=lambda e: {})[1] == answer()[1]
    finally:
        other.close()


def test_an_answer_the_earlier_release_sealed_under_the_key_alone_is_still_replayed(ledger: CaseLedger) -> None:
    from datetime import UTC, datetime

    store = ledger.storage.idempotency()
    key_id = Idempotency.key_id("mail-1", "form-2")
    secret = legacy_secret("mail-1", "form-2")
    nonce = os.urandom(12)
    sealed = "sealed:1:" + base64.urlsafe_b64encode(
        nonce + AESGCM(secret).encrypt(nonce, json.dumps(answer()[1]).encode(), key_id.encode())).decode()
    assert store.insert_idempotency(key_id, hmac.digest(secret, REQUEST, "sha256"), datetime.now(UTC))
    store.complete_idempotency(key_id, 201, sealed)
    assert Idempotency(store).run(ledger, principal="mail-1", key="form-2", digest=REQUEST, execute=never,
                                  problem=lambda e: {}) == (*answer(), True)
