"""Crypto-shredding: a customer's personal data is sealed with their keys, and erased everywhere by destroying them.

Searched byte for byte: the store (its files, or every table of its PostgreSQL database), the events
topic, the intake topic once past its retention, the views and the exports. Hashes, chains and the
audit over the stored bytes still verify after an erasure, and a rebuild gives the same views.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from caseledger.cli.app import app
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.audit import verify
from caseledger.ledger.domain.personal import ERASED, PERSONAL_FIELDS
from caseledger.ledger.domain.policy import ResponsePolicy
from caseledger.ledger.domain.values import Actor, ContactDraft, Identity
from caseledger.ledger.errors import ConfigurationError, RuleViolation, ValidationError
from caseledger.ledger.export import export_history
from caseledger.ledger.kafka.intake_client import KafkaIntakeClient
from caseledger.ledger.kafka.intake_worker import KafkaIntakeWorker
from caseledger.ledger.kafka.settings import KafkaSettings
from caseledger.ledger.privacy.kek import KEK_ENV, KEK_FILE_ENV, KeyEncryptionKey
from caseledger.ledger.settings import LedgerSettings
from caseledger.ledger.store.codec import AvroEventCodec
from caseledger.projections import load_projections
from caseledger.projections.queries import case_view, customer_timeline
from caseledger.projections.runner import ProjectionRunner, rebuild
from caseledger.projections.sources import StoreEventSource
from caseledger.projections.views import ViewStore, open_views
from tests.support.clock import FakeClock
from tests.support.kafka_topics import drain, publish_all, read_topic

AGENT = Actor.parse("agent:alice")
JANE = Identity.parse("email:jane.secret-7f3@example.com")
JANE_PHONE = Identity.parse("phone:+33611223344")
SUBJECT = "Blocked card after the Lisbon trip"
BODY = "My card number ending 4471 was blocked while I was in Lisbon; my PIN is not the problem."
ITEM = "Why was my card blocked without any warning?"
ANSWER = "We unblocked the card; the fraud rule misfired on the Lisbon terminal."
TERMS = "Refund the 35 EUR replacement fee by Friday to the account ending 9912"
NOTICE = "Your complaint about the Lisbon blocking is closed; the fee was refunded."
# Phrases no base64 or hex run of a token could spell by chance (spaces, punctuation, long words).
SECRETS = [JANE.value, JANE_PHONE.value, "Lisbon", "ending 4471", "ending 9912", "PIN is not", "replacement fee"]


def jane_contact(msg: str, *, identity: Identity = JANE, **kw: Any) -> ContactDraft:
    return ContactDraft(channel=kw.pop("channel", "email"), channel_message_id=msg, identity=identity,
                        subject=SUBJECT, body=BODY, items=(ITEM,), **kw)


def work_the_case(ledger: CaseLedger, reference: str) -> None:
    """An agent answers, promises on the phone (a written confirmation follows), keeps it, closes."""
    case = ledger.get_case(reference)
    ledger.respond(reference, actor=AGENT, body=ANSWER, answers=case.open_item_ids())
    ledger.make_promise(reference, actor=AGENT, channel="phone", kind="refund", terms=TERMS,
                        due_at=ledger.clock() + timedelta(days=3))
    (promise,) = ledger.get_case(reference).open_promise_ids()
    ledger.keep_promise(reference, actor=AGENT, promise_id=promise, evidence="Refund of the replacement fee sent")
    ledger.close_case(reference, actor=AGENT, reason="answered, fee refunded", notice=NOTICE)


# -- where bytes live -----------------------------------------------------------------------------------------


def store_bytes(ledger: CaseLedger, database: str) -> bytes:
    """Every byte the ledger's database holds: its files (SQLite), or every row of every table (PostgreSQL)."""
    if not database.startswith("postgresql"):
        return b"".join(p.read_bytes() for p in Path(database).parent.glob(Path(database).name + "*")
                        if not p.name.endswith(".kek"))
    import psycopg

    with psycopg.connect(database) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")]
        out = []
        for table in tables:
            for (row,) in conn.execute(f"SELECT t::text FROM {table} t"):  # bytea as \x hex, text as is
                out.append(row.encode())
                if "\\x" in row:  # and bytea columns decoded, so a clear string inside them shows
                    out += [bytes.fromhex(h) for h in _hex_runs(row)]
    return b"\n".join(out)


