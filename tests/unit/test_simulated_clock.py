"""The ledger's clock on SQLite files (issue 22): a claimed contact time within the bounds is kept exactly,
``--now`` marks every event it records as simulated and the audit lists them, the demo's too, and the
docs say which time is used for what. On both stores: tests/integration/test_ledger_clock.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.claimed_times import CLAIMED_TIMES, CLOCK_SKEW, HORIZON
from caseledger.ledger.errors import ValidationError
from tests.support.clock import FakeClock
from tests.support.contacts import JANE, cli, draft, events_of, stored
from tests.support.environment import ledger_settings
from tests.support.examples import examples

ROOT = Path(__file__).resolve().parents[2]


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(min_value=-(10**11), max_value=10**11))
def test_a_claimed_contact_time_is_recorded_exactly_when_it_is_within_the_bounds(
    sqlite_ledger: CaseLedger, clock: FakeClock, offset: int
) -> None:
    """Whatever a client claims, it is recorded as claimed within [now − horizon, now + skew], refused outside."""
    try:
        claimed = clock.now + timedelta(seconds=offset)
    except OverflowError:
        return
    before = stored(sqlite_ledger)
    inside = clock.now - HORIZON <= claimed <= clock.now + CLOCK_SKEW
    try:
        out = sqlite_ledger.record_contact(draft(msg=f"h{offset}", occurred_at=claimed))
    except ValidationError as refused:
        assert not inside and "occurred_at" in str(refused) and JANE.split(":")[1] not in str(refused)
        assert stored(sqlite_ledger) == before
        return
    assert inside
    contact = events_of(sqlite_ledger, out.reference)[1]
    assert (contact.occurred_at, contact.timestamp) == (claimed, clock.now)


def test_the_docs_say_which_time_is_used_for_what() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    for field_name in CLAIMED_TIMES:
        assert f"| {field_name.split()[-1]} " in text or f"`{field_name.split()[-1]}`" in text, field_name
    assert f"{int(CLOCK_SKEW.total_seconds() // 60)} minutes" in text and f"{HORIZON.days} days" in text


# -- the operator's simulation clock: --now and the demo ---------------------------------------------------


def test_events_recorded_under_now_are_marked_and_the_audit_lists_them(tmp_path: Path) -> None:
    """Before: --now events said authentication none, recorded at the wall clock: nothing told them apart."""
    import json

    db = ("--database", str(tmp_path / "sim.sqlite"))
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    done = cli(*db, "--now", at.isoformat(), "contact", "record", "-c", "email", "-m", "m-1", "--from", JANE,
               "--item", "Why?", "--json")
    ref = json.loads(done.stdout)["reference"]
    cli(*db, "respond", ref, "--body", "Because.", "--answers", "Q1")  # the real clock
    ledger = CaseLedger(ledger_settings(database=db[1]))
    try:
        simulated = [e for e in ledger.history(JANE) if e.actor_authentication == "simulated-clock"]
        assert simulated and {e.timestamp for e in simulated} == {at}
        assert [type(e).__name__ for e in ledger.history(JANE) if e not in simulated] == ["ResponseSent"]
    finally:
        ledger.close()
    report = json.loads(cli(*db, "audit", "verify", "--simulated-clock", "--json").stdout)
    assert report["simulated_clock_events"] == len(report["simulated_clock"]) == report["events"] - 1
    assert "ResponseSent" not in {e["type"] for e in report["simulated_clock"]}
    assert report["unauthenticated_events"] == report["events"]  # the embedded CLI: none is authenticated
    text = " ".join(cli(*db, "audit", "verify", "--simulated-clock").stdout.split())
    assert f"events recorded on a simulated clock: {report['simulated_clock_events']}" in text


def test_the_demo_marks_every_event_it_records_as_simulated(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from caseledger.cli.demo import run_demo

    database = str(tmp_path / "demo.sqlite")
    run_demo(Console(file=io.StringIO(), width=100), database=database)
    ledger = CaseLedger(ledger_settings(database=database))
    try:
        stored_events = ledger.recorder.select_notifications(start=1, limit=100_000)
        kinds = {ledger.mapper.to_domain_event(n).actor_authentication for n in stored_events}  # type: ignore[attr-defined]
    finally:
        ledger.close()
    assert stored_events and kinds == {"simulated-clock"}
