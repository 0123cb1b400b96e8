"""Which case a customer's mail belongs to: the reference in its subject, or in the Message-IDs of our mails it answers.

The adapter gives every mail it sends a Message-ID that embeds the case's reference and the message's id
(``<CL-7K3QD-9XW2M.ACK1.4f2a9c1e0b7d3a65@mail.bank.example>``), so a reply — whose ``In-Reply-To`` and
``References`` name it — threads back to its case without the adapter keeping any state. A mail that names
no such Message-ID still threads when its subject carries the reference (``Re: Card blocked [CL-7K3QD-9XW2M]``).
The ledger checks that the case is the sender's: a reference in a stranger's mail is refused, never joined.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

__all__ = ["case_reference_of", "outbound_message_id"]

_SYMBOL = "[0-9A-HJKMNP-TV-Z]"  # Crockford base32, as ledger/domain/case_references.py draws them
_REFERENCE = rf"CL-{_SYMBOL}{{5}}-{_SYMBOL}{{5}}"
_IN_TEXT = re.compile(rf"(?<![0-9A-Z])({_REFERENCE})(?![0-9A-Z])", re.IGNORECASE)
# The local part of our own Message-IDs: reference, message id, a digest (see outbound_message_id).
_OURS = re.compile(rf"<\s*({_REFERENCE})\.([A-Z]{{1,4}}[0-9]{{1,9}})\.[0-9a-f]{{16}}@[^<>\s]+\s*>", re.IGNORECASE)
_MESSAGE_ID = re.compile(r"<[^<>]*>")


def outbound_message_id(reference: str, message_id: str, *, issued_at: str, host: str) -> str:
    """Our Message-ID for message ``message_id`` of case ``reference``: the same on every attempt, so a mail sent
    again after a crash is the same mail to the receiving servers (they may drop the copy)."""
    digest = hashlib.sha256(f"{reference}\n{message_id}\n{issued_at}".encode()).hexdigest()[:16]
    return f"<{reference.upper()}.{message_id.upper()}.{digest}@{host}>"


def case_reference_of(*, subject: str, in_reply_to: str = "", references: str = "") -> str | None:
    """The case a mail answers: the reference of our Message-ID it replies to (``In-Reply-To``, then
    ``References`` from the newest), else the reference in its subject, else None (a new request)."""
    for header in (in_reply_to, *reversed(_MESSAGE_ID.findall(references))):
        for found in _OURS.finditer(header):
            return found.group(1).upper()
    found_in_subject = _IN_TEXT.search(subject)
    return found_in_subject.group(1).upper() if found_in_subject else None


def message_ids(*headers: str) -> Iterable[str]:
    """The ``<…>`` Message-IDs named in headers such as References, in order."""
    for header in headers:
        yield from _MESSAGE_ID.findall(header)
