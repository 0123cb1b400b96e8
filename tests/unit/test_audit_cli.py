"""``caseledger audit verify``, ``history --export`` and ``bench verify`` through the command line.

The HTML export is opened in a real headless Chromium when the machine has one
(``/usr/bin/chromium``, Debian's package); otherwise its structure is checked with Python's
HTML parser (self-contained, well nested, one timeline entry per event).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, reader
from typer.testing import CliRunner, Result

from caseledger.cli.app import app
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import Actor, ContactDraft, Identity
from caseledger.ledger.settings import LedgerSettings
from tests.support.clock import FakeClock

runner = CliRunner(env={"CASELEDGER_DATABASE": None, "CASELEDGER_KAFKA_BOOTSTRAP": None, "TZ": "UTC",
                        "COLUMNS": "200"})


def _chromium() -> str | None:
    """Debian's headless Chromium; in CI (as root) it is installed when missing, like the Kafka jars."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found or os.environ.get("CI") != "true" or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
                   capture_output=True, timeout=1200, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    found = shutil.which("chromium")
    assert found, "CI could not install Debian's chromium to render the HTML export"
    return found


CHROMIUM = _chromium()
# Without these, Chromium keeps trying to reach Google's services, which this network refuses.
QUIET = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic"]
JANE = "email:jane@example.com"
AGENT = Actor.parse("agent:alice")


def run(database: str, *args: str, code: int = 0) -> Result:
    result = runner.invoke(app, ["--database", database, *args])
    assert result.exit_code == code, f"exit {result.exit_code} != {code}\n{result.stdout}\n{result.exception!r}"
    return result


@pytest.fixture
def story(tmp_path: Path) -> str:
    """A customer with every kind of event: contacts, acknowledgements, a phone promise and its written
    confirmation, a status change, a handoff, a missed deadline, a response and a closing."""
    database = str(tmp_path / "story.sqlite")
    clock = FakeClock(datetime.now(UTC))  # the deadlines are missed 10 days on: the ledger's clock moves there
    ledger = CaseLedger(LedgerSettings.resolve(database=database), clock=clock)
    try:
        first = ledger.record_contact(ContactDraft(channel="web_form", channel_message_id="f1",
                                                   identity=Identity.parse(JANE), subject="Card <blocked> & fees",
                                                   items=("Why is my card blocked?", "Refund the fee?")))
        ref = first.reference
        ledger.record_contact(ContactDraft(channel="phone", channel_message_id="call-2", identity=Identity.parse(JANE),
                                           items=("Still blocked",), case_reference=ref, follow_up=True))
        ledger.make_promise(ref, actor=AGENT, channel="phone", kind="callback", terms="call back tomorrow",
                            due_at=datetime.now(UTC) + timedelta(hours=1))
        ledger.change_status(ref, actor=AGENT, to_status="in_progress", reason="checking", notice="We are on it.")
        ledger.hand_off(ref, actor=AGENT, to_assignee="bob", note="customer prefers email")
        clock.advance(days=10)
        ledger.tick()
        ledger.respond(ref, actor=Actor.parse("agent:bob"), body="Unblocked, fee refunded.", answers=["Q1", "Q2", "Q3"])
        ledger.record_contact(ContactDraft(channel="email", channel_message_id="other",
                                           identity=Identity.parse("email:someone@example.com"), items=("hi",)))
    finally:
        ledger.close()
    return database


def tamper(database: str, event_type: str) -> int:
    """Change one character of the first ``event_type`` event's sealed text with SQL; returns its position."""
    conn = sqlite3.connect(database)
    try:
        position, state = conn.execute("SELECT rowid, state FROM stored_events WHERE topic LIKE ? ORDER BY rowid",
                                       (f"%.{event_type}",)).fetchone()
        at = state.index(b"enc:1:") + 40  # personal data is sealed: a character of its ciphertext
        altered = state[:at] + (b"B" if state[at : at + 1] != b"B" else b"C") + state[at + 1 :]
        with conn:
            conn.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (altered, position))
        return int(position)
    finally:
        conn.close()


# -- audit verify -----------------------------------------------------------------------------------


def test_audit_verify_exits_0_then_5_naming_the_tampered_event(story: str) -> None:
    clean = json.loads(run(story, "audit", "verify", "--json").stdout)
    assert clean["ok"] is True and clean["discrepancies"] == [] and clean["events"] > 25
    assert "seal" in run(story, "audit", "verify").stdout
    run(story, "audit", "verify", "--seal", clean["seal"])
    assert json.loads(run(story, "audit", "verify", "--customer", JANE, "--json").stdout)["ok"]
    run(story, "audit", "verify", "--since", "2020-01-01T00:00Z", "--until", "2999-01-01T00:00Z")

    position = tamper(story, "ContactReceived")
    out = run(story, "audit", "verify", code=5).stdout
    assert "NOT verified" in out and "[chain-broken]" in out and f"version 2 (position {position})" in out
    report = json.loads(run(story, "audit", "verify", "--json", code=5).stdout)
    assert report["ok"] is False and report["counts"]["chain-broken"] == 1
    seal = run(story, "audit", "verify", "--seal", clean["seal"], code=5).stdout
    assert "[seal-mismatch]" in seal
    run(story, "audit", "verify", "--seal", "12:nothex", code=4)


# -- history --export ---------------------------------------------------------------------------------


