"""A customer's mail as a contact draft: who wrote, about what, on which case, with which files.

- **Who**: the first address of ``From`` becomes the identity ``email:…``.
- **What**: the text part (``text/plain``, else ``text/html`` read as text) is the request, kept whole as
  ONE item: a free-text mail is one question, and the agent splits it if it must. A mail without text is
  its subject; a text longer than the ledger takes in a contact is attached in full (``message.txt``).
- **Which case**: :func:`~caseledger.ledger.mail.mail_threads.case_reference_of` (``In-Reply-To``/``References``
  naming our mails, else the reference in the subject): such a mail is a follow-up on that case.
- **Which message**: its ``Message-ID`` is the channel message id, so the same mail read twice is a resubmission
  the ledger traces, never a second contact; a mail without one gets an id from the digest of its bytes.
- **When**: its ``Date``, as a claim, only within the bounds the ledger accepts (ledger/domain/claimed_times.py):
  a customer's clock hours ahead must not get the contact refused.
- **Files**: every attachment is stored sealed, the ledger naming it by its SHA-256 and a ref that opens it
  (:mod:`~caseledger.ledger.mail.attachment_store`).
- **Not a person**: an automatic mail (``Auto-Submitted``, an out-of-office, a bounce report) is refused:
  acknowledging it would start a mail loop with the robot that sent it.

A mail that cannot be a contact raises :class:`MailRefused` with a reason that quotes nothing of the mail.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from html.parser import HTMLParser

from caseledger.ledger.domain.claimed_times import CLOCK_SKEW, HORIZON
from caseledger.ledger.domain.values import MAX_BODY_CHARS, Attachment, Channel, ContactDraft, Identity
from caseledger.ledger.errors import ValidationError
from caseledger.ledger.mail.attachment_store import AttachmentStore
from caseledger.ledger.mail.mail_threads import case_reference_of

__all__ = ["MailRefused", "draft_from_mail"]

MAX_SUBJECT_CHARS = 500
MAX_MESSAGE_ID_CHARS = 500
PREVIEW_CHARS = 2_000  # what a text too long for one contact keeps in its item; the whole text is attached
NO_TEXT = "(no text: see the attachments)"
_SURROGATES = re.compile("[\ud800-\udfff]")
_SPACES = re.compile(r"\s+")
_MARGIN = timedelta(minutes=1)  # a claim this close to a bound is dropped, not risked


class MailRefused(ValidationError):
    """This mail cannot be a contact; the reason names what is missing, never a value of the mail."""


def draft_from_mail(raw: bytes, *, attachments: AttachmentStore, now: datetime | None = None) -> ContactDraft:
    """The contact draft of the mail ``raw`` (its bytes as the mailbox holds them); :class:`MailRefused` when it
    cannot be one. Attachments are stored in ``attachments`` first; the draft names them by digest."""
    try:
        return _draft(raw, attachments, now or datetime.now(UTC))
    except MailRefused:
        raise
    except ValidationError as error:
        raise MailRefused(f"the mail cannot be a contact: {error}") from None


def _draft(raw: bytes, attachments: AttachmentStore, now: datetime) -> ContactDraft:
    mail = BytesParser(policy=policy.default).parsebytes(raw)
    _refuse_automatic(mail)
    identity = _sender(mail)
    subject = _SPACES.sub(" ", _header(mail, "Subject")).strip()[:MAX_SUBJECT_CHARS]
    reference = case_reference_of(subject=subject, in_reply_to=_header(mail, "In-Reply-To"),
                                  references=_header(mail, "References"))
    files = [_stored(part, attachments, n) for n, part in enumerate(_attachment_parts(mail), 1)]
    text = _text_of(mail)
    if len(text) > MAX_BODY_CHARS:
        whole = text.encode()
        files.append(Attachment(ref=attachments.put(whole), sha256=hashlib.sha256(whole).hexdigest(),
                                size=len(whole), media_type="text/plain", filename="message.txt"))
        text = f"{text[:PREVIEW_CHARS].rstrip()}\n[… the whole text is attached: message.txt]"
    item = text or subject or (NO_TEXT if files else "")
    if not item:
        raise MailRefused("the mail has no text, no subject and no attachment: nothing to record")
    return ContactDraft(
        channel=Channel.EMAIL, channel_message_id=_message_id(mail, raw), identity=identity, items=(item,),
        subject=subject, attachments=tuple(files), case_reference=reference, follow_up=reference is not None,
        occurred_at=_claimed_date(mail, now),
    )


def _clean(text: str) -> str:
    """Text the ledger can hold: undecodable bytes (surrogate escapes) become U+FFFD."""
    return _SURROGATES.sub("\ufffd", text)


def _header(mail: Message, name: str) -> str:
    """The header's decoded value, or "" when absent or unreadable (a mangled header is no reason to crash)."""
    try:
        value = mail.get(name)
        return _clean(str(value)) if value is not None else ""
    except Exception:  # the email package raises many kinds on malformed headers
        return ""


