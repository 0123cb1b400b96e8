"""Crypto-shredding: a customer's personal data is sealed with their keys, and erased everywhere by destroying them.

Here on SQLite files, in-process: holds and retention, the key-encryption key, sealed fields, and no
erased text left in the store or the views (hypothesis). The same on PostgreSQL, through the Kafka
topics and against a signed checkpoint: tests/integration/test_erasure_everywhere.py.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from caseledger.cli.app import app
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.avro.codec import AvroEventCodec
from caseledger.ledger.domain.personal import ERASED, PERSONAL_FIELDS
from caseledger.ledger.domain.policy import ResponsePolicy
from caseledger.ledger.domain.values import ContactDraft, Identity
from caseledger.ledger.errors import ConfigurationError, RuleViolation, ValidationError
from caseledger.ledger.privacy.kek import KEK_ENV, KEK_FILE_ENV, KeyEncryptionKey
from caseledger.ledger.store import data_key_table
from caseledger.ledger.transparency.checkpoint_key import load_signer
from caseledger.projections import load_projections
from caseledger.projections.queries import customer_timeline
from caseledger.projections.runner import ProjectionRunner, rebuild
from caseledger.projections.sources import StoreEventSource
from caseledger.projections.view_stores import open_views
from tests.support.clock import FakeClock
from tests.support.environment import environment, ledger_settings
from tests.support.examples import examples
from tests.support.personal_data import (
    AGENT,
    BODY,
    ITEM,
    JANE,
    SUBJECT,
    all_views,
    assert_nowhere,
    jane_contact,
    store_bytes,
    views_bytes,
    work_the_case,
)


def contact_of(ledger: CaseLedger, who: str) -> Any:
    return next(e for e in ledger.history(who) if type(e).__name__ == "ContactReceived")


# -- holds, retention, refusals -------------------------------------------------------------------------------


def test_a_legal_hold_refuses_erasure_by_request_and_by_retention_until_released(tmp_path: Path) -> None:
    policy = ResponsePolicy.from_toml_text(
        ResponsePolicy.default_text().replace('after_last_case = "5y"', 'after_last_case = "30d"'), source="test"
    )
    clock = FakeClock()
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "h.sqlite")), policy=policy, clock=clock)
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
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "r.sqlite")),
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
    with pytest.raises(ValidationError, match="under 200"):  # 500 before issue 24: reasons stay in clear, kept short
        sqlite_ledger.place_legal_hold(out.customer_id, reason="x" * 201)
    assert contact_of(sqlite_ledger, out.customer_id).body == BODY  # nothing happened


# -- success means done ---------------------------------------------------------------------------------------


def test_erase_says_pending_while_a_reader_keeps_the_key_bytes_in_the_file_and_tick_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: with a reader holding a snapshot, the checkpoint gave up silently and erase said "erased": true
    while the wrapped key sat in the WAL and the database file (a copy of them and the .kek opened it)."""
    monkeypatch.setattr(data_key_table, "SETTLE_SECONDS", 0.3)
    db = tmp_path / "d.sqlite"
    runner = CliRunner()
    base = ["--database", str(db)]
    assert runner.invoke(app, [*base, "contact", "record", "-c", "email", "-m", "m-1", "--from", str(JANE),
                               "--item", ITEM]).exit_code == 0
    files = lambda: b"".join(f.read_bytes() for f in tmp_path.glob("d.sqlite*") if f.suffix != ".kek")  # noqa: E731
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        wrapped = [bytes(w) for (w,) in reader.execute("SELECT wrapped FROM caseledger_data_keys WHERE subject "
                                                       "LIKE 'cus-%'")]
        assert runner.invoke(app, [*base, "contact", "record", "-c", "email", "-m", "m-2", "--from",
                                   "email:other@example.com", "--item", ITEM]).exit_code == 0
        reader.execute("BEGIN")  # a long query, a backup: its snapshot still needs the old pages
        reader.execute("SELECT count(*) FROM caseledger_data_keys").fetchall()
        erased = runner.invoke(app, [*base, "customer", "erase", str(JANE), "--reason", "art. 17", "--json"])
        assert erased.exit_code == 0, erased.output
        answer = json.loads(erased.stdout)
        assert answer["erased"] is False and answer["key_ids"] and "caseledger tick" in answer["pending"]
        assert any(w in files() for w in wrapped)  # what the answer admits: the bytes are still there
        told = runner.invoke(app, [*base, "customer", "erase", str(JANE), "--reason", "art. 17"])
        assert "not yet erased" in " ".join(told.output.split())
        pending_tick = json.loads(runner.invoke(app, [*base, "tick", "--json"]).stdout)
        assert "caseledger tick" in pending_tick["erasure_pending"]
        reader.execute("ROLLBACK")
        ticked = runner.invoke(app, [*base, "tick", "--json"])
        assert ticked.exit_code == 0 and json.loads(ticked.stdout)["erasure_pending"] is None
        assert wrapped and not any(w in files() for w in wrapped)
    finally:
        reader.close()


