"""A customer erased everywhere, on SQLite and on a real PostgreSQL, with the Kafka topics.

Searched byte for byte, in clear and encoded (tests/support/personal_data.py): the store (its files, or
every row of every table of its PostgreSQL database with each bytea decoded, and the tables' raw files,
dead row versions included), the events topic, the intake topic once past its retention, the views (their
bytes, and their rows as queries open them) and the exports in every format. Hashes, chains and the
audit over the stored bytes still verify after an erasure, and a rebuild gives the same views.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.audit import verify
from caseledger.ledger.domain.personal import ERASED
from caseledger.ledger.domain.values import ContactDraft, Identity
from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
from caseledger.ledger.intake.worker import KafkaIntakeWorker
from caseledger.ledger.privacy.kek import KEK_ENV, KEK_FILE_ENV
from caseledger.ledger.reports.export import export_history
from caseledger.ledger.settings import KafkaSettings
from caseledger.projections import load_projections
from caseledger.projections.queries import case_view, customer_timeline
from caseledger.projections.runner import rebuild
from caseledger.projections.sources import StoreEventSource
from caseledger.projections.view_stores import open_views
from caseledger.projections.views import ViewStore
from tests.support.environment import ledger_settings
from tests.support.kafka_topics import AUDIT_READERS, drain, publish_all, read_topic
from tests.support.personal_data import (
    AGENT,
    BODY,
    JANE,
    JANE_PHONE,
    SECRETS,
    SUBJECT,
    TERMS,
    all_views,
    assert_nowhere,
    jane_contact,
    store_bytes,
    views_bytes,
    work_the_case,
)


def topic_bytes(settings: KafkaSettings, topic: str) -> bytes:
    out = []
    for record in read_topic(settings, topic, committed=False):
        out += [record.value or b"", record.key or b""]
        out += [v for _k, v in record.headers or [] if v]
    return b"\n".join(out)


@contextmanager
def views_for(database: str, tmp_path: Path) -> Iterator[tuple[ViewStore, Path | None]]:
    if database.startswith("postgresql"):
        with open_views(database + ("&" if "?" in database else "?") + "schema=views") as views:
            yield views, None
    else:
        path = tmp_path / "views.sqlite"
        with open_views(str(path)) as views:
            yield views, path


# -- the whole story, on SQLite and PostgreSQL, through Kafka ---------------------------------------------------


@pytest.mark.kafka
def test_a_customer_is_erased_everywhere_and_every_proof_still_holds(
    make_ledger: Any, database: str, kafka: KafkaSettings, tmp_path: Path,
) -> None:
    ledger: CaseLedger = make_ledger(clock=lambda: datetime.now(UTC))  # intake records carry real times
    other = ContactDraft(channel="chat", channel_message_id="o-1", identity=Identity.parse("email:other@example.com"),
                         items=("Where is my parcel 88-ZZ?",), subject="Parcel 88-ZZ")
    with KafkaIntakeClient(kafka, adapter="test-adapter") as client:
        client.submit(jane_contact("m-1", segment="retail"))
        client.submit(other)
    drain(KafkaIntakeWorker(ledger, kafka), until=2)
    assert [r.reason for r in ledger.rejections()] == []
    reference = ledger.find_by_message("email", "m-1").reference
    customer_id = ledger.resolve_customer(str(JANE))
    with KafkaIntakeClient(kafka, adapter="test-adapter") as client:  # the same customer, by phone now
        client.submit(jane_contact("m-2", identity=JANE_PHONE, channel="phone", customer_id=customer_id))
    drain(KafkaIntakeWorker(ledger, kafka), until=1)
    assert customer_id.startswith("cus-") and "jane" not in customer_id
    work_the_case(ledger, reference)
    publish_all(ledger, kafka)

    # Before erasure: the ledger reads everything; no stored or published byte holds it in clear.
    assert case_view_of(ledger, database, tmp_path, reference)["subject"] == SUBJECT
    history = ledger.history(customer_id)
    assert any(getattr(e, "body", None) == BODY for e in history)
    with views_for(database, tmp_path) as (views, path):
        before_views = all_views(views, ledger)
        assert_nowhere(views_bytes(views, path), "the views")
    assert_nowhere(store_bytes(ledger, database), "the store")
    assert_nowhere(topic_bytes(kafka, kafka.events_topic), "the events topic")
    assert JANE.value.encode() in topic_bytes(kafka, kafka.intake_topic)  # what adapters sent, in clear, until…
    wrapped_before = [r.wrapped for r in ledger.data_keys.table.by_subjects([customer_id])]
    assert all(wrapped_before)
    export_before = export_of(ledger, customer_id, tmp_path / "before.json")
    assert BODY in export_before and TERMS in export_before  # the customer's copy (art. 15) is readable

    store = store_bytes(ledger, database)
    assert all(w is not None and w in store for w in wrapped_before)  # planted: the probe reads where keys are
    report = ledger.erase_customer(str(JANE), reason="art. 17 request of 2026-12-01, ticket 4711", actor=AGENT)
    assert report.erased and report.customer_id == customer_id and report.pending is None

    # After: unreadable everywhere, proofs intact, views equal once rebuilt.
    assert verify(ledger, kafka=kafka, readers=AUDIT_READERS).ok
    for event in ledger.history(customer_id):
        for field in ("subject", "body", "terms", "notice", "text", "request_copy"):
            value = getattr(event, field, None)
            assert value in (None, "", ERASED), (type(event).__name__, field, value)
    view = case_view_of(ledger, database, tmp_path, reference)
    assert view["subject"] == ERASED and view["status"] == "closed"
    with views_for(database, tmp_path) as (views, path):
        incremental = all_views(views, ledger)
        for projection in load_projections(None):
            assert rebuild(projection, views, StoreEventSource(ledger), batch_size=7).swapped
        assert {p.name: views.snapshot(p.tables) for p in load_projections(None)} == incremental
        assert_nowhere(views_bytes(views, path), "the views")
        assert incremental["case_state"] == before_views["case_state"]  # sealed views: an erasure changes no row
        timeline = customer_timeline(views, customer_id, ledger=lambda: ledger)
        assert any(ERASED in row["line"] for row in timeline)
        assert not any(s in json.dumps(timeline, default=str) for s in SECRETS)
        # What the built-in projections answer, every row of every table opened as a query opens it
        opened = {name: ledger.reveal(rows) for name, rows in incremental.items()}
        assert_nowhere(json.dumps(opened, default=str, ensure_ascii=False).encode(), "the views' rows, opened")
    export_after = export_of(ledger, customer_id, tmp_path / "after.json")
    assert_nowhere(export_after.encode(), "the export")
    for fmt in ("avro", "html"):
        export_history(ledger, customer_id, fmt, tmp_path / f"after.{fmt}")
        assert_nowhere((tmp_path / f"after.{fmt}").read_bytes(), f"the {fmt} export")
    document = json.loads(export_after)
    assert document["verification"]["verified"] and document["erasures"][0]["key_ids"] == report.key_ids
    publish_all(ledger, kafka)
    assert_nowhere(topic_bytes(kafka, kafka.events_topic), "the events topic")
    store = store_bytes(ledger, database)
    assert_nowhere(store, "the store")
    for wrapped in wrapped_before:  # the wrapped keys themselves are gone from the database's bytes
        assert wrapped is not None and wrapped not in store
    assert all(r.wrapped is None and r.destroyed_at for r in ledger.data_keys.table.by_subjects([customer_id]))
    # The other customer is untouched.
    other_id = ledger.resolve_customer("email:other@example.com")
    assert any(getattr(e, "subject", "") == "Parcel 88-ZZ" for e in ledger.history(other_id))

    # The intake topic: past its retention, the records are gone and the audit says so, not "missing".
    delete_intake_records(kafka)
    assert_nowhere(topic_bytes(kafka, kafka.intake_topic), "the intake topic past its retention")
    after_retention = verify(ledger, kafka=kafka, readers=AUDIT_READERS)
    assert after_retention.ok, [d.line() for d in after_retention.discrepancies]
    assert any("past its retention" in note for note in after_retention.notes)

    again = ledger.erase_customer(customer_id, reason="second request")
    assert again.already_erased and not again.erased


def case_view_of(ledger: CaseLedger, database: str, tmp_path: Path, reference: str) -> dict[str, Any]:
    with views_for(database, tmp_path) as (views, _path):
        return dict(case_view(views, reference, ledger=lambda: ledger).row)


def export_of(ledger: CaseLedger, customer_id: str, path: Path) -> str:
    export_history(ledger, customer_id, "json", path)
    return path.read_text(encoding="utf-8")


def delete_intake_records(settings: KafkaSettings) -> None:
    """What the topic's retention does once records are old enough: delete them from the log's start."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**settings.client_options(), group_id=None)
    admin = KafkaAdminClient(**settings.client_options())
    try:
        partitions = [TopicPartition(settings.intake_topic, p) for p in consumer.partitions_for_topic(settings.intake_topic)]
        ends = consumer.end_offsets(partitions)
        admin.delete_records({tp: end for tp, end in ends.items() if end})
    finally:
        consumer.close()
        admin.close()


