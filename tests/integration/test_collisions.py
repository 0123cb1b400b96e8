"""A reused channel message id: a resubmission only when it is the same request, else a recorded collision.

The contract tests run on SQLite and on a real PostgreSQL; the intake test on the real Kafka broker.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer
from typer.testing import CliRunner

from caseledger.cli.app import app
from caseledger.cli.common import EXIT_COLLISION
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.audit import verify
from caseledger.ledger.domain.directory import ChannelMessage
from caseledger.ledger.domain.values import Attachment, Channel, ContactDraft, Identity
from caseledger.ledger.errors import MessageIdCollision, NotFound
from caseledger.ledger.intake import IntakeCodec
from caseledger.ledger.kafka.intake_client import KafkaIntakeClient
from caseledger.ledger.kafka.intake_worker import KafkaIntakeWorker
from caseledger.ledger.kafka.settings import KafkaSettings
from caseledger.ledger.settings import LedgerSettings
from tests.support.clock import FakeClock
from tests.support.kafka_topics import drain, publish_all, read_topic

SAM = Identity.parse("email:sam@example.com")
MALLORY = Identity.parse("email:mallory@example.com")
PDF = Attachment(ref="s3://inbox/1.pdf", sha256="a" * 64, size=10, media_type="application/pdf")
PNG = Attachment(ref="s3://inbox/2.png", sha256="b" * 64, size=20, media_type="image/png")


def form(identity: Identity = SAM, *, msg: str = "form-77", subject: str = "Card blocked",
         items: tuple[str, ...] = ("Why is my card blocked?",), body: str = "My card no longer works.",
         **kw: Any) -> ContactDraft:
    return ContactDraft(channel="web_form", channel_message_id=msg, identity=identity, items=items,
                        subject=subject, body=body, **kw)


def stored_count(ledger: CaseLedger) -> int:
    return ledger.recorder.max_notification_id() or 0


def collide(ledger: CaseLedger, draft: ContactDraft) -> MessageIdCollision:
    with pytest.raises(MessageIdCollision) as caught:
        ledger.record_contact(draft)
    return caught.value


def event_text(event: Any) -> str:
    """Every field of an event, bytes included, as one searchable text."""
    return " ".join(
        value.decode("latin-1") if isinstance(value, bytes) else str(value) for value in vars(event).values()
    )


# -- the same request again ------------------------------------------------------------------------------


def test_the_same_request_again_is_a_resubmission_and_records_nothing(ledger: CaseLedger, clock: FakeClock) -> None:
    first = ledger.record_contact(form(body="Line one\nline two", attachments=(PDF, PNG)))
    before = stored_count(ledger)
    clock.advance(minutes=20)
    # What a resubmission after a session timeout changes: time, line endings, trailing blanks,
    # the order of the attachments, the adapter's category and metadata.
    again = ledger.record_contact(form(
        body="Line one  \r\nline two\r\n", attachments=(PNG, PDF), occurred_at=clock.now, category="cards",
        metadata={"retry": "1"},
    ))
    assert again.duplicate and not again.opened_case
    assert (again.reference, again.contact_id, again.acknowledgement) == (
        first.reference, first.contact_id, first.acknowledgement)
    assert stored_count(ledger) == before
    assert list(ledger.collisions()) == []


# -- another request under the same id --------------------------------------------------------------------


def test_another_sender_reusing_the_id_is_refused_kept_and_told_nothing_of_the_first(ledger: CaseLedger) -> None:
    sam = ledger.record_contact(form())
    before = stored_count(ledger)
    mallory = form(MALLORY)  # the very same words, from someone else
    refused = collide(ledger, mallory)
    for secret in (sam.reference, str(sam.case_id), sam.customer_id, "sam@", "Card blocked", "no longer works"):
        assert secret not in str(refused)
    assert stored_count(ledger) == before + 1
    (collision,) = ledger.collisions()
    assert str(collision.originator_id) == refused.collision_id
    # Under mallory's pseudonym, never the e-mail address itself (docs/privacy.md).
    assert (collision.customer_id, collision.kind, collision.channel) == (ledger.customer_id_for(MALLORY), "identity",
                                                                           "web_form")
    assert collision.source == "" and collision.causation_id is None
    for secret in (sam.reference, str(sam.case_id), sam.customer_id, str(_correlation_of(ledger, sam.case_id))):
        assert secret not in event_text(collision)
    # The raw bytes are mallory's request, as an intake record any adapter could have published.
    adapter, kept = IntakeCodec().decode(collision.raw)
    assert adapter.startswith("direct:") and kept.identity == MALLORY and kept.items == mallory.items
    assert collision.content_digest == mallory.content_digest()
    # Sam's case did not change, and mallory was given no case.
    assert len(ledger.get_case(sam.reference).contacts) == 1
    with pytest.raises(NotFound):
        ledger.cases_of(str(MALLORY))


def _correlation_of(ledger: CaseLedger, case_id: Any) -> Any:
    return next(iter(ledger.events.get(case_id))).correlation_id


@pytest.mark.parametrize("change", [
    {"subject": "Another subject"},
    {"items": ("Why is my card blocked?", "And my loan?")},
    {"items": ("Why is my account blocked?",)},
    {"body": "A different body."},
    {"attachments": (PDF,)},
    {"identity": Identity.parse("phone:+33612345678"), "customer_id": SAM},  # sam's customer id, see below
], ids=["subject", "one more item", "item text", "body", "attachment", "other identity of the customer"])
def test_the_same_sender_with_other_content_is_a_collision(ledger: CaseLedger, change: dict[str, Any]) -> None:
    first = ledger.record_contact(form())
    if change.get("customer_id") is SAM:
        change = {**change, "customer_id": first.customer_id}
    refused = collide(ledger, form(**change))
    (collision,) = ledger.collisions()
    assert collision.kind == "content" and str(collision.originator_id) == refused.collision_id
    assert "other content" in collision.reason


def test_naming_another_case_is_a_collision(ledger: CaseLedger) -> None:
    ledger.record_contact(form())
    other = ledger.record_contact(form(msg="form-78", subject="Loan"))
    collide(ledger, form(case_reference=other.reference))
    (collision,) = ledger.collisions()
    assert collision.kind == "case"


def test_the_same_collision_twice_is_kept_once_and_refused_both_times(ledger: CaseLedger) -> None:
    ledger.record_contact(form())
    first = collide(ledger, form(MALLORY))
    count = stored_count(ledger)
    second = collide(ledger, form(MALLORY))
    assert second.collision_id == first.collision_id and stored_count(ledger) == count
    third = collide(ledger, form(MALLORY, subject="Something else"))  # another request: another collision
    assert third.collision_id != first.collision_id
    assert len(list(ledger.collisions())) == 2


def test_a_registration_kept_before_digests_is_compared_through_its_contact(
    ledger: CaseLedger, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with monkeypatch.context() as patched:  # a MessageRegistered as read from the retired schema
        patched.setattr(ContactDraft, "content_digest", lambda self: "")
        first = ledger.record_contact(form(attachments=(PDF,)))
    registered = ledger.repository.get(ChannelMessage.id_for(Channel.WEB_FORM, "form-77"))
    assert registered.content_digest == ""
    assert ledger.record_contact(form(attachments=(PDF,))).reference == first.reference
    assert collide(ledger, form(body="edited")).collision_id
    assert [c.kind for c in ledger.collisions()] == ["content"]


def test_retired_message_registered_bytes_decode_with_an_empty_digest() -> None:
    from io import BytesIO

    from fastavro import schemaless_writer

    from caseledger.ledger.domain.events import Context
    from caseledger.ledger.domain.values import SYSTEM
    from caseledger.ledger.store.codec import (
        MAGIC,
        AvroEventCodec,
        history_files,
        parse_event_schema,
        schema_fingerprint,
    )

    codec = AvroEventCodec()
    retired = next(text for name, text in history_files() if name.startswith("MessageRegistered."))
    writer = parse_event_schema(retired, codec.envelope)
    message = ChannelMessage.register(
        channel=Channel.EMAIL, channel_message_id="m-1", case_id=ChannelMessage.id_for(Channel.EMAIL, "x"),
        reference="CL-AAAAA-AAAAA", contact_id="C1", acknowledgement_id="ACK1", content_digest="v1:ff",
        customer_id="c-1", ctx=Context(actor=SYSTEM),
    )
    (registered,) = message.collect_events()
    record = codec.decode_record("MessageRegistered", codec.encode(registered))
    assert record.pop("content_digest") == "v1:ff"
    out = BytesIO()
    out.write(MAGIC + schema_fingerprint(writer))
    schemaless_writer(out, writer, record)
    old = codec.decode("MessageRegistered", out.getvalue())
    assert old.content_digest == "" and old.mutate(None).reference == "CL-AAAAA-AAAAA"


def test_concurrent_senders_of_one_id_give_one_contact_and_one_collision(make_ledger: Any) -> None:
    writers = [make_ledger(), make_ledger()]
    barrier = threading.Barrier(2)
    results: dict[str, Any] = {}

    def send(ledger: CaseLedger, who: Identity) -> None:
        barrier.wait()
        try:
            results[who.value] = ledger.record_contact(form(who))
        except MessageIdCollision as error:
            results[who.value] = error

    threads = [threading.Thread(target=send, args=(w, who)) for w, who in zip(writers, (SAM, MALLORY), strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    outcomes = sorted(results.values(), key=lambda r: isinstance(r, MessageIdCollision))
    assert len(outcomes) == 2
    recorded, refused = outcomes
    assert not isinstance(recorded, MessageIdCollision) and isinstance(refused, MessageIdCollision)
    (collision,) = writers[0].collisions()
    assert collision.customer_id != recorded.customer_id
    assert recorded.customer_id not in str(refused) and recorded.reference not in str(refused)


# -- a property: every request ends in its own customer's case or in a recorded collision ------------------


SENDERS = [Identity.parse(f"email:customer{n}@example.com") for n in range(3)]
CONTENTS = [("Where is my refund?",), ("Close my account.",)]
request = st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 1))  # sender, message id, content


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(request, min_size=1, max_size=12))
def test_every_request_ends_in_its_own_case_or_a_recorded_collision(
    requests: list[tuple[int, int, int]], tmp_path_factory: pytest.TempPathFactory,
) -> None:
    database = tmp_path_factory.mktemp("prop") / "l.sqlite"
    ledger = CaseLedger(LedgerSettings.resolve(database=str(database)), clock=FakeClock())
    try:
        first: dict[int, tuple[int, int]] = {}  # message id -> (sender, content) that holds it
        references: dict[int, set[str]] = {n: set() for n in range(len(SENDERS))}
        expected_collisions: set[tuple[int, int, int]] = set()
        for sender, msg, content in requests:
            draft = ContactDraft(channel="email", channel_message_id=f"m{msg}", identity=SENDERS[sender],
                                 items=CONTENTS[content])
            others = [str(s) for n, s in enumerate(SENDERS) if n != sender]
            try:
                outcome = ledger.record_contact(draft)
            except MessageIdCollision as error:
                assert first.get(msg) not in (None, (sender, content)), "a resubmission or new id was refused"
                expected_collisions.add((sender, msg, content))
                said = str(error)
            else:
                assert first.setdefault(msg, (sender, content)) == (sender, content), "a collision was applied"
                assert outcome.customer_id == ledger.customer_id_for(SENDERS[sender])
                assert ledger.get_case(outcome.reference).customer_id == ledger.customer_id_for(SENDERS[sender])
                references[sender].add(outcome.reference)
                said = f"{outcome}"
            foreign = others + [r for n, refs in references.items() if n != sender for r in refs]
            assert [f for f in foreign if f in said] == []
        kept = {(c.customer_id, c.channel_message_id, c.content_digest) for c in ledger.collisions()}
        assert kept == {
            (ledger.customer_id_for(SENDERS[s]), f"m{m}", ContactDraft(channel="email", channel_message_id=f"m{m}", identity=SENDERS[s],
                                                    items=CONTENTS[c]).content_digest())
            for s, m, c in expected_collisions
        }
        contacts = sum(len(ledger.get_case(r).contacts) for refs in references.values() for r in refs)
        assert contacts == len(first)
    finally:
        ledger.close()


# -- the command line ----------------------------------------------------------------------------------------


@pytest.fixture
def cli_db(tmp_path: Path) -> Iterator[list[str]]:
    yield ["--database", str(tmp_path / "cli.sqlite")]


def run(db: list[str], *args: str) -> Any:
    return CliRunner().invoke(app, [*db, *args])


def test_the_cli_refuses_a_collision_with_its_own_exit_code_and_lists_it(cli_db: list[str]) -> None:
    common = ["contact", "record", "-c", "web_form", "-m", "form-77", "--subject", "Card", "--item", "Why blocked?"]
    sam = run(cli_db, *common, "--from", "email:sam@example.com", "--json")
    assert sam.exit_code == 0, sam.output
    reference = json.loads(sam.stdout)["reference"]
    again = run(cli_db, *common, "--from", "email:sam@example.com")
    assert again.exit_code == 0 and "Already recorded" in again.stdout
    mallory = run(cli_db, *common, "--from", "email:mallory@example.com", "--json")
    assert mallory.exit_code == EXIT_COLLISION == 6
    assert "new channel message id" in mallory.stderr and "intake collisions" in mallory.stderr
    assert reference not in mallory.output and "sam@" not in mallory.output and mallory.stdout == ""
    listed = run(cli_db, "intake", "collisions", "--json")
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert row["customer_id"].startswith("cus-") and "mallory" not in listed.stdout
    assert (row["kind"], row["channel_message_id"]) == ("identity", "form-77")
    assert reference not in listed.stdout and "sam@" not in listed.stdout
    _adapter, kept = IntakeCodec().decode(__import__("base64").b64decode(row["raw_base64"]))
    assert kept.identity == MALLORY
    table = run(cli_db, "--tz", "UTC", "intake", "collisions")
    assert table.exit_code == 0 and "1 collision" in table.stdout and "form-77" in table.stdout
    assert reference not in table.stdout


def test_the_cli_says_when_there_is_no_collision(cli_db: list[str]) -> None:
    result = run(cli_db, "intake", "collisions")
    assert result.exit_code == 0 and "No message id collisions" in result.stdout


# -- through the intake topic ------------------------------------------------------------------------------


@pytest.mark.kafka
def test_the_intake_worker_keeps_a_collision_as_the_outcome_of_its_offset(
    kafka: KafkaSettings, tmp_path: Path,
) -> None:
    ledger = CaseLedger(LedgerSettings.resolve(database=str(tmp_path / "intake.sqlite")))
    try:
        with KafkaIntakeClient(kafka, adapter="forms") as client:
            client.submit_many([form(), form(MALLORY), form(), form(subject="Edited")])
        raw = KafkaProducer(**kafka.client_options())
        raw.send(kafka.intake_topic, key=b"bad", value=b"not an intake record")
        raw.flush()
        raw.close()
        worker = KafkaIntakeWorker(ledger, kafka, batch_size=10)
        drain(worker, until=5)
        stats = worker.stats
        assert (stats.contacts, stats.duplicates, stats.collisions, stats.rejected) == (1, 1, 2, 1), stats.line()
        records = {(r.partition, r.offset): r.value for r in read_topic(kafka, kafka.intake_topic)}
        collisions = list(ledger.collisions())
        assert sorted(c.kind for c in collisions) == ["content", "identity"]
        for collision in collisions:
            topic, partition, offset = collision.source.rsplit("/", 2)
            assert topic == kafka.intake_topic
            assert collision.raw == records[(int(partition), int(offset))]
        sam = ledger.find_by_message("web_form", "form-77")
        assert len(sam.contacts) == 1 and sam.customer_id == ledger.customer_id_for(SAM)
        for collision in collisions:
            assert sam.reference not in event_text(collision)
        publish_all(ledger, kafka)
        report = verify(ledger, kafka=kafka)
        assert report.ok, "\n".join(d.line() for d in report.discrepancies)
        assert report.intake_offsets == report.intake_outcomes == 5
    finally:
        ledger.close()


def test_a_collision_after_a_retried_batch_is_still_one_outcome(tmp_path: Path, clock: FakeClock) -> None:
    """A unit of work that fails keeps nothing of its collision; the retry records it once."""
    from eventsourcing.persistence import Tracking

    ledger = CaseLedger(LedgerSettings.resolve(database=str(tmp_path / "u.sqlite")), clock=clock)
    try:
        ledger.record_contact(form())
        with pytest.raises(RuntimeError), ledger.unit_of_work(Tracking("intake/t/0", 1)):
            with pytest.raises(MessageIdCollision):
                ledger.record_contact(form(MALLORY))
            raise RuntimeError("the batch failed after the collision")
        assert list(ledger.collisions()) == []
        with ledger.unit_of_work(Tracking("intake/t/0", 1)), pytest.raises(MessageIdCollision):
            ledger.record_contact(form(MALLORY))
        assert len(list(ledger.collisions())) == 1
    finally:
        ledger.close()
