"""Issue 25's leftover: refusals gave a code and a fix but no field ("an identity that does not parse, say"), so the
adapter could not tell which part of its record to fix. Every way the intake worker refuses a record is tried here,
as an adapter that skipped the SDK publishes it; each verdict's public reason names the field at fault — all but
the two that are about the whole record (it does not decode; its signature) — and never a value of the record.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any

import pytest
from fastavro import schemaless_writer

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import ContactDraft, Identity
from caseledger.ledger.errors import RuleViolation, ValidationError, naming
from caseledger.ledger.intake.records import IntakeCodec, _payload
from caseledger.ledger.intake.verdicts import Rejected, intake_id, public_reason, verdict_of_notification
from caseledger.ledger.intake.worker import IntakeRecord, KafkaIntakeWorker
from caseledger.ledger.settings import KafkaSettings
from tests.support.clock import FakeClock

TOPIC = "caseledger.intake"
CODEC = IntakeCodec()
SECRET = "jane.refused@example.com"
NOW = datetime.now(UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


def raw(kind: str, payload: dict[str, Any]) -> bytes:
    """An intake record as an adapter that skipped the SDK's checks publishes it."""
    out = BytesIO()
    out.write(CODEC.header)
    schemaless_writer(out, CODEC.schema, {"adapter": "mail-1", "published_at": NOW,
                                          "payload": (f"caseledger.intake.{kind}", payload)})
    return out.getvalue()


def contact(**changes: Any) -> bytes:
    draft = ContactDraft(channel="email", channel_message_id="<m-9@mail>", identity=Identity.parse(f"email:{SECRET}"),
                         subject="Card fees", items=("Why two fees?",),
                         occurred_at=NOW)  # the fake clock's time, not the moment it runs (minutes after import)
    payload = _payload(draft)
    for name, value in changes.items():
        if "." in name:
            outer, inner = name.split(".")
            payload[outer] = dict(payload[outer], **{inner: value})
        else:
            payload[name] = value
    return raw("Contact", payload)


ATTACHMENT = {"ref": "https://files.example/a", "sha256": "ab" * 32, "size": 3, "media_type": "text/plain",
              "filename": None}


def attachment(**changes: Any) -> bytes:
    return contact(attachments=[dict(ATTACHMENT, **changes)])


def delivery(reference: str, message_id: str = "ACK1", at: datetime = NOW) -> bytes:
    return raw("DeliveryReport", {"case_reference": reference, "message_id": message_id, "delivered_at": at})


def read(reference: str, message_id: str = "ACK1", kind: str = "customer", who: str = f"email:{SECRET}") -> bytes:
    return raw("ReadReceipt", {"case_reference": reference, "message_id": message_id, "reader_kind": kind,
                               "reader_id": who, "read_at": NOW})


# (what is wrong, the record built for the case recorded first, the code and field its verdict must give)
CASES: list[tuple[str, Any, str, str]] = [
    ("identity kind", lambda r: contact(**{"identity.kind": "pigeon"}), "invalid", "identity.kind"),
    ("identity not an e-mail", lambda r: contact(**{"identity.value": "jane-at-example"}), "invalid", "identity.value"),
    ("channel", lambda r: contact(channel="pigeon"), "invalid", "channel"),
    ("no channel message id", lambda r: contact(channel_message_id=" "), "invalid", "channel_message_id"),
    ("no item", lambda r: contact(items=[" "]), "invalid", "items"),
    ("too many items", lambda r: contact(items=[f"q{n}" for n in range(60)]), "invalid", "items"),
    ("body too long", lambda r: contact(body="x" * 100_001), "invalid", "body"),
    ("locale", lambda r: contact(locale="français"), "invalid", "locale"),
    ("time zone", lambda r: contact(time_zone="Mars/Olympus"), "invalid", "time_zone"),
    ("attachment sha256", lambda r: attachment(sha256="abc"), "invalid", "attachments.sha256"),
    ("attachment size", lambda r: attachment(size=-1), "invalid", "attachments.size"),
    ("attachment media type", lambda r: attachment(media_type="text"), "invalid", "attachments.media_type"),
    ("attachment ref", lambda r: attachment(ref="scans/letter.pdf"), "invalid", "attachments.ref"),
    ("future", lambda r: contact(occurred_at=NOW + timedelta(days=1)), "time-in-future", "occurred_at"),
    ("too old", lambda r: contact(occurred_at=NOW - timedelta(days=3650)), "time-too-old", "occurred_at"),
    ("unknown case", lambda r: contact(case_reference="CL-AAAAA-BBBBB"), "case-reference-refused", "case_reference"),
    ("report: unknown case", lambda r: delivery("CL-AAAAA-BBBBB"), "not-found", "case_reference"),
    ("report: no message id", lambda r: delivery(r, " "), "invalid", "message_id"),
    ("report: unknown message", lambda r: delivery(r, "R7"), "refused", "message_id"),
    ("report: an inbound contact", lambda r: delivery(r, "C1"), "invalid", "message_id"),
    ("report: future", lambda r: delivery(r, at=NOW + timedelta(days=1)), "time-in-future", "delivered_at"),
    ("read: reader kind", lambda r: read(r, kind="robot"), "invalid", "reader.kind"),
    ("read: not the customer", lambda r: read(r, kind="agent", who="alice"), "invalid", "reader"),
    ("read: an inbound contact", lambda r: read(r, "C1"), "invalid", "message_id"),
    ("read: another customer", lambda r: read(r, who="email:someone.else@example.com"), "invalid", "reader"),
]
WHOLE_RECORD = [("does not decode", lambda r: b"\xc3\x01garbage", "schema", "")]


