"""Issue 25, mail: the e-mail adapter's IMAP reader against Debian's Dovecot, its SMTP sender against aiosmtpd.

Finding: "Test it against real servers started by fixtures (e.g. Debian's Dovecot for IMAP, aiosmtpd for SMTP)";
"a restart of the adapter re-reads nothing twice". Before this change there was no ``caseledger.ledger.mail``.
"""

from __future__ import annotations

import imaplib
import json
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from caseledger.ledger.domain.values import DeliveryFailure
from caseledger.ledger.errors import BackendError, ConfigurationError
from caseledger.ledger.intake.outbound import OutboundMessage
from caseledger.ledger.mail.imap_reader import ImapReader, ImapSettings
from caseledger.ledger.mail.smtp_sender import SmtpSender, SmtpSettings, TemporaryFailure
from tests.support.mail_servers import ImapServer, SmtpServer
from tests.support.service_server import free_port


def settings(server: ImapServer, **changes: object) -> ImapSettings:
    return ImapSettings(**{"host": server.host, "port": server.port, "username": server.username,  # type: ignore[arg-type]
                           "password": server.password, "security": "plain", **changes})


def mail(n: int) -> EmailMessage:
    m = EmailMessage()
    m["From"] = f"customer{n}@example.com"
    m["Subject"] = f"request {n}"
    m["Message-ID"] = f"<m{n}@example.com>"
    m.set_content(f"text {n}")
    return m


def test_each_mail_is_read_once_across_restarts_and_the_mailbox_is_left_as_it_was(
    imap_server: ImapServer, tmp_path: Path,
) -> None:
    state = tmp_path / "imap.json"
    for n in (1, 2, 3):
        imap_server.append(mail(n))
    reader = ImapReader(settings(imap_server), state)
    got = list(reader.new_mails())
    assert [b"text 1" in raw for _, raw in got] == [True, False, False] and len(got) == 3
    for uid, _ in got[:2]:
        reader.done(uid)
    reader.close()
    # A crash before the third was confirmed: it is read again, the first two are not.
    again = ImapReader(settings(imap_server), state)
    assert [b"text 3" in raw for _, raw in again.new_mails()] == [True]
    again.done(got[2][0])
    assert list(again.new_mails()) == []
    imap_server.append(mail(4))
    assert [b"text 4" in raw for _, raw in again.new_mails()] == [True]  # the same connection sees new mail
    again.close()
    # Read-only: no mail was marked \Seen or changed.
    imap = imaplib.IMAP4(imap_server.host, imap_server.port)
    imap.login(imap_server.username, imap_server.password)
    imap.select("INBOX", readonly=True)
    _, flags = imap.fetch("1:*", "(FLAGS)")
    imap.logout()
    assert len(flags) == 4 and not any(b"\\Seen" in f for f in flags)
    saved = json.loads(state.read_text())
    assert saved["last_uid"] == got[2][0] and saved["uidvalidity"] > 0


def test_a_mailbox_whose_uidvalidity_changed_is_read_again_from_its_start(
    imap_server: ImapServer, tmp_path: Path,
) -> None:
    imap_server.append(mail(1))
    state = tmp_path / "imap.json"
    state.write_text(json.dumps({"uidvalidity": 1, "last_uid": 99}))  # another mailbox's position
    reader = ImapReader(settings(imap_server), state)
    assert len(list(reader.new_mails())) == 1
    reader.close()


def test_configuration_errors_say_what_to_fix_and_never_the_password(imap_server: ImapServer, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="refused the login") as refused:
        list(ImapReader(settings(imap_server, password="wrong-secret-77"), tmp_path / "s.json").new_mails())
    assert "wrong-secret-77" not in str(refused.value)
    with pytest.raises(ConfigurationError, match="cannot be opened"):
        list(ImapReader(settings(imap_server, mailbox="Nowhere"), tmp_path / "s.json").new_mails())
    with pytest.raises(ConfigurationError, match="loopback"):
        settings(imap_server, host="imap.bank.example")
    with pytest.raises(BackendError, match="retrying"):
        list(ImapReader(settings(imap_server, port=free_port()), tmp_path / "s.json").new_mails())
    (tmp_path / "bad.json").write_text("not json")
    with pytest.raises(ConfigurationError, match="state file"):
        ImapReader(settings(imap_server), tmp_path / "bad.json")


