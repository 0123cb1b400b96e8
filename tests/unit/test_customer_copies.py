"""Issue 24, "no copy forgotten", on an embedded ledger: a customer's acts and the senders known only
from a collision, as erasure and retention reach them (the service's copies: tests/integration/test_copies.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import Actor, Identity
from caseledger.ledger.errors import ValidationError
from tests.support.environment import ledger_settings
from tests.support.personal_data import JANE, assert_nowhere, jane_contact, store_bytes

JOHN = "email:john.other-9a1@example.com"


@pytest.fixture
def database(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.sqlite")


@pytest.fixture
def ledger(database: str) -> CaseLedger:
    app = CaseLedger(ledger_settings(database=database))
    yield app  # type: ignore[misc]
    app.close()


def test_a_customers_read_receipt_names_them_by_pseudonym_not_by_identity(ledger: CaseLedger, database: str) -> None:
    """Before: ``--as customer:email:…`` put the e-mail in clear in ``envelope.actor.id`` and ``reader_id``."""
    outcome = ledger.record_contact(jane_contact("m-1"))
    ledger.record_read(outcome.reference, actor=Actor.parse(f"customer:{JANE}"), message_id="ACK1")
    ledger.set_customer_locale(str(JANE), actor=Actor.parse(f"customer:{JANE}"), locale="fr_FR", time_zone=None)
    events = ledger.history(outcome.customer_id)
    (read,) = [e for e in events if type(e).__name__ == "MessageRead"]
    assert read.reader_id == outcome.customer_id and read.actor_id == outcome.customer_id
    (locale,) = [e for e in events if type(e).__name__ == "CustomerLocaleSet"]
    assert locale.actor_id == outcome.customer_id
    assert_nowhere(store_bytes(ledger, database), "the store", [JANE.value])


def test_a_customer_acts_only_on_their_own_cases(ledger: CaseLedger) -> None:
    outcome = ledger.record_contact(jane_contact("m-1"))
    ledger.record_contact(jane_contact("m-2", identity=Identity.parse(JOHN)))
    with pytest.raises(ValidationError) as refused:
        ledger.record_read(outcome.reference, actor=Actor.parse(f"customer:{JOHN}"), message_id="ACK1")
    assert "field actor" in str(refused.value) and "john" not in str(refused.value)