def _hex_runs(text: str) -> list[str]:
    import re

    return [m for m in re.findall(r"\\\\?x([0-9a-f]+)", text) if len(m) % 2 == 0]


def views_bytes(views: ViewStore, path: Path | None) -> bytes:
    if path is not None:
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    rows = [views.snapshot(p.tables) for p in load_projections(None)]
    return json.dumps(rows, default=str, ensure_ascii=False).encode()


def topic_bytes(settings: KafkaSettings, topic: str) -> bytes:
    out = []
    for record in read_topic(settings, topic, committed=False):
        out += [record.value or b"", record.key or b""]
        out += [v for _k, v in record.headers or [] if v]
    return b"\n".join(out)


def assert_nowhere(blob: bytes, where: str, secrets: list[str] = SECRETS) -> None:
    found = [s for s in secrets if s.encode() in blob]
    assert found == [], f"found in clear in {where}: {found}"


def all_views(views: ViewStore, ledger: CaseLedger) -> dict[str, Any]:
    ProjectionRunner(load_projections(None), views, StoreEventSource(ledger), batch_size=50).run(until_caught_up=True)
    return {p.name: views.snapshot(p.tables) for p in load_projections(None)}


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

    report = ledger.erase_customer(str(JANE), reason="art. 17 request of 2026-12-01, ticket 4711", actor=AGENT)
    assert report.erased and report.customer_id == customer_id

    # After: unreadable everywhere, proofs intact, views equal once rebuilt.
    assert verify(ledger, kafka=kafka).ok
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
    export_after = export_of(ledger, customer_id, tmp_path / "after.json")
    assert_nowhere(export_after.encode(), "the export")
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
    after_retention = verify(ledger, kafka=kafka)
    assert after_retention.ok, [d.line() for d in after_retention.discrepancies]
    assert any("past its retention" in note for note in after_retention.notes)

    again = ledger.erase_customer(customer_id, reason="second request")
    assert again.already_erased and not again.erased


def contact_of(ledger: CaseLedger, who: str) -> Any:
    return next(e for e in ledger.history(who) if type(e).__name__ == "ContactReceived")


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


# -- holds, retention, refusals -------------------------------------------------------------------------------


def test_a_legal_hold_refuses_erasure_by_request_and_by_retention_until_released(tmp_path: Path) -> None:
    policy = ResponsePolicy.from_toml_text(
        ResponsePolicy.default_text().replace('after_last_case = "5y"', 'after_last_case = "30d"'), source="test"
    )
    clock = FakeClock()
    ledger = CaseLedger(LedgerSettings.resolve(database=str(tmp_path / "h.sqlite")), policy=policy, clock=clock)
    try:
        out = ledger.record_contact(jane_contact("m-1"))
        work_the_case(ledger, out.reference)
        ledger.place_legal_hold(out.customer_id, reason="litigation 2026/118", actor=AGENT)
        with pytest.raises(RuleViolation, match=r"legal hold.*litigation 2026/118.*customer release"):
            ledger.erase_customer(out.customer_id, reason="art. 17 request")
        with pytest.raises(RuleViolation, match="already under a legal hold"):
            ledger.place_legal_hold(out.customer_id, reason="again")
        clock.advance(days=31)
        held = ledger.tick().retention
        assert held.erased == [] and held.held == {out.customer_id: "litigation 2026/118"}
        assert contact_of(ledger, out.customer_id).body == BODY  # kept
        ledger.release_legal_hold(out.customer_id, reason="litigation closed", actor=AGENT)
        with pytest.raises(RuleViolation, match="no legal hold"):
            ledger.release_legal_hold(out.customer_id, reason="again")
        erased = ledger.tick().retention
        assert erased.erased == [out.customer_id] and erased.held == {}
        assert ledger.tick().retention.erased == []  # once
        (event,) = [e for e in ledger.history(out.customer_id) if type(e).__name__ == "CustomerErased"]
        assert event.reason.startswith("retention: 30 days after the last case ended")
        assert contact_of(ledger, out.customer_id).body == ERASED
    finally:
        ledger.close()


