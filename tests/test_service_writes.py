"""Issue 22 follow-up, the write path's speed: the work a contact costs the committer, and that it stays correct.

Speed itself is the benchmark's business (``caseledger bench api``); here: a known customer's history is
not replayed for each batch (the committer keeps customers, claims and registrations between batches),
a case is never kept (an erasure elsewhere must not leave its texts readable), and answers are made
JSON without a deep copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import Actor, ActorKind, Channel, ContactDraft, Identity
from caseledger.ledger.principals import PrincipalRegistry
from caseledger.ledger.service.api import ServiceState
from caseledger.ledger.settings import LedgerSettings

AGENT = Actor(kind=ActorKind.AGENT, id="agent-1")
JANE = "email:jane@example.com"


def contact_body(message_id: str, **extra: Any) -> dict[str, Any]:
    return {"channel": "email", "channel_message_id": message_id, "from": JANE, "items": ["Why?"], **extra}


def service(tmp_path: Path) -> tuple[LedgerSettings, ServiceState, dict[str, str]]:
    settings = LedgerSettings.resolve(database=str(tmp_path / "l.sqlite"))
    setup = CaseLedger(settings)
    token = PrincipalRegistry(setup.principal_store).add("agent-1", "agent").token
    setup.close()
    return settings, ServiceState(settings), {"Authorization": f"Bearer {token}"}


def test_a_new_customers_key_leaves_memory_with_its_transaction(tmp_path: Path) -> None:
    """Before: a key made in a transaction stayed unwrapped in the writer until its next transaction, so
    after an erasure elsewhere the writer sealed the customer's next contact with the destroyed key."""
    settings = LedgerSettings.resolve(database=str(tmp_path / "l.sqlite"))
    writer, other_process = CaseLedger(settings), CaseLedger(settings)
    try:
        writer.record_contact(ContactDraft(channel=Channel.EMAIL, channel_message_id="m-1", identity=Identity.parse(JANE),
                                           subject="Before", items=("?",)), actor=AGENT)
        assert writer.data_keys.unsaved() == []
        other_process.erase_customer(JANE, reason="art. 17")
        ref = writer.record_contact(ContactDraft(channel=Channel.EMAIL, channel_message_id="m-2",
                                                 identity=Identity.parse(JANE), subject="After the erasure",
                                                 items=("?",)), actor=AGENT).reference
        assert other_process.get_case(ref).subject == "After the erasure"  # sealed with a live key
    finally:
        writer.close()
        other_process.close()
