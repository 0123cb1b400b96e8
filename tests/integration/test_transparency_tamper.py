"""Every tampering of docs/audit.md's table, and the ledger's two old limits, against a signed checkpoint.

The audit's ledger (tests/support/tampering.py) is built once per backend (SQLite, PostgreSQL) through
the real intake topic, worker and publisher (Kafka); each test signs a checkpoint on its own copy, tampers
with the events table by SQL as a database operator could, and checks that ``audit verify
--checkpoint`` *and* the standalone verifier on a history export made afterwards name it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.audit import AuditReport, verify
from caseledger.ledger.audit.kept_checkpoint import HeldCheckpoint
from caseledger.ledger.avro.codec import event_hash
from caseledger.ledger.reports.export import export_history
from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner, generate_key_file
from caseledger.ledger.transparency.checkpoints import sign_checkpoint
from caseledger.verify.history import HistoryCheck, check_history
from tests.support.environment import ledger_settings
from tests.support.tampering import Built, RawStore, StoredRow, alter_sealed_text, forge, middle_of_case

pytestmark = pytest.mark.kafka


@dataclass
class Committed:
    database: str
    store: RawStore
    note: str
    signer: CheckpointSigner
    folder: Path
    ledgers: list[CaseLedger]

    def ledger(self) -> CaseLedger:
        ledger = CaseLedger(ledger_settings(database=self.database))
        self.ledgers.append(ledger)
        return ledger

    def audit(self, **options: Any) -> AuditReport:
        return verify(self.ledger(), checkpoint=HeldCheckpoint(self.note, self.signer.verifier_key), **options)

    def export(self, customer: str) -> tuple[Path, HistoryCheck]:
        """A JSON export made after the tampering, checked by the standalone verifier's function."""
        path = self.folder / f"{uuid.uuid4().hex[:6]}.json"
        export_history(self.ledger(), customer, "json", path)
        return path, check_history(json.loads(path.read_text()), self.signer.verifier_key)


@pytest.fixture
def committed(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Committed]:
    """A copy of the built store with a checkpoint signed over all of it (the auditor keeps ``note``)."""
    monkeypatch.delenv("CASELEDGER_SIGNING_KEY_FILE", raising=False)  # exports use the stored checkpoint
    monkeypatch.delenv("CASELEDGER_SIGNING_KEY", raising=False)
    database = built.copy()
    signer = generate_key_file(tmp_path / "signing.key", "caseledger")
    ledger = CaseLedger(ledger_settings(database=database))
    try:
        note = sign_checkpoint(ledger, signer).note
    finally:
        ledger.close()
    state = Committed(database, RawStore(database), note, signer, tmp_path, [])
    yield state
    for each in state.ledgers:
        each.close()


def codes(report: AuditReport) -> set[str]:
    return {d.code for d in report.errors}


def finding_codes(result: HistoryCheck, position: int | None = None) -> set[str]:
    return {f.code for f in result.findings if position is None or f.position == position}


def customer_of(row: StoredRow) -> str:
    return str(row.event.customer_id)


