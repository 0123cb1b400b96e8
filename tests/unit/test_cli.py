"""The ``caseledger`` command line, end to end on a fresh SQLite ledger per test."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner, Result

from caseledger.cli.app import app
from caseledger.cli.options import parse_attachment, parse_instant
from caseledger.cli.render import DESCRIBED_EVENT_TYPES, describe_event
from caseledger.ledger.domain.catalog import EVENT_TYPES
from caseledger.ledger.domain.values import Channel
from caseledger.ledger.errors import ConflictError
from tests.support.environment import ledger_settings

# The environment must not leak into the tests (a developer's CASELEDGER_* or TZ).
runner = CliRunner(
    env={
        "CASELEDGER_DATABASE": None,
        "CASELEDGER_POLICY": None,
        "CASELEDGER_ACTOR": None,
        "TZ": "UTC",
        "COLUMNS": "200",
    }
)

Run = Callable[..., Result]


def flat(text: str) -> str:
    """Output with rich's box drawing and line wrapping removed, for substring checks."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.fixture
def cli(tmp_path: Path) -> Run:
    database = str(tmp_path / "cli.sqlite")

    def run(*args: str, code: int = 0) -> Result:
        result = runner.invoke(app, ["--database", database, *args])
        assert result.exit_code == code, (
            f"exit {result.exit_code} != {code}\nstdout: {result.stdout}\nstderr: {result.stderr}\n"
            f"exception: {result.exception!r}"
        )
        return result

    return run


