"""Lookup secrets on every backend: stored with the events they name, agreed on by concurrent writers."""

from __future__ import annotations

from collections.abc import Callable

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import ContactDraft, Identity

PHONE = Identity.parse("phone:+33612345678")


def _sms(message_id: str) -> ContactDraft:
    return ContactDraft(channel="sms", channel_message_id=message_id, identity=PHONE, items=("Call me back",))


def test_two_writers_of_one_new_identity_agree_on_its_secret(make_ledger: Callable[..., CaseLedger]) -> None:
    """The writer that stores a secret second fails with a conflict, retries and reads the first's."""
    one, two = make_ledger(), make_ledger()
    assert two.customer_id_for(PHONE)  # made by the second writer, not stored yet
    first = one.record_contact(_sms("sms-1"))  # the first stores its own
    second = two.record_contact(_sms("sms-2"))
    assert second.customer_id == first.customer_id
    assert [c.reference for c in two.cases_of(str(PHONE))] == [first.reference, second.reference]


def test_an_erasure_deletes_the_secrets_on_every_backend(make_ledger: Callable[..., CaseLedger]) -> None:
    ledger = make_ledger()
    first = ledger.record_contact(_sms("sms-1"))
    lookups = [r for r in ledger.data_keys.table.live() if r.key_id.startswith("lookup:")]
    assert len(lookups) == 2  # the phone number's and the message's
    ledger.erase_customer(first.customer_id, reason="art. 17 request")
    assert ledger.data_keys.table.by_ids([r.key_id for r in lookups]) == []
    again = ledger.record_contact(_sms("sms-1"))
    assert not again.duplicate and again.customer_id != first.customer_id
