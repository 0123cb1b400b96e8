"""A reused channel message id on a SQLite ledger: every request ends in its own customer's case or a recorded
collision (hypothesis), the CLI refuses a collision with its own exit code, a retried batch is one outcome.

The same rule on both stores and through the Kafka intake: tests/integration/test_collisions.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from caseledger.cli.app import app
from caseledger.cli.common import EXIT_COLLISION
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.directory import ChannelMessage
from caseledger.ledger.domain.values import Channel, ContactDraft, Identity
from caseledger.ledger.errors import MessageIdCollision
from caseledger.ledger.intake.records import IntakeCodec
from tests.support.clock import FakeClock
from tests.support.contacts import MALLORY, form
from tests.support.environment import ledger_settings
from tests.support.examples import examples


def test_retired_message_registered_bytes_decode_with_an_empty_digest() -> None:
    from io import BytesIO

    from fastavro import schemaless_writer

    from caseledger.ledger.avro.codec import (
        MAGIC,
        AvroEventCodec,
        history_files,
        parse_event_schema,
        schema_fingerprint,
    )
    from caseledger.ledger.domain.events import Context
    from caseledger.ledger.domain.values import SYSTEM

    codec = AvroEventCodec()
    retired = next(text for name, text in history_files() if name.startswith("MessageRegistered."))
    writer = parse_event_schema(retired, codec.envelope)
    message = ChannelMessage.register(
        channel=Channel.EMAIL, channel_message_id="m-1", case_id=ChannelMessage.id_for(Channel.EMAIL, "x"),
        reference="CL-AAAAA-AAAAA", contact_id="C1", acknowledgement_id="ACK1", content_digest="v1:ff",
        customer_id="c-1", ctx=Context(actor=SYSTEM),
    )
    (registered,) = message.collect_events()
    record = codec.decode_record("MessageRegistered", codec.encode(registered))
    assert record.pop("content_digest") == "v1:ff"
    out = BytesIO()
    out.write(MAGIC + schema_fingerprint(writer))
    schemaless_writer(out, writer, record)
    old = codec.decode("MessageRegistered", out.getvalue())
    assert old.content_digest == "" and old.mutate(None).reference == "CL-AAAAA-AAAAA"


# -- a property: every request ends in its own customer's case or in a recorded collision ------------------


SENDERS = [Identity.parse(f"email:customer{n}@example.com") for n in range(3)]
CONTENTS = [("Where is my refund?",), ("Close my account.",)]
request = st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 1))  # sender, message id, content


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(request, min_size=1, max_size=12))
def test_every_request_ends_in_its_own_case_or_a_recorded_collision(
    requests: list[tuple[int, int, int]], tmp_path_factory: pytest.TempPathFactory,
) -> None:
    database = tmp_path_factory.mktemp("prop") / "l.sqlite"
    ledger = CaseLedger(ledger_settings(database=str(database)), clock=FakeClock())
    try:
        first: dict[int, tuple[int, int]] = {}  # message id -> (sender, content) that holds it
        references: dict[int, set[str]] = {n: set() for n in range(len(SENDERS))}
        expected_collisions: set[tuple[int, int, int]] = set()
        for sender, msg, content in requests:
            draft = ContactDraft(channel="email", channel_message_id=f"m{msg}", identity=SENDERS[sender],
                                 items=CONTENTS[content])
            others = [str(s) for n, s in enumerate(SENDERS) if n != sender]
            try:
                outcome = ledger.record_contact(draft)
            except MessageIdCollision as error:
                assert first.get(msg) not in (None, (sender, content)), "a resubmission or new id was refused"
                expected_collisions.add((sender, msg, content))
                said = str(error)
            else:
                assert first.setdefault(msg, (sender, content)) == (sender, content), "a collision was applied"
                assert outcome.customer_id == ledger.customer_id_for(SENDERS[sender])
                assert ledger.get_case(outcome.reference).customer_id == ledger.customer_id_for(SENDERS[sender])
                references[sender].add(outcome.reference)
                said = f"{outcome}"
            foreign = others + [r for n, refs in references.items() if n != sender for r in refs]
            assert [f for f in foreign if f in said] == []
        kept = {(c.customer_id, c.channel_message_id, c.content_digest) for c in ledger.collisions()}
        assert kept == {
            (ledger.customer_id_for(SENDERS[s]), f"m{m}", ledger.pseudonyms.content_digest_for(
                ContactDraft(channel="email", channel_message_id=f"m{m}", identity=SENDERS[s], items=CONTENTS[c])))
            for s, m, c in expected_collisions
        }
        contacts = sum(len(ledger.get_case(r).contacts) for refs in references.values() for r in refs)
        assert contacts == len(first)
    finally:
        ledger.close()


# -- the command line ----------------------------------------------------------------------------------------


@pytest.fixture
def cli_db(tmp_path: Path) -> Iterator[list[str]]:
    yield ["--database", str(tmp_path / "cli.sqlite")]


def run(db: list[str], *args: str) -> Any:
    return CliRunner().invoke(app, [*db, *args])


def test_the_cli_refuses_a_collision_with_its_own_exit_code_and_lists_it(cli_db: list[str]) -> None:
    common = ["contact", "record", "-c", "web_form", "-m", "form-77", "--subject", "Card", "--item", "Why blocked?"]
    sam = run(cli_db, *common, "--from", "email:sam@example.com", "--json")
    assert sam.exit_code == 0, sam.output
    reference = json.loads(sam.stdout)["reference"]
    again = run(cli_db, *common, "--from", "email:sam@example.com")
    assert again.exit_code == 0 and "Already recorded" in again.stdout
    mallory = run(cli_db, *common, "--from", "email:mallory@example.com", "--json")
    assert mallory.exit_code == EXIT_COLLISION == 6
    assert "new channel message id" in mallory.stderr and "intake collisions" in mallory.stderr
    assert reference not in mallory.output and "sam@" not in mallory.output and mallory.stdout == ""
    listed = run(cli_db, "intake", "collisions", "--json")
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert row["customer_id"].startswith("cus-") and "mallory" not in listed.stdout
    assert (row["kind"], row["channel_message_id"]) == ("identity", "form-77")
    assert reference not in listed.stdout and "sam@" not in listed.stdout
    _adapter, kept = IntakeCodec().decode(__import__("base64").b64decode(row["raw_base64"]))
    assert kept.identity == MALLORY
    table = run(cli_db, "--tz", "UTC", "intake", "collisions")
    assert table.exit_code == 0 and "1 collision" in table.stdout and "form-77" in table.stdout
    assert reference not in table.stdout


def test_the_cli_says_when_there_is_no_collision(cli_db: list[str]) -> None:
    result = run(cli_db, "intake", "collisions")
    assert result.exit_code == 0 and "No message id collisions" in result.stdout


def test_a_collision_after_a_retried_batch_is_still_one_outcome(tmp_path: Path, clock: FakeClock) -> None:
    """A unit of work that fails keeps nothing of its collision; the retry records it once."""
    from eventsourcing.persistence import Tracking

    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "u.sqlite")), clock=clock)
    try:
        ledger.record_contact(form())
        with pytest.raises(RuntimeError), ledger.unit_of_work(Tracking("intake/t/0", 1)):
            with pytest.raises(MessageIdCollision):
                ledger.record_contact(form(MALLORY))
            raise RuntimeError("the batch failed after the collision")
        assert list(ledger.collisions()) == []
        with ledger.unit_of_work(Tracking("intake/t/0", 1)), pytest.raises(MessageIdCollision):
            ledger.record_contact(form(MALLORY))
        assert len(list(ledger.collisions())) == 1
    finally:
        ledger.close()
