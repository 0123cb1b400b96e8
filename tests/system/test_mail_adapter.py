"""Issue 25, mail: the reference e-mail adapter end to end, against Dovecot (IMAP), aiosmtpd (SMTP), the Kafka
broker, the intake worker and a real ``caseledger serve``.

Finding: "An adapter that is real, not a sketch. Ship a reference e-mail adapter in the product (IMAP in, SMTP
out, through the SDK like any adapter): threading by In-Reply-To/References and by the reference in the subject,
free-text mails as one item, attachments stored by digest, outbound acknowledgements and responses sent by SMTP
with delivery reported." Before this change there was no ``caseledger.ledger.mail`` (every test here fails on
its import).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from caseledger.ledger import KafkaIntakeClient, OutboundClient
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.permissions import Role
from caseledger.ledger.intake.signatures import AdapterKeys, AdapterSigner
from caseledger.ledger.intake.worker import KafkaIntakeWorker
from caseledger.ledger.kafka.publisher import KafkaEventPublisher
from caseledger.ledger.mail.attachment_store import DigestDirectory
from caseledger.ledger.mail.imap_reader import ImapReader, ImapSettings
from caseledger.ledger.mail.mail_adapter import MailAdapter
from caseledger.ledger.mail.smtp_sender import SmtpSender, SmtpSettings
from caseledger.ledger.settings import KafkaSettings
from tests.support.clock import FakeClock
from tests.support.environment import ledger_settings
from tests.support.mail_servers import ImapServer, SmtpServer
from tests.support.service_server import Service, start_service, stop_service

pytestmark = pytest.mark.kafka

SUPPORT = "support@bank.example"
PDF = b"%PDF-1.4\n% a bank statement, the customer's\n" + bytes(range(256))
OUR_ID = re.compile(r"^<(CL-[0-9A-Z]{5}-[0-9A-Z]{5})\.ACK\d+\.[0-9a-f]{16}@bank\.example>$")


@dataclass
class Ledger:
    service: Service
    kafka: KafkaSettings
    name: str
    token: str
    signer: AdapterSigner


@pytest.fixture
def ledger(tmp_path: Path, kafka: KafkaSettings) -> Iterator[Ledger]:
    """``caseledger serve`` and an intake worker on one database; an adapter principal and key for e-mail."""
    service = start_service(tmp_path)
    name = f"mail-{uuid.uuid4().hex[:6]}"
    with service.client(Role.ADMIN) as admin:
        token = admin.post("/v1/principals", json={"name": name, "role": "adapter"}).json()["token"]
    store = service.ledger()
    AdapterKeys(store.storage.adapter_keys()).add(name, ["email"], private_key_out=tmp_path / "mail.pem")
    worker = KafkaIntakeWorker(store, kafka)
    publishing = service.ledger()  # the publisher writes each record's verdict, which the adapter awaits
    publisher = KafkaEventPublisher(publishing, kafka, batch_size=200)
    stop = threading.Event()
    threads = [threading.Thread(target=worker.run, args=(stop,), daemon=True),
               threading.Thread(target=publisher.run, args=(stop,), daemon=True)]
    for thread in threads:
        thread.start()
    try:
        yield Ledger(service, kafka, name, str(token), AdapterSigner.from_file(name, tmp_path / "mail.pem"))
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        store.close()
        publishing.close()
        stop_service(service)


def adapter(ledger: Ledger, imap: ImapServer, smtp: SmtpServer, state: Path) -> MailAdapter:
    """The adapter as ``caseledger adapters run-mail`` builds it, its state under ``state``."""
    return MailAdapter(
        reader=ImapReader(ImapSettings(host=imap.host, port=imap.port, username=imap.username,
                                       password=imap.password, security="plain"), state / "imap.json"),
        intake=KafkaIntakeClient(ledger.kafka, adapter=ledger.name, signer=ledger.signer),
        attachments=DigestDirectory(state / "attachments"),
        outbound=OutboundClient(ledger.service.url, ledger.token, wait_s=1),
        sender=SmtpSender(SmtpSettings(host=smtp.host, port=smtp.port, security="plain", sender=SUPPORT)),
        state_file=state / "outbound.json", first_retry=timedelta(seconds=1),
    )


def customer_mail(sender: str, subject: str, text: str, *, in_reply_to: str | None = None,
                  attachment: bytes | None = None) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = f"Jane Doe <{sender}>"
    mail["To"] = SUPPORT
    mail["Subject"] = subject
    mail["Date"] = format_datetime(datetime.now(UTC))
    mail["Message-ID"] = f"<{uuid.uuid4().hex}@customer.example>"
    if in_reply_to:
        mail["In-Reply-To"] = in_reply_to
        mail["References"] = in_reply_to
    mail.set_content(text)
    if attachment is not None:
        mail.add_attachment(attachment, maintype="application", subtype="pdf", filename="statement.pdf")
    return mail


def until(condition: Callable[[], Any], step: Callable[[], Any], *, timeout: float = 60) -> Any:
    """Run ``step`` until ``condition()`` is truthy; its value."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "timed out"
        step()
    return found