def outbound(n: int) -> OutboundMessage:
    now = datetime.now(UTC)
    return OutboundMessage(position=n, reference="CL-7K3QD-9XW2M", message_id=f"R{n}", kind="response",
                           channel="email", customer_id="c-1", address="email:jane@customer.example",
                           subject="Card blocked", in_reply_to="<m1@customer.example>", text="Héllo, unblocked.",
                           locale=None, deliver_by=now + timedelta(days=1), issued_at=now)


@pytest.mark.parametrize(("answer", "failure"), [
    ("550 5.1.1 mailbox unknown", DeliveryFailure.INVALID_ADDRESS),
    ("552 5.2.2 mailbox full", DeliveryFailure.BOUNCED),
    ("554 5.7.1 refused by policy", DeliveryFailure.REJECTED),
])
def test_a_permanent_refusal_is_a_failure_code(smtp_server: SmtpServer, answer: str, failure: DeliveryFailure) -> None:
    smtp_server.answer = answer
    sender = SmtpSender(SmtpSettings(host=smtp_server.host, port=smtp_server.port, security="plain",
                                     sender="support@bank.example"))
    assert sender.send(outbound(1)) is failure
    smtp_server.answer = None
    assert sender.send(outbound(2)) is None  # the connection goes on after a refusal
    sender.close()
    (received,) = smtp_server.received
    assert received["Subject"] == "Card blocked [CL-7K3QD-9XW2M]" and received.get_content().replace("\r\n", "\n") == "Héllo, unblocked.\n"
    assert "Auto-Submitted" not in received  # a response is written by a person


def test_a_temporary_refusal_or_no_server_is_retried(smtp_server: SmtpServer) -> None:
    smtp_server.answer = "451 4.3.0 try again later"
    sender = SmtpSender(SmtpSettings(host=smtp_server.host, port=smtp_server.port, security="plain",
                                     sender="support@bank.example"))
    with pytest.raises(TemporaryFailure) as temporary:
        sender.send(outbound(1))
    assert temporary.value.code == 451
    away = SmtpSender(SmtpSettings(host="127.0.0.1", port=free_port(), security="plain", sender="support@bank.example"))
    with pytest.raises(TemporaryFailure):
        away.send(outbound(1))
    assert smtp_server.received == []


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_the_mailbox_is_read_over_tls_or_starttls_and_a_certificate_it_cannot_verify_is_refused(
    imap_server: ImapServer, tmp_path: Path, security: str,
) -> None:
    imap_server.append(mail(1))
    port = imap_server.tls_port if security == "tls" else imap_server.port
    reader = ImapReader(settings(imap_server, security=security, port=port, cafile=str(imap_server.cafile),
                                 host="localhost"), tmp_path / "s.json")
    assert len(list(reader.new_mails())) == 1
    reader.close()
    unverified = ImapReader(settings(imap_server, security=security, port=port, host="localhost"), tmp_path / "t.json")
    with pytest.raises(BackendError):  # the system's CAs do not know the server: no password is sent
        list(unverified.new_mails())


def test_mail_is_sent_over_starttls_with_a_login(smtp_tls_server: SmtpServer) -> None:
    from tests.support.mail_servers import SMTP_PASSWORD, SMTP_USER

    secure = SmtpSettings(host="localhost", port=smtp_tls_server.port, security="starttls", username=SMTP_USER,
                          password=SMTP_PASSWORD, sender="support@bank.example", cafile=str(smtp_tls_server.cafile))
    sender = SmtpSender(secure)
    assert sender.send(outbound(1)) is None
    sender.close()
    assert len(smtp_tls_server.received) == 1
    from dataclasses import replace

    with pytest.raises(TemporaryFailure):  # a wrong password: retried (the log tells the operator)
        SmtpSender(replace(secure, password="wrong", timeout_s=3)).send(outbound(2))  # aiosmtpd stalls smtplib's 2nd mechanism
    with pytest.raises(TemporaryFailure):  # a certificate no CA vouches for: nothing sent
        SmtpSender(replace(secure, cafile=None)).send(outbound(3))
    assert len(smtp_tls_server.received) == 1
