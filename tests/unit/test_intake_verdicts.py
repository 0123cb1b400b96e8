"""Issue 25, "the verdict, exactly once": every intake record's verdict is derived from the event that decides it.

The findings: "'Received' is said before the ledger decided" (records with a future occurred_at or a wrong case
reference got a receipt, then a rejection nobody acted on) and "The verdict is hard to learn" (a resubmission's
event carried no reference, a rejection's reason was sealed). Here the intake worker applies records to a SQLite
ledger (no broker: the records are built by hand) and the verdicts are derived from the stored events exactly as
the publisher derives them; tests/system/test_verdicts.py runs the same through Kafka.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import Actor, ContactDraft, Identity
from caseledger.ledger.intake.records import DeliveryReport, IntakeCodec, ReadReceipt
from caseledger.ledger.intake.verdicts import (
    Applied,
    Collision,
    Recorded,
    Rejected,
    Resubmission,
    Verdict,
    VerdictCodec,
    intake_id,
    verdict_of_notification,
)
from caseledger.ledger.intake.worker import IntakeRecord, KafkaIntakeWorker
from caseledger.ledger.settings import KafkaSettings
from tests.support.clock import FakeClock
from tests.support.environment import ledger_settings
from tests.support.examples import examples

TOPIC = "caseledger.intake"
JANE = Identity.parse("email:jane.verdict@example.com")
CODEC = IntakeCodec()


@pytest.fixture
def clock() -> FakeClock:
    """The ledger's clock at the real time: the intake codec stamps a record's occurred_at with it."""
    return FakeClock(datetime.now(UTC))


def worker(ledger: CaseLedger) -> KafkaIntakeWorker:
    return KafkaIntakeWorker(ledger, KafkaSettings(bootstrap_servers="unused:9092"), aggregate_cache=0)


def contact(msg: str, *, identity: Identity = JANE, subject: str = "Refund", **kw: Any) -> ContactDraft:
    return ContactDraft(channel="email", channel_message_id=msg, identity=identity, subject=subject,
                        items=("Where is my refund?",), **kw)


def delivery(reference: str, clock: FakeClock) -> DeliveryReport:
    return DeliveryReport(case_reference=reference, message_id="ACK1", delivered_at=clock.now)


def reading(reference: str, clock: FakeClock) -> ReadReceipt:
    return ReadReceipt(case_reference=reference, message_id="ACK1", reader=Actor.parse(f"customer:{JANE}"),
                       read_at=clock.now)


def record(offset: int, value: bytes, partition: int = 0) -> IntakeRecord:
    return IntakeRecord(TOPIC, partition, offset, value)


def verdicts(ledger: CaseLedger) -> list[Verdict]:
    """Every verdict the store's events decide, in store order, as the publisher derives them."""
    found = []
    for notification in ledger.recorder.select_notifications(start=1, limit=1_000_000):
        verdict = verdict_of_notification(ledger.codec, notification)
        if verdict is not None:
            found.append(verdict)
    return found


def only(ledger: CaseLedger, offset: int, partition: int = 0) -> Verdict:
    mine = [v for v in verdicts(ledger) if v.intake_id == intake_id(TOPIC, partition, offset)]
    assert len(mine) == 1, mine
    return mine[0]


def test_a_recorded_contact_gets_its_reference_contact_and_acknowledgement(
        sqlite_ledger: CaseLedger) -> None:
    worker(sqlite_ledger).apply_batch(0, [record(0, CODEC.encode(contact("m-1"), adapter="mail-gateway-1"))])
    verdict = only(sqlite_ledger, 0)
    assert isinstance(verdict, Recorded) and verdict.received
    assert verdict.reference.startswith("CL-") and verdict.contact_id == "C1" and verdict.acknowledgement_id == "ACK1"
    assert (verdict.adapter, verdict.intake_topic, verdict.intake_partition, verdict.intake_offset) == (
        "mail-gateway-1", TOPIC, 0, 0)
    assert verdict.customer_id.startswith("cus-")


def test_a_future_occurred_at_gets_a_rejected_verdict_naming_the_field(
        sqlite_ledger: CaseLedger, clock: FakeClock) -> None:
    """Finding: two records with an occurred_at in the future got "received", then were rejected by the worker."""
    future = clock.now + timedelta(hours=3)
    worker(sqlite_ledger).apply_batch(0, [record(0, CODEC.encode(contact("m-1", occurred_at=future),
                                                                 adapter="mail-gateway-1"))])
    verdict = only(sqlite_ledger, 0)
    assert isinstance(verdict, Rejected) and not verdict.received
    assert (verdict.reason.code, verdict.reason.field) == ("time-in-future", "occurred_at")
    assert "ledger's time" in verdict.reason.fix
    # never a value of the record: not the time, not the sender
    public = str(verdict.reason)
    assert future.isoformat(timespec="seconds") not in public and str(future.year) not in public
    assert "jane" not in public