def test_tick_json_names_whom_retention_erased(tmp_path: Path) -> None:
    """Before (7e17b64): retention ran twice in a tick and the first report was dropped: "erased": []."""
    runner = CliRunner()
    base = ["--database", str(tmp_path / "t.sqlite")]
    recorded = runner.invoke(app, [*base, "contact", "record", "-c", "email", "-m", "m-1", "--from", str(JANE),
                                   "--item", ITEM, "--json"])
    reference, customer_id = (json.loads(recorded.stdout)[k] for k in ("reference", "customer_id"))
    closed = runner.invoke(app, [*base, "case", "close", reference, "-r", "done", "-n", "Closed.",
                                 "--waive", "Q1=no longer needed"])
    assert closed.exit_code == 0, closed.output
    ticked = runner.invoke(app, [*base, "tick", "--now", "2099-01-01T00:00Z", "--json"])
    assert ticked.exit_code == 0, ticked.output
    report = json.loads(ticked.stdout)
    assert report["erased"] == [customer_id] and report["erasure_pending"] is None
    assert json.loads(runner.invoke(app, [*base, "tick", "--now", "2099-01-02T00:00Z", "--json"]).stdout)["erased"] == []
    told = runner.invoke(app, [*base, "tick", "--now", "2099-01-03T00:00Z"])
    assert "erased" not in told.output


# -- files --------------------------------------------------------------------------------------------------


@pytest.fixture
def open_umask() -> Any:
    """The most permissive usual umask (0022): what the ledger creates must be 0600 regardless."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def test_every_file_the_ledger_writes_is_private_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    """Before: database, views and exports were created 0644."""
    runner = CliRunner()
    db, views = tmp_path / "f.sqlite", tmp_path / "views.sqlite"
    base = ["--database", str(db)]
    assert runner.invoke(app, [*base, "contact", "record", "-c", "email", "-m", "m-1", "--from", str(JANE),
                               "--item", ITEM]).exit_code == 0
    (tmp_path / "old.html").write_text("an older export")  # an export over an existing file takes it over
    for fmt, name in (("json", "e.json"), ("avro", "e.avro"), ("html", "old.html")):
        exported = runner.invoke(app, [*base, "history", str(JANE), "--export", fmt, str(tmp_path / name)])
        assert exported.exit_code == 0, exported.output
    ledger = CaseLedger(ledger_settings(database=str(db)))
    try:
        with open_views(str(views)) as store:
            ProjectionRunner(load_projections(None), store, StoreEventSource(ledger), batch_size=10).run(
                until_caught_up=True)
            opened = sorted(tmp_path.glob("*"))  # the WAL files exist while the databases are open
            modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in opened}
    finally:
        ledger.close()
    assert {"f.sqlite", "f.sqlite-wal", "f.sqlite-shm", "views.sqlite", "views.sqlite-wal", "e.json", "e.avro",
            "old.html"} <= set(modes)
    assert {name: mode for name, mode in modes.items() if mode != 0o600} == {}


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_file_others_may_read_is_refused_with_how_to_fix_it(tmp_path: Path, mode: int,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a 0644 key-encryption key file was accepted silently."""
    runner = CliRunner()
    kek = tmp_path / "kek"
    assert runner.invoke(app, ["keys", "new-kek", "--out", str(kek)]).exit_code == 0
    signing = tmp_path / "signing.key"
    assert runner.invoke(app, ["keys", "init", "--file", str(signing)]).exit_code == 0
    monkeypatch.delenv(KEK_ENV, raising=False)
    monkeypatch.setenv(KEK_FILE_ENV, str(kek))
    base = ["--database", str(tmp_path / "k.sqlite")]
    assert runner.invoke(app, [*base, "contact", "record", "-c", "email", "-m", "m-1", "--from", str(JANE),
                               "--item", ITEM]).exit_code == 0
    for path, what in ((kek, "key-encryption key file"), (signing, "signing key file")):
        path.chmod(mode)
        with pytest.raises(ConfigurationError, match=rf"{what} {path} may be read by group or others "
                                                     rf"\(mode 0{mode:o}\).*`chmod 600 {path}`"):
            if path == kek:
                KeyEncryptionKey.from_file(path)
            else:
                load_signer(environment().transparency, key_file=path)
        if path == kek:  # the command says it too, and exits as a misconfiguration does
            refused = runner.invoke(app, [*base, "history", str(JANE)])
            assert refused.exit_code == 4 and f"chmod 600 {path}" in "".join(refused.output.split("\n"))
        path.chmod(0o600)
    assert runner.invoke(app, [*base, "history", str(JANE)]).exit_code == 0


