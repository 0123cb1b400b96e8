"""The variables each kind of customer text may use, and the sample cases every template is tried on.

A template is refused at load time if it names a variable its kind does not have, or if it
fails on any sample below — so a company's mistake shows when the ledger starts, not when a
customer writes in. The samples cover every branch a template is expected to have: a request
with and without subject, body or attachments; a contact made by phone (formalised in writing);
a notice with and without the agent's text.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from caseledger.ledger.domain.texts import TextKind

__all__ = ["COMMON", "SAMPLES", "VARIABLES"]

COMMON = frozenset({"company", "reference", "locale", "issued_at"})
"""Every text has: who signs it, the case reference, the locale it is written for, when it is issued."""

VARIABLES: dict[TextKind, frozenset[str]] = {
    # subject: str ("" when none); items: [{"id": "Q1", "text": …}]; body: str; attachments: [str]
    "request_copy": COMMON | {"subject", "items", "body", "attachments"},
    # received_at, respond_by: datetimes; channel: the contact's channel id (filters channel /
    # channel_by make words of it); spoken: made by phone or at a branch; request_copy: the
    # rendered copy of the request; follow_up: the customer writes again about the same request;
    # receipt: the contact's signed receipt, one line ``CLR1.…`` ("" when the ledger has no signing key)
    "acknowledgement": COMMON | {
        "acknowledgement_id", "contact_id", "received_at", "channel", "spoken", "follow_up", "respond_by",
        "request_copy", "receipt",
    },
    # what was agreed (terms, promise_kind), by whom (agreed_by: the agent), when and where
    # (agreed_at, agreed_channel), by when it is due (due_at), on which channel this goes (channel)
    "written_confirmation": COMMON | {
        "confirmation_id", "promise_id", "promise_kind", "terms", "agreed_at", "agreed_channel", "agreed_by",
        "due_at", "channel",
    },
    # notice: the agent's own words to the customer (None when the ledger itself issues the notice)
    "notice_status_changed": COMMON | {"notice", "from_status", "to_status"},
    "notice_closed": COMMON | {"notice"},
    "notice_cancelled": COMMON | {"notice"},
    # by_contact: reopened because the customer wrote again (contact_channel: on which channel)
    "notice_reopened": COMMON | {"notice", "by_contact", "contact_channel"},
    "notice_promise_withdrawn": COMMON | {"notice", "promise_id", "terms"},
}

_AT = datetime(2026, 3, 4, 8, 0, tzinfo=UTC)


def _common(**extra: Any) -> dict[str, Any]:
    return {"company": "Banque Exemple", "reference": "CL-7K2QD-M3XPA", "locale": "fr_FR", "issued_at": _AT, **extra}


SAMPLES: dict[TextKind, list[dict[str, Any]]] = {
    "request_copy": [
        _common(subject="Frais de carte", items=[{"id": "Q1", "text": "Pourquoi deux frais ?"}], body="Bonjour,\nMerci.",
                attachments=["releve-fevrier.pdf"]),
        _common(subject="", items=[{"id": "Q1", "text": "A"}, {"id": "Q2", "text": "B"}], body="", attachments=[]),
    ],
    "acknowledgement": [
        _common(acknowledgement_id="ACK1", contact_id="C1", received_at=_AT, channel="web_form", spoken=False,
                follow_up=False, respond_by=_AT + timedelta(days=2), request_copy="Objet : Frais\n  Q1. Pourquoi ?",
                receipt="CLR1.Q0xSAQ"),
        _common(acknowledgement_id="ACK2", contact_id="C2", received_at=_AT, channel="phone", spoken=True,
                follow_up=True, respond_by=_AT + timedelta(days=61), request_copy="Q1. Remboursement", receipt=""),
    ],
    "written_confirmation": [
        _common(confirmation_id="W1", promise_id="P1", promise_kind="refund", terms="Remboursement de 45,00 EUR",
                agreed_at=_AT, agreed_channel="phone", agreed_by="alice", due_at=_AT + timedelta(days=3),
                channel="email"),
        _common(confirmation_id="W2", promise_id="P2", promise_kind="callback", terms="Rappel", agreed_at=_AT,
                agreed_channel="branch", agreed_by="bob", due_at=_AT + timedelta(hours=2), channel="letter"),
    ],
    "notice_status_changed": [
        _common(notice="Nous attendons le relevé.", from_status="open", to_status="waiting_on_customer"),
        _common(notice=None, from_status="in_progress", to_status="on_hold"),
    ],
    "notice_closed": [_common(notice="Le remboursement a été effectué."), _common(notice=None)],
    "notice_cancelled": [_common(notice="Vous avez retiré votre demande."), _common(notice=None)],
    "notice_reopened": [
        _common(notice="Nous reprenons votre demande.", by_contact=False, contact_channel=None),
        _common(notice=None, by_contact=True, contact_channel="email"),
    ],
    "notice_promise_withdrawn": [
        _common(notice="Le geste commercial ne peut être accordé.", promise_id="P1", terms="Avoir de 20 EUR"),
        _common(notice=None, promise_id="P2", terms="Rappel"),
    ],
}
