"""Our messages as mails, sent over SMTP, and what the server's answer means for the delivery report.

Each message of the outbound feed becomes one ``text/plain; charset=utf-8`` mail to the customer's address:
its subject carries the case's reference (``Card blocked [CL-7K3QD-9XW2M]``), ``In-Reply-To`` and
``References`` name the customer's mail it answers, and its Message-ID embeds the reference and the message
id (:func:`~caseledger.ledger.mail.mail_threads.outbound_message_id`) so that the reply threads back. The text
is sent exactly as recorded.

The server's answer decides the report (docs/adapters.md): accepted (``250``) is delivered; a permanent
refusal (``5xx``) is a failure whose code comes from the enhanced status (``5.1.x`` the address,
``5.2.x`` the mailbox, otherwise the server's policy); a temporary one (``4xx``, a lost connection, a
timeout) is retried later by the caller (:class:`TemporaryFailure`). The server's own words are never
reported nor logged: they may quote the address.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime

from caseledger.ledger.domain.values import DeliveryFailure
from caseledger.ledger.errors import BackendError, ConfigurationError
from caseledger.ledger.intake.outbound import OutboundMessage
from caseledger.ledger.mail.mail_threads import outbound_message_id

__all__ = ["SmtpSender", "SmtpSettings", "TemporaryFailure", "compose", "failure_for"]

SECURITY = ("ssl", "starttls", "plain")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_ENHANCED = re.compile(rb"^\s*([245])\.(\d{1,3})\.(\d{1,3})")
_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_MESSAGE_ID = re.compile(r"^<[^<>\s]{1,500}>$")


class TemporaryFailure(BackendError):
    """The mail was not sent this time (a 4xx, a lost connection); try again later. ``code``: the SMTP code, if any."""

    def __init__(self, what: str, code: int | None = None) -> None:
        super().__init__(what)
        self.code = code


@dataclass(frozen=True, kw_only=True)
class SmtpSettings:
    """The server our mails leave by, and who they come from."""

    host: str
    port: int | None = None  # default: 465 for ssl, 587 for starttls, 25 for plain
    security: str = "starttls"  # ssl, starttls, or plain (loopback only)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str  # the From address customers see and reply to, e.g. support@bank.example
    message_id_host: str | None = None  # the domain of our Message-IDs (default: the sender's domain)
    cafile: str | None = None
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.security not in SECURITY:
            raise ConfigurationError(f"SMTP security must be one of {', '.join(SECURITY)}, not {self.security!r}")
        if self.security == "plain" and self.host not in _LOOPBACK and self.password:
            raise ConfigurationError("plain SMTP would send the password unencrypted: use --smtp-security "
                                     "starttls or ssl (plain with a login is for a server on loopback only)")
        if not _ADDRESS.match(self.sender):
            raise ConfigurationError("--mail-from must be an e-mail address such as support@bank.example")

    @property
    def effective_port(self) -> int:
        return self.port or {"ssl": 465, "starttls": 587, "plain": 25}[self.security]

    @property
    def id_host(self) -> str:
        return self.message_id_host or self.sender.rpartition("@")[2]


def compose(message: OutboundMessage, settings: SmtpSettings) -> EmailMessage:
    """The mail that carries ``message`` to its address (a ValueError when it has no e-mail address)."""
    address = (message.address or "").removeprefix("email:")
    if not message.address or not message.address.startswith("email:") or not _ADDRESS.match(address):
        raise ValueError("the message has no e-mail address")
    mail = EmailMessage(policy=policy.default)
    mail["From"] = settings.sender
    mail["To"] = address
    subject = " ".join((message.subject or "").split())
    tag = f"[{message.reference}]"
    mail["Subject"] = subject if tag in subject else f"{subject} {tag}".strip()
    mail["Date"] = format_datetime(message.issued_at)
    mail["Message-ID"] = outbound_message_id(message.reference, message.message_id,
                                             issued_at=message.issued_at.isoformat(), host=settings.id_host)
    if message.in_reply_to and _MESSAGE_ID.match(message.in_reply_to):  # a mail's id, not another channel's
        mail["In-Reply-To"] = message.in_reply_to
        mail["References"] = message.in_reply_to
    if message.kind == "acknowledgement":  # RFC 3834: no auto-responder answers it, so no mail loop starts
        mail["Auto-Submitted"] = "auto-replied"
    mail.set_content(message.text, subtype="plain", charset="utf-8")
    if message.locale:  # after set_content, which replaces every Content-* header
        mail["Content-Language"] = message.locale.replace("_", "-")
    return mail


def failure_for(code: int, answer: bytes = b"") -> DeliveryFailure | None:
    """The failure code a permanent SMTP answer means; None for a temporary one (4xx), which is retried."""
    if 400 <= code < 500:
        return None
    enhanced = _ENHANCED.match(answer or b"")
    if enhanced and enhanced.group(1) == b"5":
        subject = enhanced.group(2)
        if subject == b"1":  # 5.1.x: bad destination mailbox or address
            return DeliveryFailure.INVALID_ADDRESS
        if subject == b"2":  # 5.2.x: mailbox full, disabled, message too large for it
            return DeliveryFailure.BOUNCED
        return DeliveryFailure.REJECTED  # 5.7.x policy, 5.3.x system, 5.6.x content …
    if code in (550, 551, 553):  # mailbox unavailable, not local, name not allowed
        return DeliveryFailure.INVALID_ADDRESS
    if code == 552:  # exceeded storage allocation
        return DeliveryFailure.BOUNCED
    return DeliveryFailure.REJECTED


class SmtpSender:
    """Sends one message at a time over one SMTP connection, reopened when the server drops it."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def send(self, message: OutboundMessage) -> DeliveryFailure | None:
        """None once the server accepted the mail; the failure code of a permanent refusal; raises
        :class:`TemporaryFailure` when it is worth trying again."""
        try:
            mail = compose(message, self.settings)
        except ValueError:
            return DeliveryFailure.INVALID_ADDRESS
        try:
            refused = self._connection().send_message(mail)
        except smtplib.SMTPRecipientsRefused as error:
            self._reset()
            (code, answer), = error.recipients.values()
            return self._permanent_or_retry(code, answer)
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as error:
            self._reset()
            return self._permanent_or_retry(error.smtp_code, error.smtp_error)
        except smtplib.SMTPAuthenticationError:
            self.close()
            raise TemporaryFailure("the SMTP server refused our login: check the SMTP user and password") from None
        except (smtplib.SMTPException, OSError) as error:
            self.close()
            raise TemporaryFailure(f"SMTP {type(error).__name__}") from None
        if refused:  # only one recipient: a refusal raised above; kept for a server that answers otherwise
            (code, answer), = refused.values()
            return self._permanent_or_retry(code, answer)
        return None

    def close(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._smtp.quit()
            self._smtp = None

    def _permanent_or_retry(self, code: int, answer: bytes | str) -> DeliveryFailure:
        failure = failure_for(code, answer.encode() if isinstance(answer, str) else answer)
        if failure is None:
            raise TemporaryFailure(f"SMTP {code}", code)
        return failure

    def _reset(self) -> None:
        try:
            if self._smtp is not None:
                self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is not None:
            try:
                if self._smtp.noop()[0] == 250:
                    return self._smtp
            except (smtplib.SMTPException, OSError):
                pass
            self.close()
        s = self.settings
        context = ssl.create_default_context(cafile=s.cafile)
        local = s.id_host  # our name in EHLO
        smtp: smtplib.SMTP
        if s.security == "ssl":
            smtp = smtplib.SMTP_SSL(s.host, s.effective_port, local_hostname=local, timeout=s.timeout_s,
                                    context=context)
        else:
            smtp = smtplib.SMTP(s.host, s.effective_port, local_hostname=local, timeout=s.timeout_s)
            if s.security == "starttls":
                smtp.starttls(context=context)
        if s.username:
            smtp.login(s.username, s.password or "")
        self._smtp = smtp
        return smtp