def contacts_of(service: Service, reference: str) -> list[Any]:
    store = service.ledger()
    try:
        return sorted(store.get_case(reference).contacts.values(), key=lambda c: c.contact_id)
    finally:
        store.close()


def test_mail_in_acknowledged_by_smtp_delivery_recorded_deadline_met_and_replies_thread_back(
    ledger: Ledger, imap_server: ImapServer, smtp_server: SmtpServer, tmp_path: Path,
) -> None:
    jane = f"jane.{uuid.uuid4().hex[:6]}@customer.example"
    first = customer_mail(jane, "Card blocked", "My card was blocked yesterday.\nWhy, and when can I use it?",
                          attachment=PDF)
    imap_server.append(first)
    mail = adapter(ledger, imap_server, smtp_server, tmp_path / "state")
    assert mail.read_mailbox() == 1
    ack = until(lambda: smtp_server.messages_to(jane), lambda: mail.deliver(wait_s=1))[0]
    # The acknowledgement went to the customer, threaded with her mail, carrying the reference.
    assert ack["In-Reply-To"] == first["Message-ID"] and ack["References"] == first["Message-ID"]
    reference = OUR_ID.match(ack["Message-ID"]).group(1)
    assert f"[{reference}]" in ack["Subject"] and ack["From"] == SUPPORT
    assert ack.get_content_type() == "text/plain" and ack.get_content_charset() == "utf-8"
    assert reference in ack.get_content()
    # One contact, one free-text item; the attachment stored by digest, the ledger naming it by its SHA-256.
    (contact,) = contacts_of(ledger.service, reference)
    assert len(contact.item_ids) == 1 and contact.channel_message_id == first["Message-ID"]
    store = ledger.service.ledger()
    try:
        case = store.get_case(reference)
        assert case.items[contact.item_ids[0]].text.startswith("My card was blocked yesterday.")
        digest = hashlib.sha256(PDF).hexdigest()
        (received,) = [e for e in store.history(f"email:{jane}") if type(e).__name__ == "ContactReceived"]
        assert [(a["sha256"], a["size"], a["media_type"], a["filename"]) for a in received.attachments] == [
            (digest, len(PDF), "application/pdf", "statement.pdf")]
        assert received.attachments[0]["ref"].startswith(f"sha256:{digest};key=")
    finally:
        store.close()
    (stored,) = received.attachments
    assert DigestDirectory(tmp_path / "state" / "attachments").read(stored["ref"]) == PDF
    # The delivery is recorded, and the acknowledgement deadline is met.
    with ledger.service.client(Role.AGENT) as agent:
        messages = {m["message_id"]: m for m in agent.get(f"/v1/cases/{reference}").json()["messages"]}
    assert messages["ACK1"]["delivered_at"] is not None
    later = CaseLedger(ledger_settings(database=ledger.service.database),
                       clock=FakeClock(datetime.now(UTC) + timedelta(days=60)))
    try:
        later.tick()
        assert ("acknowledgement", "ACK1") not in later.get_case(reference).missed
    finally:
        later.close()

    # Her reply names our Message-ID, not the reference: it lands on the same case, as a follow-up.
    imap_server.append(customer_mail(jane, "Re: your message", "Any news?", in_reply_to=ack["Message-ID"]))
    # A mail with the reference only in its subject threads too.
    imap_server.append(customer_mail(jane, f"About {reference}", "I also called the branch."))
    assert mail.read_mailbox() == 2
    contacts = until(lambda: len(found := contacts_of(ledger.service, reference)) == 3 and found,
                     lambda: time.sleep(0.2))
    assert [c.follow_up for c in contacts] == [False, True, True]

    until(lambda: len(smtp_server.messages_to(jane)) == 3, lambda: mail.deliver(wait_s=1))
    # An agent's response goes out by SMTP too, threaded with the customer's mail, and is reported delivered.
    with ledger.service.client(Role.AGENT) as agent:
        answered = agent.post(f"/v1/cases/{reference}/responses",
                              json={"body": "Your card is unblocked.", "answers": contact.item_ids, "channel": "email"})
        assert answered.status_code in (200, 201), answered.text
    until(lambda: len(smtp_server.messages_to(jane)) == 4, lambda: mail.deliver(wait_s=1))
    response = smtp_server.messages_to(jane)[-1]
    assert response["Message-ID"].startswith(f"<{reference}.R1.") and "Auto-Submitted" not in response
    assert response["In-Reply-To"] and f"[{reference}]" in response["Subject"]
    assert "Your card is unblocked." in response.get_content()
    with ledger.service.client(Role.AGENT) as agent:
        messages = {m["message_id"]: m for m in agent.get(f"/v1/cases/{reference}").json()["messages"]}
    assert messages["R1"]["delivered_at"] is not None

    # A restart reads nothing twice and sends nothing twice.
    mail.close()
    again = adapter(ledger, imap_server, smtp_server, tmp_path / "state")
    assert again.read_mailbox() == 0
    assert again.deliver(wait_s=1) == 0
    assert len(smtp_server.messages_to(jane)) == 4 and len(contacts_of(ledger.service, reference)) == 3
    imap_server.append(customer_mail(jane, f"Re: [{reference}]", "Thanks."))
    assert again.read_mailbox() == 1
    until(lambda: len(contacts_of(ledger.service, reference)) == 4, lambda: time.sleep(0.2))
    again.close()
    # A crash that lost the mailbox position reads every mail again: the ledger traces resubmissions, no new contact.
    (tmp_path / "state" / "imap.json").unlink()
    lost = adapter(ledger, imap_server, smtp_server, tmp_path / "state")
    assert lost.read_mailbox() == 4

    def traced() -> int:
        store = ledger.service.ledger()
        try:
            return sum(type(e).__name__ == "ResubmissionTraced" for e in store.history(f"email:{jane}"))
        finally:
            store.close()

    until(lambda: traced() == 4, lambda: time.sleep(0.2))
    assert len(contacts_of(ledger.service, reference)) == 4
    until(lambda: len(smtp_server.messages_to(jane)) == 5, lambda: lost.deliver(wait_s=1))  # ACK4 of "Thanks."
    assert lost.deliver(wait_s=1) == 0
    assert len({m["Message-ID"] for m in smtp_server.messages_to(jane)}) == 5  # each message sent once
    lost.close()

    # Erased: the ledger no longer opens the ref, so the sealed file in the adapter's directory opens for no one.
    with ledger.service.client(Role.SUPERVISOR) as supervisor:
        erased = supervisor.post(f"/v1/customers/{case.customer_id}/erase",
                                 json={"reason": "art. 17 request of 2026-12-07, ticket 4712"})
        assert erased.status_code == 200, erased.text
    store = ledger.service.ledger()
    try:
        events = store.history(case.customer_id)
        refs = [a.get("ref") for e in events if type(e).__name__ == "ContactReceived" for a in e.attachments]
    finally:
        store.close()
    assert refs and stored["ref"] not in refs and not any(str(r).startswith("sha256:") for r in refs)
    files = [p.read_bytes() for p in (tmp_path / "state" / "attachments").rglob("*") if p.is_file()]
    assert files and not any(PDF[:40] in f or digest.encode() in f for f in files)


