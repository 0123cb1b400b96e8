"""Hypothesis drives random command sequences across channels and checks the ledger's invariants.

Invariants, checked after every step against what is actually stored:
- every inbound contact is acknowledged exactly once;
- no case is closed with an unanswered item or an open promise that was not waived;
- replaying the stored events rebuilds aggregates identical to the live ones;
- a repeated channel message id never records a second contact.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.avro.codec import event_hash
from caseledger.ledger.domain.catalog import topic_of
from caseledger.ledger.domain.directory import case_id_for
from caseledger.ledger.domain.values import Actor, Channel, ContactDraft, Identity
from caseledger.ledger.errors import CaseLedgerError
from tests.support.clock import FakeClock
from tests.support.environment import ledger_settings
from tests.support.examples import examples

AGENT = Actor.parse("agent:alice")
CUSTOMERS = [Identity.parse(s) for s in ("email:a@example.com", "phone:+33612345678", "handle:@bob")]
channels = st.sampled_from(list(Channel))


class LedgerMachine(RuleBasedStateMachine):
    cases = Bundle("cases")

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.clock = FakeClock()
        self.ledger = CaseLedger(
            ledger_settings(database=str(Path(self.dir.name) / "s.sqlite")), clock=self.clock
        )
        self.messages_sent: list[tuple[str, str]] = []

    def teardown(self) -> None:
        self.ledger.close()
        self.dir.cleanup()

    # -- commands -----------------------------------------------------------------------------------

    @rule(target=cases, channel=channels, customer=st.sampled_from(CUSTOMERS),
          items=st.lists(st.text(min_size=1, max_size=20).filter(str.strip), min_size=1, max_size=3))
    def new_contact(self, channel: Channel, customer: Identity, items: list[str]) -> str:
        msg = f"m{len(self.messages_sent)}"
        self.messages_sent.append((channel.value, msg))
        out = self.ledger.record_contact(
            ContactDraft(channel=channel, channel_message_id=msg, identity=customer, items=tuple(items))
        )
        assert not out.duplicate
        return out.reference

    @precondition(lambda self: self.messages_sent)
    @rule(data=st.data())
    def resubmit(self, data: st.DataObject) -> None:
        channel, msg = data.draw(st.sampled_from(self.messages_sent))
        count = self.ledger.recorder.max_notification_id()
        try:
            out = self.ledger.record_contact(
                ContactDraft(channel=channel, channel_message_id=msg, identity=CUSTOMERS[0], items=("again",))
            )
        except CaseLedgerError:
            return
        assert out.duplicate
        assert self.ledger.recorder.max_notification_id() == count

    @rule(ref=cases, channel=channels, follow_up=st.booleans())
    def follow_up(self, ref: str, channel: Channel, follow_up: bool) -> None:
        msg = f"m{len(self.messages_sent)}"
        self.messages_sent.append((channel.value, msg))
        case = self.ledger.get_case(ref)
        customer = next(c for c in CUSTOMERS if case.customer_id == self.ledger.customer_id_for(c))  # pseudonyms
        self.ledger.record_contact(ContactDraft(
            channel=channel, channel_message_id=msg, identity=customer, items=("more",),
            case_reference=ref, follow_up=follow_up,
        ))

    @rule(ref=cases, data=st.data())
    def respond(self, ref: str, data: st.DataObject) -> None:
        case = self.ledger.get_case(ref)
        candidates = list(case.items)
        answers = data.draw(st.lists(st.sampled_from(candidates), unique=True, max_size=3)) if candidates else []
        try:
            self.ledger.respond(ref, actor=AGENT, body="answer", answers=answers)
        except CaseLedgerError:
            assert case.status in ("closed", "cancelled") or any(case.items[a].status != "open" for a in answers)

    @rule(ref=cases, channel=channels, hours=st.integers(min_value=1, max_value=200))
    def promise(self, ref: str, channel: Channel, hours: int) -> None:
        try:
            self.ledger.make_promise(ref, actor=AGENT, channel=channel.value, kind="callback", terms="call",
                                     due_at=self.clock.now + timedelta(hours=hours))
        except CaseLedgerError:
            assert self.ledger.get_case(ref).status in ("closed", "cancelled")

    @rule(ref=cases, data=st.data())
    def settle_promise(self, ref: str, data: st.DataObject) -> None:
        case = self.ledger.get_case(ref)
        if not case.promises:
            return
        pid = data.draw(st.sampled_from(sorted(case.promises)))
        how = data.draw(st.sampled_from(["keep", "withdraw", "break"]))
        try:
            if how == "keep":
                self.ledger.keep_promise(ref, actor=AGENT, promise_id=pid, evidence="log")
            elif how == "withdraw":
                self.ledger.withdraw_promise(ref, actor=AGENT, promise_id=pid, reason="r", notice="n")
            else:
                self.ledger.break_promise(ref, actor=AGENT, promise_id=pid, reason="r")
        except CaseLedgerError:
            assert case.promises[pid].status != "open" or case.status in ("closed", "cancelled")

    @rule(ref=cases, waive_all=st.booleans())
    def close(self, ref: str, waive_all: bool) -> None:
        case = self.ledger.get_case(ref)
        waive = {i: "waived" for i in case.open_item_ids()} | {p: "waived" for p in case.open_promise_ids()}
        try:
            self.ledger.close_case(ref, actor=AGENT, reason="done", notice="closed", waive=waive if waive_all else {})
        except CaseLedgerError:
            after = self.ledger.get_case(ref)
            assert after.version == case.version  # a refused command leaves nothing behind

    @rule(ref=cases)
    def reopen(self, ref: str) -> None:
        try:
            self.ledger.reopen_case(ref, actor=AGENT, reason="again", notice="open again")
        except CaseLedgerError:
            assert self.ledger.get_case(ref).status not in ("closed", "cancelled")

    @rule(hours=st.integers(min_value=1, max_value=120))
    def time_passes_and_tick(self, hours: int) -> None:
        self.clock.advance(hours=hours)
        self.ledger.tick()

    # -- invariants -----------------------------------------------------------------------------------

    def _all_case_events(self) -> dict[str, list]:
        by_case: dict[str, list] = {}
        for notification in self.ledger.recorder.select_notifications(start=1, limit=1_000_000):
            event = self.ledger.mapper.to_domain_event(notification)
            if notification.topic.startswith(topic_of("")) and hasattr(event, "actor_kind"):
                by_case.setdefault(str(notification.originator_id), []).append(event)
        return by_case

    @invariant()
    def every_contact_acknowledged_exactly_once(self) -> None:
        for events in self._all_case_events().values():
            contacts = [e.contact_id for e in events if type(e).__name__ == "ContactReceived"]
            acks = Counter(e.contact_id for e in events if type(e).__name__ == "AcknowledgementIssued")
            assert all(acks[c] == 1 for c in contacts) and sum(acks.values()) == len(contacts)

    @invariant()
    def no_case_closed_with_open_obligations(self) -> None:
        for events in self._all_case_events().values():
            items: dict[str, str] = {}
            promises: dict[str, str] = {}
            for e in events:
                name = type(e).__name__
                if name == "ContactReceived":
                    items.update({i["item_id"]: "open" for i in e.items})
                elif name == "ResponseSent":
                    items.update({a: "answered" for a in e.answers})
                elif name == "ItemWaived":
                    items[e.item_id] = "waived"
                elif name == "PromiseMade":
                    promises[e.promise_id] = "open"
                elif name in ("PromiseKept", "PromiseWithdrawn", "PromiseBroken", "PromiseWaived"):
                    promises[e.promise_id] = name
                elif name == "CaseClosed":
                    assert "open" not in items.values() and "open" not in promises.values()

    @invariant()
    def replay_rebuilds_identical_aggregates(self) -> None:
        for ref_events in self._all_case_events().values():
            first = ref_events[0]
            if type(first).__name__ != "CaseOpened":
                continue
            replayed = None
            for event in ref_events:
                replayed = event.mutate(replayed)
            live = self.ledger.get_case(first.reference)
            assert vars(replayed) == vars(live)
            stored = self.ledger.recorder.select_events(case_id_for(first.reference))
            assert live.chain_head == event_hash(bytes(stored[-1].state))

    @invariant()
    def no_duplicate_channel_message(self) -> None:
        seen = Counter()
        for events in self._all_case_events().values():
            for e in events:
                if type(e).__name__ == "ContactReceived":
                    seen[(e.channel, e.channel_message_id)] += 1
        assert all(n == 1 for n in seen.values())


LedgerMachine.TestCase.settings = settings(
    max_examples=examples(40), stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestLedgerMachine = LedgerMachine.TestCase
