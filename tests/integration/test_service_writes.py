"""Issue 22 follow-up, the write path's speed: the work a contact costs the committer, and that it stays correct.

Speed itself is the benchmark's business (``caseledger bench api``); here: a known customer's history is
not replayed for each batch (the committer keeps customers, claims and registrations between batches),
a case is never kept (an erasure elsewhere must not leave its texts readable), and answers are made
JSON without a deep copy.
"""

from __future__ import annotations

import copy
import threading
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from caseledger.ledger.access.principals import PrincipalRegistry
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.avro.codec import AvroMapper
from caseledger.ledger.domain.case import Case
from caseledger.ledger.domain.directory import Customer
from caseledger.ledger.domain.values import Actor, ActorKind, Channel, ContactDraft, Identity
from caseledger.ledger.reports.describe import plain
from caseledger.ledger.service.api import ServiceState
from caseledger.ledger.service.asgi import create_app
from caseledger.ledger.service.group_commit import Write
from caseledger.ledger.settings import LedgerSettings
from tests.support.environment import ledger_settings

AGENT = Actor(kind=ActorKind.AGENT, id="agent-1")
JANE = "email:jane@example.com"


def contact_body(message_id: str, **extra: Any) -> dict[str, Any]:
    return {"channel": "email", "channel_message_id": message_id, "from": JANE, "items": ["Why?"], **extra}


def service(database: str) -> tuple[LedgerSettings, ServiceState, dict[str, str]]:
    settings = ledger_settings(database=database)
    setup = CaseLedger(settings)
    token = PrincipalRegistry(setup.principal_store).add("agent-1", "agent").token
    setup.close()
    return settings, ServiceState(settings), {"Authorization": f"Bearer {token}"}


