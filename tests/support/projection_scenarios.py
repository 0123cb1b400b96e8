"""A ledger driven by generated commands, and the projections its tests run over it (the built-ins, a tally)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck
from hypothesis import strategies as st

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.directory import IntakeSource
from caseledger.ledger.domain.values import Actor, Channel, ContactDraft, Identity
from caseledger.ledger.errors import CaseLedgerError, ConfigurationError
from caseledger.projections import (
    COUNTERS,
    INT,
    LOG,
    TEXT,
    Projection,
    ProjectionRunner,
    Table,
    Tx,
    load_projections,
)
from caseledger.projections.views import ViewStore
from tests.support.clock import FakeClock
from tests.support.environment import ledger_settings

AGENT = Actor.parse("agent:alice")
CUSTOMERS = [Identity.parse(s) for s in ("email:a@example.com", "phone:+33612345678", "handle:@bob")]
CHANNELS = list(Channel)
SEGMENTS = (None, "premium", "standard")
ACTIONS = (
    "contact", "contact", "follow_up", "respond", "respond", "waive", "promise", "settle", "deliver", "fail", "read",
    "close", "cancel", "reopen", "assign", "handoff", "escalate", "propose", "decide", "status", "tick",
    "resubmit", "reject", "erase", "hold", "release",
)


# -- a ledger driven by generated commands --------------------------------------------------------------


@dataclass
class Scenario:
    """Applies (action, seed) steps to a ledger; a step the case's rules refuse records nothing."""

    ledger: CaseLedger
    clock: FakeClock
    refs: list[str] = field(default_factory=list)
    who: dict[str, Identity] = field(default_factory=dict)
    messages: list[tuple[Channel, str, Identity]] = field(default_factory=list)

    def apply(self, action: str, seed: int) -> None:
        self.clock.advance(minutes=seed % 90 + 1)
        with suppress(CaseLedgerError):
            getattr(self, f"_{action}")(seed)

    def _ref(self, seed: int) -> str:
        if not self.refs:
            raise ConfigurationError("no case yet")
        return self.refs[seed % len(self.refs)]

    def _draft(self, seed: int, identity: Identity, **kw: Any) -> ContactDraft:
        channel = CHANNELS[seed % len(CHANNELS)]
        msg = f"m{len(self.messages)}"
        self.messages.append((channel, msg, identity))
        return ContactDraft(channel=channel, channel_message_id=msg, identity=identity,
                            items=tuple(f"question {seed % 97} part {n}" for n in range(1 + seed % 3)),
                            subject=f"subject {seed % 13}", **kw)

    def _contact(self, seed: int) -> None:
        identity = CUSTOMERS[(seed // 7) % len(CUSTOMERS)]
        out = self.ledger.record_contact(self._draft(seed, identity, segment=SEGMENTS[seed % 3]))
        if out.opened_case:
            self.refs.append(out.reference)
            self.who[out.reference] = identity

    def _follow_up(self, seed: int) -> None:
        ref = self._ref(seed)
        self.ledger.record_contact(self._draft(seed, self.who[ref], case_reference=ref, follow_up=bool(seed % 2)))

    def _resubmit(self, seed: int) -> None:
        if self.messages:
            channel, msg, identity = self.messages[seed % len(self.messages)]
            draft = ContactDraft(channel=channel, channel_message_id=msg, identity=identity, items=("again",))
            self.ledger.record_contact(draft, source=IntakeSource(topic="intake", partition=0, offset=seed))

    def _reject(self, seed: int) -> None:
        self.ledger.reject_intake(IntakeSource(topic="intake", partition=1, offset=seed), reason="not Avro",
                                  raw=b"\x00" * (seed % 5), kind="undecodable")

    def _respond(self, seed: int) -> None:
        ref = self._ref(seed)
        open_items = self.ledger.get_case(ref).open_item_ids()
        answers = [item for n, item in enumerate(open_items) if seed >> n & 1]
        self.ledger.respond(ref, actor=AGENT, body=f"answer {seed}", answers=answers,
                            channel=CHANNELS[seed % 4].value if seed % 5 else None)

    def _waive(self, seed: int) -> None:
        ref = self._ref(seed)
        for item in self.ledger.get_case(ref).open_item_ids()[:1]:
            self.ledger.waive_item(ref, actor=AGENT, item_id=item, reason="not needed")

    def _promise(self, seed: int) -> None:
        self.ledger.make_promise(self._ref(seed), actor=AGENT, channel=CHANNELS[seed % len(CHANNELS)].value,
                                 kind="callback", terms=f"call back {seed}",
                                 due_at=self.clock.now + timedelta(hours=1 + seed % 72))

    def _settle(self, seed: int) -> None:
        ref = self._ref(seed)
        for pid in self.ledger.get_case(ref).open_promise_ids()[:1]:
            how = seed % 3
            if how == 0:
                self.ledger.keep_promise(ref, actor=AGENT, promise_id=pid, evidence="call log")
            elif how == 1:
                self.ledger.withdraw_promise(ref, actor=AGENT, promise_id=pid, reason="offer ended", notice="sorry")
            else:
                self.ledger.break_promise(ref, actor=AGENT, promise_id=pid, reason="nobody called")

    def _deliver(self, seed: int) -> None:
        ref = self._ref(seed)
        pending = [m for m, s in self.ledger.get_case(ref).messages.items()
                   if not m.startswith("C") and s.delivered_at is None]
        if pending:
            self.ledger.record_delivery(ref, message_id=pending[seed % len(pending)], delivered_at=self.clock.now)

    def _fail(self, seed: int) -> None:
        ref = self._ref(seed)
        pending = [m for m, s in self.ledger.get_case(ref).messages.items()
                   if not m.startswith("C") and s.delivered_at is None]
        if pending:
            self.ledger.record_delivery_failure(ref, message_id=pending[seed % len(pending)],
                                                reason=("bounced", "rejected", "expired")[seed % 3])

    def _read(self, seed: int) -> None:
        ref = self._ref(seed)
        messages = list(self.ledger.get_case(ref).messages)
        actor = Actor.parse("customer:c1") if seed % 2 else AGENT
        self.ledger.record_read(ref, actor=actor, message_id=messages[seed % len(messages)])

    def _close(self, seed: int) -> None:
        ref = self._ref(seed)
        case = self.ledger.get_case(ref)
        waive = {i: "waived" for i in case.open_item_ids()} | {p: "waived" for p in case.open_promise_ids()}
        self.ledger.close_case(ref, actor=AGENT, reason="done", notice="closed", waive=waive if seed % 3 else {})

    def _cancel(self, seed: int) -> None:
        self.ledger.cancel_case(self._ref(seed), actor=AGENT, reason="duplicate", notice="cancelled")

    def _reopen(self, seed: int) -> None:
        self.ledger.reopen_case(self._ref(seed), actor=AGENT, reason="again", notice="open again")

    def _assign(self, seed: int) -> None:
        self.ledger.assign(self._ref(seed), actor=AGENT, assignee=f"agent{seed % 3}", team=f"team{seed % 2}")

    def _handoff(self, seed: int) -> None:
        self.ledger.hand_off(self._ref(seed), actor=AGENT, to_assignee=f"agent{seed % 4}", note="see brief")

    def _escalate(self, seed: int) -> None:
        self.ledger.escalate_to_human(self._ref(seed), actor=Actor.parse("automation:bot"), bot_id="bot",
                                      waiting_since=self.clock.now - timedelta(minutes=1 + seed % 30),
                                      to_team="humans" if seed % 2 else None, reason="asked for a human")

    def _propose(self, seed: int) -> None:
        if seed % 2:
            self.ledger.propose_action(self._ref(seed), actor=Actor.parse("automation:rule"), rule_id="rule",
                                       action="lower_card_limit", params={"limit": str(seed % 900)},
                                       rationale="declines")
        else:
            self.ledger.propose_action(self._ref(seed), actor=Actor.parse("automation:rule"), rule_id="idle",
                                       action="change_status",
                                       params={"to": "on_hold", "reason": "idle", "notice": "on hold"},
                                       rationale="idle")

    def _decide(self, seed: int) -> None:
        ref = self._ref(seed)
        proposed = [x for x, p in self.ledger.get_case(ref).proposals.items() if p.status == "proposed"]
        for pid in proposed[:1]:
            if seed % 3:
                self.ledger.approve_action(ref, actor=AGENT, proposal_id=pid)
            else:
                self.ledger.reject_action(ref, actor=AGENT, proposal_id=pid, reason="no")

    def _status(self, seed: int) -> None:
        self.ledger.change_status(self._ref(seed), actor=AGENT, to_status=("in_progress", "waiting_on_customer",
                                  "on_hold")[seed % 3], reason="working", notice="we are on it")

    def _erase(self, seed: int) -> None:
        self.ledger.erase_customer(self.ledger.get_case(self._ref(seed)).customer_id, reason="art. 17 request")

    def _hold(self, seed: int) -> None:
        self.ledger.place_legal_hold(self.ledger.get_case(self._ref(seed)).customer_id, reason="litigation")

    def _release(self, seed: int) -> None:
        self.ledger.release_legal_hold(self.ledger.get_case(self._ref(seed)).customer_id, reason="closed")

    def _tick(self, seed: int) -> None:
        self.clock.advance(hours=seed % 48)
        self.ledger.tick()


@contextmanager
def generated_ledger() -> Iterator[tuple[CaseLedger, Scenario, Path]]:
    with tempfile.TemporaryDirectory() as tmp:
        clock = FakeClock()
        ledger = CaseLedger(ledger_settings(database=str(Path(tmp) / "ledger.sqlite")), clock=clock)
        try:
            yield ledger, Scenario(ledger, clock), Path(tmp)
        finally:
            ledger.close()


steps_strategy = st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 2**16)), min_size=1, max_size=40)
PROPERTY_SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