def test_retention_waits_for_every_case_to_end_and_follows_the_segment(tmp_path: Path) -> None:
    text = ResponsePolicy.default_text().replace(
        'after_last_case = "5y"', 'after_last_case = "10d"\n[retention.segment]\nvip = "100d"')
    text = text.replace("# [retention.segment]\n# vip = \"10y\"\n", "")
    clock = FakeClock()
    ledger = CaseLedger(LedgerSettings.resolve(database=str(tmp_path / "r.sqlite")),
                        policy=ResponsePolicy.from_toml_text(text, source="test"), clock=clock)
    try:
        vip = ledger.record_contact(jane_contact("v-1", segment="vip"))
        work_the_case(ledger, vip.reference)
        still_open = ledger.record_contact(jane_contact("o-1", identity=Identity.parse("email:open@example.com")))
        clock.advance(days=11)
        assert ledger.tick().retention.erased == []  # vip keeps 100 days; the other has an open case
        ledger.close_case(still_open.reference, actor=AGENT, reason="done", notice="closed",
                          waive={i: "no longer needed" for i in ledger.get_case(still_open.reference).open_item_ids()})
        clock.advance(days=11)
        assert ledger.tick().retention.erased == [still_open.customer_id]
        clock.advance(days=90)
        assert ledger.tick().retention.erased == [vip.customer_id]
    finally:
        ledger.close()


def test_bad_retention_periods_and_reasons_are_refused_clearly(sqlite_ledger: CaseLedger) -> None:
    for bad, message in (('after_last_case = "5 weeks"', "not a retention period"), ('colour = "5y"', "unknown key")):
        with pytest.raises(ConfigurationError, match=message):
            ResponsePolicy.from_toml_text(ResponsePolicy.default_text().replace('after_last_case = "5y"', bad),
                                          source="p.toml")
    out = sqlite_ledger.record_contact(jane_contact("m-1"))
    with pytest.raises(ValidationError, match="needs a reason"):
        sqlite_ledger.erase_customer(out.customer_id, reason="  ")
    with pytest.raises(ValidationError, match="under 500"):
        sqlite_ledger.place_legal_hold(out.customer_id, reason="x" * 501)
    assert contact_of(sqlite_ledger, out.customer_id).body == BODY  # nothing happened


# -- keys: where they come from, what never shows -----------------------------------------------------------


def test_the_embedded_default_makes_a_private_key_file_beside_the_database(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEK_ENV, raising=False)
    monkeypatch.delenv(KEK_FILE_ENV, raising=False)
    ledger = CaseLedger(LedgerSettings.resolve(database=str(tmp_path / "e.sqlite")))
    try:
        ledger.record_contact(jane_contact("m-1"))
    finally:
        ledger.close()
    kek_file = tmp_path / "e.sqlite.kek"
    assert stat.S_IMODE(kek_file.stat().st_mode) == 0o600
    key = base64.b64decode(kek_file.read_text())
    assert len(key) == 32 and key not in (tmp_path / "e.sqlite").read_bytes()
    again = CaseLedger(LedgerSettings.resolve(database=str(tmp_path / "e.sqlite")))
    try:
        assert contact_of(again, "email:" + JANE.value).body == BODY
    finally:
        again.close()


def test_postgres_without_a_key_encryption_key_is_refused_with_how_to_fix(
    postgres: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEK_ENV, raising=False)
    monkeypatch.delenv(KEK_FILE_ENV, raising=False)
    ledger = CaseLedger(LedgerSettings.resolve(database=postgres.new_database()))
    try:
        with pytest.raises(ConfigurationError, match=r"CASELEDGER_KEK_FILE.*keys new-kek"):
            ledger.record_contact(jane_contact("m-1"))
        assert ledger.recorder.max_notification_id() in (None, 0)  # nothing recorded
    finally:
        ledger.close()


