"""Issue 25, mail: the e-mail adapter's outbound side without servers — what an SMTP answer means for the report,
retries, each outcome reported once, positions kept behind what is owed, and logs that name no one.

Finding: "outbound acknowledgements and responses sent by SMTP with delivery reported" (and the outbound
brief: a temporary failure is the adapter's to retry, ``expired`` when it gives up). Before this change there was
no ``caseledger.ledger.mail`` (every test here fails on its import).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from caseledger.ledger.domain.values import DeliveryFailure
from caseledger.ledger.errors import BackendError, ValidationError
from caseledger.ledger.intake.outbound import OutboundMessage
from caseledger.ledger.intake.verdicts import PublicReason, Rejected, VerdictTimeout
from caseledger.ledger.mail.attachment_store import DigestDirectory
from caseledger.ledger.mail.mail_adapter import MailAdapter
from caseledger.ledger.mail.smtp_sender import SmtpSettings, TemporaryFailure, compose, failure_for

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
JANE = "jane.secret-4711@customer.example"
SETTINGS = SmtpSettings(host="127.0.0.1", port=2525, security="plain", sender="support@bank.example")


def message(n: int, *, deliver_by: datetime | None = NOW + timedelta(days=2), address: str | None = f"email:{JANE}",
            ) -> OutboundMessage:
    return OutboundMessage(position=100 + n, reference="CL-7K3QD-9XW2M", message_id=f"ACK{n}", kind="acknowledgement",
                           channel="email", customer_id="c-1", address=address, subject="Mortgage 77-4411",
                           in_reply_to="<m-1@customer.example>", text=f"We received your request {n}.",
                           locale="fr_FR", deliver_by=deliver_by, issued_at=NOW - timedelta(minutes=5))


@pytest.mark.parametrize(("code", "answer", "failure"), [
    (550, b"5.1.1 <jane@x> mailbox unknown", DeliveryFailure.INVALID_ADDRESS),
    (553, b"", DeliveryFailure.INVALID_ADDRESS),
    (552, b"5.2.2 mailbox full", DeliveryFailure.BOUNCED),
    (550, b"5.2.1 mailbox disabled", DeliveryFailure.BOUNCED),
    (554, b"5.7.1 rejected by policy", DeliveryFailure.REJECTED),
    (550, b"5.7.1 spam", DeliveryFailure.REJECTED),
    (554, b"", DeliveryFailure.REJECTED),
    (451, b"4.3.0 try later", None),
    (421, b"", None),
])
def test_a_permanent_smtp_answer_is_a_failure_code_and_a_temporary_one_none(
    code: int, answer: bytes, failure: DeliveryFailure | None,
) -> None:
    assert failure_for(code, answer) is failure


def test_our_mail_threads_with_the_customers_and_carries_the_reference() -> None:
    mail = compose(message(1), SETTINGS)
    assert (mail["To"], mail["From"], mail["In-Reply-To"], mail["References"]) == (
        JANE, "support@bank.example", "<m-1@customer.example>", "<m-1@customer.example>")
    assert mail["Subject"] == "Mortgage 77-4411 [CL-7K3QD-9XW2M]" and mail["Content-Language"] == "fr-FR"
    assert mail["Message-ID"].startswith("<CL-7K3QD-9XW2M.ACK1.") and mail["Message-ID"].endswith("@bank.example>")
    assert mail.get_content() == "We received your request 1.\n" and mail.get_content_charset() == "utf-8"
    assert compose(message(1), SETTINGS)["Message-ID"] == mail["Message-ID"]  # the same mail when sent again
    assert mail["Auto-Submitted"] == "auto-replied"  # RFC 3834: out-of-office robots do not answer it
    with pytest.raises(ValueError, match="no e-mail address"):
        compose(message(1, address="phone:+33611223344"), SETTINGS)


def test_plain_smtp_with_a_password_off_loopback_is_refused() -> None:
    from caseledger.ledger.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="unencrypted"):
        SmtpSettings(host="smtp.bank.example", security="plain", username="u", password="p", sender="a@b.example")
    assert "p4ss" not in repr(SmtpSettings(host="h", username="u", password="p4ss", sender="a@b.example"))


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class Feed:
    """The outbound feed: hands out each message once per reading, takes reports (or fails to)."""

    def __init__(self, messages: list[OutboundMessage]) -> None:
        self.messages = messages
        self.position = 0
        self.reports: list[tuple[str, str | None]] = []
        self.away = 0  # how many reports fail with BackendError

    def poll(self, *, wait_s: float | None = None) -> list[OutboundMessage]:
        out = [m for m in self.messages if m.position > self.position]
        if out:
            self.position = out[-1].position
        return out

    def _take(self, m: OutboundMessage, outcome: str | None) -> None:
        if self.away:
            self.away -= 1
            raise BackendError("the ledger service at http://x cannot be reached")
        self.reports.append((m.message_id, outcome))

    def delivered(self, m: OutboundMessage, *, at: datetime | None = None) -> None:
        self._take(m, None)

    def failed(self, m: OutboundMessage, reason: Any, *, at: datetime | None = None) -> None:
        self._take(m, DeliveryFailure(reason).value)


class Sender:
    """Answers each send with the next planned outcome: None (250), a failure code, or a TemporaryFailure."""

    def __init__(self, plan: list[Any]) -> None:
        self.plan = plan
        self.sent: list[str] = []

    def send(self, m: OutboundMessage) -> DeliveryFailure | None:
        self.sent.append(m.message_id)
        outcome = self.plan.pop(0) if self.plan else None
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def close(self) -> None:
        pass


class Mailbox:
    def __init__(self, mails: list[bytes]) -> None:
        self.mails = mails
        self.handled: list[int] = []

    def new_mails(self, *, limit: int = 100) -> Iterator[tuple[int, bytes]]:
        new = [(uid, raw) for uid, raw in enumerate(self.mails, 1) if uid not in self.handled]
        yield from new[:limit]

    def done(self, uid: int) -> None:
        self.handled.append(uid)

    def close(self) -> None:
        pass


class Intake:
    def __init__(self, fail: Exception | None = None, verdict: Any = None) -> None:
        self.drafts: list[Any] = []
        self.fail = fail
        self.verdict = verdict  # what the ledger decided (None: the broker's receipt only)

    def submit(self, draft: Any, *, wait: float | None = None) -> Any:
        if self.fail is not None:
            raise self.fail
        self.drafts.append(draft)
        return self.verdict


def adapter(tmp_path: Path, feed: Feed, sender: Sender, clock: Clock, *, mailbox: Mailbox | None = None,
            intake: Intake | None = None) -> MailAdapter:
    return MailAdapter(reader=mailbox or Mailbox([]), intake=intake or Intake(),  # type: ignore[arg-type]
                       attachments=DigestDirectory(tmp_path / "files"), outbound=feed,
                       sender=sender, state_file=tmp_path / "outbound.json", clock=clock)  # type: ignore[arg-type]


def test_a_temporary_failure_is_retried_with_a_growing_delay_and_delivered_once(tmp_path: Path) -> None:
    clock, feed = Clock(), Feed([message(1)])
    sender = Sender([TemporaryFailure("SMTP 451", 451), TemporaryFailure("SMTP 451", 451), None])
    mail = adapter(tmp_path, feed, sender, clock)
    assert mail.deliver(wait_s=0) == 0 and feed.reports == []
    first_due = mail.retries["CL-7K3QD-9XW2M", "ACK1"].due
    clock.now = first_due
    assert mail.deliver(wait_s=0) == 0
    assert mail.retries["CL-7K3QD-9XW2M", "ACK1"].due - clock.now == 2 * (first_due - NOW)  # doubled
    mail.deliver(wait_s=0)
    assert sender.sent == ["ACK1", "ACK1"] and feed.reports == []  # not due yet
    clock.now = mail.retries["CL-7K3QD-9XW2M", "ACK1"].due
    assert mail.deliver(wait_s=0) == 1
    assert feed.reports == [("ACK1", None)] and not mail.retries
    mail.deliver(wait_s=0)
    assert sender.sent == ["ACK1"] * 3 and feed.reports == [("ACK1", None)]


def test_a_message_whose_deadline_passes_while_retried_is_reported_expired(tmp_path: Path) -> None:
    clock, feed = Clock(), Feed([message(1, deliver_by=NOW + timedelta(seconds=10)), message(2, deliver_by=None)])
    sender = Sender([TemporaryFailure("SMTP OSError")] * 100)
    mail = adapter(tmp_path, feed, sender, clock)
    mail.deliver(wait_s=0)
    assert feed.reports == [("ACK1", "expired")]
    for _ in range(80):  # no deadline: unreachable once retried for two days (hourly at most)
        clock.now = min(r.due for r in mail.retries.values()) if mail.retries else clock.now
        mail.deliver(wait_s=0)
    assert feed.reports == [("ACK1", "expired"), ("ACK2", "unreachable")]


def test_a_report_the_service_did_not_take_is_retried_without_sending_the_mail_again(tmp_path: Path) -> None:
    clock, feed = Clock(), Feed([message(1)])
    feed.away = 2
    sender = Sender([None])
    mail = adapter(tmp_path, feed, sender, clock)
    mail.deliver(wait_s=0)
    mail.deliver(wait_s=0)
    assert feed.reports == [] and mail.unreported
    mail.deliver(wait_s=0)
    assert feed.reports == [("ACK1", None)] and sender.sent == ["ACK1"]


def test_the_saved_position_stays_behind_what_is_owed_so_a_restart_resumes_it(tmp_path: Path) -> None:
    clock, feed = Clock(), Feed([message(1), message(2), message(3)])
    mail = adapter(tmp_path, feed, Sender([None, TemporaryFailure("SMTP 451", 451), None]), clock)
    mail.deliver(wait_s=0)
    assert feed.reports == [("ACK1", None), ("ACK3", None)]
    restarted = Feed(feed.messages)
    adapter(tmp_path, restarted, Sender([]), clock)
    assert restarted.position == message(2).position - 1  # ACK2 is handed out again after a restart


def test_a_refused_mail_is_not_read_again_and_a_broker_away_is(tmp_path: Path) -> None:
    clock, feed = Clock(), Feed([])
    mailbox = Mailbox([b"Subject: no sender\r\n\r\nhello", b"From: jane@example.com\r\n\r\nhello"])
    mail = adapter(tmp_path, feed, Sender([]), clock, mailbox=mailbox, intake=Intake(fail=TimeoutError("broker")))
    assert mail.read_mailbox() == 0 and mailbox.handled == [1]  # refused for good; the second read again later
    mail.intake = Intake()
    assert mail.read_mailbox() == 1 and mailbox.handled == [1, 2]
    mail.intake = Intake(fail=ValidationError("an attachment's ref is not allowed"))
    mailbox.mails.append(b"From: jane@example.com\r\n\r\nagain")
    assert mail.read_mailbox() == 0 and mailbox.handled == [1, 2, 3]  # the SDK refuses it: it never will take it


def test_a_mail_without_a_verdict_in_time_is_read_again_and_a_rejected_one_is_logged_by_its_public_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """The adapter waits for the ledger's verdict: "received" is the ledger's, not the broker's (issue 25)."""
    clock, feed = Clock(), Feed([])
    mailbox = Mailbox([b"From: jane@example.com\r\nSubject: my refund\r\n\r\nwhere is it"])
    mail = adapter(tmp_path, feed, Sender([]), clock, mailbox=mailbox,
                   intake=Intake(fail=VerdictTimeout("no verdict", pending=[], verdicts=[])))
    assert mail.read_mailbox() == 0 and mailbox.handled == []  # not decided: read again, resubmitted, traced
    rejected = Rejected(adapter="mail", intake_id=uuid.uuid4(), intake_topic="t", intake_partition=0,
                        intake_offset=0, event_id=uuid.uuid4(), position=1, recorded_at=clock(),
                        reason=PublicReason("case-reference-refused", "case_reference", "send it without a reference"))
    mail.intake = Intake(verdict=rejected)
    with caplog.at_level(logging.INFO, logger="caseledger.mail"):
        assert mail.read_mailbox() == 1 and mailbox.handled == [1]
    assert "case-reference-refused (field case_reference)" in caplog.text
    assert "jane" not in caplog.text and "refund" not in caplog.text