def built_ins() -> list[Projection]:
    return load_projections(None)


def snapshot(views: ViewStore) -> dict[str, Any]:
    return {p.name: views.snapshot(p.tables) for p in built_ins()}


def catch_up(views: ViewStore, source: Any, *, batch_size: int = 1000, projections: list[Projection] | None = None) -> None:
    ProjectionRunner(projections or built_ins(), views, source, batch_size=batch_size).run(until_caught_up=True)


# -- a projection of the tests' own ---------------------------------------------------------------------


class Tally(Projection):
    """Counts events per type, keeps one row per case and logs every position (a test projection)."""

    name = "tally"
    tables = (
        Table("tally_types", {"event_type": TEXT, "n": INT}, key=("event_type",), kind=COUNTERS),
        Table("tally_cases", {"case_id": TEXT, "reference": TEXT, "events": INT}, key=("case_id",)),
        Table("tally_log", {"position": INT, "event_type": TEXT}, key=("position",), kind=LOG),
    )

    def on_CaseOpened(self, tx: Tx, event: Any) -> None:
        tx.put("tally_cases", {"case_id": str(event.originator_id), "reference": event.reference, "events": 0})
        self.on_event(tx, event)

    def on_event(self, tx: Tx, event: Any) -> None:
        name = type(event).__name__
        tx.add("tally_types", name, n=1)
        tx.append("tally_log", {"position": tx.position, "event_type": name})
        case = tx.get("tally_cases", str(event.originator_id))
        if case is not None:
            case["events"] += 1
            tx.put("tally_cases", case)


def record_contacts(ledger: CaseLedger, n: int, start: int = 0) -> None:
    with ledger.unit_of_work():
        for i in range(start, start + n):
            ledger.record_contact(ContactDraft(
                channel="email", channel_message_id=f"c{i}", identity=Identity.parse(f"email:c{i % 5}@example.com"),
                items=("where is my parcel?",)))
