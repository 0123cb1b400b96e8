"""Contacts several floors write alike (Sam's web form, Mallory who reuses its id, Jane's e-mail) and what
their tests read back (events stored, a case's events, a command's result)."""

from __future__ import annotations

from typing import Any

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.directory import case_id_for
from caseledger.ledger.domain.values import ContactDraft, Identity

SAM = Identity.parse("email:sam@example.com")
MALLORY = Identity.parse("email:mallory@example.com")


def form(identity: Identity = SAM, *, msg: str = "form-77", subject: str = "Card blocked",
         items: tuple[str, ...] = ("Why is my card blocked?",), body: str = "My card no longer works.",
         **kw: Any) -> ContactDraft:
    return ContactDraft(channel="web_form", channel_message_id=msg, identity=identity, items=items,
                        subject=subject, body=body, **kw)


JANE = "email:jane@example.com"


def draft(msg: str = "m1", channel: str = "email", **kw: Any) -> ContactDraft:
    return ContactDraft(channel=channel, channel_message_id=msg, identity=Identity.parse(JANE),
                        items=kw.pop("items", ("Where is my refund?",)), subject="Refund", **kw)


def stored(ledger: CaseLedger) -> int:
    return ledger.recorder.max_notification_id() or 0


def events_of(ledger: CaseLedger, reference: str) -> list[Any]:
    return list(ledger.events.get(case_id_for(reference)))


def cli(*args: str, code: int = 0) -> Any:
    from typer.testing import CliRunner

    from caseledger.cli.app import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    return result


def register_adapter(ledger: CaseLedger, name: str, channels: list[str]) -> None:
    """Register adapter key ``name`` (a fresh public key) for ``channels``: what an adapter principal of that name
    may read and report for."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from caseledger.ledger.intake.signatures import AdapterKeys

    raw = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw,
                                                                 serialization.PublicFormat.Raw)
    AdapterKeys(ledger.storage.adapter_keys()).add(name, channels, public_key=raw)