def test_an_unknown_case_reference_gets_a_rejected_verdict_naming_the_field(sqlite_ledger: CaseLedger) -> None:
    """Finding: one record named a wrong case reference, was told "received", then rejected."""
    draft = contact("m-1", case_reference="CL-AAAAA-BBBBB")
    worker(sqlite_ledger).apply_batch(0, [record(0, CODEC.encode(draft, adapter="mail-gateway-1"))])
    verdict = only(sqlite_ledger, 0)
    assert isinstance(verdict, Rejected)
    assert (verdict.reason.code, verdict.reason.field) == ("case-reference-refused", "case_reference")
    assert "CL-AAAAA-BBBBB" not in str(verdict.reason)


def test_a_refusal_naming_its_field_in_the_ledgers_own_form_gives_the_adapter_that_field() -> None:
    """A verdict's reason names the field at fault for every refusal whose message names it (``field X: …``),
    not only those that carry it as a keyword; a message in another form gives no field, never its words."""
    from caseledger.ledger.errors import ValidationError
    from caseledger.ledger.intake.verdicts import public_reason

    bare = public_reason(ValidationError("field attachments.ref: the ref is a bare path, not a location; write …"))
    assert (bare.code, bare.field) == ("invalid", "attachments.ref") and "bare path" not in str(bare)
    other = public_reason(ValidationError("field jane@example.com is wrong"))
    assert other.field == "" and "jane" not in str(other)


def test_another_customers_case_reads_like_an_unknown_one(sqlite_ledger: CaseLedger) -> None:
    """The public reason does not tell an adapter that a reference exists and is someone else's."""
    theirs = sqlite_ledger.record_contact(contact("m-0", identity=Identity.parse("email:bob@example.com")))
    draft = contact("m-1", case_reference=theirs.reference)
    worker(sqlite_ledger).apply_batch(0, [record(0, CODEC.encode(draft, adapter="a"))])
    verdict = only(sqlite_ledger, 0)
    assert isinstance(verdict, Rejected) and verdict.reason.code == "case-reference-refused"
    assert theirs.reference not in str(verdict.reason)


def test_a_resubmission_gets_the_original_reference(sqlite_ledger: CaseLedger) -> None:
    """Finding: a resubmission's event carried no reference (the adapter had to join it back)."""
    raw = CODEC.encode(contact("m-1"), adapter="mail-gateway-1")
    work = worker(sqlite_ledger)
    work.apply_batch(0, [record(0, raw)])
    work.apply_batch(0, [record(1, raw)])
    first, again = only(sqlite_ledger, 0), only(sqlite_ledger, 1)
    assert isinstance(first, Recorded) and isinstance(again, Resubmission) and again.received
    assert (again.reference, again.contact_id, again.acknowledgement_id, again.customer_id) == (
        first.reference, first.contact_id, first.acknowledgement_id, first.customer_id)


def test_a_collision_is_a_collision_naming_no_other_request(sqlite_ledger: CaseLedger) -> None:
    work = worker(sqlite_ledger)
    work.apply_batch(0, [record(0, CODEC.encode(contact("m-1"), adapter="a"))])
    work.apply_batch(0, [record(1, CODEC.encode(contact("m-1", subject="Something else"), adapter="a"))])
    first, verdict = only(sqlite_ledger, 0), only(sqlite_ledger, 1)
    assert isinstance(verdict, Collision) and verdict.kind == "content" and not verdict.received
    assert verdict.reason.field == "channel_message_id" and "new channel message id" in verdict.reason.fix
    assert isinstance(first, Recorded) and first.reference not in VerdictCodec().encode(verdict).decode("latin-1")


def test_an_undecodable_record_is_rejected_for_the_adapter_that_signed_it(sqlite_ledger: CaseLedger) -> None:
    headers = [("caseledger-adapter", b"mail-gateway-1"), ("caseledger-signature", b"x" * 64)]
    worker(sqlite_ledger).apply_batch(0, [IntakeRecord(TOPIC, 0, 0, b"not avro", headers)])
    verdict = only(sqlite_ledger, 0)
    assert isinstance(verdict, Rejected) and verdict.adapter == "mail-gateway-1" and verdict.reason.code == "schema"


