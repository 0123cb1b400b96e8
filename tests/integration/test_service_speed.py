"""Issue 22, "it is slow": the structure that makes the service fast, and that it stays correct.

Speed itself is the benchmark's business (``caseledger bench api``); here, on both stores: group
commit that isolates failures and never loses or doubles a write, a case read that replays nothing
already read, erasure in force through the case cache. In-process on SQLite (one write transaction
per contact, one thread hop, the callers cache): tests/unit/test_service_structure.py; the benchmark's
bare ceiling in the same run: tests/system/test_service_load.py.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import Actor, ActorKind, Channel, ContactDraft, Identity
from caseledger.ledger.errors import MessageIdCollision, NotFound, RuleViolation
from caseledger.ledger.service.case_cache import CaseCache
from caseledger.ledger.service.group_commit import GroupCommitter, Write

AGENT = Actor(kind=ActorKind.AGENT, id="agent-1")


def draft(message_id: str, *, who: str = "email:jane@example.com", subject: str = "Card blocked",
          case_reference: str | None = None) -> ContactDraft:
    return ContactDraft(channel=Channel.EMAIL, channel_message_id=message_id, identity=Identity.parse(who),
                        subject=subject, items=("Why is my card blocked?",), case_reference=case_reference)


def contact(message_id: str, **fields: Any) -> Callable[[CaseLedger], tuple[int, Any]]:
    def execute(ledger: CaseLedger) -> tuple[int, Any]:
        outcome = ledger.record_contact(draft(message_id, **fields), actor=AGENT)
        return (200 if outcome.duplicate else 201), {"reference": outcome.reference}

    return execute


def stored_contacts(ledger: CaseLedger) -> list[str]:
    return [ledger.mapper.to_domain_event(n).channel_message_id for n in ledger.notifications_of("ContactReceived")]


# -- group commit ---------------------------------------------------------------------------------------------------


@pytest.fixture
def committer(make_ledger: Callable[..., CaseLedger]) -> Iterator[GroupCommitter]:
    group = GroupCommitter(make_ledger)
    yield group
    group.close()


def held_batch(group: GroupCommitter, writes: list[Write]) -> list[Future[Any]]:
    """Submit ``writes`` while the committer is busy, so that they are all taken in one batch."""
    release = threading.Event()

    def blocker(_ledger: CaseLedger) -> tuple[int, Any]:
        release.wait(10)
        return 200, {}

    first = group.submit(Write(blocker, "agent-1"))
    answers = [group.submit(w) for w in writes]
    release.set()
    first.result(timeout=30)
    for answer in answers:
        answer.exception(timeout=30)
    return answers


Op = tuple[str, int]
ops = st.lists(st.tuples(st.sampled_from(["contact", "unknown case", "unknown item", "retry", "collision"]),
                         st.integers(0, 20)), min_size=1, max_size=12)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=ops)
def test_group_commit_records_each_valid_write_once_and_answers_each_invalid_one_alone(
        committer: GroupCommitter, make_ledger: Callable[..., CaseLedger], steps: list[Op]) -> None:
    """N writes in one batch, some invalid, some retried with the same key: each valid one recorded once,
    each invalid one refused with its own error, the others committed with them."""
    run = uuid.uuid4().hex[:8]
    ledger = make_ledger()
    base = ledger.record_contact(draft(f"{run}-base"), actor=AGENT).reference
    writes: list[Write] = []
    expected: list[type[BaseException] | int] = []
    keys: dict[int, tuple[str, Write]] = {}
    for index, (kind, n) in enumerate(steps):
        if kind == "contact":
            key = f"{run}-k{index}"
            writes.append(Write(contact(f"{run}-{index}"), "agent-1", key, key.encode()))
            keys[index] = (key, writes[-1])
            expected.append(201)
        elif kind == "unknown case":
            writes.append(Write(lambda lg: (200, lg.respond("CL-AAAAA-AAAAA", actor=AGENT, body="x")), "agent-1"))
            expected.append(NotFound)
        elif kind == "unknown item":
            writes.append(Write(lambda lg: (200, lg.waive_item(base, actor=AGENT, item_id="Q9", reason="r")),
                                "agent-1", f"{run}-w{index}", b"waive"))
            expected.append(RuleViolation)
        elif kind == "retry" and keys:
            key, first = list(keys.values())[n % len(keys)]
            writes.append(Write(first.execute, "agent-1", key, first.digest))
            expected.append(201)
        else:  # the base case's message id with other content: kept as a collision, refused
            writes.append(Write(contact(f"{run}-base", subject=f"other {index}"), "agent-1"))
            expected.append(MessageIdCollision)
    before = committer.batches
    answers = held_batch(committer, writes)
    assert committer.batches - before <= 2  # the blocker's batch and this one
    for answer, wanted in zip(answers, expected, strict=True):
        if isinstance(wanted, int):
            assert answer.exception() is None and answer.result()[0] == wanted, answer.exception()
        else:
            error = answer.exception()
            assert isinstance(error, wanted) or (wanted is RuleViolation and isinstance(error, NotFound)), error
    recorded = stored_contacts(ledger)
    valid = {f"{run}-{i}" for i, (kind, _n) in enumerate(steps) if kind == "contact"}
    assert sorted(m for m in recorded if m in valid) == sorted(valid)  # each once
    assert recorded.count(f"{run}-base") == 1
    # The same key again, later: replayed, nothing recorded twice.
    for index, (key, first) in keys.items():
        again = committer.submit(Write(first.execute, "agent-1", key, first.digest)).result(timeout=30)
        assert again[0] == 201 and again[2] is True, index
    assert stored_contacts(ledger) == recorded


def test_a_batch_that_cannot_commit_runs_again_and_loses_or_doubles_nothing(
        committer: GroupCommitter, make_ledger: Callable[..., CaseLedger]) -> None:
    """A key answered before is replayed, not run; a batch that conflicts with another process's write runs again."""
    run = uuid.uuid4().hex[:8]
    other = make_ledger()
    raced = Write(contact(f"{run}-raced"), "agent-1", f"{run}-k", b"d")
    committer.submit(raced).result(timeout=30)
    # The same key again, with a fresh write, batched with two new contacts: the replay is answered
    # first (the key exists), the others commit together.
    writes = [Write(contact(f"{run}-{i}"), "agent-1", f"{run}-n{i}", b"d") for i in range(2)]
    writes.append(Write(contact(f"{run}-raced"), "agent-1", f"{run}-k", b"d"))
    answers = held_batch(committer, writes)
    assert [a.result()[0] for a in answers] == [201, 201, 201] and answers[2].result()[2] is True
    # A conflict at commit: a promise on a case another process changes meanwhile.
    ref = other.record_contact(draft(f"{run}-case"), actor=AGENT).reference
    started, go = threading.Event(), threading.Event()

    def promise_after_a_race(ledger: CaseLedger) -> tuple[int, Any]:
        ledger.get_case(ref)  # loaded in this unit at version v
        started.set()
        go.wait(10)
        return 201, {"promise": ledger.make_promise(ref, actor=AGENT, channel="email", kind="callback", terms="t",
                                                    due_at=other.clock() + timedelta(days=3))}

    racing = committer.submit(Write(promise_after_a_race, "agent-1", f"{run}-p", b"p"))
    started.wait(10)
    other.assign(ref, actor=AGENT, assignee="bob")  # version v+1, committed first
    go.set()
    assert racing.result(timeout=30)[0] == 201
    events = [type(e).__name__ for e in other.events.get(other.get_case(ref).id)]
    assert events.count("PromiseMade") == 1