def test_an_untouched_ledger_holds_its_checkpoint_and_its_export_verifies_offline(committed: Committed) -> None:
    report = committed.audit()
    assert report.ok and "checkpoint" in report.checks, "\n".join(d.line() for d in report.discrepancies)
    row, _ = middle_of_case(committed.store.rows())
    path, result = committed.export(customer_of(row))
    assert result.ok and result.included == result.events > 0, [f.line() for f in result.findings]
    # the module, run as the customer would: stdlib + cryptography only, no caseledger.ledger imported
    probe = ("import sys, caseledger.verify.__main__ as m; rc = m.main(sys.argv[1:]); "
             "bad = [k for k in sys.modules if k.startswith(('caseledger.ledger', 'caseledger.cli', 'fastavro', "
             "'eventsourcing', 'psycopg', 'kafka'))]; assert not bad, bad; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", probe, str(path), "--key", str(committed.signer.verifier_key)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verified: everything holds" in done.stdout
    assert result.complete and "complete: the export holds all" in done.stdout  # the customer map, on both backends


def test_one_byte_altered_is_caught_by_the_checkpoint_and_by_the_export(committed: Committed) -> None:
    row, _after = middle_of_case(committed.store.rows())
    committed.store.update_state(row.position, alter_sealed_text(row.state))  # one character of the sealed body
    report = committed.audit()
    mismatch = [d for d in report.errors if d.code == "checkpoint-mismatch"]
    assert mismatch and any(d.position == row.position and "altered" in d.message for d in mismatch)
    _, result = committed.export(customer_of(row))
    assert "inclusion" in finding_codes(result, row.position)


def test_the_last_event_of_an_aggregate_altered_is_now_caught(committed: Committed) -> None:
    rows = committed.store.rows()
    last = max((r for r in rows if r.name == "CaseClosed"), key=lambda r: r.position)
    committed.store.update_state(last.position, alter_sealed_text(last.state))  # its notice, sealed
    report = committed.audit()
    assert "chain-broken" not in codes(report)  # the chain alone still cannot see it …
    assert any(d.code == "checkpoint-mismatch" and d.position == last.position for d in report.errors)  # … the checkpoint does
    _, result = committed.export(customer_of(last))
    assert "inclusion" in finding_codes(result, last.position)


def test_a_deleted_event_is_caught(committed: Committed) -> None:
    row, after = middle_of_case(committed.store.rows(), "AcknowledgementIssued")
    committed.store.delete(row.position)
    report = committed.audit()
    assert "checkpoint-mismatch" in codes(report)
    _, result = committed.export(customer_of(row))
    assert finding_codes(result, after.position) & {"version-gap", "inclusion"}


def test_a_whole_case_deleted_is_caught(committed: Committed) -> None:
    rows = committed.store.rows()
    opened = next(r for r in rows if r.name == "CaseOpened")
    committed.store.delete(*[r.position for r in rows if r.aggregate == opened.aggregate])
    assert "checkpoint-mismatch" in codes(committed.audit())
    _, result = committed.export(customer_of(opened))  # the export no longer hides it: the customer map counts it
    assert "incomplete" in finding_codes(result) and not result.complete


def test_two_swapped_events_are_caught(committed: Committed) -> None:
    rows = committed.store.rows()
    a, b = next((x, y) for x in rows for y in rows
                if x.name == y.name == "ContactReceived" and x.position < y.position and customer_of(x) == customer_of(y))
    committed.store.update_state(a.position, b.state)
    committed.store.update_state(b.position, a.state)
    assert "checkpoint-mismatch" in codes(committed.audit())
    _, result = committed.export(customer_of(a))
    assert "inclusion" in finding_codes(result, a.position) and "inclusion" in finding_codes(result, b.position)


@pytest.mark.parametrize("variant", ["stale link", "correct link"])
def test_a_forged_event_appended_is_never_trusted(committed: Committed, variant: str) -> None:
    """The old limit: a forgery with a correct link and the current time, after the last position."""
    rows = committed.store.rows()
    row, _ = middle_of_case(rows, "ResponseSent")
    last = max((r for r in rows if r.aggregate == row.aggregate), key=lambda r: r.version)
    changes: dict[str, Any] = dict(event_id=uuid.uuid4(), originator_version=last.version + 1,
                                   timestamp=datetime.now(UTC))
    if variant == "correct link":
        changes["previous_hash"] = event_hash(last.state)
    position = committed.store.insert(row.aggregate, last.version + 1, row.topic, forge(row, **changes))
    report = committed.audit()
    uncommitted = [d for d in report.warnings if d.code == "uncommitted"]
    assert uncommitted and uncommitted[0].position == position and "not yet committed" in uncommitted[0].message
    _, result = committed.export(customer_of(row))
    assert not result.ok and "uncommitted" in finding_codes(result, position)
    if variant == "stale link":
        assert "chain-broken" in finding_codes(result, position)


def test_a_truncated_tail_is_caught(committed: Committed) -> None:
    rows = committed.store.rows()
    committed.store.delete(*[r.position for r in rows[-3:]])
    assert "checkpoint-beyond" in codes(committed.audit())


def test_a_checkpoint_of_another_key_is_named(committed: Committed, tmp_path: Path) -> None:
    stranger = generate_key_file(tmp_path / "stranger.key", "caseledger")
    report = verify(committed.ledger(), checkpoint=HeldCheckpoint(committed.note, stranger.verifier_key))
    assert codes(report) == {"checkpoint-key"}
    row, _ = middle_of_case(committed.store.rows())
    path, _ = committed.export(customer_of(row))
    result = check_history(json.loads(path.read_text()), stranger.verifier_key)
    assert finding_codes(result) == {"checkpoint-key"}
