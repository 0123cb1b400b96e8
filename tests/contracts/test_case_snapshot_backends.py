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