def test_a_permanent_smtp_refusal_is_recorded_as_a_failure_and_a_temporary_one_retried(
    ledger: Ledger, imap_server: ImapServer, smtp_server: SmtpServer, tmp_path: Path,
) -> None:
    unknown, busy = (f"{who}.{uuid.uuid4().hex[:6]}@customer.example" for who in ("gone", "busy"))
    mail = adapter(ledger, imap_server, smtp_server, tmp_path / "state")
    smtp_server.answer = "550 5.1.1 <gone@customer.example>: mailbox unknown"
    imap_server.append(customer_mail(unknown, "Close my account", "Please close it."))
    assert mail.read_mailbox() == 1

    reports: list[str] = []

    def recorded() -> bool:
        store = ledger.service.ledger()
        try:
            cases = store.cases_of(f"email:{unknown}")
            reports[:] = [m.failure for c in cases for m in c.messages.values() if m.failure]
            return bool(reports)
        finally:
            store.close()

    until(recorded, lambda: mail.deliver(wait_s=1))
    assert reports == ["invalid_address"] and smtp_server.messages_to(unknown) == []
    # A 4xx is retried (after a second here), then delivered once.
    smtp_server.answer, smtp_server.answer_times = "451 4.3.0 try again later", 1
    imap_server.append(customer_mail(busy, "Limits", "Raise my limit."))
    assert mail.read_mailbox() == 1
    until(lambda: smtp_server.messages_to(busy), lambda: mail.deliver(wait_s=1))
    mail.deliver(wait_s=1.5)
    assert len(smtp_server.messages_to(busy)) == 1 and not mail.retries
    mail.close()