def test_verdicts_round_trip_through_their_avro_record(sqlite_ledger: CaseLedger, clock: FakeClock) -> None:
    raw = CODEC.encode(contact("m-1"), adapter="a")
    work = worker(sqlite_ledger)
    work.apply_batch(0, [record(0, raw), record(1, raw),
                         record(2, CODEC.encode(contact("m-1", subject="Other"), adapter="a")),
                         record(3, CODEC.encode(contact("m-2", occurred_at=clock.now + timedelta(days=1)),
                                                adapter="a"))])
    codec = VerdictCodec()
    found = verdicts(sqlite_ledger)
    assert [v.outcome for v in found] == ["recorded", "resubmission", "collision", "rejected"]
    for verdict in found:
        data = codec.encode(verdict)
        assert data[:2] == b"\xc3\x01" and codec.decode(data) == verdict
        assert b"jane" not in data  # no personal value on the outcomes topic


def test_no_log_line_and_no_verdict_quotes_the_sender(sqlite_ledger: CaseLedger, clock: FakeClock,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """An attacker reading the logs or the outcomes topic searches for the sender's e-mail address and message id."""
    caplog.set_level("DEBUG")
    work = worker(sqlite_ledger)
    work.apply_batch(0, [
        record(0, CODEC.encode(contact("<secret-1@jane.example>", occurred_at=clock.now + timedelta(days=1)),
                               adapter="a")),
        record(1, CODEC.encode(contact("<secret-2@jane.example>", case_reference="CL-AAAAA-BBBBB"), adapter="a")),
        record(2, CODEC.encode(contact("<secret-3@jane.example>"), adapter="a")),
        record(3, CODEC.encode(contact("<secret-3@jane.example>", subject="Other"), adapter="a")),
    ])
    codec = VerdictCodec()
    published = b"".join(codec.encode(v) for v in verdicts(sqlite_ledger))
    for secret in ("jane.verdict", "secret-", "jane.example"):
        assert secret not in caplog.text and secret.encode() not in published


def test_a_rejection_keeps_its_full_reason_sealed(sqlite_ledger: CaseLedger, clock: FakeClock) -> None:
    """The private reason (it may quote the record) stays sealed; only the public one is in clear."""
    future = clock.now + timedelta(hours=3)
    worker(sqlite_ledger).apply_batch(0, [record(0, CODEC.encode(contact("m-1", occurred_at=future),
                                                                 adapter="a"))])
    states = [bytes(n.state) for n in sqlite_ledger.recorder.select_notifications(start=1, limit=100)
              if n.topic.endswith("IntakeRejected")]
    assert len(states) == 1
    assert b"time-in-future" in states[0] and future.isoformat(timespec="seconds").encode() not in states[0]
    [kept] = sqlite_ledger.rejection_records()  # the operator's read opens it: the full reason, as before
    assert "is in the future" in kept["reason"]


def test_the_publishers_fast_path_agrees_with_the_codec_and_fastavro(sqlite_ledger: CaseLedger,
                                                                     clock: FakeClock) -> None:
    """The publisher reads a verdict's fields from the event's bytes and writes its record by hand: both agree
    with decoding the event through the codec and writing the record with fastavro."""
    from io import BytesIO

    from fastavro import schemaless_writer

    from caseledger.ledger.intake.verdict_records import encode_fields, fields_of_bytes, fields_of_event

    raw = CODEC.encode(contact("m-1"), adapter="a")
    signed = [("caseledger-adapter", b"z"), ("caseledger-signature", b"x" * 64)]
    worker(sqlite_ledger).apply_batch(0, [
        record(0, raw), record(1, raw), record(2, CODEC.encode(contact("m-1", subject="Other"), adapter="é-adapter")),
        record(3, CODEC.encode(contact("m-2", occurred_at=clock.now + timedelta(days=1)), adapter="a")),
        IntakeRecord(TOPIC, 0, 4, b"junk", signed), record(5, b""),
    ])
    reference = only(sqlite_ledger, 0).reference  # type: ignore[attr-defined]
    worker(sqlite_ledger).apply_batch(0, [
        record(6, CODEC.encode(delivery(reference, clock), adapter="ö-adapter")),
        record(7, CODEC.encode(reading(reference, clock), adapter="a")),
    ])
    sqlite_ledger.record_contact(contact("m-direct"))  # recorded directly: no verdict
    codec = VerdictCodec()
    seen = 0
    for n in sqlite_ledger.recorder.select_notifications(start=1, limit=1000):
        name = n.topic.rsplit(".", 1)[-1]
        fast = fields_of_bytes(sqlite_ledger.codec, name, bytes(n.state), n.id)
        slow = fields_of_event(name, sqlite_ledger.codec.decode_record(name, bytes(n.state)), n.id)
        assert fast == slow, name
        if fast is None:
            continue
        seen += 1
        out = BytesIO()
        out.write(codec.header)
        schemaless_writer(out, codec.schema, fast)
        assert encode_fields(codec.header, fast) == out.getvalue()
    assert seen == 8


def test_an_unsigned_delivery_or_read_report_gets_its_verdict_for_the_adapter_that_sent_it(
        sqlite_ledger: CaseLedger, clock: FakeClock) -> None:
    """Finding: an unsigned report's verdict was keyed by an empty adapter name (the event did not keep the adapter
    the record named), so its adapter never read it on its partition of the outcomes topic, nor over HTTP."""
    reference = sqlite_ledger.record_contact(contact("m-1")).reference
    worker(sqlite_ledger).apply_batch(0, [
        record(0, CODEC.encode(delivery(reference, clock), adapter="sms-gateway-2")),
        record(1, CODEC.encode(reading(reference, clock), adapter="mail-gateway-1")),
        record(2, CODEC.encode(delivery(reference, clock), adapter="sms-gateway-2")),  # twice
    ])
    delivered, read, again = only(sqlite_ledger, 0), only(sqlite_ledger, 1), only(sqlite_ledger, 2)
    assert isinstance(delivered, Applied) and delivered.adapter == "sms-gateway-2"
    assert isinstance(read, Applied) and read.adapter == "mail-gateway-1"
    assert isinstance(again, Rejected) and again.adapter == "sms-gateway-2"
    # the outcomes topic's record carries it: the adapter's own key and partition
    assert VerdictCodec().decode(VerdictCodec().encode(delivered)).adapter == "sms-gateway-2"


# -- one verdict per intake record, whatever the records ---------------------------------------------------------

_KINDS = st.sampled_from(["new", "again", "collide", "future", "unknown-case", "garbage", "delivered", "read"])


def _value(kind: str, adapter: str, offset: int, msg: str, clock: FakeClock, reported: str) -> bytes:
    if kind == "garbage":
        return b"\xc3\x01garbage"
    if kind == "delivered":  # unsigned: the first is applied, a second refused (already delivered)
        return CODEC.encode(delivery(reported, clock), adapter=adapter)
    if kind == "read":
        return CODEC.encode(reading(reported, clock), adapter=adapter)
    draft = {
        "new": contact(f"new-{offset}"),
        "again": contact(msg),
        "collide": contact(msg, subject=f"other {offset}"),
        "future": contact(f"f-{offset}", occurred_at=clock.now + timedelta(days=1)),
        "unknown-case": contact(f"u-{offset}", case_reference="CL-ZZZZZ-ZZZZZ"),
    }[kind]
    return CODEC.encode(draft, adapter=adapter)


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.tuples(_KINDS, st.sampled_from(["a", "b"]), st.integers(0, 2)), min_size=1, max_size=12),
       batch=st.integers(1, 5))