def test_the_adapters_log_names_no_address_subject_text_or_message_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    feed = Feed([message(1), message(2), message(3), message(4, deliver_by=NOW)])
    sender = Sender([None, DeliveryFailure.INVALID_ADDRESS, TemporaryFailure("SMTP 451", 451),
                     TemporaryFailure("SMTP 451", 451)])
    feed.away = 1
    mailbox = Mailbox([f"From: {JANE}\r\nSubject: Mortgage 77-4411\r\nMessage-ID: <jane-4711@customer.example>\r\n"
                       "\r\nmy account 12345".encode(),
                       f"From: Jane <not-an-address-{JANE.split('@')[0]}>\r\nSubject: Mortgage 77-4411\r\n\r\nx".encode()])
    with caplog.at_level(logging.DEBUG):
        mail = adapter(tmp_path, feed, sender, clock, mailbox=mailbox)
        mail.read_mailbox()
        mail.deliver(wait_s=0)
        mail.deliver(wait_s=0)
    log = caplog.text
    assert "ACK1" in log and "UID 1" in log and "UID 2" in log
    for secret in (JANE, JANE.split("@")[0], "Mortgage", "77-4411", "12345", "jane-4711", "We received"):
        assert secret not in log, f"{secret!r} is in the adapter's log"


def test_an_in_reply_to_that_is_no_message_id_is_not_written_into_our_headers() -> None:
    """Another adapter may have recorded any channel message id on the e-mail channel: no header injection."""
    from dataclasses import replace

    for given in ("<a@b>\r\nBcc: attacker@evil.example", "form-42", "<a b@c>"):
        mail = compose(replace(message(1), in_reply_to=given), SETTINGS)
        assert mail["In-Reply-To"] is None and mail["References"] is None and "Bcc" not in mail