# -- case reads -----------------------------------------------------------------------------------------------------


@pytest.fixture
def cases(make_ledger: Callable[..., CaseLedger]) -> Iterator[tuple[CaseCache, CaseLedger]]:
    reader = make_ledger()
    cache = CaseCache(lambda: reader)
    yield cache, make_ledger()
    cache._ledger = None  # the fixture closes it
    cache.close()


def test_a_case_read_again_replays_only_what_was_recorded_since(cases: tuple[CaseCache, CaseLedger],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: every GET replayed the whole case (12 % of the profile)."""
    cache, writer = cases
    ref = writer.record_contact(draft("m-1"), actor=AGENT).reference
    first = cache.record_json(ref).result(timeout=30)
    reader = cache._ledger
    assert reader is not None
    replays: list[str] = []
    original = reader.get_case
    monkeypatch.setattr(reader, "get_case", lambda r: (replays.append(r), original(r))[1])
    writer.respond(ref, actor=AGENT, body="Unblocked.", answers=["Q1"])
    second = cache.record_json(ref).result(timeout=30)
    assert replays == [] and b"\"R1\"" in second and b"\"R1\"" not in first  # (quoted: a reference may hold R1)
    assert cache.record_json(ref).result(timeout=30) == second
    brief = cache.read(ref, lambda entry: entry.case.brief()).result(timeout=30)
    assert brief["open_items"] == []  # Q1 answered: the brief is of the case as of now
    with pytest.raises(NotFound):
        cache.record_json("CL-AAAAA-AAAAA").result(timeout=30)


def test_an_erasure_by_another_process_leaves_no_opened_text_in_the_case_cache(
        cases: tuple[CaseCache, CaseLedger]) -> None:
    cache, other_process = cases
    ref = other_process.record_contact(draft("m-1", subject="Secret subject 7Q"), actor=AGENT).reference
    assert b"Secret subject 7Q" in cache.record_json(ref).result(timeout=30)
    other_process.erase_customer("email:jane@example.com", reason="art. 17")
    after = cache.record_json(ref).result(timeout=30)
    assert b"Secret subject 7Q" not in after and b"[erased]" in after
    # Read just after the erasure, the case is served but not kept (its keys may still be being destroyed).
    assert len(cache) == 0


def test_an_erasure_in_this_process_forgets_the_customers_cases(cases: tuple[CaseCache, CaseLedger]) -> None:
    cache, writer = cases
    ref = writer.record_contact(draft("m-1", who="email:max@example.com"), actor=AGENT).reference
    cache.record_json(ref).result(timeout=30)
    assert len(cache) == 1
    report = writer.erase_customer("email:max@example.com", reason="art. 17")
    cache.forget_customer(report.customer_id)
    assert len(cache) == 0