def test_the_command_runs_the_adapter_and_its_log_names_no_address_text_or_secret(
    ledger: Ledger, imap_server: ImapServer, smtp_server: SmtpServer, tmp_path: Path,
) -> None:
    """``caseledger adapters run-mail --once`` as an operator runs it: passwords and token from the environment
    and files; its output searched for the customer's address, subject, text, Message-ID and every secret."""
    jane = f"jane.{uuid.uuid4().hex[:6]}@customer.example"
    sent = customer_mail(jane, "Mortgage rate 4.2% refused", "My application number is 77-4411.")
    imap_server.append(sent)
    (tmp_path / "imap-password").write_text(imap_server.password)
    (tmp_path / "token").write_text(ledger.token)
    (tmp_path / "mail.pem").chmod(0o600)
    env = {**os.environ, "CASELEDGER_MAIL_IMAP_PASSWORD_FILE": str(tmp_path / "imap-password"),
           "CASELEDGER_TOKEN_FILE": str(tmp_path / "token"), "CASELEDGER_KAFKA_BOOTSTRAP": ledger.kafka.bootstrap_servers,
           "CASELEDGER_INTAKE_TOPIC": ledger.kafka.intake_topic}
    env.pop("CASELEDGER_TOKEN", None)
    command = [sys.executable, "-m", "caseledger.cli.app", "adapters", "run-mail", "--once", "--name", ledger.name,
               "--signing-key", str(tmp_path / "mail.pem"), "--imap-host", imap_server.host,
               "--imap-port", str(imap_server.port), "--imap-security", "plain", "--imap-user", imap_server.username,
               "--smtp-host", smtp_server.host, "--smtp-port", str(smtp_server.port), "--smtp-security", "plain",
               "--mail-from", SUPPORT, "--service", ledger.service.url, "--state", str(tmp_path / "state"),
               "--attachments", str(tmp_path / "files")]
    outputs = []
    deadline = time.monotonic() + 90
    while not smtp_server.messages_to(jane):
        assert time.monotonic() < deadline, outputs[-1:]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        outputs.append(done.stdout + done.stderr)
        assert done.returncode == 0, outputs[-1]
    log = "\n".join(outputs)
    assert "mail UID 1 recorded on case CL-" in log and "ACK1 delivered" in log, log
    for secret in (jane, jane.split("@")[0], "Mortgage", "77-4411", sent["Message-ID"], imap_server.password,
                   ledger.token):
        assert secret not in log, f"{secret!r} is in the adapter's log"
    # Run again: nothing read, nothing sent twice.
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0 and "submitted" not in again.stderr and "delivered" not in again.stderr
    assert len(smtp_server.messages_to(jane)) == 1


def test_the_command_runs_until_sigterm_and_stops_cleanly(
    ledger: Ledger, imap_server: ImapServer, smtp_server: SmtpServer, tmp_path: Path,
) -> None:
    jane = f"jane.{uuid.uuid4().hex[:6]}@customer.example"
    (tmp_path / "token").write_text(ledger.token)
    env = {**os.environ, "CASELEDGER_MAIL_IMAP_PASSWORD": imap_server.password,
           "CASELEDGER_TOKEN_FILE": str(tmp_path / "token"), "CASELEDGER_KAFKA_BOOTSTRAP": ledger.kafka.bootstrap_servers,
           "CASELEDGER_INTAKE_TOPIC": ledger.kafka.intake_topic, "CASELEDGER_MAIL_ADAPTER": ledger.name,
           "CASELEDGER_MAIL_SIGNING_KEY_FILE": str(tmp_path / "mail.pem"), "CASELEDGER_API": ledger.service.url,
           "CASELEDGER_MAIL_IMAP_HOST": imap_server.host, "CASELEDGER_MAIL_IMAP_PORT": str(imap_server.port),
           "CASELEDGER_MAIL_IMAP_SECURITY": "plain", "CASELEDGER_MAIL_IMAP_USER": imap_server.username,
           "CASELEDGER_MAIL_SMTP_HOST": smtp_server.host, "CASELEDGER_MAIL_SMTP_PORT": str(smtp_server.port),
           "CASELEDGER_MAIL_SMTP_SECURITY": "plain", "CASELEDGER_MAIL_FROM": SUPPORT,
           "CASELEDGER_MAIL_STATE": str(tmp_path / "state"), "CASELEDGER_MAIL_ATTACHMENTS": str(tmp_path / "files")}
    env.pop("CASELEDGER_TOKEN", None)
    log = tmp_path / "run-mail.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "caseledger.cli.app", "adapters", "run-mail", "--poll", "1"],
                                   stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            imap_server.append(customer_mail(jane, "Card blocked", "Why?"))
            deadline = time.monotonic() + 90
            while not smtp_server.messages_to(jane):
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        finally:
            process.terminate()
            code = process.wait(timeout=60)
    assert code == 0, log.read_text()
    assert "ACK1 delivered" in log.read_text() and jane not in log.read_text()
