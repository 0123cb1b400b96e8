"""``verify``: one pass over the store's notification log, feeding every checker as the events stream past.

The store is read once, in pages, in one consistent read snapshot (``store_snapshot``); the loop
keeps bounded per-aggregate maps (``ChainCheck.chains``: the heads of the aggregates written to most
recently, the others recalled from the store; ``CrossReferences.cases``: a window of per-case
counters, the rest summed on disk), so its memory does not grow with the ledger. Each event
is hashed, decoded from its envelope (``parse_envelope``), chained, counted for cross references,
matched with its intake record and with its record on the events topic, and folded into the seal.
The checks' conditions are tested inline (the hot path); the checkers name what they found.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from caseledger.ledger.audit.chains import (
    CHAIN_HEADS,
    COMMIT_TOLERANCE_US,
    DEFAULT_CLOCK_TOLERANCE,
    ChainCheck,
    micros_of,
)
from caseledger.ledger.audit.intake_outcomes import INTAKE_OUTCOMES, IntakeAccounting
from caseledger.ledger.audit.kept_checkpoint import CheckpointCheck, HeldCheckpoint
from caseledger.ledger.audit.outcomes_topic import OutcomesTopicCheck
from caseledger.ledger.audit.references import CASE_COUNTED, CASES_HELD, CrossReferences
from caseledger.ledger.audit.report import AuditReport, AuditScope
from caseledger.ledger.audit.seal import Seal, check_seal, seal_past_end
from caseledger.ledger.audit.topic import EventsTopicComparison
from caseledger.ledger.avro.codec import HEADER_SIZE, MAGIC
from caseledger.ledger.avro.envelope import AvroEnvelopeDecoder, parse_envelope
from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.store_ports import StoreSnapshot

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.kafka.ports import TopicReaders
    from caseledger.ledger.settings import KafkaSettings

__all__ = ["verify"]

_MICROSECOND = timedelta(microseconds=1)


def store_snapshot(ledger: CaseLedger) -> AbstractContextManager[StoreSnapshot]:
    """One read transaction over the ledger's store (SQLite WAL snapshot or PostgreSQL REPEATABLE READ)."""
    return ledger.storage.audit_snapshot()