def test_postgres_without_a_key_encryption_key_is_refused_with_how_to_fix(
    postgres: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEK_ENV, raising=False)
    monkeypatch.delenv(KEK_FILE_ENV, raising=False)
    ledger = CaseLedger(ledger_settings(database=postgres.new_database()))
    try:
        with pytest.raises(ConfigurationError, match=r"CASELEDGER_KEK_FILE.*keys new-kek"):
            ledger.record_contact(jane_contact("m-1"))
        assert ledger.recorder.max_notification_id() in (None, 0)  # nothing recorded
    finally:
        ledger.close()


def test_a_checkpoint_taken_before_an_erasure_still_verifies_and_so_does_the_export_after_it(
    make_ledger: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Proofs are over the stored (sealed) bytes: the erasure changes none of them (issues 15 and 16)."""
    from caseledger.ledger.audit.kept_checkpoint import HeldCheckpoint
    from caseledger.ledger.transparency.checkpoint_key import generate_key_file
    from caseledger.ledger.transparency.checkpoints import sign_checkpoint
    from caseledger.verify.history import check_history, read_export

    signer = generate_key_file(tmp_path / "signing.key", "caseledger")
    monkeypatch.setenv("CASELEDGER_SIGNING_KEY_FILE", str(tmp_path / "signing.key"))
    ledger: CaseLedger = make_ledger()
    out = ledger.record_contact(jane_contact("m-1"))
    work_the_case(ledger, out.reference)
    held = sign_checkpoint(ledger, signer).note  # what the auditor keeps
    ledger.erase_customer(out.customer_id, reason="art. 17 request")
    report = verify(ledger, checkpoint=HeldCheckpoint(held, signer.verifier_key))
    assert report.ok, [d.line() for d in report.discrepancies]
    export_history(ledger, out.customer_id, "json", tmp_path / "after.json")
    text = (tmp_path / "after.json").read_text(encoding="utf-8")
    assert_nowhere(text.encode(), "the export")
    result = check_history(read_export(tmp_path / "after.json"), signer.verifier_key)
    assert result.ok and result.included == result.events > 0, [f.line() for f in result.findings]