def record(
    cli: Run, message_id: str, *items: str, sender: str = "email:jane@example.com", channel: str = "email",
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    args = ["contact", "record", "--channel", channel, "--message-id", message_id, "--from", sender]
    for item in items:
        args += ["--item", item]
    result = cli(*args, *extra, "--json")
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def show(cli: Run, reference: str) -> dict[str, Any]:
    return json.loads(cli("case", "show", reference, "--json").stdout)  # type: ignore[no-any-return]


def history(cli: Run, customer: str = "email:jane@example.com") -> list[dict[str, Any]]:
    return json.loads(cli("history", customer, "--json").stdout)  # type: ignore[no-any-return]


def in_future(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


# -- intake and the case view ------------------------------------------------------------------------------


def test_record_a_contact_and_show_it(cli: Run) -> None:
    result = cli(
        "contact", "record", "--channel", "web_form", "--message-id", "form-1", "--from", "email:Jane@Example.com",
        "--subject", "Card blocked", "--item", "Why is my card blocked?", "--item", "When can I use it?",
        "--body", "Since [yesterday] :email: nothing works.",
    )
    out = result.stdout
    reference = re.search(r"CL-[0-9A-Z]{5}-[0-9A-Z]{5}", out)
    assert reference, out
    assert "Respond by:" in out
    assert "Nous avons bien reçu votre demande" in out and "Why is my card blocked?" in out
    # Customer text is printed as given: no rich markup or emoji codes applied to it.
    assert "[yesterday] :email:" in out

    case = show(cli, reference.group())
    assert case["status"] == "open"
    assert case["customer_id"].startswith("cus-") and "jane" not in case["customer_id"]  # a pseudonym
    assert [(i["item_id"], i["status"]) for i in case["items"]] == [("Q1", "open"), ("Q2", "open")]
    assert case["contacts"][0]["respond_by"] is not None
    assert case["contacts_per_channel"] == {"web_form": 1}

    table = flat(cli("case", "show", reference.group()).stdout)
    assert reference.group() in table and "When can I use it?" in table and "ACK1" in table

    found = cli("case", "find", "--channel", "web_form", "--message-id", "form-1").stdout
    assert reference.group() in found and "C1" in found
    assert reference.group() in cli("cases", "email:jane@example.com").stdout


def test_a_resubmitted_message_returns_the_same_reference_and_records_nothing(cli: Run) -> None:
    first = record(cli, "m-1", "Why was I charged twice?")
    events_before = len(history(cli))

    again = cli(
        "contact", "record", "--channel", "email", "--message-id", "m-1", "--from", "email:jane@example.com",
        "--item", "Why was I charged twice?",
    )
    assert "already recorded" in again.stdout.lower()
    assert first["reference"] in again.stdout
    assert record(cli, "m-1", "Why was I charged twice?")["duplicate"] is True
    assert len(history(cli)) == events_before


def test_closing_with_open_items_is_refused_and_names_them(cli: Run) -> None:
    ref = record(cli, "m-1", "Why charged twice?", "When is the refund?", "Can I get a new card?")["reference"]
    cli("respond", ref, "--body", "Refund on Friday.", "--answers", "Q2")

    refused = cli("case", "close", ref, "--reason", "done", "--notice", "We close your case.", code=2)
    message = flat(refused.stderr)
    assert message.startswith("error:")
    named = set(re.findall(r"\bQ\d+\b", message.replace(ref, "")))  # (a reference may hold "Q2" itself)
    assert named == {"Q1", "Q3"}, message
    assert show(cli, ref)["status"] == "open"


def test_waiving_the_open_items_lets_the_case_close(cli: Run) -> None:
    ref = record(cli, "m-1", "Why charged twice?", "When is the refund?")["reference"]
    cli("respond", ref, "--body", "It was a test charge.", "--answers", "q1")

    cli("case", "close", ref, "-r", "answered", "-n", "Your case is closed.", "--waive", "Q2=refund already received")

    case = show(cli, ref)
    assert case["status"] == "closed"
    assert {i["item_id"]: i["status"] for i in case["items"]} == {"Q1": "answered", "Q2": "waived"}
    assert case["items"][1]["waived_reason"] == "refund already received"


# -- errors ----------------------------------------------------------------------------------------------


def test_an_unknown_channel_is_refused_listing_the_known_ones(cli: Run) -> None:
    result = cli(
        "contact", "record", "--channel", "pigeon", "--message-id", "m-1", "--from", "email:jane@example.com",
        "--item", "hello", code=2,
    )
    message = flat(result.stderr)
    assert "unknown channel 'pigeon'" in message
    assert all(channel.value in message for channel in Channel)
    assert not result.stdout


def test_an_unknown_case_is_not_found(cli: Run) -> None:
    result = cli("case", "show", "CL-AAAAA-BBBBB", code=2)
    assert "no case with reference CL-AAAAA-BBBBB" in flat(result.stderr)


def test_a_date_that_is_not_iso_8601_gets_format_advice(cli: Run) -> None:
    ref = record(cli, "m-1", "Call me back")["reference"]
    args = ("promise", "make", ref, "--channel", "phone", "--kind", "callback", "--terms", "call back")

    bad = flat(cli(*args, "--due", "tomorrow", code=2).stderr)
    assert "'tomorrow' is not a date-time" in bad
    assert "ISO-8601 with a zone" in bad and "2026-11-24T10:00+01:00" in bad

    naive = flat(cli(*args, "--due", "2030-01-01T10:00", code=2).stderr)
    assert "has no time zone" in naive and "ISO-8601 with a zone" in naive
    assert show(cli, ref)["promises"] == []


def test_iso_8601_with_a_trailing_z_or_an_offset_is_accepted() -> None:
    assert parse_instant("2026-11-24T09:00Z") == parse_instant("2026-11-24T10:00+01:00")
    assert parse_instant("2026-11-24T09:00Z").tzinfo is UTC
    with pytest.raises(typer.BadParameter):
        parse_instant("2026-11-24")


def test_error_kinds_map_to_exit_codes(cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = record(cli, "m-1", "hello")["reference"]
    configuration = cli("--policy", str(tmp_path / "missing.toml"), "case", "show", ref, code=4)
    assert "error: response policy file" in configuration.stderr

    def conflict(*_args: Any, **_kwargs: Any) -> str:
        raise ConflictError("another command changed the same case first; nothing was recorded — reload and retry")

    monkeypatch.setattr("caseledger.ledger.application.CaseLedger.respond", conflict)
    assert "retry" in cli("respond", ref, "--body", "hi", code=3).stderr


def test_a_bad_actor_is_a_usage_error(cli: Run) -> None:
    assert "KIND:ID" in flat(cli("--as", "alice", "case", "show", "CL-AAAAA-BBBBB", code=2).stderr)


# -- promises, automation --------------------------------------------------------------------------------


def test_a_promise_made_on_the_phone_gets_a_written_confirmation(cli: Run) -> None:
    ref = record(cli, "m-1", "Call me back")["reference"]
    out = cli(
        "promise", "make", ref, "--channel", "phone", "--kind", "callback", "--terms", "call back tomorrow",
        "--due", in_future(days=1),
    ).stdout
    assert "Promise P1" in out
    assert "Written confirmation W1" in out
    promise = show(cli, ref)["promises"][0]
    assert promise["confirmation_id"] == "W1" and promise["status"] == "open"

    by_email = cli(
        "promise", "make", ref, "--channel", "email", "--kind", "refund", "--terms", "refund 20 EUR",
        "--due", in_future(days=2),
    ).stdout
    assert "Promise P2" in by_email and "Written confirmation" not in by_email


def test_automation_cannot_close_but_can_propose_and_a_human_approval_executes(cli: Run) -> None:
    ref = record(cli, "m-1", "Why is my case idle?")["reference"]

    refused = cli("--as", "automation:idle-rule", "case", "close", ref, "-r", "idle", "-n", "Closed.", code=2)
    assert "automation" in refused.stderr and "propose" in refused.stderr
    assert show(cli, ref)["status"] == "open"

    proposed = cli(
        "action", "propose", ref, "--rule", "idle-rule", "--action", "change_status", "--param", "to=on_hold",
        "--param", "reason=no reply for 30 days", "--param", "notice=We put your case on hold.",
        "--rationale", "idle 30 days",
    )
    assert "X1" in proposed.stdout
    assert show(cli, ref)["status"] == "open"  # nothing happens before a human approves
    assert history(cli)[-1]["actor"] == "automation:idle-rule"  # --as defaults to the rule

    cli("--as", "automation:idle-rule", "action", "approve", ref, "X1", code=2)
    approved = cli("--as", "agent:alice", "action", "approve", ref, "X1", "--note", "checked")
    assert "executed" in approved.stdout

    case = show(cli, ref)
    assert case["status"] == "on_hold"
    assert case["proposals"][0]["status"] == "executed"
    assert case["proposals"][0]["decided_by"] == "agent:alice"


def test_every_command_of_a_case_s_life(cli: Run) -> None:
    # Opened a quarter of an hour ago (a simulated clock), so that the chatbot wait below fits in the case.
    first = json.loads(cli("--now", in_future(minutes=-15), "contact", "record", "--channel", "email", "--message-id",
                           "m-1", "--from", "email:jane@example.com", "--item", "Refund?", "--item", "New card?",
                           "--item", "Address change?", "--json").stdout)
    ref = first["reference"]
    record(cli, "call-1", "Still waiting", channel="phone", sender="phone:+33 6 12 34 56 78",
           extra=("--case", ref, "--follow-up", "--customer-id", first["customer_id"]))
    due = in_future(days=3)
    alice = ("--as", "agent:alice")
    cli(*alice, "case", "assign", ref, "--to", "alice", "--team", "cards")
    cli(*alice, "item", "waive", ref, "q3", "--reason", "customer moved back")
    cli(*alice, "promise", "make", ref, "-c", "phone", "-k", "refund", "-t", "refund 20 EUR", "--due", due)
    cli(*alice, "promise", "make", ref, "-c", "email", "-k", "credit", "-t", "credit 5 EUR", "--due", due)
    cli(*alice, "promise", "make", ref, "-c", "chat", "-k", "callback", "-t", "call back", "--due", due)
    cli(*alice, "promise", "keep", ref, "P1", "--evidence", "transfer TRX-1")
    cli(*alice, "promise", "withdraw", ref, "p2", "--reason", "offer ended", "--notice", "No credit, sorry.")
    cli(*alice, "promise", "break", ref, "P3", "--reason", "nobody called")
    cli(*alice, "message", "delivered", ref, "ACK1")
    cli("--as", "customer:jane", "message", "read", ref, "w1")
    cli(*alice, "case", "status", ref, "in_progress", "--reason", "working on it", "--notice", "We are on it.")
    brief = cli(*alice, "case", "handoff", ref, "--to", "bob", "--note", "prefers email").stdout
    assert "Q1" in brief and "Q4" in brief
    cli("--as", "automation:helpbot", "case", "escalate", ref, "--bot", "helpbot",
        "--waiting-since", in_future(minutes=-12), "--reason", "asked for a human")
    cli("action", "propose", ref, "--rule", "limits", "--action", "lower_card_limit", "-p", "limit=500",
        "--rationale", "3 declines")
    cli("action", "propose", ref, "--rule", "limits", "--action", "lower_card_limit", "-p", "limit=300",
        "--rationale", "4 declines")
    assert "report with" in cli(*alice, "action", "approve", ref, "X1").stdout
    cli("--as", "automation:limits", "action", "executed", ref, "X1", "--result", "limit set to 500")
    cli(*alice, "action", "reject", ref, "X2", "--reason", "one decline was fraud")
    cli(*alice, "respond", ref, "--body", "All done.", "--answers", "Q1,Q2,Q4", "--channel", "email")
    cli(*alice, "case", "cancel", ref, "--reason", "duplicate", "--notice", "Handled elsewhere.")
    cli(*alice, "case", "reopen", ref, "--reason", "not a duplicate", "--notice", "Reopened.")
    cli(*alice, "case", "close", ref, "--reason", "done", "--notice", "Closed.")

    case = show(cli, ref)
    assert case["status"] == "closed"
    assert [p["status"] for p in case["promises"]] == ["kept", "withdrawn", "broken"]
    assert [x["status"] for x in case["proposals"]] == ["executed", "rejected"]
    assert case["follow_ups"] == 1 and case["handoffs"] == 1 and case["escalations"][0]["wait_seconds"] >= 700
    assert flat(cli("case", "show", ref).stdout).count("CL-") >= 1

    table = flat(cli("history", "jane@example.com").stdout)
    for phrase in ("Promise P1 kept", "Promise P2 withdrawn", "Promise P3 broken", "Action X2 rejected",
                   "Handoff H1 from alice to bob", "Chatbot helpbot escalated", "Status open → in_progress",
                   "Case cancelled", "Case reopened", "Case closed", f"Message W1 read by customer:{case['customer_id']}"):
        assert phrase in table, phrase  # the customer's read names them by customer id, not as --as said (issue 24)


def test_the_demo_runs(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--database", str(tmp_path / "demo.sqlite")])
    assert result.exit_code == 0, result.stderr or result.exception


# -- history and deadlines ---------------------------------------------------------------------------------


def test_history_lists_the_events_of_two_cases_in_order(cli: Run) -> None:
    first = record(cli, "m-1", "Why charged twice?")["reference"]
    second = record(cli, "m-2", "New address", sender="email:JANE@example.com")["reference"]
    assert first != second
    cli("respond", first, "--body", "A test charge, refunded.", "--answers", "Q1")

    events = history(cli)
    assert {e["case_reference"] for e in events} >= {first, second}
    positions = [e["position"] for e in events]  # the store's order, as the README and the exports say
    assert positions == sorted(positions)
    opened = [e["case_reference"] for e in events if e["type"] == "CaseOpened"]
    assert opened == [first, second]
    assert (events[-1]["type"], events[-1]["case_reference"]) == ("ResponseSent", first)
    assert all(isinstance(e["event_id"], str) and e["occurred_at"].endswith("+00:00") for e in events)
    assert any(e["previous_hash"] and re.fullmatch(r"[0-9a-f]{64}", e["previous_hash"]) for e in events)

    table = flat(cli("history", "email:jane@example.com", "--tz", "Europe/Paris").stdout)
    assert first in table and second in table
    assert "Response R1 sent answering Q1" in table


def test_now_is_when_things_happened(cli: Run) -> None:
    cli(
        "--now", "2026-03-02T09:00+01:00", "contact", "record", "-c", "email", "-m", "m-1",
        "--from", "email:jane@example.com", "--item", "hello",
    )
    assert {e["occurred_at"] for e in history(cli)} == {"2026-03-02T08:00:00+00:00"}


def test_now_may_not_be_in_the_future_except_for_tick(cli: Run) -> None:
    refused = cli("--now", "2099-01-01T00:00Z", "case", "show", "CL-AAAAA-BBBBB", code=2)
    assert "is in the future" in flat(refused.stderr)
    assert "Checked 0 case(s)" in cli("--now", "2099-01-01T00:00Z", "tick").stdout


def test_tick_records_each_missed_deadline_once(cli: Run) -> None:
    ref = record(cli, "m-1", "Where is my parcel?")["reference"]
    cli("promise", "make", ref, "-c", "email", "-k", "callback", "-t", "call back", "--due", in_future(hours=1))

    first = json.loads(cli("tick", "--now", "2099-01-01T00:00Z", "--json").stdout)
    assert first["missed"] == {"acknowledgement": 1, "response": 1, "promise": 1}
    assert first["cases_checked"] == 1

    second = cli("tick", "--now", "2099-01-02T00:00Z")
    assert "No new missed deadline" in second.stdout
    missed = show(cli, ref)["missed_deadlines"]
    assert sorted(m["kind"] for m in missed) == ["acknowledgement", "promise", "response"]


# -- the command line itself -------------------------------------------------------------------------------


def test_every_event_type_has_a_description() -> None:
    assert set(EVENT_TYPES) <= DESCRIBED_EVENT_TYPES


def test_directory_and_intake_events_are_described(tmp_path: Path) -> None:
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.domain.directory import IntakeSource
    from caseledger.ledger.domain.values import ContactDraft, Identity

    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "l.sqlite")))
    try:
        draft = ContactDraft(channel=Channel.EMAIL, channel_message_id="m-1",
                             identity=Identity.parse("email:jane@example.com"), items=("hello",))
        ledger.record_contact(draft)
        ledger.record_contact(draft, source=IntakeSource(topic="caseledger.intake", partition=0, offset=7))
        ledger.reject_intake(IntakeSource(topic="caseledger.intake", partition=0, offset=8), reason="not Avro",
                             raw=b"\x00garbage", kind="undecodable")
        notifications = ledger.recorder.select_notifications(start=1, limit=1000)
        described = {
            type(event).__name__: describe_event(event)
            for event in (ledger.mapper.to_domain_event(n) for n in notifications)
        }
    finally:
        ledger.close()
    assert {"MessageRegistered", "IdentityClaimed", "ResubmissionTraced", "IntakeRejected"} <= set(described)
    assert "resubmitted" in described["ResubmissionTraced"]
    assert "rejected (undecodable, 8 bytes kept): not Avro" in described["IntakeRejected"]
    assert "registered as C1 of CL-" in described["MessageRegistered"]


def test_every_command_and_option_explains_itself() -> None:
    def walk(command: Any, path: str) -> None:
        assert (command.help or "").strip(), f"{path} has no help"
        for param in command.params:
            if param.param_type_name == "option" and param.name not in ("help",):
                assert getattr(param, "help", None), f"{path} {param.opts} has no help"
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(get_command(app), "caseledger")


def test_an_option_the_benchmarks_share_reads_the_same_in_each() -> None:
    """``--database`` is an empty ledger in every benchmark that takes one, ``--output`` the result's folder."""
    helps: dict[str, set[str]] = {}
    for bench in get_command(app).commands["bench"].commands.values():  # type: ignore[attr-defined]
        for param in bench.params:
            if param.opts[0] in ("--database", "--output", "--kafka", "--consumer", "--producer"):
                helps.setdefault(param.opts[0], set()).add(param.help)
    assert set(helps) == {"--database", "--output", "--kafka", "--consumer", "--producer"}
    assert {option: len(texts) for option, texts in helps.items() if len(texts) > 1} == {}


def test_attachments_parse_even_when_the_ref_has_colons() -> None:
    sha = "ab" * 32
    attachment = parse_attachment(f"s3://inbox/42.pdf:{sha}:2048:application/pdf:invoice.pdf")
    assert (attachment.ref, attachment.size, attachment.media_type, attachment.filename) == (
        "s3://inbox/42.pdf", 2048, "application/pdf", "invoice.pdf"
    )
    with pytest.raises(typer.BadParameter, match="REF:SHA256:SIZE:MEDIA"):
        parse_attachment("invoice.pdf")


def test_schemas_and_version(cli: Run) -> None:
    schemas = json.loads(cli("schemas", "list", "--json").stdout)
    assert {s["event_type"] for s in schemas} == set(EVENT_TYPES)
    assert all(re.fullmatch(r"[0-9a-f]{16}", s["fingerprint"]) for s in schemas)
    assert cli("version").stdout.startswith("caseledger ")


@pytest.mark.parametrize("given", ["x", "1,-2", ","])
def test_intake_run_refuses_bad_partitions_before_connecting(cli: Run, given: str) -> None:
    result = cli("intake", "run", "--kafka", "127.0.0.1:1", "--partitions", given, code=2)
    assert "give partition numbers separated by commas" in flat(result.stderr)


def test_publisher_run_refuses_an_unknown_producer_before_connecting(cli: Run) -> None:
    result = cli("publisher", "run", "--kafka", "127.0.0.1:1", "--producer", "librdkafka", code=4)
    assert "use one of kafka-python, confluent" in flat(result.stderr)


def test_intake_run_refuses_an_unknown_consumer_before_connecting(cli: Run) -> None:
    result = cli("intake", "run", "--kafka", "127.0.0.1:1", "--consumer", "rdkafka", code=4)
    assert "use one of kafka-python, confluent" in flat(result.stderr)


@pytest.mark.parametrize(("command", "option", "value"), [
    (("intake", "run"), "--aggregate-cache", "-1"),
    (("publisher", "run"), "--transaction-interval-ms", "10001"),
    (("run",), "--aggregate-cache", "-1"),
    (("run",), "--transaction-interval-ms", "-5"),
])
def test_service_tuning_options_refuse_values_out_of_range(
    cli: Run, command: tuple[str, ...], option: str, value: str
) -> None:
    result = cli(*command, "--kafka", "127.0.0.1:1", option, value, code=2)
    assert f"Invalid value for '{option}'" in flat(result.stderr)


@pytest.mark.parametrize(("variable", "command"), [
    ("CASELEDGER_KAFKA_PRODUCER", "publisher"),
    ("CASELEDGER_KAFKA_CONSUMER", "intake"),
])
def test_kafka_clients_are_chosen_from_the_environment_too(
    cli: Run, monkeypatch: pytest.MonkeyPatch, variable: str, command: str
) -> None:
    monkeypatch.setenv(variable, "rdkafka")
    result = cli(command, "run", "--kafka", "127.0.0.1:1", code=4)
    assert "'rdkafka': use one of kafka-python, confluent" in flat(result.stderr)


def test_history_json_lists_events_in_store_order_even_when_recorded_times_disagree(tmp_path: Path) -> None:
    """A unit of work that began first but committed last: its events come after, as in the store and exports."""
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.domain.values import Actor, ContactDraft, Identity

    database = str(tmp_path / "order.sqlite")
    jane, alice = Identity.parse("email:jane@example.com"), Actor.parse("agent:alice")
    early, late = (CaseLedger(ledger_settings(database=database)) for _ in range(2))
    try:
        first, second = (
            late.record_contact(ContactDraft(channel="email", channel_message_id=m, identity=jane, items=("q",)))
            for m in ("m0", "m1")
        )
        with early.unit_of_work():
            early.respond(first.reference, actor=alice, body="begun first, committed last", answers=["Q1"])
            late.respond(second.reference, actor=alice, body="begun last, committed first", answers=["Q1"])
    finally:
        early.close()
        late.close()
    result = runner.invoke(app, ["--database", database, "history", "email:jane@example.com", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["position"] for row in rows] == sorted(row["position"] for row in rows)
    responses = [row for row in rows if row["type"] == "ResponseSent"]
    assert [row["case_reference"] for row in responses] == [second.reference, first.reference]
    assert responses[0]["recorded_at"] > responses[1]["recorded_at"]


def test_intake_rejections_lists_each_kept_record_with_its_bytes(tmp_path: Path) -> None:
    import base64

    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.domain.directory import IntakeSource

    database = str(tmp_path / "rejected.sqlite")
    ledger = CaseLedger(ledger_settings(database=database))
    try:
        ledger.reject_intake(IntakeSource("caseledger.intake", 2, 41), reason="SchemaError: not Avro",
                             raw=b"\x00garbage", kind="unknown")
    finally:
        ledger.close()
    listed = runner.invoke(app, ["--database", database, "intake", "rejections", "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert (row["topic"], row["partition"], row["offset"], row["reason"]) == (
        "caseledger.intake", 2, 41, "SchemaError: not Avro")
    assert base64.b64decode(row["raw_base64"]) == b"\x00garbage"
    table = runner.invoke(app, ["--database", database, "intake", "rejections"])
    assert table.exit_code == 0 and "caseledger.intake/2/41" in table.stdout and "1 rejection" in table.stdout


def test_principals_add_and_set_a_team_zone_and_locale_refusing_bad_ones(cli: Run) -> None:
    """Issue 28: a principal's team, zone and locale from the CLI; a zone or locale the machine does not know
    exits 2 saying how to fix it, and nothing is written."""
    bad_zone = cli("principals", "add", "kim", "--role", "agent", "--zone", "Europe/Pariss", code=2)
    assert "IANA" in bad_zone.stderr and "Europe/Paris" in bad_zone.stderr
    bad_locale = cli("principals", "add", "kim", "--role", "agent", "--locale", "xx-QQ", code=2)
    assert "BCP 47" in bad_locale.stderr and "fr-FR" in bad_locale.stderr
    assert json.loads(cli("principals", "list", "--json").stdout) == []
    cli("principals", "add", "kim", "--role", "agent", "--team", "billing", "--zone", "Europe/Paris", "--locale", "fr_fr")
    assert cli("principals", "set", "kim", "--zone", "Mars/Olympus", code=2).stderr
    cli("principals", "set", "kim", "--team", "", "--locale", "de")
    (kim,) = json.loads(cli("principals", "list", "--json").stdout)
    assert (kim["team"], kim["zone"], kim["locale"]) == (None, "Europe/Paris", "de")
    assert "token" not in json.dumps(kim)
    assert cli("principals", "set", "nobody", "--team", "x", code=2).stderr
    assert "--zone" in flat(cli("principals", "set", "--help").stdout)
