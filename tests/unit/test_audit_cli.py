"""``caseledger audit verify``, ``history --export`` and ``bench verify`` through the command line.

The HTML export in a browser: tests/system/test_html_export.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from fastavro import parse_schema, reader

from caseledger.cli.app import app
from tests.support.stories import JANE, run, runner, tamper

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