def _verdicts(ledger: CaseLedger) -> dict[Any, Any]:
    found = {}
    for notification in ledger.recorder.select_notifications(start=1, limit=1_000_000):
        verdict = verdict_of_notification(ledger.codec, notification)
        if verdict is not None:
            found[verdict.intake_id] = verdict
    return found


def test_every_refusal_of_a_record_names_the_field_at_fault(sqlite_ledger: CaseLedger) -> None:
    reference = sqlite_ledger.record_contact(ContactDraft(
        channel="email", channel_message_id="<m-1@mail>", identity=Identity.parse(f"email:{SECRET}"),
        items=("First question",))).reference
    cases = CASES + WHOLE_RECORD
    worker = KafkaIntakeWorker(sqlite_ledger, KafkaSettings(bootstrap_servers="unused:9092"), aggregate_cache=0)
    worker.apply_batch(0, [IntakeRecord(TOPIC, 0, n, build(reference)) for n, (_, build, _, _) in enumerate(cases)])
    verdicts = _verdicts(sqlite_ledger)
    wrong = []
    for n, (what, _, code, field) in enumerate(cases):
        verdict = verdicts[intake_id(TOPIC, 0, n)]
        assert isinstance(verdict, Rejected), (what, verdict)
        if (verdict.reason.code, verdict.reason.field) != (code, field):
            wrong.append(f"{what}: {verdict.reason.code}/{verdict.reason.field!r}, expected {code}/{field!r}")
        assert SECRET not in str(verdict.reason) and "jane" not in str(verdict.reason), what
    assert not wrong, "\n".join(wrong)


def test_every_refusal_code_but_the_whole_records_names_a_field() -> None:
    """Over every code a verdict gives: those the table above reaches, by the class of the error."""
    codes = {code for _, _, code, _ in CASES}
    assert codes >= {"invalid", "not-found", "refused", "time-in-future", "time-too-old", "case-reference-refused"}
    assert {code for _, _, code, field in CASES if not field} == set()
    # a class refusal names its field from the error, and keeps the field its part named under the outer one
    with pytest.raises(ValidationError) as raised, naming("attachments"):
        raise ValidationError("x", field="sha256")
    assert public_reason(raised.value).field == "attachments.sha256"
    with pytest.raises(RuleViolation) as refused, naming("message_id"):
        raise RuleViolation("x")
    assert (public_reason(refused.value).code, public_reason(refused.value).field) == ("refused", "message_id")


def test_an_http_problem_names_the_field_and_the_cli_through_the_api_keeps_it() -> None:
    from caseledger.ledger.service.problems import error_from_problem, problem_for

    try:
        ContactDraft(channel="email", channel_message_id="m", identity=Identity.parse(f"email:{SECRET}"), items=())
    except ValidationError as error:
        body = problem_for(error)
    assert body["field"] == "items" and "code" not in body and SECRET not in str(body)
    again = error_from_problem(body)
    assert isinstance(again, ValidationError) and again.field == "items"
