"""Case snapshots on each backend: kept sealed, read back with the events after them, shut by an erasure.

The same contract on SQLite and PostgreSQL (the table's SQL is written once for both, ledger/store/
case_snapshot_table.py); the whole behaviour is tests/unit/test_case_snapshots.py.
"""

from __future__ import annotations

from collections.abc import Callable

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.case_references import normalise_reference
from caseledger.ledger.domain.directory import case_id_for
from caseledger.ledger.domain.personal import ERASED
from caseledger.ledger.reports.describe import case_record
from tests.support.personal_data import AGENT, BODY, SUBJECT, assert_nowhere, jane_contact, store_bytes


def test_a_snapshot_is_kept_sealed_read_back_and_shut_by_an_erasure(
    make_ledger: Callable[..., CaseLedger], database: str,
) -> None:
    agent, reader = make_ledger(), make_ledger()
    agent.lookups.snapshots.snapshot_after = 10**6  # the reader's snapshots only
    out = agent.record_contact(jane_contact("m-1"))
    for i in range(10):
        agent.record_contact(jane_contact(f"f-{i}", case_reference=out.reference))
    case_id = case_id_for(normalise_reference(out.reference))
    first = reader.case_record(out.reference)
    table = reader.storage.case_snapshots()
    row = table.select_snapshot(case_id)
    assert row is not None and row.version == reader.load(case_id).version
    assert_nowhere(row.sealed + ",".join(row.key_ids).encode(), "the snapshot's row", [SUBJECT, BODY, "Lisbon"])
    assert_nowhere(store_bytes(reader, database), "the store with a snapshot kept", [SUBJECT, BODY])
    agent.record_contact(jane_contact("f-last", case_reference=out.reference))
    assert reader.case_record(out.reference) == case_record(reader.load(case_id)) != first
    assert table.select_snapshot(case_id) == row  # two more events are not a long replay: the same row
    agent.erase_customer(out.customer_id, reason="art. 17 request", actor=AGENT)
    erased = reader.case_record(out.reference)
    assert erased["subject"] == ERASED and "Lisbon" not in repr(erased)


def test_a_database_that_never_kept_a_snapshot_is_read_without_a_failed_statement(
    make_ledger: Callable[..., CaseLedger], database: str,
) -> None:
    """Until the first snapshot is kept there is no table: reads and deletions ask the catalog, never run a statement
    that fails (on PostgreSQL each such failure was an ERROR line in the server's log, one per case read)."""
    from uuid import uuid4

    from caseledger.ledger.store.case_snapshot_table import TABLE

    reader, writer = make_ledger(), make_ledger()
    reader.lookups.snapshots.snapshot_after = 10**6  # the writer's snapshots only
    table = reader.storage.case_snapshots()
    dialect = table.dialect  # type: ignore[attr-defined]
    ran: list[str] = []
    rows = dialect.rows

    def watched(statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        ran.append(statement)
        return rows(statement, params)

    dialect.rows = watched
    assert table.select_snapshot(uuid4()) is None and table.delete_snapshots([uuid4()]) == 0
    assert not dialect.exists(TABLE) and not any(TABLE in s and "SELECT case_id" in s for s in ran)
    out = writer.record_contact(jane_contact("m-1"))
    for i in range(20):
        writer.record_contact(jane_contact(f"f-{i}", case_reference=out.reference))
    writer.case_record(out.reference)  # the writer keeps the first snapshot: the table comes with it
    case_id = case_id_for(normalise_reference(out.reference))
    assert dialect.exists(TABLE) and table.select_snapshot(case_id) is not None  # the reader sees it at once
    assert table.delete_snapshots([case_id]) == 1