# -- keys: where they come from, what never shows -----------------------------------------------------------


def test_the_embedded_default_makes_a_private_key_file_beside_the_database(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEK_ENV, raising=False)
    monkeypatch.delenv(KEK_FILE_ENV, raising=False)
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "e.sqlite")))
    try:
        ledger.record_contact(jane_contact("m-1"))
    finally:
        ledger.close()
    kek_file = tmp_path / "e.sqlite.kek"
    assert stat.S_IMODE(kek_file.stat().st_mode) == 0o600
    key = base64.b64decode(kek_file.read_text())
    assert len(key) == 32 and key not in (tmp_path / "e.sqlite").read_bytes()
    again = CaseLedger(ledger_settings(database=str(tmp_path / "e.sqlite")))
    try:
        assert contact_of(again, "email:" + JANE.value).body == BODY
    finally:
        again.close()


def test_a_wrong_key_encryption_key_is_named_by_its_id_never_shown(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    db = str(tmp_path / "w.sqlite")
    ledger = CaseLedger(ledger_settings(database=db))
    ledger.record_contact(jane_contact("m-1"))
    right = ledger.data_keys.kek
    ledger.close()
    wrong = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv(KEK_ENV, wrong)
    other = CaseLedger(ledger_settings(database=db))
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
        KeyEncryptionKey.resolve(environment().privacy, database_file=None)
    monkeypatch.setenv(KEK_ENV, base64.b64encode(b"short").decode())
    with pytest.raises(ConfigurationError, match="must be 32 bytes"):
        KeyEncryptionKey.resolve(environment().privacy, database_file=None)


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


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(plan=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["contact", "work", "erase"]), WORDS),
                     min_size=2, max_size=10))
def test_no_erased_text_survives_and_rebuilt_views_equal_incremental_ones(
    plan: list[tuple[int, str, str]], tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp = tmp_path_factory.mktemp("privacy")
    ledger = CaseLedger(ledger_settings(database=str(tmp / "p.sqlite")), clock=FakeClock())
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
    ledger = CaseLedger(ledger_settings(database=str(db)))
    try:
        ledger.record_contact(jane_contact("m-1"))
    finally:
        ledger.close()
    code = (
        "import sqlite3, sys; from caseledger.ledger.avro.codec import AvroEventCodec;"
        "c = AvroEventCodec(); rows = sqlite3.connect(sys.argv[1]).execute('select topic, state from stored_events');"
        "print([getattr(c.decode(t.rsplit('.', 1)[1], bytes(s)), 'body', '') for t, s in rows])"
    )
    shown = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True, check=True).stdout
    assert "enc:1:" in shown and "Lisbon" not in shown


@pytest.mark.parametrize("kept", [True, False], ids=["kept-between-batches", "read-again"])
def test_an_erased_customer_who_writes_again_gets_the_defaults_never_their_old_time_zone(
    tmp_path: Path, clock: FakeClock, kept: bool
) -> None:
    """Before: a ledger that kept the customer between batches wrote her new acknowledgement in her erased
    time zone; one that read her again refused her contact ("unknown time zone '[erased]'")."""
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "l.sqlite")), clock=clock)
    try:
        if kept:
            ledger.keep_aggregates(100, cases=False)  # as the service's committer and the intake worker do
        who = "email:chatham@example.com"
        first = ledger.record_contact(ContactDraft(channel="email", channel_message_id="tz-1",
                                                  identity=Identity.parse(who), items=("Hello?",)))
        ledger.set_customer_locale(who, actor=AGENT, locale=None, time_zone="Pacific/Chatham")
        clock.advance(minutes=5)
        ledger.erase_customer(who, reason="the customer asked (art. 17)", actor=AGENT)
        clock.advance(minutes=5)
        again = ledger.record_contact(ContactDraft(channel="email", channel_message_id="tz-2",
                                                  identity=Identity.parse(who), items=("Me again",)))
        ack = [e for e in ledger.events.get(again.case_id) if type(e).__name__ == "AcknowledgementIssued"][-1]
        assert ack.time_zone == ledger.audience_of(None, "email").time_zone != "Pacific/Chatham", first.reference
    finally:
        ledger.close()
