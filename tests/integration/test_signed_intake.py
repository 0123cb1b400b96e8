"""Signed intake against a real Kafka broker: adapters sign what they publish; the worker proves who sent it."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kafka import KafkaProducer

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import Actor, ContactDraft, Identity
from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
from caseledger.ledger.intake.records import DeliveryReport, IntakeCodec, ReadReceipt
from caseledger.ledger.intake.signatures import ADAPTER_HEADER, SIGNATURE_HEADER, AdapterKeys, AdapterSigner
from caseledger.ledger.intake.worker import KafkaIntakeWorker
from caseledger.ledger.settings import KafkaSettings
from tests.support.environment import ledger_settings
from tests.support.kafka_topics import drain, publish_unchecked

pytestmark = pytest.mark.kafka


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CaseLedger]:
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "signed.sqlite")))
    yield ledger
    ledger.close()


def mail(n: int, *, channel: str = "email") -> ContactDraft:
    return ContactDraft(channel=channel, channel_message_id=f"s-{n}", identity=Identity.parse(f"email:s{n}@example.com"),
                        items=(f"question {n}",))


def test_the_worker_accepts_signed_records_and_rejects_every_other_with_its_reason(
    kafka: KafkaSettings, store: CaseLedger, tmp_path: Path
) -> None:
    keys = AdapterKeys(store.storage.adapter_keys())
    keys.add("mail-1", ["email"], private_key_out=tmp_path / "mail-1.pem")
    keys.add("old-1", ["email"], private_key_out=tmp_path / "old-1.pem")
    keys.revoke("old-1")
    mail_1 = AdapterSigner.from_file("mail-1", tmp_path / "mail-1.pem")
    codec = IntakeCodec()
    with KafkaIntakeClient(kafka, adapter="mail-1", signer=mail_1) as client:
        good = client.submit(mail(1))
        client.submit(mail(2, channel="sms"))  # signed, but not a channel mail-1 may use
    impostor = AdapterSigner("mail-1", Ed25519PrivateKey.generate())
    revoked = AdapterSigner.from_file("old-1", tmp_path / "old-1.pem")
    stranger = AdapterSigner("stranger", Ed25519PrivateKey.generate())
    raw = KafkaProducer(**kafka.client_options())
    records = {
        "unsigned": (codec.encode(mail(3), adapter="mail-1"), []),
        "bad signature": (codec.encode(mail(4), adapter="mail-1"), None),
        "unknown adapter": (codec.encode(mail(5), adapter="stranger"), None),
        "revoked adapter": (codec.encode(mail(6), adapter="old-1"), None),
        "names another adapter": (codec.encode(mail(7), adapter="someone-else"), None),
        "tampered": (codec.encode(mail(8), adapter="mail-1"), None),
    }
    signers = {"bad signature": impostor, "unknown adapter": stranger, "revoked adapter": revoked,
               "names another adapter": mail_1, "tampered": mail_1}
    for why, (value, headers) in records.items():
        if headers is None:
            headers = signers[why].headers(value)
        if why == "tampered":
            value = value.replace(b"question 8", b"question 9")
        raw.send(kafka.intake_topic, key=b"k", value=value, headers=headers)
    raw.flush()
    raw.close()
    worker = KafkaIntakeWorker(store, kafka)
    assert worker.signatures.required  # adapters are registered: signatures are required by default
    drain(worker, until=8)
    assert (worker.stats.contacts, worker.stats.rejected) == (1, 7), worker.stats.line()
    reasons = sorted(r.reason for r in store.rejections())
    assert all(r.startswith("SignatureRefused: ") for r in reasons), reasons
    joined = "\n".join(reasons)
    for expected in ("unsigned intake record", "bad signature", "unknown adapter 'stranger'",
                     "revoked adapter 'old-1'", "names adapter 'someone-else' but was signed by 'mail-1'",
                     "forbidden channel: adapter 'mail-1' may publish for email, not sms"):
        assert expected in joined, (expected, joined)
    assert joined.count("bad signature") == 2  # the impostor's and the tampered record
    # Nothing dropped: each rejection keeps the raw bytes.
    assert all(r.raw for r in store.rejections())
    # The accepted contact's events name the customer as actor, the adapter as the principal that relayed it.
    (case,) = store.cases_of("email:s1@example.com")
    events = list(store.events.get(case.id))
    assert {(e.actor_kind, e.actor_authentication, e.actor_principal) for e in events} == {
        ("customer", "adapter-signature", "mail-1")}
    # …and the causation id names the signed record on the intake topic.
    assert {e.causation_id for e in events} == {good_source_id(kafka, good)}
    # The signature is kept with the contact's registration, with the bytes it covers (sealed): an auditor
    # shows which adapter sent it long after the intake topic's retention deleted the record.
    from base64 import b64decode

    from caseledger.ledger.domain.values import Channel

    (message_id,) = store.pseudonyms.message_ids_for(Channel.EMAIL, "s-1")  # keyed by its lookup secret (issue 24)
    (registered,) = store.events.get(message_id)
    adapter, signature = registered.intake_signature.split(":", 1)
    assert adapter == "mail-1" and registered.signed_record
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    public = Ed25519PublicKey.from_public_bytes(store.storage.adapter_keys().select_adapter("mail-1").public_key)
    public.verify(b64decode(signature), registered.signed_record)  # raises if it does not verify
    assert IntakeCodec().decode(registered.signed_record)[1].channel_message_id == "s-1"
    stored = store.recorder.select_events_after([registered.originator_id])[registered.originator_id][0]
    assert b"s1@example.com" not in bytes(stored.state)  # the record's bytes are sealed in the store
    store.erase_customer("email:s1@example.com", reason="art. 17")
    (erased,) = store.events.get(message_id)
    assert erased.intake_signature == registered.intake_signature and erased.signed_record == b""


def good_source_id(kafka: KafkaSettings, receipt: object) -> uuid.UUID:
    from caseledger.ledger.domain.directory import IntakeSource

    return IntakeSource(kafka.intake_topic, receipt.partition, receipt.offset).event_id  # type: ignore[attr-defined]


def test_without_registered_adapters_unsigned_records_are_still_accepted(
    kafka: KafkaSettings, store: CaseLedger
) -> None:
    """The setting that keeps unsigned intake meaningful: required only once an adapter is registered."""
    with KafkaIntakeClient(kafka, adapter="legacy") as client:
        client.submit(mail(1))
    worker = KafkaIntakeWorker(store, kafka)
    assert not worker.signatures.required
    drain(worker, until=1)
    assert worker.stats.contacts == 1
    (case,) = store.cases_of("email:s1@example.com")
    assert {e.actor_authentication for e in store.events.get(case.id)} == {"none"}
    # Forced on, the same record is rejected.
    strict = KafkaIntakeWorker(CaseLedger(ledger_settings(database=store.settings.store.database + ".2")),
                               kafka, require_signatures=True)
    drain(strict, until=1)
    assert strict.stats.rejected == 1
    strict.ledger.close()


def test_caseledger_publish_signs_with_the_adapters_key(kafka: KafkaSettings, store: CaseLedger, tmp_path: Path) -> None:
    database = store.settings.store.database
    env_cmd = [sys.executable, "-m", "caseledger.cli.app", "--database", database]
    key = tmp_path / "sms.pem"
    added = subprocess.run([*env_cmd, "adapters", "add", "sms-1", "--channels", "sms", "--private-key-out", str(key)],
                           capture_output=True, text=True, check=True)
    assert "PRIVATE KEY" not in added.stdout + added.stderr and key.stat().st_mode & 0o777 == 0o600
    record = {"channel": "sms", "channel_message_id": "sms-77", "identity": "phone:+33612345678",
              "items": ["Call me back"]}
    subprocess.run([*env_cmd, "publish", "-", "--kafka", kafka.bootstrap_servers, "--adapter", "sms-1",
                    "--signing-key", str(key)], input=json.dumps(record), capture_output=True, text=True, check=True,
                   env={"CASELEDGER_INTAKE_TOPIC": kafka.intake_topic, "PATH": "/usr/bin:/bin"})
    listed = subprocess.run([*env_cmd, "adapters", "list", "--json"], capture_output=True, text=True, check=True)
    assert key.read_text().split("\n")[1] not in listed.stdout
    worker = KafkaIntakeWorker(store, kafka)
    drain(worker, until=1)
    assert worker.stats.contacts == 1, [r.reason for r in store.rejections()]
    (case,) = store.cases_of("phone:+33612345678")
    assert {e.actor_principal for e in store.events.get(case.id)} == {"sms-1"}


def test_headers_are_the_documented_ones() -> None:
    signer = AdapterSigner("a", Ed25519PrivateKey.generate())
    headers = dict(signer.headers(b"bytes"))
    assert set(headers) == {ADAPTER_HEADER, SIGNATURE_HEADER} and len(headers[SIGNATURE_HEADER]) == 64
    assert "PRIVATE" not in repr(signer) and "a" in repr(signer)


def test_nothing_on_the_intake_topic_can_approve_or_reject_an_action() -> None:
    """The intake path of "automation approving its own proposal": intake records carry no decision at all."""
    codec = IntakeCodec()
    payload = next(f for f in codec.schema["fields"] if f["name"] == "payload")
    kinds = {branch["name"].rsplit(".", 1)[-1] if isinstance(branch, dict) else branch for branch in payload["type"]}
    assert kinds == {"Contact", "DeliveryReport", "ReadReceipt"}


# -- delivery and read reports: scoped to the adapter's channels, the customer's own reading, applied once ----------


def _events_of(store: CaseLedger, reference: str, name: str) -> list[object]:
    return [e for e in store.events.get(store.get_case(reference).id) if type(e).__name__ == name]


def test_signed_reports_are_scoped_to_the_adapters_channels_and_reads_are_the_customers(
    kafka: KafkaSettings, store: CaseLedger, tmp_path: Path
) -> None:
    """Findings: chat-1 (chat only) reported an e-mail case's ACK1 delivered, accepted; a signed read receipt
    recorded that agent:alice read C1."""
    keys = AdapterKeys(store.storage.adapter_keys())
    keys.add("chat-1", ["chat"], private_key_out=tmp_path / "chat-1.pem")
    keys.add("mail-1", ["email"], private_key_out=tmp_path / "mail-1.pem")
    ref = store.record_contact(mail(1)).reference
    customer_id = store.get_case(ref).customer_id
    now = datetime.now(UTC)
    chat = AdapterSigner.from_file("chat-1", tmp_path / "chat-1.pem")
    with KafkaIntakeClient(kafka, adapter="chat-1", signer=chat) as client:
        client.submit(DeliveryReport(case_reference=ref, message_id="ACK1", delivered_at=now))
        client.submit(ReadReceipt(case_reference=ref, message_id="ACK1", reader=Actor.parse(f"customer:{customer_id}"),
                                  read_at=now))
    mail_1 = AdapterSigner.from_file("mail-1", tmp_path / "mail-1.pem")
    # Refused by the SDK before publishing (issue 25), so sent as an adapter that skips it: the worker refuses them.
    publish_unchecked(kafka, [
        ReadReceipt(case_reference=ref, message_id="C1", reader=Actor.parse("agent:alice"), read_at=now),
        ReadReceipt(case_reference=ref, message_id="ACK1", reader=Actor.parse("agent:alice"), read_at=now),
        ReadReceipt(case_reference=ref, message_id="C1", reader=Actor.parse(f"customer:{customer_id}"), read_at=now),
    ], adapter="mail-1", signer=mail_1)
    with KafkaIntakeClient(kafka, adapter="mail-1", signer=mail_1) as client:
        client.submit(ReadReceipt(case_reference=ref, message_id="ACK1",
                                  reader=Actor.parse("customer:email:someone-else@example.com"), read_at=now))
        # The customer, named by their identity: accepted, recorded under their pseudonymous id.
        client.submit(ReadReceipt(case_reference=ref, message_id="ACK1",
                                  reader=Actor.parse("customer:email:s1@example.com"), read_at=now))
        client.submit(DeliveryReport(case_reference=ref, message_id="ACK1", delivered_at=now))
    worker = KafkaIntakeWorker(store, kafka)
    drain(worker, until=8)
    assert (worker.stats.reports, worker.stats.rejected) == (2, 6), worker.stats.line()
    reasons = [r.reason for r in store.rejections()]
    assert sum("forbidden channel: adapter 'chat-1' may report for chat" in r and "field message_id" in r
               for r in reasons) == 2, reasons
    assert sum("field reader is not case" in r and "(reader kind agent)" in r for r in reasons) == 2, reasons
    assert sum("C1 is the customer's own contact" in r for r in reasons) == 1, reasons
    assert sum("field reader is not case" in r and "(reader kind customer)" in r for r in reasons) == 1, reasons
    assert not any("@example.com" in r for r in reasons)  # no personal data in a reason
    (delivered,) = _events_of(store, ref, "MessageDelivered")
    assert (delivered.actor_kind, delivered.actor_id, delivered.actor_authentication) == (  # type: ignore[attr-defined]
        "system", "mail-1", "adapter-signature")
    (read,) = _events_of(store, ref, "MessageRead")
    assert (read.message_id, read.reader_kind, read.reader_id) == ("ACK1", "customer", customer_id)  # type: ignore[attr-defined]
    assert (read.actor_kind, read.actor_id, read.actor_authentication, read.actor_principal) == (  # type: ignore[attr-defined]
        "customer", customer_id, "adapter-signature", "mail-1")


@pytest.mark.parametrize("copies", [1, 2, 3, 5])
def test_a_replayed_signed_report_is_traced_and_applied_once(
    kafka: KafkaSettings, store: CaseLedger, tmp_path: Path, copies: int
) -> None:
    """Finding: the same signed read receipt published 3 times gave 3 MessageRead. Each copy of the same signed
    bytes after the first becomes an IntakeRejected saying it was already applied: nothing dropped or doubled."""
    AdapterKeys(store.storage.adapter_keys()).add("mail-1", ["email"], private_key_out=tmp_path / "mail-1.pem")
    signer = AdapterSigner.from_file("mail-1", tmp_path / "mail-1.pem")
    ref = store.record_contact(mail(1)).reference
    customer_id = store.get_case(ref).customer_id
    codec, now = IntakeCodec(), datetime.now(UTC)
    reports = [DeliveryReport(case_reference=ref, message_id="ACK1", delivered_at=now),
               ReadReceipt(case_reference=ref, message_id="ACK1", reader=Actor.parse(f"customer:{customer_id}"),
                           read_at=now)]
    raw = KafkaProducer(**kafka.client_options())
    for report in reports:
        value = codec.encode(report, adapter="mail-1")
        for _ in range(copies):
            raw.send(kafka.intake_topic, key=ref.encode(), value=value, headers=signer.headers(value))
    raw.flush()
    raw.close()
    worker = KafkaIntakeWorker(store, kafka)
    drain(worker, until=2 * copies)
    assert len(_events_of(store, ref, "MessageDelivered")) == 1
    assert len(_events_of(store, ref, "MessageRead")) == 1
    rejections = list(store.rejections())
    assert worker.stats.records == 2 * copies and len(rejections) == 2 * (copies - 1)
    assert sum("already reported delivered" in r.reason for r in rejections) == copies - 1
    assert sum("already recorded as read by customer:" in r.reason for r in rejections) == copies - 1
    assert all(r.raw for r in rejections)