def test_a_wrong_key_encryption_key_is_named_by_its_id_never_shown(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    db = str(tmp_path / "w.sqlite")
    ledger = CaseLedger(LedgerSettings.resolve(database=db))
    ledger.record_contact(jane_contact("m-1"))
    right = ledger.data_keys.kek
    ledger.close()
    wrong = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv(KEK_ENV, wrong)
    other = CaseLedger(LedgerSettings.resolve(database=db))
    try:
        with pytest.raises(ConfigurationError) as caught:
            other.history("email:" + JANE.value)
        text = str(caught.value)
        assert right.key_id in text and wrong not in text and base64.b64encode(right.key).decode() not in text
        assert "CASELEDGER_KEK_FILE" in text
    finally:
        other.close()
    monkeypatch.setenv(KEK_ENV, "not base64 at all!")
    with pytest.raises(ConfigurationError, match="not base64"):
        KeyEncryptionKey.resolve(database_file=None)
    monkeypatch.setenv(KEK_ENV, base64.b64encode(b"short").decode())
    with pytest.raises(ConfigurationError, match="must be 32 bytes"):
        KeyEncryptionKey.resolve(database_file=None)


def test_rotating_the_key_encryption_key_through_the_cli_keeps_everything_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "k.sqlite")
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "new-kek", "--out", str(tmp_path / "old.kek")])
    assert made.exit_code == 0, made.output
    old_key = (tmp_path / "old.kek").read_text().strip()
    assert old_key not in made.output
    monkeypatch.delenv(KEK_ENV)
    monkeypatch.setenv(KEK_FILE_ENV, str(tmp_path / "old.kek"))
    base = ["--database", db]
    recorded = runner.invoke(app, [*base, "contact", "record", "-c", "email", "-m", "m-1", "--from", str(JANE),
                                   "--subject", SUBJECT, "--item", ITEM])
    assert recorded.exit_code == 0, recorded.output
    assert runner.invoke(app, ["keys", "new-kek", "--out", str(tmp_path / "new.kek")]).exit_code == 0
    refused = runner.invoke(app, ["keys", "new-kek", "--out", str(tmp_path / "new.kek")])
    assert refused.exit_code != 0 and "never overwritten" in refused.output
    rotated = runner.invoke(app, [*base, "keys", "rotate-kek", "--new", str(tmp_path / "new.kek")])
    assert rotated.exit_code == 0, rotated.output
    assert "Rewrapped 2 data key(s)" in rotated.output  # the customer's and the ledger's pseudonym key
    new_key = (tmp_path / "new.kek").read_text().strip()
    assert old_key not in rotated.output and new_key not in rotated.output
    stale = runner.invoke(app, [*base, "history", str(JANE), "--json"])
    assert stale.exit_code == 4 and "rotation" in stale.output and old_key not in stale.output
    monkeypatch.setenv(KEK_FILE_ENV, str(tmp_path / "new.kek"))
    shown = runner.invoke(app, [*base, "history", str(JANE), "--json"])
    assert shown.exit_code == 0 and SUBJECT in shown.output
    keys = runner.invoke(app, [*base, "customer", "keys", str(JANE), "--json"])
    info = json.loads(keys.stdout)
    assert [k["destroyed_at"] for k in info["keys"]] == [None] and "wrapped" not in keys.stdout
    erased = runner.invoke(app, [*base, "customer", "erase", str(JANE), "--reason", "art. 17", "--json"])
    assert erased.exit_code == 0 and json.loads(erased.stdout)["erased"]
    again = runner.invoke(app, [*base, "customer", "erase", str(JANE), "--reason", "art. 17"])
    assert again.exit_code == 0 and "already erased" in again.output


def test_sealed_fields_are_unreadable_without_the_ledger_and_tampering_reads_unreadable(sqlite_ledger: CaseLedger) -> None:
    out = sqlite_ledger.record_contact(jane_contact("m-1"))
    stored = sqlite_ledger.recorder.select_events_after([out.case_id])[out.case_id]
    raw_codec = AvroEventCodec()  # what any reader of the topic has: the schemas, no key
    contact = raw_codec.decode("ContactReceived", bytes(stored[1].state))
    assert contact.body.startswith("enc:1:") and contact.subject.startswith("enc:1:")
    assert contact.identity["kind"] == "email" and contact.identity["value"].startswith("enc:1:")
    # A token moved or altered reads as unreadable, never as another text.
    token = contact.body
    forged = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    assert sqlite_ledger.reveal(f"said {forged}") == "said [unreadable]"
    assert sqlite_ledger.reveal(f"said {token}") == f"said {BODY}"


