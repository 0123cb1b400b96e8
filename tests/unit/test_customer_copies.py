"""Issue 24, "no copy forgotten", on an embedded ledger: a customer's acts and the senders known only
from a collision, as erasure and retention reach them (the service's copies: tests/integration/test_copies.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.personal import ERASED
from caseledger.ledger.domain.policy import ResponsePolicy
from caseledger.ledger.domain.values import Actor, Identity
from caseledger.ledger.errors import MessageIdCollision, NotFound, ValidationError
from tests.support.clock import FakeClock
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
    ledger.erase_customer(str(JANE), reason="art. 17 request", actor=Actor.parse(f"customer:{JANE}"))
    (erased,) = [e for e in ledger.history(outcome.customer_id) if type(e).__name__ == "CustomerErased"]
    assert erased.actor_id == outcome.customer_id
    assert_nowhere(store_bytes(ledger, database), "the store", [JANE.value])


def test_a_customer_acts_only_on_their_own_cases(ledger: CaseLedger) -> None:
    outcome = ledger.record_contact(jane_contact("m-1"))
    ledger.record_contact(jane_contact("m-2", identity=Identity.parse(JOHN)))
    with pytest.raises(ValidationError) as refused:
        ledger.record_read(outcome.reference, actor=Actor.parse(f"customer:{JOHN}"), message_id="ACK1")
    assert "field actor" in str(refused.value) and "john" not in str(refused.value)


# -- senders known only from a collision ---------------------------------------------------------------------


def collide(ledger: CaseLedger, identity: str, msg: str = "m-1") -> None:
    with pytest.raises(MessageIdCollision):
        ledger.record_contact(jane_contact(msg, identity=Identity.parse(identity)))


def test_a_sender_known_only_from_a_collision_is_erased_by_identity(ledger: CaseLedger) -> None:
    """Before: ``customer erase email:…`` answered "no customer known" and the raw request stayed readable."""
    ledger.record_contact(jane_contact("m-1"))
    collide(ledger, JOHN)
    (kept,) = ledger.collision_records()
    assert kept["raw_base64"] != ERASED
    john = ledger.customer_id_for(Identity.parse(JOHN))
    report = ledger.erase_customer(JOHN, reason="art. 17 request")
    assert report.erased and report.customer_id == john
    (kept,) = ledger.collision_records()
    assert kept["raw_base64"] == ERASED
    # Issue 24 (links): the erasure unlinked his identity, so he is found by his customer id only.
    assert ledger.customer_id_for(Identity.parse(JOHN)) != john
    assert ledger.erase_customer(john, reason="art. 17 request").already_erased
    # Nobody else's data went: jane's contact reads as it was.
    assert ledger.cases_of(str(JANE))[0].contacts


def test_a_sender_known_only_from_a_collision_is_erased_by_customer_id(ledger: CaseLedger) -> None:
    """Before: ``customer erase cus-…`` (the id ``intake collisions`` shows) answered "no customer known"."""
    ledger.record_contact(jane_contact("m-1"))
    collide(ledger, JOHN)
    (kept,) = ledger.collision_records()
    assert ledger.erase_customer(kept["customer_id"], reason="art. 17 request").erased
    assert ledger.collision_records()[0]["raw_base64"] == ERASED
    # Unlinked too: his identity's lookup secret went with the erasure (before: kept, since the erasure named
    # only his customer id, so his e-mail still computed the id of the collision kept of him).
    assert ledger.customer_id_for(Identity.parse(JOHN)) != kept["customer_id"]


def test_an_unknown_identity_is_still_not_found_and_not_quoted(ledger: CaseLedger) -> None:
    with pytest.raises(NotFound) as missing:
        ledger.erase_customer("email:nobody-4411@example.com", reason="art. 17 request")
    assert "nobody-4411" not in str(missing.value) and "field customer" in str(missing.value)


def test_retention_reaches_a_sender_known_only_from_a_collision(database: str) -> None:
    """Before: ``tick`` skipped a subject with no customer, so a collision's raw record stayed for ever."""
    policy = ResponsePolicy.from_toml_text(
        ResponsePolicy.default_text().replace('intake_rejections = "1y"', 'intake_rejections = "30d"'), source="test")
    clock = FakeClock()
    ledger = CaseLedger(ledger_settings(database=database), policy=policy, clock=clock)
    try:
        from caseledger.ledger.domain.directory import IntakeSource

        ledger.record_contact(jane_contact("m-1"))
        collide(ledger, JOHN)
        ledger.reject_intake(IntakeSource("caseledger.intake", 0, 7), reason="ValidationError", raw=b"record",
                             kind="contact", sender=Identity.parse("phone:+33612345678"))
        john = ledger.customer_id_for(Identity.parse(JOHN))
        rejected = ledger.customer_id_for(Identity.parse("phone:+33612345678"))
        clock.advance(days=29)
        assert john not in ledger.tick().retention.erased
        clock.advance(days=2)
        assert sorted(ledger.tick().retention.erased) == sorted([john, rejected])
        assert ledger.collision_records()[0]["raw_base64"] == ERASED
        assert ledger.rejection_records()[0]["raw_base64"] == ERASED
        assert ledger.customer_id_for(Identity.parse(JOHN)) != john  # unlinked, though retention names ids only
        assert ledger.cases_of(str(JANE))[0].contacts  # jane's case is open: she is not due
    finally:
        ledger.close()


def test_a_sender_known_only_from_a_rejection_is_erased_by_identity(ledger: CaseLedger) -> None:
    """Before: a rejected record was sealed under its month's key: erasing its sender could not reach it."""
    from caseledger.ledger.domain.directory import IntakeSource

    ledger.reject_intake(IntakeSource("caseledger.intake", 0, 7), reason="ValidationError: field case_reference",
                         raw=b"the record, naming john", kind="contact", sender=Identity.parse(JOHN))
    ledger.reject_intake(IntakeSource("caseledger.intake", 0, 8), reason="undecodable", raw=b"someone else's")
    assert [r["raw_base64"] != ERASED for r in ledger.rejection_records()] == [True, True]
    assert ledger.erase_customer(JOHN, reason="art. 17 request").erased
    assert [r["raw_base64"] == ERASED for r in ledger.rejection_records()] == [True, False]


# -- erase and hold reasons ----------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", [
    "asked by jane.secret-7f3@example.com", "called from +33 6 11 22 33 44", "called from 0611223344",
    "jane.secret-7f3 asked twice",
])
def test_an_erasure_or_hold_reason_quoting_personal_data_is_refused_naming_the_field(
        ledger: CaseLedger, reason: str) -> None:
    """Before: the reason was any text, kept in clear after the erasure (so the erased data stayed in it)."""
    outcome = ledger.record_contact(jane_contact("m-1", identity=Identity.parse("email:jane.secret-7f3@example.com")))
    for command in (ledger.erase_customer, ledger.place_legal_hold):
        with pytest.raises(ValidationError) as refused:
            command(outcome.customer_id, reason=reason)
        message = str(refused.value)
        assert "field reason" in message and "jane" not in message and "33" not in message
    assert ledger.erase_customer(outcome.customer_id, reason="art. 17 request of 2026-12-01, ticket 4711").erased