def test_a_known_customers_next_contact_replays_none_of_their_history(database: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: every batch read and decoded the customer's whole history (two events per contact) again."""
    _settings, state, headers = service(database)
    decoded: list[str] = []
    original = AvroMapper.to_domain_event

    def counting(self: AvroMapper, stored: Any) -> Any:
        decoded.append(stored.topic)
        return original(self, stored)

    with TestClient(create_app(state)) as client:
        for n in range(6):
            answer = client.post("/v1/contacts", json=contact_body(f"m-{n}"),
                                 headers={**headers, "Idempotency-Key": str(uuid.uuid4())})
            assert answer.status_code == 201, answer.text
        monkeypatch.setattr(AvroMapper, "to_domain_event", counting)
        answer = client.post("/v1/contacts", json=contact_body("m-next"),
                             headers={**headers, "Idempotency-Key": str(uuid.uuid4())})
        monkeypatch.undo()
        assert answer.status_code == 201, answer.text
    assert decoded == []


def test_a_batch_of_known_customers_looks_their_data_keys_up_in_one_query(database: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: one key query per customer of the batch, when its first event was sealed."""
    from caseledger.ledger.service.group_commit import MAX_BATCH
    from caseledger.ledger.store.data_key_table import KeyTable

    _settings, state, headers = service(database)
    who = [f"email:c{n}@example.com" for n in range(5)]
    with TestClient(create_app(state)) as client:
        for n, sender in enumerate(who):
            answer = client.post("/v1/contacts", json={**contact_body(f"m-{n}"), "from": sender},
                                 headers={**headers, "Idempotency-Key": str(uuid.uuid4())})
            assert answer.status_code == 201, answer.text
        queries: list[list[str]] = []
        original = KeyTable.by_subjects

        def counting(self: KeyTable, subjects: Any) -> Any:
            queries.append(list(subjects))
            return original(self, subjects)

        def record(sender: str, n: int) -> Any:
            def execute(ledger: CaseLedger) -> tuple[int, Any]:
                draft = ContactDraft(channel=Channel.EMAIL, channel_message_id=f"again-{n}",
                                     identity=Identity.parse(sender), items=("?",))
                return 201, ledger.record_contact(draft, actor=AGENT)

            return Write(execute, "agent-1", lookups=lambda ledger: ledger.contact_lookups(
                ContactDraft(channel=Channel.EMAIL, channel_message_id=f"again-{n}", identity=Identity.parse(sender),
                             items=("?",))))

        monkeypatch.setattr(KeyTable, "by_subjects", counting)
        committer = state.committer
        before = committer.batches
        answers = held_batch(committer, [record(sender, n) for n, sender in enumerate(who)])
        monkeypatch.undo()
        assert [a.result()[0] for a in answers] == [201] * len(who) and committer.batches - before <= 2
    assert len(who) < MAX_BATCH and len(queries) == 1 and len(queries[0]) == len(who)


def held_batch(committer: Any, writes: list[Write]) -> list[Any]:
    """Submit ``writes`` while the committer is busy, so that they are all taken in one batch."""
    release = threading.Event()

    def blocker(_ledger: CaseLedger) -> tuple[int, Any]:
        release.wait(10)
        return 200, {}

    first = committer.submit(Write(blocker, "agent-1"))
    answers = [committer.submit(w) for w in writes]
    release.set()
    first.result(timeout=30)
    for answer in answers:
        answer.exception(timeout=30)
    return answers


def test_the_committer_keeps_no_case_and_reads_an_erasure_by_another_process(database: str) -> None:
    """A case holds customer texts: kept between batches, an erasure elsewhere would leave them readable here."""
    settings, state, headers = service(database)
    with TestClient(create_app(state)) as client:
        answer = client.post("/v1/contacts", json=contact_body("m-1", subject="Secret subject 7Q"),
                             headers={**headers, "Idempotency-Key": str(uuid.uuid4())})
        assert answer.status_code == 201, answer.text
        ref, customer_id = answer.json()["reference"], answer.json()["customer_id"]
        committer = state.committer
        kept = committer._ledger._cache  # type: ignore[union-attr]
        assert kept is not None and len(kept) > 0
        assert not any(isinstance(a, Case) for a in kept._items.values())

        other_process = CaseLedger(settings)
        try:
            other_process.erase_customer(JANE, reason="art. 17")
        finally:
            other_process.close()

        def read(ledger: CaseLedger) -> tuple[int, Any]:
            customer = ledger.load(Customer.id_for(customer_id))
            return 200, {"subject": ledger.get_case(ref).subject, "identities": list(customer.identities)}

        status, seen, _replayed = committer.submit(Write(read, "agent-1")).result(timeout=30)
    assert status == 200
    assert seen["subject"] != "Secret subject 7Q" and seen["identities"] == []


def test_a_new_customers_key_leaves_memory_with_its_transaction(database: str) -> None:
    """Before: a key made in a transaction stayed unwrapped in the writer until its next transaction, so
    after an erasure elsewhere the writer sealed the customer's next contact with the destroyed key."""
    settings = ledger_settings(database=database)
    writer, other_process = CaseLedger(settings), CaseLedger(settings)
    try:
        writer.record_contact(ContactDraft(channel=Channel.EMAIL, channel_message_id="m-1", identity=Identity.parse(JANE),
                                           subject="Before", items=("?",)), actor=AGENT)
        assert writer.data_keys.unsaved() == []
        other_process.erase_customer(JANE, reason="art. 17")
        ref = writer.record_contact(ContactDraft(channel=Channel.EMAIL, channel_message_id="m-2",
                                                 identity=Identity.parse(JANE), subject="After the erasure",
                                                 items=("?",)), actor=AGENT).reference
        assert other_process.get_case(ref).subject == "After the erasure"  # sealed with a live key
    finally:
        writer.close()
        other_process.close()


# -- answers as JSON ----------------------------------------------------------------------------------------------


@dataclass
class Inner:
    at: datetime
    ids: tuple[UUID, ...]
    tags: frozenset[str] = frozenset()


@dataclass
class Outer:
    name: str
    inner: Inner
    rows: list[Inner] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def test_an_answer_is_made_json_without_a_deep_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: ``plain`` went through ``dataclasses.asdict``, which deep-copies every value first."""
    value = Outer("x", Inner(datetime(2026, 1, 2, tzinfo=UTC), (uuid.uuid4(),)), extra={"k": b"\x01"})

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("deep copy")

    monkeypatch.setattr(copy, "deepcopy", refuse)
    assert plain(value)["extra"] == {"k": "01"}


inners = st.builds(Inner, at=st.datetimes(timezones=st.just(UTC)), ids=st.tuples(st.uuids()),
                   tags=st.frozensets(st.text(max_size=5), max_size=3))


@given(st.builds(Outer, name=st.text(max_size=10), inner=inners, rows=st.lists(inners, max_size=3),
                 extra=st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.binary(max_size=4),
                                                                     st.none(), st.lists(st.text(max_size=3))),
                                       max_size=3)))
def test_plain_of_a_dataclass_is_plain_of_its_asdict(value: Outer) -> None:
    assert plain(value) == plain(asdict(value))


def test_a_contact_draft_answer_is_unchanged() -> None:
    draft = ContactDraft(channel=Channel.EMAIL, channel_message_id="m", identity=Identity.parse(JANE), items=("?",))
    assert plain(draft) == plain(asdict(draft))