def test_every_personal_field_names_a_field_of_its_schema() -> None:
    codec = AvroEventCodec()
    for name, paths in PERSONAL_FIELDS.items():
        fields = {f["name"] for f in codec.schema(name).parsed["fields"]}
        for path in paths:
            assert path[0] in fields, (name, path)


# -- the property: random sequences with erasures -----------------------------------------------------------

WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=6, max_size=10)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(plan=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["contact", "work", "erase"]), WORDS),
                     min_size=2, max_size=10))
def test_no_erased_text_survives_and_rebuilt_views_equal_incremental_ones(
    plan: list[tuple[int, str, str]], tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp = tmp_path_factory.mktemp("privacy")
    ledger = CaseLedger(LedgerSettings.resolve(database=str(tmp / "p.sqlite")), clock=FakeClock())
    written: dict[int, set[str]] = {0: set(), 1: set(), 2: set()}  # secrets per customer
    erased: dict[int, set[str]] = {0: set(), 1: set(), 2: set()}  # secrets written before an erasure
    refs: dict[int, list[str]] = {0: [], 1: [], 2: []}
    try:
        with open_views(str(tmp / "v.sqlite")) as views:
            for step, (who, action, word) in enumerate(plan):
                secret = f"zq{word}{step}"
                identity = Identity.parse(f"email:c{who}@example.com")
                if action == "contact":
                    out = ledger.record_contact(ContactDraft(channel="email", channel_message_id=f"m{step}",
                                                             identity=identity, items=(f"{secret} item",),
                                                             subject=f"{secret} subject"))
                    refs[who].append(out.reference)
                    written[who].add(secret)
                elif action == "work" and refs[who]:
                    ledger.respond(refs[who][-1], actor=AGENT, body=f"{secret} answer", answers=[])
                    written[who].add(secret)
                elif action == "erase" and refs[who]:
                    ledger.erase_customer(str(identity), reason="art. 17")
                    erased[who] |= written[who]
                if step % 3 == 0:
                    ProjectionRunner(load_projections(None), views, StoreEventSource(ledger),
                                     batch_size=1 + step % 4).run(until_caught_up=True)
            incremental = all_views(views, ledger)
            for projection in load_projections(None):
                assert rebuild(projection, views, StoreEventSource(ledger), batch_size=5).swapped
            assert {p.name: views.snapshot(p.tables) for p in load_projections(None)} == incremental
            everything = store_bytes(ledger, str(tmp / "p.sqlite")) + views_bytes(views, tmp / "v.sqlite")
            assert_nowhere(everything, "the store or the views", sorted(s for v in written.values() for s in v))
            for who in written:
                if not refs[who]:
                    continue
                customer_id = ledger.resolve_customer(f"email:c{who}@example.com")
                shown = json.dumps(customer_timeline(views, customer_id, ledger=lambda: ledger), default=str)
                for secret in erased[who]:
                    assert secret not in shown
                for secret in written[who] - erased[who]:
                    assert secret in shown  # what was not erased stays readable
    finally:
        ledger.close()


def test_the_standalone_reader_sees_only_tokens(tmp_path: Path) -> None:
    """A process with the schemas but not the key store (any Kafka consumer) reads tokens only."""
    db = tmp_path / "s.sqlite"
    ledger = CaseLedger(LedgerSettings.resolve(database=str(db)))
    try:
        ledger.record_contact(jane_contact("m-1"))
    finally:
        ledger.close()
    code = (
        "import sqlite3, sys; from caseledger.ledger.store.codec import AvroEventCodec;"
        "c = AvroEventCodec(); rows = sqlite3.connect(sys.argv[1]).execute('select topic, state from stored_events');"
        "print([getattr(c.decode(t.rsplit('.', 1)[1], bytes(s)), 'body', '') for t, s in rows])"
    )
    shown = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True, check=True).stdout
    assert "enc:1:" in shown and "Lisbon" not in shown


def test_a_checkpoint_taken_before_an_erasure_still_verifies_and_so_does_the_export_after_it(
    make_ledger: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Proofs are over the stored (sealed) bytes: the erasure changes none of them (issues 15 and 16)."""
    from caseledger.ledger.audit.checkpoint import HeldCheckpoint
    from caseledger.ledger.transparency.checkpoints import sign_checkpoint
    from caseledger.ledger.transparency.signing import generate_key_file
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