def test_json_export_holds_every_event_in_order_with_recomputable_chains(story: str, tmp_path: Path) -> None:
    target = tmp_path / "jane.json"
    out = run(story, "history", JANE, "--export", "json", str(target)).stdout
    assert "verified" in out and str(target) in out
    document = json.loads(target.read_text())
    assert document["format"] == "caseledger.history/1" and document["verification"]["verified"] is True
    events = document["events"]
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)
    types = {e["event_type"] for e in events}
    assert {"ContactReceived", "AcknowledgementIssued", "PromiseMade", "WrittenConfirmationIssued", "StatusChanged",
            "HandedOff", "DeadlineMissed", "ResponseSent"} <= types
    # Under jane's pseudonym, never her address; the export is her copy, so her texts are readable.
    assert document["customer_id"].startswith("cus-") and JANE.split(":", 1)[1] not in document["customer_id"]
    assert all(e["event"]["envelope"]["customer_id"] == document["customer_id"] for e in events)
    contact = next(e for e in events if e["event_type"] == "ContactReceived")
    assert "Why is my card blocked?" in json.dumps(contact["event"])
    assert b"Why is my card" not in base64.b64decode(contact["stored_bytes_base64"])  # sealed as stored
    heads: dict[str, str] = {}
    for event in events:  # the recipient recomputes every chain from the file alone
        stored = base64.b64decode(event["stored_bytes_base64"])
        assert hashlib.sha256(stored).hexdigest() == event["event_hash"]
        envelope = event["event"]["envelope"]
        assert envelope["previous_hash"] == heads.get(envelope["aggregate_id"])
        heads[envelope["aggregate_id"]] = event["event_hash"]


def test_avro_export_is_a_self_contained_container_file(story: str, tmp_path: Path) -> None:
    target = tmp_path / "jane.avro"
    run(story, "history", JANE, "--export", "avro", str(target))
    with target.open("rb") as data:
        entries = reader(data)  # no schema given: everything comes from the file's header
        records = list(entries)
        metadata = entries.metadata
        parse_schema(json.loads(metadata["avro.schema"]))  # resolvable without the ledger's schemas
    assert metadata["caseledger.customer_id"].startswith("cus-")
    assert json.loads(metadata["caseledger.verification"])["verified"] is True
    assert [r["position"] for r in records] == sorted(r["position"] for r in records)
    for record in records:
        assert hashlib.sha256(record["stored_bytes"]).digest() == record["event_hash"]
        assert record["event"]["envelope"]["customer_id"] == metadata["caseledger.customer_id"]
    promise = next(r for r in records if r["event_type"] == "PromiseMade")
    assert promise["event"]["terms"] == "call back tomorrow" and promise["description"].startswith("Promise P1")


class _Structure(HTMLParser):
    """Checks that a page is well nested and self-contained; counts timeline entries."""

    VOID = frozenset({"meta", "link", "br", "hr", "img", "input", "wbr", "col", "source"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.entries = 0
        self.external: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            self.scripts += 1
        for name in ("src", "href"):
            if values.get(name) and not str(values[name]).startswith("#"):
                self.external.append(str(values[name]))
        if tag == "li" and self.stack[-1:] == ["ol"]:  # the timeline is the page's only ordered list
            self.entries += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1:]}>"
        self.stack.pop()


def check_page(page: Path, *, events: int, verified: bool) -> str:
    """The page as a browser shows it (Chromium when present); returns its text."""
    text = page.read_text()
    structure = _Structure()
    structure.feed(text)
    structure.close()
    assert structure.stack == [] and structure.scripts == 0 and structure.external == []
    assert structure.entries == events
    if CHROMIUM is None:
        return text
    dom = subprocess.run(
        [CHROMIUM, *QUIET, f"--user-data-dir={page.parent / 'chromium-profile'}", "--dump-dom",
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert ("Verified" in dom) is verified and ("Not verified" in dom) is (not verified)
    assert dom.count('<li class="c-') == events
    shot = page.with_suffix(".png")
    subprocess.run(
        [CHROMIUM, *QUIET, f"--user-data-dir={page.parent / 'chromium-profile'}", "--hide-scrollbars",
         "--window-size=1000,1400",
         f"--screenshot={shot}", page.resolve().as_uri()],
        capture_output=True, timeout=120, check=True,
    )
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    return dom


def test_html_export_renders_as_a_readable_self_contained_timeline(story: str, tmp_path: Path) -> None:
    page = tmp_path / "jane.html"
    run(story, "history", JANE, "--export", "html", str(page), "--tz", "Europe/Paris")
    document = tmp_path / "jane.json"
    run(story, "history", JANE, "--export", "json", str(document))
    events = len(json.loads(document.read_text())["events"])
    dom = check_page(page, events=events, verified=True)
    assert "Card &lt;blocked&gt; &amp; fees" in dom  # customer text is escaped, never markup
    assert "Promise made" in dom and "Handed off" in dom and "Deadline missed" in dom
    assert "CET" in dom or "CEST" in dom

    tamper(story, "HandedOff")
    out = run(story, "history", JANE, "--export", "html", str(page)).stdout
    assert "NOT verified" in out
    dom = check_page(page, events=events, verified=False)
    assert "[chain-broken]" in dom


def test_export_refuses_an_unknown_format(story: str, tmp_path: Path) -> None:
    result = run(story, "history", JANE, "--export", "pdf", str(tmp_path / "x.pdf"), code=2)
    assert "json, avro, html" in result.output


# -- bench verify --------------------------------------------------------------------------------------


def test_bench_verify_reports_events_per_second_against_its_baseline(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "verify", "--events", "20000", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "audit verify events/s" in result.output and "baseline: raw page reads" in result.output
    written: Any = json.loads(next(tmp_path.glob("verify-*.json")).read_text())
    assert written["benchmark"] == "verify" and written["verified"] is True
    assert written["events"] >= 19_000 and written["events_per_s"] > 0