def test_every_intake_record_gets_exactly_one_verdict_for_its_adapter(
        tmp_path_factory: Any, kinds: list[tuple[str, str, int]], batch: int) -> None:
    clock = FakeClock(datetime.now(UTC))
    ledger = CaseLedger(ledger_settings(database=str(tmp_path_factory.mktemp("v") / "l.sqlite")), clock=clock)
    try:
        work = worker(ledger)
        reported = ledger.record_contact(contact("m-reported")).reference
        records, adapters = [], []
        for offset, (kind, adapter, n) in enumerate(kinds):
            value = _value(kind, adapter, offset, f"m-{n}", clock, reported)
            records.append(record(offset, value))
            adapters.append("" if kind == "garbage" else adapter)
        for start in range(0, len(records), batch):
            work.apply_batch(0, records[start:start + batch])
        found = verdicts(ledger)
        by_id = {v.intake_id: v for v in found}
        assert len(by_id) == len(found) == len(records)  # one each, none twice
        for offset, adapter in enumerate(adapters):
            verdict = by_id[intake_id(TOPIC, 0, offset)]
            applied = verdict.outcome == "applied"  # an applied report keeps its intake id alone, no offset
            assert applied <= (kinds[offset][0] in ("delivered", "read"))
            assert (verdict.adapter, verdict.intake_offset) == (adapter, -1 if applied else offset)
            if verdict.outcome in ("recorded", "resubmission"):
                assert verdict.reference.startswith("CL-")  # type: ignore[attr-defined]
    finally:
        ledger.close()