def _refuse_automatic(mail: Message) -> None:
    """Mails no person wrote: an answer to one would be answered again (a mail loop with an auto-responder)."""
    auto = _header(mail, "Auto-Submitted").strip().lower()
    if auto and not auto.startswith("no"):
        raise MailRefused("the mail was sent automatically (Auto-Submitted, RFC 3834): not a customer's request")
    if _header(mail, "Precedence").strip().lower() in ("auto_reply", "junk"):
        raise MailRefused("the mail is an automatic reply (Precedence): not a customer's request")
    if mail.get_content_type() in ("multipart/report", "message/delivery-status"):
        raise MailRefused("the mail is a delivery or read report (multipart/report): not a customer's request")


def _sender(mail: Message) -> Identity:
    try:
        addresses = getattr(mail.get("From"), "addresses", ())
        address = _clean(addresses[0].addr_spec) if addresses else ""
    except Exception:
        address = ""
    if not address:
        raise MailRefused("the mail has no readable From address: the ledger needs the sender's e-mail address")
    try:
        return Identity(kind="email", value=address)
    except ValidationError:
        raise MailRefused("the From address is not an e-mail address (name@domain)") from None


def _message_id(mail: Message, raw: bytes) -> str:
    given = _SPACES.sub("", _header(mail, "Message-ID"))
    if given and len(given) <= MAX_MESSAGE_ID_CHARS:
        return given
    # The same bytes, the same id: a mail read twice stays one contact.
    return f"<sha256-{hashlib.sha256(raw).hexdigest()[:40]}@no-message-id.invalid>"


def _claimed_date(mail: Message, now: datetime) -> datetime | None:
    try:
        claimed = getattr(mail.get("Date"), "datetime", None)
    except Exception:
        return None
    if claimed is None or claimed.tzinfo is None:
        return None  # no zone, no instant: claim nothing rather than guess
    claimed = claimed.astimezone(UTC)
    if not now - HORIZON + _MARGIN <= claimed <= now + CLOCK_SKEW - _MARGIN:
        return None
    return claimed


def _text_of(mail: EmailMessage) -> str:
    try:
        part = mail.get_body(preferencelist=("plain", "html"))
    except Exception:
        part = None
    if part is None:
        return ""
    text = _decoded(part)
    if part.get_content_subtype() == "html":
        text = _HtmlText.of(text)
    return _clean(text).replace("\r\n", "\n").strip()


def _decoded(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        if isinstance(content, str):
            return content
    except Exception:  # an unknown charset, a broken transfer encoding
        pass
    payload = part.get_payload(decode=True)
    return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def _attachment_parts(mail: EmailMessage) -> list[Message]:
    try:
        return list(mail.iter_attachments())
    except Exception:
        return []


def _stored(part: Message, store: AttachmentStore, n: int) -> Attachment:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):  # an attached mail (message/rfc822) or a nested multipart: kept whole
        inner = part.get_payload()
        first = inner[0] if isinstance(inner, list) and inner else None
        try:
            payload = first.as_bytes() if isinstance(first, Message) else part.as_bytes()
        except Exception:
            payload = part.as_bytes(policy=policy.compat32)
    try:
        filename = part.get_filename()
    except Exception:
        filename = None
    media_type = part.get_content_type() or "application/octet-stream"
    # Always a file name: the acknowledgement's copy of the request lists attachments by name, else by ref.
    name = _clean(filename).strip()[:255] if filename else ""
    return Attachment(ref=store.put(payload), sha256=hashlib.sha256(payload).hexdigest(), size=len(payload),
                      media_type=_clean(media_type) if "/" in media_type else "application/octet-stream",
                      filename=name or f"attachment-{n}")


class _HtmlText(HTMLParser):
    """The text a reader sees in an HTML mail: tags dropped, blocks on lines of their own, scripts and styles out."""

    _BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self.hidden += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head"):
            self.hidden = max(0, self.hidden - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)

    @classmethod
    def of(cls, html: str) -> str:
        parser = cls()
        try:
            parser.feed(html)
            parser.close()
        except Exception:
            return re.sub(r"<[^>]*>", " ", html)
        lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
