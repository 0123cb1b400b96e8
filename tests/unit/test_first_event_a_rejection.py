"""A fresh ledger whose first event is a rejected intake record is still this release's ledger.

Found when the intake SDK moved to confluent-kafka: the signed-intake test's rejected records (on another partition
than its one good contact) were applied first, and the ledger, finding events but no marker of this release's lookup
secrets, took itself for an earlier release's — the good contact then had two registrations to look in, the keyed one
and a name-based one (derivable from the channel message id alone, which this release never writes).
"""

from __future__ import annotations

from pathlib import Path

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.directory import IntakeSource
from caseledger.ledger.domain.values import Channel, ContactDraft, Identity
from tests.support.environment import ledger_settings


def test_a_ledger_whose_first_event_is_a_rejection_looks_up_its_messages_by_their_keyed_id_only(tmp_path: Path) -> None:
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "fresh.sqlite")))
    try:
        ledger.reject_intake(IntakeSource("caseledger.intake", 1, 0), reason="SchemaError: not Avro", raw=b"junk")
        draft = ContactDraft(channel="email", channel_message_id="m-1", identity=Identity.parse("email:a@example.com"),
                             items=("question",))
        ledger.record_contact(draft, source=IntakeSource("caseledger.intake", 0, 0))
        assert len(ledger.pseudonyms.message_ids_for(Channel.EMAIL, "m-1")) == 1
        assert len(ledger.pseudonyms.claim_ids_for(Identity.parse("email:a@example.com"))) == 1
    finally:
        ledger.close()