def test_run_reads_the_mailbox_at_its_interval_and_never_asks_the_feed_to_wait_longer_than_the_service_allows(
    tmp_path: Path,
) -> None:
    waits: list[float | None] = []

    class Waiting(Feed):
        def poll(self, *, wait_s: float | None = None) -> list[OutboundMessage]:
            waits.append(wait_s)
            return super().poll(wait_s=0)

    mailbox = Mailbox([b"From: jane@example.com\r\n\r\nhello"])
    intake = Intake()
    mail = adapter(tmp_path, Waiting([message(1)]), Sender([None]), Clock(), mailbox=mailbox, intake=intake)
    rounds = iter(range(3))
    mail.run(until=lambda: next(rounds, None) is None, poll_s=3600)
    assert len(intake.drafts) == 1 and len(waits) == 3 and all(w is not None and w <= 15 for w in waits)


def test_a_backlog_is_read_in_one_go(tmp_path: Path) -> None:
    mailbox = Mailbox([f"From: c{n}@example.com\r\n\r\nhello {n}".encode() for n in range(250)])
    intake = Intake()
    mail = adapter(tmp_path, Feed([]), Sender([]), Clock(), mailbox=mailbox, intake=intake)
    assert mail.read_mailbox() == 250 and len(intake.drafts) == 250 and mail.read_mailbox() == 0


def test_our_own_mail_come_back_to_the_mailbox_is_not_a_contact(tmp_path: Path) -> None:
    mailbox = Mailbox([b"From: Support <Support@Bank.example>\r\nSubject: Re: x\r\n\r\nour own text",
                       b"From: jane@example.com\r\n\r\nhello"])
    intake = Intake()
    mail = MailAdapter(reader=mailbox, intake=intake, attachments=DigestDirectory(tmp_path / "f"),  # type: ignore[arg-type]
                       outbound=Feed([]), sender=Sender([]), state_file=tmp_path / "o.json",  # type: ignore[arg-type]
                       own_address="support@bank.example")
    assert mail.read_mailbox() == 1 and [str(d.identity) for d in intake.drafts] == ["email:jane@example.com"]
    assert mailbox.handled == [1, 2]
