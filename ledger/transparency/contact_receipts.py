"""Where a contact's receipt is signed: when the contact is recorded, and again (the same bytes) on request.

The receipt (:mod:`caseledger.verify.receipts` says what it holds and how it is checked) is signed
with the checkpoint key, so one public key checks the log and every receipt. It is signed inside
the command that records the contact, once the ``ContactReceived`` event is encoded — its hash is
the leaf the receipt names — and before the acknowledgement is written, which carries it. Ed25519
signatures are deterministic, so the receipt is signed again, byte for byte, from the stored event
and its sealed salt (``caseledger contact receipt REF``); once the customer is erased the salt is
gone and no receipt can be made again: only the customer's own copy links their request to the log.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.settings import RECEIPT_DELAY_ENV
from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner
from caseledger.verify.receipts import SALT_BYTES, Receipt, content_digest, receipt_text, signed_message

if TYPE_CHECKING:
    from caseledger.ledger.domain.case import Case

__all__ = ["DEFAULT_DELAY_S", "ReceiptIssuer", "receipt_delay", "salt_of"]

DEFAULT_DELAY_S = 86_400
"""A day, as Certificate Transparency's usual maximum merge delay: far above the publisher's 10-second
checkpoints, so a lagging publisher or a checkpointer restarted overnight still keeps the promise."""


def receipt_delay(given: str | None) -> int:
    """Seconds the receipt promises inclusion within: ``given`` (CASELEDGER_RECEIPT_DELAY), else a day."""
    if given is None or given.strip() == "":
        return DEFAULT_DELAY_S
    try:
        seconds = int(given)
    except ValueError:
        seconds = -1
    if not 60 <= seconds <= 31 * 86_400:
        raise ConfigurationError(f"receipt delay {given!r} ({RECEIPT_DELAY_ENV}): give whole seconds from 60 to "
                                 "2678400 (31 days)")
    return seconds


def salt_of(text: str) -> bytes | None:
    """The salt a ``ContactReceived`` keeps (base64url), or None: no receipt was issued, or it was erased."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)) if text else b""
    except ValueError:
        return None
    return raw if len(raw) == SALT_BYTES else None


@dataclass(frozen=True)
class ReceiptIssuer:
    """Signs contacts' receipts for the log ``origin`` with the checkpoint key, promising inclusion within ``delay_s``.

    ``encode`` chains and encodes an aggregate's pending events and returns the last one's stored bytes
    (:meth:`LedgerCore.encode_pending <caseledger.ledger.core.LedgerCore.encode_pending>`).
    """

    signer: CheckpointSigner
    origin: str
    encode: Callable[[Any], bytes]
    delay_s: int = DEFAULT_DELAY_S

    def new_salt(self) -> str:
        return base64.urlsafe_b64encode(secrets.token_bytes(SALT_BYTES)).decode().rstrip("=")

    def sign(self, *, reference: str, contact_id: str, received_at: datetime, salt: bytes, event: Any,
             event_hash: bytes) -> str:
        """The receipt (``CLR1.…``) of one ``ContactReceived`` (its fields as recorded, in clear) whose stored
        bytes hash to ``event_hash``."""
        identity = event.identity
        digest = content_digest(
            salt, identity=f"{identity['kind']}:{identity['value']}", subject=event.subject,
            items=[i["text"] for i in event.items], body=event.body,
            attachment_sha256s=[a["sha256"] for a in event.attachments])
        key = self.signer.verifier_key
        body = Receipt(self.origin, key.name, key.key_id, reference, contact_id, received_at, self.delay_s, salt,
                       digest, event_hash).body()
        return receipt_text(body, self.signer.sign_bytes(signed_message(body)))

    def receipt(self, case: Case, contact_id: str) -> str:
        """The receipt of the contact just triggered on ``case``: its events are encoded now (the leaf's hash)."""
        event = case._pending_events[-1]
        salt = salt_of(getattr(event, "receipt_salt", ""))
        if salt is None or getattr(event, "contact_id", None) != contact_id:
            raise RuntimeError(f"contact {contact_id} is not the last event triggered, with its receipt's salt")
        data = self.encode(case)
        return self.sign(reference=case.reference, contact_id=contact_id, received_at=event.timestamp, salt=salt,
                         event=event, event_hash=hashlib.sha256(data).digest())
