"""Delivery and read receipts (ledger.delivery_reports): whoever reports them and however often, a message is
delivered once, read once per reader, only by the customer when an adapter relays it, and only for the
adapter's channels."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import Actor, ActorKind, ContactDraft, Identity
from caseledger.ledger.errors import CaseLedgerError, PermissionDenied, RuleViolation, ValidationError
from caseledger.ledger.intake.delivery_reports import Reporter
from tests.support.clock import FakeClock
from tests.support.environment import ledger_settings
from tests.support.examples import examples

MAIL = Reporter(actor=Actor(kind=ActorKind.SYSTEM, id="mail-1", authentication="adapter-signature"), adapter=True,
                channels=("email",))
CHAT = Reporter(actor=Actor(kind=ActorKind.SYSTEM, id="chat-1", authentication="adapter-signature"), adapter=True,
                channels=("chat",))
UNSIGNED = Reporter(actor=Actor(kind=ActorKind.SYSTEM, id="caseledger"), adapter=True)
ALICE = Reporter(actor=Actor(kind=ActorKind.AGENT, id="alice", authentication="token"))
BOB = Reporter(actor=Actor(kind=ActorKind.AGENT, id="bob", authentication="token"))
REPORTERS = {"mail": MAIL, "chat": CHAT, "unsigned": UNSIGNED, "alice": ALICE, "bob": BOB}


def _case(ledger: CaseLedger) -> tuple[str, str]:
    """A case with an e-mail contact (C1, ACK1) and a chat follow-up (C2, ACK2); (reference, customer id)."""
    first = ledger.record_contact(ContactDraft(channel="email", channel_message_id="e-1", items=("Card blocked?",),
                                               identity=Identity.parse("email:jane@example.com")))
    ledger.record_contact(ContactDraft(channel="chat", channel_message_id="c-1", items=("Any news?",),
                                       identity=Identity.parse("email:jane@example.com"),
                                       case_reference=first.reference, follow_up=True))
    return first.reference, first.customer_id


receipts = st.lists(st.tuples(
    st.sampled_from(["delivered", "read"]),
    st.sampled_from(["C1", "ACK1", "C2", "ACK2", "R9"]),
    st.sampled_from(sorted(REPORTERS)),
    st.sampled_from([None, "customer", "identity", "agent:alice", "customer:someone-else"]),
    st.integers(min_value=1, max_value=4),  # copies of the same report: replays
), max_size=12)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(receipts)
def test_any_sequence_of_reports_applies_each_once_and_only_within_the_reporters_authority(
    sequence: list[tuple[str, str, str, str | None, int]],
) -> None:
    with tempfile.TemporaryDirectory() as where:
        ledger = CaseLedger(ledger_settings(database=str(Path(where) / "r.sqlite")), clock=FakeClock())
        try:
            ref, customer_id = _case(ledger)
            channel = {"C1": "email", "ACK1": "email", "C2": "chat", "ACK2": "chat"}
            named_as = {None: None, "customer": Actor(kind=ActorKind.CUSTOMER, id=customer_id),
                        "identity": Actor(kind=ActorKind.CUSTOMER, id=customer_id),  # resolved by the caller
                        "agent:alice": Actor.parse("agent:alice"), "customer:someone-else": Actor.parse(
                            "customer:someone-else")}
            accepted: Counter[tuple[str, str, str]] = Counter()
            for verb, message, who, named, copies in sequence:
                reporter = REPORTERS[who]
                for _ in range(copies):
                    before = len(list(ledger.events.get(ledger.get_case(ref).id)))
                    try:
                        if verb == "delivered":
                            ledger.record_delivery(ref, message_id=message, delivered_at=ledger.clock(),
                                                   reporter=reporter)
                        else:
                            ledger.record_read(ref, actor=reporter.actor, message_id=message, reporter=reporter,
                                               named=named_as[named] if reporter.adapter else None)
                    except (PermissionDenied, RuleViolation, ValidationError) as refused:
                        assert str(refused) and "jane@example.com" not in str(refused)
                        after = len(list(ledger.events.get(ledger.get_case(ref).id)))
                        assert after == before  # a refusal records nothing
                        continue
                    except CaseLedgerError as other:  # pragma: no cover - a failure of the property
                        raise AssertionError(f"unexpected {type(other).__name__}: {other}") from other
                    # Accepted: within the reporter's channels, and a read is the customer's or an agent's own.
                    assert reporter.channels is None or channel[message] in reporter.channels
                    if verb == "read" and reporter.adapter:
                        assert not message.startswith("C") and named in (None, "customer", "identity")
                        accepted[(verb, message, f"customer:{customer_id}")] += 1
                    elif verb == "read":
                        assert message.startswith("C")
                        accepted[(verb, message, str(reporter.actor))] += 1
                    else:
                        assert not message.startswith("C")
                        accepted[(verb, message, "")] += 1
            assert all(n == 1 for n in accepted.values()), accepted  # never applied twice
            events = list(ledger.events.get(ledger.get_case(ref).id))
            reads = Counter((e.message_id, f"{e.reader_kind}:{e.reader_id}") for e in events
                            if type(e).__name__ == "MessageRead")
            deliveries = Counter(e.message_id for e in events if type(e).__name__ == "MessageDelivered")
            assert all(n == 1 for n in reads.values()) and all(n == 1 for n in deliveries.values())
            assert sum(reads.values()) + sum(deliveries.values()) == sum(accepted.values())
        finally:
            ledger.close()


@pytest.mark.parametrize("copies", [1, 2, 3, 7])
def test_a_read_replayed_n_times_is_recorded_once_and_refused_n_minus_1_times(copies: int, tmp_path: Path) -> None:
    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "r.sqlite")), clock=FakeClock())
    try:
        ref, customer_id = _case(ledger)
        refusals = []
        for _ in range(copies):
            try:
                ledger.record_read(ref, actor=MAIL.actor, message_id="ACK1", reporter=MAIL)
            except RuleViolation as refused:
                refusals.append(str(refused))
        assert len(refusals) == copies - 1
        assert all(f"already recorded as read by customer:{customer_id}" in r for r in refusals)
        assert ledger.get_case(ref).messages["ACK1"].read_by == [f"customer:{customer_id}"]
    finally:
        ledger.close()
