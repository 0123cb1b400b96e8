"""``case show`` from a sealed snapshot and the events after it: as fast as a short case, never a copy erasure misses.

A read that replayed many events keeps the case sealed under its customer's keys (ledger/case_snapshots.py).
Here, on SQLite files and in-process (PostgreSQL: tests/contracts/test_case_snapshot_backends.py): the
reads it saves, its bytes searched for her data, the erased that returns (another process, a key destroyed
without an event, a key destroyed while it was taken, the customer back with a new key, retention), a
snapshot forged, corrupt, of another format or ahead of the events, and a property: a case read through
snapshots taken at random versions is the case replayed.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from caseledger.cli.app import app
from caseledger.ledger import case_snapshots
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.case_snapshots import decode_state, encode_state
from caseledger.ledger.domain.personal import ERASED
from caseledger.ledger.domain.policy import ResponsePolicy
from caseledger.ledger.errors import CaseLedgerError
from caseledger.ledger.reports.describe import case_record
from tests.support.clock import FakeClock
from tests.support.environment import ledger_settings
from tests.support.examples import examples
from tests.support.personal_data import AGENT, BODY, ITEM, SECRETS, SUBJECT, assert_nowhere, jane_contact

TABLE = "caseledger_case_snapshots"


def follow_ups(ledger: CaseLedger, reference: str, n: int, *, start: int = 0) -> None:
    for i in range(start, start + n):
        ledger.record_contact(jane_contact(f"f-{i}", case_reference=reference))


def _replay(ledger: CaseLedger, reference: str) -> Any:
    from caseledger.ledger.domain.case_references import normalise_reference
    from caseledger.ledger.domain.directory import case_id_for

    return ledger.load(case_id_for(normalise_reference(reference)))


def rows(database: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (TABLE,)).fetchall():
            return []  # made by the first snapshot kept: a reader that keeps none writes nothing
        return conn.execute(f"SELECT case_id, version, format, sealed_by, key_ids, sealed FROM {TABLE}").fetchall()


@pytest.fixture
def two(tmp_path: Path, clock: FakeClock) -> Iterator[tuple[CaseLedger, CaseLedger, Path]]:
    """An agent's ledger that writes and erases, a reader (``case show``'s process): one store. Only the reader
    keeps snapshots (an agent's ledger reads cases outside a unit of work too, and would keep its own)."""
    database = tmp_path / "s.sqlite"
    built = (CaseLedger(ledger_settings(database=str(database)), clock=clock),
             CaseLedger(ledger_settings(database=str(database)), clock=clock))
    built[0].lookups.snapshots.snapshot_after = 10**6
    yield built[0], built[1], database
    for ledger in built:
        ledger.close()


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many stored events each read decodes (appended per read, by the reader's snapshots)."""
    counts: list[int] = []
    original = case_snapshots.replay

    def counting(aggregate: Any, events: list[Any]) -> Any:
        counts.append(len(events))
        return original(aggregate, events)

    monkeypatch.setattr(case_snapshots, "replay", counting)
    return counts


# -- the finding: case show replayed every event of the case, every time -------------------------------------------


def test_case_show_decodes_only_the_events_recorded_after_the_snapshot_a_long_replay_kept(
    two: tuple[CaseLedger, CaseLedger, Path], decoded: list[int],
) -> None:
    """Before: every ``case show`` decoded and opened every event of the case (issue 29: p99 9.66 ms CPU for a case of
    ~150 events at 10 M events, target 5 ms). Now the first read keeps a snapshot and the next decode only what is new."""
    agent, reader, database = two
    out = agent.record_contact(jane_contact("m-1"))
    follow_ups(agent, out.reference, 12)  # 3 events, then 2 each: 27
    decoded.clear()
    first = reader.case_record(out.reference)
    assert decoded == [_replay(reader, out.reference).version] == [27] and len(rows(database)) == 1
    follow_ups(agent, out.reference, 1, start=100)
    decoded.clear()
    second = reader.case_record(out.reference)
    assert decoded == [2]
    assert second == case_record(_replay(reader, out.reference)) and second != first
    assert reader.case_record(out.reference) == second and decoded[-1] == 2


def test_a_short_case_keeps_no_snapshot(two: tuple[CaseLedger, CaseLedger, Path]) -> None:
    agent, reader, database = two
    out = agent.record_contact(jane_contact("m-1"))
    follow_ups(agent, out.reference, 3)
    reader.case_record(out.reference)
    assert rows(database) == []


def test_a_unit_of_work_reads_cases_as_before_and_keeps_no_snapshot(
    two: tuple[CaseLedger, CaseLedger, Path], decoded: list[int],
) -> None:
    """The intake worker's and the service committer's batches (units of work) replay as they did: their cases come
    from the unit's own cache and the store, never from a snapshot, and they keep none."""
    agent, reader, database = two
    out = agent.record_contact(jane_contact("m-1"))
    follow_ups(agent, out.reference, 10)
    reader.case_record(out.reference)
    assert len(rows(database)) == 1
    _tamper(database, f"DELETE FROM {TABLE}")
    decoded.clear()
    with reader.unit_of_work():
        case = reader.get_case(out.reference)
    assert decoded == [] and rows(database) == []
    assert case_record(case) == case_record(_replay(reader, out.reference))


# -- privacy: nothing in clear; the erased that returns ------------------------------------------------------------


def test_the_snapshot_table_holds_none_of_her_data_in_clear(two: tuple[CaseLedger, CaseLedger, Path]) -> None:
    """An attacker with the database's rows (not the key-encryption key) finds no e-mail, subject, body or item."""
    agent, reader, database = two
    out = agent.record_contact(jane_contact("m-1"))
    follow_ups(agent, out.reference, 10)
    record = reader.case_record(out.reference)
    assert record["subject"] == SUBJECT  # the snapshot was taken from her texts, opened
    (row,) = rows(database)
    assert_nowhere(b"\n".join(str(v).encode() if not isinstance(v, bytes) else v for v in row), TABLE,
                   [*SECRETS, SUBJECT, BODY, ITEM])
    with pytest.raises(AssertionError, match="Lisbon"):  # the search finds her texts where they are
        assert_nowhere(encode_state(_replay(reader, out.reference)).hex().encode(), "the state unsealed", ["Lisbon"])


def _assert_erased(record: dict[str, Any]) -> None:
    text = repr(record)
    assert record["subject"] == ERASED
    assert not any(s in text for s in ("Lisbon", "4471", "Blocked card", "without any warning")), text


def test_an_erasure_by_another_process_is_in_force_at_the_next_case_show(
    two: tuple[CaseLedger, CaseLedger, Path], decoded: list[int],
) -> None:
    agent, reader, database = two
    out = agent.record_contact(jane_contact("m-1"))
    follow_ups(agent, out.reference, 10)
    assert reader.case_record(out.reference)["subject"] == SUBJECT and rows(database)
    agent.erase_customer(out.customer_id, reason="art. 17 request", actor=AGENT)
    decoded.clear()
    _assert_erased(reader.case_record(out.reference))
    assert decoded == [_replay(reader, out.reference).version]  # the snapshot did not open: the case was replayed


def test_an_erasure_deletes_the_snapshots_of_her_cases_and_keeps_the_others(
    two: tuple[CaseLedger, CaseLedger, Path], caplog: pytest.LogCaptureFixture,
) -> None:
    """Sealed under her destroyed keys, her cases' snapshots could no longer open: they go all the same, so no row
    of hers is left beside the events. Another customer's snapshot stays. Before, the rows stayed for good."""
    from caseledger.ledger.domain.values import Identity

    agent, reader, database = two
    out = agent.record_contact(jane_contact("m-1"))
    follow_ups(agent, out.reference, 10)
    other = agent.record_contact(jane_contact("o-1", identity=Identity.parse("email:someone.else@example.com")))
    for i in range(10):
        agent.record_contact(jane_contact(f"o-f-{i}", identity=Identity.parse("email:someone.else@example.com"),
                                          case_reference=other.reference))
    reader.case_record(out.reference)
    reader.case_record(other.reference)
    assert len(rows(database)) == 2
    agent.erase_customer(out.customer_id, reason="art. 17 request", actor=AGENT)
    assert [str(row[0]) for row in rows(database)] == [str(_replay(reader, other.reference).id)]
    _assert_erased(reader.case_record(out.reference))
    assert reader.case_record(other.reference)["subject"] == SUBJECT
    assert len(rows(database)) == 1  # a case erased whole is not replayed long: no snapshot of it comes back
    assert "snapshots" not in caplog.text


def test_an_erasure_where_no_snapshot_was_ever_kept_makes_no_table(two: tuple[CaseLedger, CaseLedger, Path]) -> None:
    agent, reader, database = two
    out = agent.record_contact(jane_contact("m-1"))
    agent.erase_customer(out.customer_id, reason="art. 17 request", actor=AGENT)
    with sqlite3.connect(database) as conn:
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (TABLE,)).fetchall()
    from caseledger.ledger.domain.values import Identity

    someone = Identity.parse("email:someone.else@example.com")  # the table comes with the first snapshot kept
    other = agent.record_contact(jane_contact("o-1", identity=someone))
    for i in range(10):
        agent.record_contact(jane_contact(f"o-f-{i}", identity=someone, case_reference=other.reference))
    reader.case_record(other.reference)
    assert len(rows(database)) == 1


def test_snapshots_that_cannot_be_deleted_never_fail_the_erasure(
    two: tuple[CaseLedger, CaseLedger, Path], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from caseledger.ledger.errors import BackendError

    agent, reader, database = two
    out = agent.record_contact(jane_contact("m-1"))
    follow_ups(agent, out.reference, 10)
    reader.case_record(out.reference)

    def failing(case_ids: list[Any]) -> int:
        raise BackendError("database is locked")

    monkeypatch.setattr(agent.storage.case_snapshots(), "delete_snapshots", failing)
    report = agent.erase_customer(out.customer_id, reason="art. 17 request", actor=AGENT)
    assert report.key_ids and len(rows(database)) == 1  # erased all the same; the row left cannot open
    assert "the snapshots of 1 erased cases were not deleted (BackendError)" in caplog.text
    assert out.customer_id not in caplog.text and out.reference not in caplog.text
    _assert_erased(reader.case_record(out.reference))
    monkeypatch.undo()
    assert agent.erase_customer(out.customer_id, reason="art. 17 request", actor=AGENT).already_erased
    assert rows(database) == []  # her next erasure deletes what was left


def test_a_key_destroyed_without_any_event_makes_the_snapshot_unreadable(
    two: tuple[CaseLedger, CaseLedger, Path],
) -> None:
    """The retry of an erasure that crashed between its event and the keys, or an operator's destroy: no new event
    for the reader to see, only the key gone."""
    agent, reader, _database = two
    out = agent.record_contact(jane_contact("m-1"))
    follow_ups(agent, out.reference, 10)
    reader.case_record(out.reference)
    keys = agent.data_keys
    keys.destroy(keys.live_keys_of(out.customer_id))
    _assert_erased(reader.case_record(out.reference))
    _assert_erased(reader.case_record(out.reference))  # and no snapshot of her texts came back meanwhile


def test_a_key_destroyed_while_the_snapshot_is_taken_leaves_it_unreadable(
    two: tuple[CaseLedger, CaseLedger, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reader opened her texts, then another process destroyed her key before the snapshot was written: it is
    sealed under that very key, so it never opens; and it goes (the erasure had deleted her snapshots before it
    was saved). Finding (review): the row stayed until her next erasure."""
    agent, reader, database = two
    out = agent.record_contact(jane_contact("m-1"))
    follow_ups(agent, out.reference, 10)
    snapshots = reader.lookups.snapshots
    keep = snapshots._keep

    def erased_meanwhile(*args: Any) -> None:
        agent.erase_customer(out.customer_id, reason="art. 17 request", actor=AGENT)
        keep(*args)

    with monkeypatch.context() as patch:
        patch.setattr(snapshots, "_keep", erased_meanwhile)
        assert reader.case_record(out.reference)["subject"] == SUBJECT  # read before the erasure
    assert rows(database) == []
    _assert_erased(reader.case_record(out.reference))


def test_new_events_after_an_erasure_never_open_the_old_snapshot(
    two: tuple[CaseLedger, CaseLedger, Path], clock: FakeClock,
) -> None:
    """After the erasure her subject gets a new key (a notice on her old case, her return): the snapshot kept under the
    old key stays shut; the case shows the old texts erased and the new ones."""
    agent, reader, _database = two
    out = agent.record_contact(jane_contact("m-1"))
    follow_ups(agent, out.reference, 10)
    reader.case_record(out.reference)
    agent.erase_customer(out.customer_id, reason="art. 17 request", actor=AGENT)
    clock.advance(minutes=1)
    agent.change_status(out.reference, actor=AGENT, to_status="in_progress", reason="looked at",
                        notice="We are looking at the Porto matter now.")
    assert agent.data_keys.live_keys_of(out.customer_id)  # a new key of hers
    again = agent.record_contact(jane_contact("m-back"))  # she comes back: a new customer
    follow_ups(agent, again.reference, 10, start=50)
    record = reader.case_record(out.reference)
    _assert_erased(record)
    assert "Porto" in repr(record)
    assert reader.case_record(again.reference)["subject"] == SUBJECT  # her new self's case: her texts
    assert record == case_record(_replay(reader, out.reference))


def test_retention_reaches_the_snapshots_of_the_cases_it_erases(tmp_path: Path) -> None:
    policy = ResponsePolicy.from_toml_text(
        ResponsePolicy.default_text().replace('after_last_case = "5y"', 'after_last_case = "30d"'), source="test")
    clock = FakeClock()
    database = str(tmp_path / "r.sqlite")
    ledger = CaseLedger(ledger_settings(database=database), policy=policy, clock=clock)
    reader = CaseLedger(ledger_settings(database=database), clock=clock)
    try:
        out = ledger.record_contact(jane_contact("m-1"))
        follow_ups(ledger, out.reference, 10)
        ledger.close_case(out.reference, actor=AGENT, reason="answered", notice="Closed.",
                          waive={q: "asked again" for q in ledger.get_case(out.reference).open_item_ids()})
        assert reader.case_record(out.reference)["subject"] == SUBJECT
        clock.advance(days=31)
        assert ledger.tick().retention.erased == [out.customer_id]
        _assert_erased(reader.case_record(out.reference))
    finally:
        ledger.close()
        reader.close()


# -- never trusted over the events ---------------------------------------------------------------------------------


def _case_with_a_snapshot(two: tuple[CaseLedger, CaseLedger, Path]) -> tuple[CaseLedger, Path, str, dict[str, Any]]:
    """Jane's case of 11 contacts, read once by the reader (which keeps its snapshot): the reader, the database,
    the case's reference and its record as a replay gives it."""
    agent, reader, database = two
    out = agent.record_contact(jane_contact("m-1"))
    follow_ups(agent, out.reference, 10)
    return reader, database, str(out.reference), reader.case_record(out.reference)


def _tamper(database: Path, statement: str, params: tuple[Any, ...] = ()) -> None:
    with sqlite3.connect(database) as conn:
        conn.execute(statement, params)


def test_a_release_that_changes_how_a_case_is_decoded_or_opened_names_another_format(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Finding (review): the format named the case's own modules only; a release changing a schema (or an old
    version's defaults), the codec or what opens personal fields read the snapshots an earlier one kept."""
    from caseledger.ledger.avro import codec

    def changed(files: Any, name: str) -> Any:
        return lambda: [(f, t + " ") if f == name else (f, t) for f, t in files()]

    case_snapshots.snapshot_format.cache_clear()  # computed afresh (a test before may have wrapped the replay)
    this = case_snapshots.snapshot_format()
    schema, = [f for f, _ in codec.schema_files() if f.startswith("CaseOpened")]
    try:
        for patched in ({"schema_files": changed(codec.schema_files, schema)},
                        {"history_files": lambda: [*codec.history_files(), ("Old.v0.avsc", "{}")]}):
            with monkeypatch.context() as patch:
                for name, files in patched.items():
                    patch.setattr(case_snapshots, name, files)
                case_snapshots.snapshot_format.cache_clear()
                assert case_snapshots.snapshot_format() not in ("", this)
    finally:
        case_snapshots.snapshot_format.cache_clear()
    assert case_snapshots.snapshot_format() == this


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "other format", "other keys", "empty"])
def test_a_corrupt_or_foreign_snapshot_is_ignored_and_the_case_replayed(
    two: tuple[CaseLedger, CaseLedger, Path], damage: str,
) -> None:
    reader, database, reference, expected = _case_with_a_snapshot(two)
    (row,) = rows(database)
    sealed = bytes(row[5])
    statement, params = {
        "flipped byte": (f"UPDATE {TABLE} SET sealed = ?", (sealed[:40] + bytes([sealed[40] ^ 1]) + sealed[41:],)),
        "truncated": (f"UPDATE {TABLE} SET sealed = ?", (sealed[:30],)),
        "other format": (f"UPDATE {TABLE} SET format = 'json0:0000'", ()),
        "other keys": (f"UPDATE {TABLE} SET sealed_by = '0123456789abcdef', key_ids = '0123456789abcdef'", ()),
        "empty": (f"UPDATE {TABLE} SET sealed = ?, sealed_by = ''", (b"",)),
    }[damage]
    _tamper(database, statement, params)
    (damaged,) = rows(database)
    assert reader.case_record(reference) == expected
    # The replay kept the case again, in place of the damaged row at the same version (finding, review: a damaged
    # row stayed, and every read replayed the case whole and logged it).
    (kept,) = rows(database)
    assert kept[1] == row[1] and kept[2] == row[2] and (bytes(kept[5]), kept[3]) != (bytes(damaged[5]), damaged[3])
    assert reader.lookups.snapshots._opened(reader.storage.case_snapshots().select_snapshot(kept[0])) is not None
    assert reader.case_record(reference) == expected


def _forge(reader: CaseLedger, reference: str, change: Any) -> None:
    """A snapshot sealed with her real key (an attacker would need it) of a state the events do not give."""
    case = _replay(reader, reference)
    change(case)
    snapshots = reader.lookups.snapshots
    keys = reader.data_keys
    try:
        snapshots._keep(snapshots.table, case, set(keys.live_keys_of(case.customer_id)))
    finally:
        keys.forget()


@pytest.mark.parametrize("forged", ["ahead of the events", "another chain", "unknown type"])
def test_a_snapshot_the_events_do_not_give_is_never_trusted(
    two: tuple[CaseLedger, CaseLedger, Path], forged: str,
) -> None:
    reader, database, reference, expected = _case_with_a_snapshot(two)
    _tamper(database, f"DELETE FROM {TABLE}")

    def ahead(case: Any) -> None:
        vars(case)["_version"] += 5
        case.subject = "forged"

    def another_chain(case: Any) -> None:
        case.chain_head = b"\0" * 32
        case.subject = "forged"

    def unknown(case: Any) -> None:
        case.subject = PurePosixPath("forged")  # a class a case's state never holds: the unpickler refuses it

    _forge(reader, reference, {"ahead of the events": ahead, "another chain": another_chain,
                                   "unknown type": unknown}[forged])
    assert len(rows(database)) == 1
    record = reader.case_record(reference)
    assert record == expected and record["subject"] == SUBJECT


class _Calls:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def test_a_snapshot_that_would_call_anything_is_refused_before_it_runs(tmp_path: Path) -> None:
    """The state is pickled; its unpickler builds the state's own types only (after AES-GCM authenticated the bytes)."""
    import pickle
    from uuid import uuid4

    case_id, ran = uuid4(), tmp_path / "ran"
    for payload in ({"_id": case_id, "_version": 1, "x": _Calls(ran)}, _Calls(ran), {"_id": sqlite3.connect}):
        assert decode_state(pickle.dumps(payload, protocol=5), case_id, 1) is None
    assert not ran.exists()
    assert decode_state(b"\x80\x05garbage", case_id, 1) is None


def test_a_snapshot_that_would_set_a_class_s_own_attributes_is_refused_and_changes_nothing() -> None:
    """Finding (review): the unpickler handed out the classes themselves, and pickle's BUILD applied to a class
    object set its attributes for the whole process (``Erased()`` became a plain text). Each class the state is
    built from now stands in the way: such a snapshot is refused, and no class changes."""
    from uuid import uuid4

    from caseledger.ledger.domain.personal import Erased

    def build_on_class(module: str, name: str, attributes: dict[str, Any]) -> bytes:
        """GLOBAL module.name; (None, attributes); BUILD: the class object itself as the instance."""
        items = b"".join(b"X" + len(k).to_bytes(4, "little") + k.encode() + b"X" + len(str(v)).to_bytes(4, "little")
                         + str(v).encode() + b"s" for k, v in attributes.items())
        return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"N}" + items + b"\x86b."

    case_id = uuid4()
    for (module, name), cls in case_snapshots._ALLOWED.items():
        before = dict(vars(cls))
        data = build_on_class(module, name, {"zzz_planted": "1", "_instance": "hello"})
        assert decode_state(data, case_id, 1) is None
        assert dict(vars(cls)) == before, f"{name} was changed"
    assert Erased() is ERASED


def test_case_show_on_a_damaged_snapshot_exits_as_a_case_show(two: tuple[CaseLedger, CaseLedger, Path]) -> None:
    """The CLI's path: no traceback, no error for a snapshot that does not open."""
    agent, reader, database = two
    out = agent.record_contact(jane_contact("m-1"))
    follow_ups(agent, out.reference, 10)
    reader.case_record(out.reference)
    _tamper(database, f"UPDATE {TABLE} SET sealed = ?", (b"\x00" * 64,))
    result = CliRunner().invoke(app, ["-d", str(database), "case", "show", out.reference, "--json"])
    assert result.exit_code == 0, result.output
    assert SUBJECT in result.output


# -- not events: the audit, the log and the exports never see them ----------------------------------------------------


def test_snapshots_are_not_events_the_audit_and_the_log_see(two: tuple[CaseLedger, CaseLedger, Path]) -> None:
    agent, reader, database = two
    out = agent.record_contact(jane_contact("m-1"))
    follow_ups(agent, out.reference, 10)
    before = agent.recorder.max_notification_id()
    history = [e.event_id for e in agent.history(out.customer_id)]
    reader.case_record(out.reference)
    assert rows(database)
    assert agent.recorder.max_notification_id() == before
    assert [e.event_id for e in agent.history(out.customer_id)] == history
    result = CliRunner().invoke(app, ["-d", str(database), "audit", "verify"])
    assert result.exit_code == 0, result.output


# -- the property: a snapshot is never ahead of, nor different from, a replay ------------------------------------------


STEPS = st.lists(st.sampled_from(["follow_up", "respond", "promise", "keep", "status", "assign", "hand_off", "close",
                                  "reopen", "waive", "read"]), min_size=1, max_size=14)


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS, after=st.integers(min_value=0, max_value=4), erase_at=st.integers(min_value=-1, max_value=14))
def test_a_case_read_through_snapshots_at_random_versions_is_the_case_replayed(
    tmp_path_factory: pytest.TempPathFactory, steps: list[str], after: int, erase_at: int,
) -> None:
    clock = FakeClock()
    database = str(tmp_path_factory.mktemp("prop") / "p.sqlite")
    agent = CaseLedger(ledger_settings(database=database), clock=clock)
    reader = CaseLedger(ledger_settings(database=database), clock=clock)
    reader.lookups.snapshots.snapshot_after = after
    try:
        out = agent.record_contact(jane_contact("m-0"))
        ref = out.reference
        for n, step in enumerate(steps):
            clock.advance(minutes=7)
            if n == erase_at:
                agent.erase_customer(out.customer_id, reason="art. 17 request", actor=AGENT)
            with contextlib.suppress(CaseLedgerError):  # a rule refused it (a closed case …): the story goes on
                _step(agent, ref, step, n)
            if step == "read" or n % 3 == 0:
                through = reader.get_case(ref)
                replay = _replay(reader, ref)
                assert _state(through) == _state(replay)
                assert case_record(through) == case_record(replay)
        assert reader.case_record(ref) == case_record(_replay(reader, ref))
    finally:
        agent.close()
        reader.close()


def _state(case: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(case).items() if k != "_pending_events"}


def _step(ledger: CaseLedger, ref: str, step: str, n: int) -> None:
    case = ledger.get_case(ref)
    if step == "follow_up":
        ledger.record_contact(jane_contact(f"m-{n + 1}", case_reference=ref))
    elif step == "respond" and case.open_item_ids():
        ledger.respond(ref, actor=AGENT, body=f"Answer {n} about Lisbon", answers=case.open_item_ids()[:1])
    elif step == "promise":
        ledger.make_promise(ref, actor=AGENT, channel="phone", kind="refund", terms=f"Refund {n} EUR",
                            due_at=ledger.clock() + timedelta(days=3))
    elif step == "keep" and case.open_promise_ids():
        ledger.keep_promise(ref, actor=AGENT, promise_id=case.open_promise_ids()[0], evidence="sent")
    elif step == "status":
        ledger.change_status(ref, actor=AGENT, to_status="waiting_on_customer", reason="asked", notice=f"Notice {n}")
    elif step == "assign":
        ledger.assign(ref, actor=AGENT, assignee=f"agent:a{n}")
    elif step == "hand_off":
        ledger.hand_off(ref, actor=AGENT, to_assignee="agent:bob", note=f"Handoff {n}")
    elif step == "close":
        ledger.close_case(ref, actor=AGENT, reason="done", notice=f"Closed {n}")
    elif step == "reopen":
        ledger.reopen_case(ref, actor=AGENT, reason="again", notice=f"Reopened {n}")
    elif step == "waive" and case.open_item_ids():
        ledger.waive_item(ref, actor=AGENT, item_id=case.open_item_ids()[0], reason="out of scope")
