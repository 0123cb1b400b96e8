"""``bench verify``: events/s of a full audit over a generated ledger, against a baseline of the same run.

The ledger is generated fast by stamping: one customer's story is played once through the real
domain (register, claim an identity, open a case, contact, acknowledgement, promise on the phone
with its written confirmation, response, promise kept, closing), and its encoded events are
copied for every other customer with fixed-width ids replaced and the hash chain recomputed.
The copies are the bytes the ledger would have written; they are streamed to the recorder's bulk load
(``load_events``: binary ``COPY`` on PostgreSQL, long transactions on SQLite) into the store's own table.

Baseline, measured in the same run on the same store: reading every page of the events table
with the same SQL (no processing), and SHA-256 over every event's bytes.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import resource
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from caseledger.cli.bench import environment
from caseledger.cli.bench.texts_writer import bench_writer
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.audit import verify
from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.settings import LedgerSettings

Progress = Callable[[str, int, int], None]
_CUSTOMER_TOKEN = "zq000000000"
_REFERENCE = "CL-ZQ000-00000"
_RUNS: set[str] = set()


@dataclass
class VerifyBenchResult:
    events: int
    backend: str
    aggregates: int
    generate_seconds: float
    verify_seconds: float
    events_per_s: float
    baseline_read_per_s: float
    baseline_sha256_per_s: float
    rss_growth_mb: float
    rss_before_mb: float
    verified: bool

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("backend", self.backend),
            ("events", f"{self.events:,} in {self.aggregates:,} aggregates"),
            ("ledger generated in", f"{self.generate_seconds:.1f} s"),
            ("full audit verify", f"{self.verify_seconds:.2f} s"),
            ("audit verify events/s", f"{self.events_per_s:,.0f}"),
            ("baseline: raw page reads", f"{self.baseline_read_per_s:,.0f} events/s"),
            ("baseline: raw SHA-256 of every event", f"{self.baseline_sha256_per_s:,.0f} events/s"),
            ("verify ÷ page reads", f"{self.events_per_s / self.baseline_read_per_s:.0%}"),
            ("memory: peak resident growth during verify",
             f"{self.rss_growth_mb:.0f} MB over {self.rss_before_mb:.0f} MB "
             f"({self.rss_growth_mb * 1048576 / max(1, self.aggregates):.0f} bytes per aggregate)"),
            ("verified", "yes" if self.verified else "NO"),
        ]


@dataclass(frozen=True)
class _TemplateEvent:
    aggregate: int  # index of the story's aggregate
    version: int
    topic: str
    data: bytes
    tokens: tuple[bytes, ...]  # template strings present in data, replaced per copy
    previous_at: int  # offset of the 32-byte previous_hash, -1 for a first event


def _story(ledger: CaseLedger, *, open_case: bool = False
           ) -> tuple[list[_TemplateEvent], list[bytes], list[bytes]]:
    """One customer's story through the real domain: (events, aggregate id texts, event id texts).

    ``open_case``: the story stops at the promise, thirty days ago, so its response and promise deadlines
    are past due and pending (what ``tick`` finds).
    """
    from caseledger.ledger.domain.case import Case
    from caseledger.ledger.domain.directory import ChannelMessage, Customer, IdentityClaim, case_id_for
    from caseledger.ledger.domain.events import Context
    from caseledger.ledger.domain.values import Actor, ActorKind, Channel, ContactDraft, Identity

    now = datetime.now(UTC) - (timedelta(days=30) if open_case else timedelta(0))
    customer = Context(actor=Actor(kind=ActorKind.CUSTOMER, id=_CUSTOMER_TOKEN), occurred_at=now, channel=Channel.PHONE)
    agent = Context(actor=Actor(kind=ActorKind.AGENT, id="bench"), occurred_at=now, channel=Channel.PHONE)
    identity = Identity(kind="email", value=f"{_CUSTOMER_TOKEN}@bench.example")
    customer_id = str(identity)
    draft = ContactDraft(channel=Channel.PHONE, channel_message_id=f"call-{_CUSTOMER_TOKEN}", identity=identity,
                         items=("Where is my refund?",), subject="Refund",
                         body="I returned the parcel two weeks ago and the refund has not arrived. " * 3)
    claim = IdentityClaim.claim(identity, claim_id=IdentityClaim.id_for(identity), customer_id=customer_id, ctx=customer)
    person = Customer.register(customer_id=customer_id, segment="standard", ctx=customer)
    person.link_identity(identity, ctx=customer)
    case = Case.open(case_id=case_id_for(_REFERENCE), reference=_REFERENCE, customer_id=customer_id,
                     subject="Refund", category=None, segment="standard", ctx=customer)
    person.link_case(case_id=case.id, reference=_REFERENCE, ctx=customer)
    contact, ack = case.receive_contact(draft, ctx=customer, respond_by=now + timedelta(days=2),
                                        acknowledge_by=now + timedelta(hours=1), writer=bench_writer())
    message = ChannelMessage.register(channel=draft.channel, channel_message_id=draft.channel_message_id,
                                      case_id=case.id, reference=_REFERENCE, contact_id=contact,
                                      acknowledgement_id=ack, content_digest=draft.content_digest(),
                                      customer_id=customer_id, ctx=customer)
    promise, _ = case.make_promise(ctx=agent, kind="refund", terms="Refund of 42.00 EUR to the card",
                                   due_at=now + timedelta(days=3), writer=bench_writer())
    if not open_case:
        case.respond(ctx=agent, body="Your refund is on its way.", answers=["Q1"])
        case.keep_promise(ctx=agent, promise_id=promise, evidence="bank transfer 2026-11-24")
        case.close(ctx=agent, reason="answered and refunded", notice="Your request is closed.", writer=bench_writer())
    aggregates = [case, message, person, claim]
    ledger.chain(*aggregates)
    ids = [str(a.id).encode() for a in aggregates]
    event_ids: list[bytes] = []
    events: list[_TemplateEvent] = []
    for index, aggregate in enumerate(aggregates):
        for event in aggregate.collect_events():
            event_state = vars(event)
            data = event_state["_encoded"]
            event_ids.append(str(event_state["event_id"]).encode())
            prev = event_state["previous_hash"]
            events.append(_TemplateEvent(index, event.originator_version, ledger.mapper.to_stored_event(event).topic,
                                         data, (), data.index(prev) if prev else -1))
    tokens = [_CUSTOMER_TOKEN.encode(), _REFERENCE.encode(), *ids, *event_ids]
    stamped = [
        _TemplateEvent(e.aggregate, e.version, e.topic, e.data, tuple(t for t in tokens if t in e.data), e.previous_at)
        for e in events
    ]
    return stamped, ids, event_ids


def generate_ledger(ledger: CaseLedger, events: int, progress: Progress | None = None, *, open_cases: bool = False
                    ) -> int:
    """Append about ``events`` events (whole stories) to a ledger; returns how many. ``open_cases``: stories
    left open with past-due deadlines (see :func:`_story`)."""
    template, aggregate_ids, event_ids = _story(ledger, open_case=open_cases)
    per_story = len(template)
    stories = max(1, events // per_story)
    run = uuid.uuid4().hex[:4]
    while run[:2] in _RUNS:  # a second fill of the same ledger must not reuse a reference
        run = uuid.uuid4().hex[:4]
    _RUNS.add(run[:2])
    # The data key the story's personal fields are sealed under, stored with the first rows: the generated
    # events are readable (a publisher, a reveal), not only hashable.
    new_keys = ledger.data_keys.unsaved()
    rows = _stamped_rows(template, aggregate_ids, event_ids, stories, run, progress)
    written = ledger.recorder.load_events(rows, new_keys=new_keys)  # COPY on PostgreSQL, long transactions on SQLite
    ledger.data_keys.saved(new_keys)  # stored: the ledger's next write must not store them again
    return written


def _stamped_rows(template: list[_TemplateEvent], aggregate_ids: list[bytes], event_ids: list[bytes], stories: int,
                  run: str, progress: Progress | None) -> Iterator[tuple[uuid.UUID, int, str, bytes]]:
    """Each story's events as stored rows, made lazily (the load streams them).

    Every template event is cut once at the texts a copy replaces and at its previous hash; a copy is one
    join of the pieces with its own texts (fixed-width: every Avro length prefix and offset stays valid).
    """
    from caseledger.ledger.domain.directory import case_id_for
    sha256 = hashlib.sha256
    tokens = [_CUSTOMER_TOKEN.encode(), _REFERENCE.encode(), *aggregate_ids, *event_ids]
    cuts = [_cut(event, tokens) for event in template]
    total = stories * len(template)
    # Every id is the story's number then a fixed tail: an aggregate's, or an event's.
    id_tails = [f"-{run}-4{i:03x}-8000-{0xbe0c4:012x}".encode() for i in range(len(aggregate_ids))]
    event_tails = [f"-{run}-4{i:03x}-9000-{0xe7e47:012x}".encode() for i in range(len(event_ids))]
    for n in range(stories):
        reference = f"CL-{run[:2].upper()}{n // 100000:03d}-{n % 100000:05d}"
        number = f"{n:08x}".encode()
        new_ids = [number + tail for tail in id_tails]
        new_ids[0] = str(case_id_for(reference)).encode()  # the case is found by its reference, as the ledger's
        uuids = [uuid.UUID(i.decode()) for i in new_ids]
        values = [f"zq{n:09d}".encode(), reference.encode(), *new_ids, *(number + tail for tail in event_tails)]
        heads: list[bytes] = [b""] * len(aggregate_ids)
        for event, (pieces, slots) in zip(template, cuts, strict=True):
            parts = list(pieces)
            for at, token in slots:
                parts[at] = values[token] if token >= 0 else heads[event.aggregate]
            data = b"".join(parts)
            heads[event.aggregate] = sha256(data).digest()
            yield uuids[event.aggregate], event.version, event.topic, data
        if progress and n % 2000 == 1999:
            progress("generating", (n + 1) * len(template), total)


def _cut(event: _TemplateEvent, tokens: list[bytes]) -> tuple[list[bytes], list[tuple[int, int]]]:
    """The event's bytes as pieces, with an empty piece at each occurrence of a token and at its previous
    hash; the slots say which piece takes which token (-1: the previous event's hash)."""
    spans: list[tuple[int, int, int]] = []
    for k, token in enumerate(tokens):
        at = event.data.find(token)
        while at >= 0:
            spans.append((at, at + len(token), k))
            at = event.data.find(token, at + len(token))
    if event.previous_at >= 0:
        spans.append((event.previous_at, event.previous_at + 32, -1))
    spans.sort()
    pieces: list[bytes] = []
    slots: list[tuple[int, int]] = []
    done = 0
    for start, end, k in spans:
        if start < done:
            raise ValueError("the story's texts overlap in an event: it cannot be stamped")
        pieces.append(event.data[done:start])
        slots.append((len(pieces), k))
        pieces.append(b"")
        done = end
    pieces.append(event.data[done:])
    return pieces, slots


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def bench_verify(*, events: int = 200_000, database: str | None = None, progress: Progress | None = None
                 ) -> VerifyBenchResult:
    """Generate a ledger of ``events`` events and time a full audit verify against the baseline."""
    tmp = tempfile.TemporaryDirectory(prefix="caseledger-bench-verify-")
    db = database or str(Path(tmp.name) / "verify.sqlite")
    ledger = CaseLedger(LedgerSettings.resolve(database=db, settings=environment()))
    try:
        if (ledger.recorder.max_notification_id() or 0) > 0:
            raise ConfigurationError(f"{ledger.settings.store.describe()} is not empty; benchmark on an empty database")
        started = time.perf_counter()
        total = generate_ledger(ledger, events, progress)
        generated = time.perf_counter() - started

        started = time.perf_counter()
        read = 0
        hashed_s = 0.0
        with ledger.storage.audit_snapshot() as store:
            head = store.head()
            for page in store.pages(0, head, 5000):
                read += len(page)
                t = time.perf_counter()
                for row in page:
                    hashlib.sha256(row[4]).digest()
                hashed_s += time.perf_counter() - t
        baseline_s = time.perf_counter() - started - hashed_s

        backend = ledger.settings.store.describe().split(" ")[0]
        ledger.close()
        if progress:
            progress("verifying (in a fresh process, for its memory)", 0, 1)
        # A fresh process: its peak resident size is the verify's alone, not the generator's leftovers.
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            measured = pool.apply(_verify_in_fresh_process, (db,))
        if progress:
            progress("verifying (in a fresh process, for its memory)", 1, 1)
    finally:
        ledger.close()
        tmp.cleanup()
    return VerifyBenchResult(
        events=total,
        backend=backend,
        aggregates=measured["aggregates"],
        generate_seconds=generated,
        verify_seconds=measured["seconds"],
        events_per_s=measured["events"] / measured["seconds"],
        baseline_read_per_s=read / baseline_s,
        baseline_sha256_per_s=read / hashed_s,
        rss_growth_mb=measured["peak_mb"] - measured["before_mb"],
        rss_before_mb=measured["before_mb"],
        verified=measured["ok"] and measured["events"] == total,
    )


def _verify_in_fresh_process(database: str) -> dict[str, Any]:
    ledger = CaseLedger(LedgerSettings.resolve(database=database, settings=environment()))
    try:
        before = _rss_mb()
        started = time.perf_counter()
        report = verify(ledger)
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        ledger.close()
    return {"seconds": seconds, "events": report.events, "aggregates": report.aggregates, "ok": report.ok,
            "before_mb": before, "peak_mb": max(peak, before)}


if __name__ == "__main__":  # pragma: no cover - manual runs
    print(bench_verify(events=int(os.environ.get("EVENTS", "200000"))))
