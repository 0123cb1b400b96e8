"""``caseledger demo``: every story runs against a real ledger and shows what it must show."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from caseledger.cli.demo import TITLES, run_demo
from caseledger.ledger.errors import ConfigurationError


def play(**options: object) -> str:
    """Run the demo on a 100-column console and return everything it printed."""
    out = io.StringIO()
    run_demo(Console(file=out, width=100), **options)  # type: ignore[arg-type]
    return out.getvalue()


@pytest.fixture(scope="module")
def output() -> str:
    return play()


def flat(text: str) -> str:
    """The output without panel borders and line breaks, so wrapped sentences can be matched."""
    lines = (line.strip().strip("│").strip() for line in text.splitlines())
    return " ".join(" ".join(lines).split())


def test_every_story_has_its_title(output: str) -> None:
    for number, title in TITLES.items():
        assert f"{number} — {title}" in output
    for part in ("Customer sees", "Agent sees", "Auditor sees"):
        assert output.count(part) >= 10, part


def test_s1_contact_found_by_reference_message_and_identity(output: str) -> None:
    reference = re.search(r"your reference is (CL-[0-9A-Z]{5}-[0-9A-Z]{5})", output)
    assert reference is not None
    text = flat(output)
    assert f"by web_form message wf-7f3a9c {reference[1]} (contact C1)" in text
    assert f"by identity email:jane.martin@example.com customer cust-1042, cases {reference[1]}" in text


def test_s1_shows_the_customers_signed_receipt_and_proves_it_in_the_log(output: str) -> None:
    """Issue 25: the demo's S1 shows the receipt the customer keeps, checked offline and proved in a later export."""
    text = flat(output)
    s1 = text[text.index("S1 — "):text.index("S2 — ")]
    assert "Your receipt, signed by the bank" in s1 and re.search(r"CLR1\.[A-Za-z0-9_-]{40}", s1)
    assert "signature: valid, by banque-exemple.fr/reclamations+" in s1
    assert "proved included" in s1 and "receipt: included" in s1
    assert "Votre reçu, signé par nous" in text  # the acknowledgement carries it (S2 shows it)


def test_s2_acknowledgement_has_reference_copy_and_deadline(output: str) -> None:
    text = flat(output)
    assert re.search(r"Votre référence : CL-\S+\. Rappelez-la", text)
    assert "Nous avons bien reçu votre demande du lundi 2 mars 2026 à 09:00" in text
    assert "au plus tard le samedi 2 mai 2026 à 09:00" in text  # two months (ACPR 2022-R-01)
    assert "Q2. Can you send me the February statement as PDF?" in text
    assert "respond by Sat 02 May 09:00 (policy acpr-2022-r-01: web form within 2 calendar months)" in text


def test_s3_resubmission_is_a_duplicate_and_records_nothing(output: str) -> None:
    text = flat(output)
    assert text.count("duplicate=True") == 2
    counts = re.search(r"events in the store: (\d+) before, (\d+) after", text)
    assert counts is not None and counts[1] == counts[2]


def test_s4_close_refused_until_every_item_answered(output: str) -> None:
    text = flat(output)
    assert "refused RuleViolation: case CL-" in text
    assert "has unanswered items Q2, Q3" in text
    assert "follow-ups 1 status closed" in text
    assert "Case closed: all four questions answered" in text


def test_s5_phone_promise_confirmed_in_writing_overdue_then_kept(output: str) -> None:
    text = flat(output)
    assert "written confirmation W1 (email) Madame, Monsieur," in text
    assert "Nous vous confirmons par écrit ce qui a été convenu avec vous par téléphone" in text
    assert "DeadlineMissed" in text
    assert "P1 open, missed deadlines: promise P1 (overdue)" in text
    assert "Promise P1 kept: refund transfer RF-88213" in text


def test_s6_cancellation_without_reason_is_refused(output: str) -> None:
    text = flat(output)
    assert "cancel without reason: refused ValidationError: a cancellation needs a reason" in text
    assert "cancel without notice: refused ValidationError: a cancellation needs a customer-facing notice" in text
    assert "notice N1 We had to cancel the travel insurance option" in text


def test_s7_handoff_brief_lists_open_items_promises_and_channels(output: str) -> None:
    text = flat(output)
    assert "open item Q1 Why was my card declined at a Lisbon ATM? (from C1)" in text
    assert "open promise P1 we call you back on your mobile" in text
    for channel in ("chat", "email", "phone"):
        assert f"last {channel} C" in text


def test_s8_is_skipped_with_a_pointer(output: str) -> None:
    assert "caseledger bench lag" in output


def test_s9_automation_needs_a_human_approval(output: str) -> None:
    text = flat(output)
    assert "refused RuleViolation: only a human agent may approve a proposed action" in text
    assert "refused RuleViolation: automation (automation:risk-limits-v3) may not act on the customer" in text
    assert "ActionApproved · agent:bruno" in text
    assert "ActionExecuted · system:card-platform" in text
    assert "ActionRejected · agent:bruno" in text
    assert "Action X2 rejected: that decline happened before the unblock" in text


def test_s10_escalation_wait_and_response_times(output: str) -> None:
    text = flat(output)
    assert "EscalatedToHuman · automation:ava-bot · chatbot" in text
    assert "escalations ava-bot after 9 min" in text
    assert "channel segment contacts answered median slowest" in text
    assert "web_form retail 1 1 2 h 00 min 2 h 00 min" in text


def test_s11_full_history_and_summary(output: str) -> None:
    text = flat(output)
    history = re.search(r"Auditor sees — the (\d+) events of cust-1042, in order", text)
    assert history is not None and int(history[1]) > 50
    assert re.search(r"Done: \d+ events recorded, 5 cases, 1 customer\b", text)


def test_temporary_ledger_is_deleted(output: str) -> None:
    where = re.search(r"ledger: SQLite (\S+)", output)
    assert where is not None
    assert not Path(where[1]).parent.exists()


def test_a_used_database_is_refused(tmp_path: Path) -> None:
    database = str(tmp_path / "demo.sqlite")
    first = play(database=database, keep=True)
    # rich wraps a long path onto the next line (a longer temporary folder under xdist)
    assert f"Kept the demo ledger: {database}" in " ".join(first.split())
    with pytest.raises(ConfigurationError, match="already holds"):
        play(database=database)


def test_keep_leaves_the_temporary_ledger(tmp_path: Path) -> None:
    output = play(keep=True)
    kept = re.search(r"Kept the demo ledger: (\S+)", output)
    assert kept is not None
    path = Path(kept[1])
    try:
        assert path.is_file()
        with pytest.raises(ConfigurationError):
            play(database=str(path))
    finally:
        shutil.rmtree(path.parent)