def verify(
    ledger: CaseLedger,
    *,
    customer: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    kafka: KafkaSettings | None = None,
    readers: TopicReaders | None = None,
    seal: Seal | None = None,
    checkpoint: HeldCheckpoint | None = None,
    clock_tolerance: timedelta = DEFAULT_CLOCK_TOLERANCE,
    page_size: int = 5000,
    progress: Callable[[int, int], None] | None = None,
    collect: Callable[[int, str, bytes], None] | None = None,
    heads_held: int | None = None,
    cases_held: int | None = None,
) -> AuditReport:
    """Check the ledger's chains, positions, cross references, events topic and intake accounting.

    ``customer`` (an id or identity) limits the audit to that customer's events; ``since`` and
    ``until`` to the positions recorded in that time range. ``kafka`` adds the events topic and
    the intake topic, read through ``readers`` (the caller's Kafka client). ``seal`` (from an earlier report) must still hold, and so must ``checkpoint`` (a signed
    checkpoint the auditor kept, with the key it must be signed by). ``progress`` is called
    with (positions done, positions to do); ``collect`` with (position, event type, bytes) of
    each event in scope, in order (the history export uses it). ``heads_held`` aggregates' chain heads and
    ``cases_held`` cases' counters are kept in memory (``CHAIN_HEADS``, ``CASES_HELD``), the others read
    back from the store or summed on disk: the audit's memory is bounded by these, not by the ledger.
    """
    started = time.monotonic()
    customer_id = ledger.data_subject(customer) if customer else None
    if since is not None and until is not None and until <= since:
        raise ConfigurationError(f"--until {until.isoformat()} is not after --since {since.isoformat()}")
    if kafka is not None and readers is None:
        raise ConfigurationError("auditing the Kafka topics needs a client to read them: pass readers=, e.g. "
                                 "KafkaClient(KAFKA_PYTHON, 'consumer') from caseledger.ledger.kafka.clients")
    scope = AuditScope(customer_id=customer_id, since=since, until=until, kafka=kafka, readers=readers,
                       tolerance=clock_tolerance // _MICROSECOND)
    with store_snapshot(ledger) as store:
        audit = _Audit(ledger, store, scope, seal=seal, page_size=page_size, progress=progress, collect=collect,
                       checkpoint=checkpoint, heads_held=CHAIN_HEADS if heads_held is None else heads_held,
                       cases_held=CASES_HELD if cases_held is None else cases_held)
        try:
            report = audit.run()
        finally:
            audit.references.close()
            if audit.topic is not None:
                audit.topic.close()
    if audit.topic is not None:
        audit.topic.check_beyond_snapshot(ledger)
    if audit.tree is not None and not audit.tree_holds:
        _locate_checkpoint_difference(ledger, audit.tree, report, page_size)
    report.seconds = time.monotonic() - started
    return report


class _Audit:
    """One run of verify: the streaming loop, and the checkers it feeds."""

    def __init__(
        self, ledger: CaseLedger, store: StoreSnapshot, scope: AuditScope, *, seal: Seal | None, page_size: int,
        progress: Callable[[int, int], None] | None, collect: Callable[[int, str, bytes], None] | None,
        checkpoint: HeldCheckpoint | None = None, heads_held: int = CHAIN_HEADS, cases_held: int = CASES_HELD,
    ) -> None:
        self.ledger = ledger
        self.held = checkpoint
        self.tree: CheckpointCheck | None = None
        self.tree_holds = True
        self.store = store
        self.scope = scope
        self.seal_in = seal
        self.page_size = page_size
        self.progress = progress
        self.collect = collect
        self.decoder = AvroEnvelopeDecoder(ledger.codec)
        self.report = AuditReport(backend=ledger.settings.store.describe(), scope=scope.as_dict())
        self.chain_check = ChainCheck(store, self.report, scope, self.decoder, held=heads_held)
        self.references = CrossReferences(store, self.report, ledger.codec, held=cases_held)
        self.topic: EventsTopicComparison | None = None
        self.outcomes: OutcomesTopicCheck | None = None
        self.intake: IntakeAccounting | None = None

    # -- the run --------------------------------------------------------------------------------------------

    def run(self) -> AuditReport:
        """Every check the scope allows, in one pass over the log (two with intake outcomes after a range)."""
        report = self.report
        store = self.store
        scope = self.scope
        head = store.head()
        report.head_position = head
        first, last = self._range(head)
        full = scope.whole
        ranged = scope.ranged
        report.checks = ["positions", "chains", "row identity", "recorded times"]
        if not ranged:
            report.checks.append("cross references")
        else:
            report.notes.append("cross references (case links, contact registrations) are checked on whole "
                                "histories only: run without --since/--until for them")
        if scope.kafka is not None:
            self.topic = EventsTopicComparison(scope, report, head=head, first=first, last=last)
            report.checks.append("events topic")
            if scope.customer_id is None:
                self.outcomes = OutcomesTopicCheck(scope, report, self.decoder.codec)
            else:
                report.notes.append("the outcomes topic (intake verdicts) is checked ledger-wide: run without "
                                    "--customer for it")
        if scope.customer_id is None and (scope.kafka is not None or not ranged):
            self.intake = IntakeAccounting.start(scope, report, self.decoder.codec, store.tracking())
            if self.intake is not None:
                report.checks.append("intake accounting")
            else:
                report.notes.append("intake accounting: no intake tracking record in the store and no "
                                    "--kafka: nothing came through an intake topic")
        elif scope.customer_id is not None:
            report.notes.append("intake accounting is ledger-wide: run without --customer for it")
        else:
            report.notes.append("intake accounting over a time range needs --kafka (the intake topic's "
                                "record times)")
        if full:
            report.checks.append("seal")
        elif self.seal_in is not None:
            report.notes.append("--seal is checked by a whole-ledger audit only (no --customer, --since, --until)")
        if self.held is not None and full:
            opened = self.held.open(report)
            if opened is not None:
                self.tree = CheckpointCheck(report, opened)
                report.checks.append("checkpoint")
        elif self.held is not None:
            report.notes.append("--checkpoint is checked by a whole-ledger audit only; a customer's events are "
                                "proved against it by `audit prove` and by the history export")
        self._scan(first, last, full=full)
        if self.tree is not None:
            self.tree_holds = self.tree.finish()
        if self.intake is not None:
            self._scan_outcomes_after(last, head)
            self.intake.finish()
        if self.topic is not None:
            self.topic.finish()
        if self.outcomes is not None:
            self.outcomes.finish(first, last)
        try:
            if not ranged:
                self.references.check()
            report.cases = self.references.opened()
        finally:
            self.references.close()
        self.chain_check.settle_gaps(self.topic)
        report.aggregates = self.chain_check.aggregates
        return report

    def _range(self, head: int) -> tuple[int, int]:
        """First and last positions in scope (time range: by binary search on recorded times)."""
        first, last = 1, head
        if self.scope.since is not None:
            first = self._first_recorded_at_or_after(micros_of(self.scope.since), head)
        if self.scope.until is not None:
            last = self._first_recorded_at_or_after(micros_of(self.scope.until), head) - 1
        self.report.first_position = first if first <= last else None
        self.report.last_position = last if first <= last else None
        return first, last

    def _first_recorded_at_or_after(self, micros: int, head: int) -> int:
        lo, hi = 1, head + 1  # answer in [lo, hi]
        while lo < hi:
            mid = (lo + hi) // 2
            row = self.store.row_at_or_after(mid)
            if row is None:
                hi = mid
                continue
            try:
                recorded = self.decoder.envelope(bytes(row[4]))[5]
            except Exception:  # undecodable: the scan reports it; treat it as in range
                recorded = micros
            if recorded >= micros:
                hi = mid
            else:
                lo = row[0] + 1
        return lo

    def _scan(self, first: int, last: int, *, full: bool) -> None:
        """The streaming loop: every position in [first, last], one page at a time."""
        report = self.report
        checks = self.chain_check
        chains = checks.chains
        by_fp = self.decoder.by_fingerprint
        sha256 = hashlib.sha256
        seal = hashlib.sha256() if full else None
        seal_at = self.seal_in.position if (self.seal_in and full) else None
        customer = self.scope.customer_id.encode() if self.scope.customer_id is not None else None
        tolerance = self.scope.tolerance
        topic = self.topic
        outcomes = self.outcomes
        intake = self.intake
        tree = self.tree
        collect = self.collect
        cases = self.references.cases
        references = self.references
        new_aggregates = 0
        latest = -(1 << 62)  # highest recorded time so far, µs
        latest_at = 0
        previous_position = first - 1
        total = max(0, last - first + 1)
        events = 0
        for page in self.store.pages(first - 1, last, self.page_size):
            checks.recall(page, first)
            for position, oid, version, topic_name, state in page:
                if position != previous_position + 1:
                    checks.gap(previous_position + 1, position - 1)
                previous_position = position
                if type(state) is not bytes:
                    state = bytes(state)
                if customer is not None and customer not in state:
                    continue
                digest = sha256(state).digest()
                if seal is not None:
                    if seal_at is not None and position > seal_at:  # the sealed position is gone
                        self._check_seal(seal.copy().hexdigest(), seal_at)
                        seal_at = None
                    seal.update(position.to_bytes(8, "big") + digest)
                    if position == seal_at:
                        self._check_seal(seal.copy().hexdigest(), position)
                        seal_at = None
                if tree is not None:
                    tree.add(position, digest, state)
                schema = by_fp.get(state[2:HEADER_SIZE])
                if schema is None or state[:2] != MAGIC:
                    checks.undecodable(position, oid, version, topic_name, state, "unknown schema fingerprint"
                                       if state[:2] == MAGIC else "no Avro single-object marker (C3 01)")
                    if topic is not None:
                        topic.match(position, None, state, digest, None, None)
                    continue
                name = schema.name
                try:
                    env = parse_envelope(state) if schema.fast else self.decoder.slow_envelope(name, state)
                except Exception as error:  # corrupt bytes raise many types
                    checks.undecodable(position, oid, version, topic_name, state, f"{type(error).__name__}: {error}")
                    if topic is not None:
                        topic.match(position, None, state, digest, name, None)
                    continue
                event_id, aggregate, env_version, case_id, env_customer, recorded, causation, prev, end = env
                if customer is not None and env_customer != customer:
                    continue
                events += 1
                if topic_name != schema.topic:
                    checks.type_mismatch(position, oid, version, topic_name, name, event_id)
                if env_version != version or aggregate.replace(b"-", b"") != oid:
                    checks.row_mismatch(position, oid, version, env_version, aggregate, name, event_id)
                # The aggregate chain, keyed by the row's identity (what the application loads).
                last_link = chains.pop(oid, None)  # put back last: the map is in order of recency
                if last_link is None:
                    new_aggregates += 1
                    if version != 1 or prev is not None:
                        checks.chain_start(position, oid, version, prev, digest, name, event_id)
                else:
                    last_version, last_hash, last_recorded = last_link
                    if version != last_version + 1:
                        checks.version_gap(position, oid, version, last_version, name, event_id)
                    elif prev != last_hash:
                        checks.chain_broken(position, oid, version, prev, last_hash, name, event_id)
                    if recorded < last_recorded - tolerance:
                        checks.backdated(position, oid, version, recorded, last_recorded, name, event_id)
                chains[oid] = (version, digest, recorded)
                if recorded < latest - COMMIT_TOLERANCE_US:
                    checks.recorded_out_of_order(position, oid, version, recorded, latest, latest_at, name, event_id)
                elif recorded > latest:
                    latest = recorded
                    latest_at = position
                if name in CASE_COUNTED:
                    entry = cases.get(case_id)
                    if entry is None:
                        entry = cases[case_id] = [0, 0, 0, 0]
                    if name == "ContactReceived":
                        entry[1] += 1
                    elif name == "MessageRegistered":
                        entry[2] += 1
                    elif name == "CaseLinked":
                        entry[0] += 1
                    else:
                        entry[3] = position
                if intake is not None and causation is not None and name in INTAKE_OUTCOMES:
                    intake.outcome(causation, position, name, state, end, schema.fast, event_id)
                if topic is not None:
                    topic.match(position, env_customer, state, digest, name, event_id, aggregate)
                if outcomes is not None:
                    outcomes.match(position, name, state)
                if collect is not None:
                    collect(position, name, state)
            checks.let_go()
            references.let_go()
            events_done = previous_position - first + 1
            if self.progress is not None:
                self.progress(events_done, total)
        if previous_position < last:
            checks.gap(previous_position + 1, last)
        report.events = events
        checks.aggregates += new_aggregates
        if seal is not None and last >= 1:
            report.seal = Seal(last, seal.hexdigest())
            if seal_at is not None:
                seal_past_end(report, seal_at, last)

    def _check_seal(self, digest: str, position: int) -> None:
        assert self.seal_in is not None
        check_seal(self.report, self.seal_in, digest, position)

    def _scan_outcomes_after(self, last: int, head: int) -> None:
        """Intake outcomes recorded after the time range still account for records inside it."""
        intake = self.intake
        assert intake is not None
        by_fp = self.decoder.by_fingerprint
        for page in self.store.pages(last, head, self.page_size):
            for position, _oid, _version, _topic, state in page:
                state = bytes(state)
                schema = by_fp.get(state[2:HEADER_SIZE])
                if schema is None or schema.name not in INTAKE_OUTCOMES:
                    continue
                try:
                    env = parse_envelope(state) if schema.fast else self.decoder.slow_envelope(schema.name, state)
                except Exception:
                    continue
                if env[6] is not None:
                    intake.outcome(env[6], position, schema.name, state, env[8], schema.fast, env[0])



def _locate_checkpoint_difference(ledger: CaseLedger, check: CheckpointCheck, report: AuditReport,
                                  page_size: int) -> None:
    """Name the first event whose leaf differs from the ledger's own tree, when that tree still matches."""
    from caseledger.ledger.transparency.tree import MerkleLog
    from caseledger.verify.rfc9162 import leaf_hash

    size = check.size
    try:
        tree = MerkleLog.of(ledger)
        if tree.size < size or tree.root_at(size) != check.checkpoint.root:
            report.notes.append("the ledger's own Merkle tree does not match the checkpoint either: "
                                "the damaged event cannot be located from it")
            return
    except LookupError as error:
        report.notes.append(f"the ledger's Merkle tree cannot locate the damage: {error}")
        return
    index, after = 0, 0
    while index < size:
        stored = tree.store.leaves(index, min(size, index + page_size))
        with store_snapshot(ledger) as store:
            page = next(iter(store.pages(after, 1 << 62, len(stored))), [])
        for (leaf, committed_at, committed), (position, _oid, _version, _topic, state) in zip(
                stored, [*page, *[(0, b"", 0, "", b"")] * (len(stored) - len(page))], strict=True):
            digest = leaf_hash(hashlib.sha256(bytes(state)).digest()) if position else b""
            if (committed_at, committed) != (position, digest):
                what = ("its event was altered" if committed_at == position else
                        f"the log now has position {position} there" if position else "the log ends before it")
                report.flag("checkpoint-mismatch", f"leaf {leaf} of the checkpoint is position {committed_at}: "
                            f"{what}", position=committed_at)
                return
            after = position
        index += len(stored)
        if not stored:
            return
