"""The analyst's trial ledger of issue 27: ~200 contacts over four months, and the answers it must give.

Contacts arrive on several channels in three segments, each answered after a drawn delay; some get a
promise, kept or broken. One customer is erased and one intake record rejected (an event of no customer).
The generator keeps its own tally of the two questions the analysts asked, independent of any export.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.directory import IntakeSource
from caseledger.ledger.domain.values import Actor, ContactDraft, Identity
from tests.support.clock import FakeClock
from tests.support.environment import ledger_settings

AGENT = Actor.parse("agent:alice")
CHANNELS = ("email", "phone", "chat", "web_form")
SEGMENTS = ("retail", "premium", "business")
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@dataclass
class Trial:
    """What the generator recorded, as the analysts' two answers."""

    database: Path
    events: int = 0
    broken: Counter[tuple[str, str]] = field(default_factory=Counter)  # (channel, YYYY-MM) → broken promises
    waits: dict[str, list[float]] = field(default_factory=dict)  # segment → hours to first response
    erased_customer: str = ""

    def median_hours(self) -> dict[str, float]:
        return {segment: statistics.median(hours) for segment, hours in sorted(self.waits.items())}


def generate(folder: Path, *, contacts: int = 200, seed: int = 27) -> Trial:
    """Record the trial into ``folder/ledger.sqlite`` (about 1,500 events) and return its answers."""
    rng = random.Random(seed)
    clock = FakeClock(START)
    trial = Trial(folder / "ledger.sqlite")
    ledger = CaseLedger(ledger_settings(database=str(trial.database)), clock=clock)
    step = timedelta(days=120) / contacts
    try:
        for n in range(contacts):
            clock.now = max(clock.now, START + n * step)
            segment, channel = SEGMENTS[n % 3], CHANNELS[rng.randrange(len(CHANNELS))]
            identity = Identity.parse(f"email:customer{n % 150}@example.com")
            out = ledger.record_contact(ContactDraft(
                channel=channel, channel_message_id=f"m{n}", identity=identity, segment=segment,
                subject=f"question {n}", items=(f"what about {n}?",)))
            contacted = clock.now
            clock.advance(minutes=rng.randrange(10, 60 * 30))
            ref = out.reference
            case = ledger.get_case(ref)
            if out.opened_case:
                ledger.respond(ref, actor=AGENT, body="answered", answers=list(case.open_item_ids()), channel=channel)
                trial.waits.setdefault(segment, []).append((clock.now - contacted).total_seconds() / 3600)
            if n % 4 == 0:
                promise_channel = CHANNELS[(n // 4) % len(CHANNELS)]
                ledger.make_promise(ref, actor=AGENT, channel=promise_channel, kind="callback", terms="we call back",
                                    due_at=clock.now + timedelta(days=2))
                clock.advance(hours=1)
                promise = ledger.get_case(ref).open_promise_ids()[-1]
                if rng.random() < 0.6:
                    ledger.break_promise(ref, actor=AGENT, promise_id=promise, reason="nobody called")
                    trial.broken[(promise_channel, f"{clock.now:%Y-%m}")] += 1
                else:
                    ledger.keep_promise(ref, actor=AGENT, promise_id=promise, evidence="call log")
        ledger.reject_intake(IntakeSource(topic="intake", partition=0, offset=1), reason="not Avro", raw=b"\x00",
                             kind="undecodable")
        trial.erased_customer = ledger.get_case(out.reference).customer_id
        ledger.erase_customer(trial.erased_customer, reason="art. 17 request")
        trial.events = ledger.recorder.max_notification_id() or 0
    finally:
        ledger.close()
    return trial
