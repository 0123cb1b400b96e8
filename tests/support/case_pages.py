"""Jane's case as the case page reads it, built once per module by the tests of the agent's pages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import Actor, ActorKind, ContactDraft, Identity
from caseledger.ledger.service.case_page import CustomerContext, load_context
from tests.support.environment import ledger_settings

AGENT = Actor(kind=ActorKind.AGENT, id="alice")
JANE = Identity.parse("email:jane@example.com")


def janes_case(directory: Path, *, subject: str, work: Callable[[CaseLedger, str], object]) -> tuple[Any, CustomerContext]:
    """Jane's case, opened by an e-mail of three questions (Q1 to Q3) and worked by ``work(ledger, reference)``
    on a SQLite ledger in ``directory``; with her context as the page loads it. The ledger is closed after."""
    ledger = CaseLedger(ledger_settings(database=str(directory / "l.sqlite")))
    try:
        out = ledger.record_contact(ContactDraft(channel="email", channel_message_id="m-1", identity=JANE,
                                                 subject=subject, items=("Why?", "When?", "Fees?")))
        work(ledger, out.reference)
        case = ledger.get_case(out.reference)
        return case, load_context(ledger, case)
    finally:
        ledger.close()
