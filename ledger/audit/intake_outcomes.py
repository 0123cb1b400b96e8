"""Intake accounting: every intake record ends as exactly one outcome in the ledger.

Each intake record (topic, partition, offset) has one *outcome* event whose ``causation_id`` is
``IntakeSource.event_id``: ``ContactReceived``, ``ResubmissionTraced``, ``MessageIdCollided``, ``IntakeRejected``,
``MessageDelivered`` or ``MessageRead``. The worker applies a partition in offset order, so the
outcomes of a partition appear in the store in offset order; verify matches them as they stream
past against a window of the next expected offsets of every partition (``INTAKE_WINDOW``). Every
offset below the partition's tracking position (``intake/<topic>/<partition>``) must have exactly
one outcome; offsets from the tracking position to the topic's end (with ``--kafka``) are listed
as not consumed yet (warnings).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from caseledger.ledger.audit.report import WARNING, AuditReport, AuditScope
from caseledger.ledger.avro.envelope import read_bytes, read_long
from caseledger.ledger.domain.directory import IntakeSource
from caseledger.ledger.errors import BackendError

if TYPE_CHECKING:
    from caseledger.ledger.avro.codec import AvroEventCodec
    from caseledger.ledger.kafka.ports import TopicReaders
    from caseledger.ledger.settings import KafkaSettings

__all__ = ["INTAKE_OUTCOMES", "INTAKE_WINDOW", "IntakeAccounting"]

INTAKE_OUTCOMES = frozenset(
    {"ContactReceived", "ResubmissionTraced", "MessageIdCollided", "IntakeRejected", "MessageDelivered",
     "MessageRead"}
)
"""The event types that are the outcome of one intake record (one per record)."""

INTAKE_WINDOW = 5000
"""Offsets of each intake partition looked ahead (and kept behind) when matching outcomes."""


_SOURCE_FIRST = frozenset({"ResubmissionTraced", "MessageIdCollided"})
"""Outcomes whose first field after the envelope is the intake record they follow from (``source``)."""


def _source(text: str) -> tuple[str, int, int]:
    """``topic/partition/offset`` (as ``IntakeSource`` prints it) → its parts."""
    rest, _, offset = text.rpartition("/")
    topic, _, partition = rest.rpartition("/")
    return topic, int(partition), int(offset)



def _source_of(codec: AvroEventCodec, name: str, data: bytes, end: int, fast: bool) -> tuple[str, int, int] | None:
    """The intake record an IntakeRejected, ResubmissionTraced or MessageIdCollided names."""
    try:
        if fast and name == "IntakeRejected":
            topic_bytes, p = read_bytes(data, end)
            partition, p = read_long(data, p)
            offset, _ = read_long(data, p)
            return topic_bytes.decode(), partition, offset
        if fast and name in _SOURCE_FIRST:
            return _source(read_bytes(data, end)[0].decode())
        record = codec.decode_record(name, data)
        if name == "IntakeRejected":
            return str(record["source_topic"]), int(record["source_partition"]), int(record["source_offset"])
        if name in _SOURCE_FIRST:
            return _source(str(record["source"]))
    except (ValueError, IndexError, UnicodeDecodeError, KeyError):
        return None
    return None


@dataclass
class _IntakePartition:
    partition: int
    start: int  # first offset accounted
    stop: int  # offsets below this are accounted
    tracked: int  # the worker's tracking position: offsets below it were consumed
    retained_from: int = 0  # the topic's first offset: those below were deleted by its retention
    next: int = 0  # lowest offset without a matched outcome yet
    ahead: int = 0  # offsets [next, ahead) are in the window
    recent: deque[bytes] = field(default_factory=deque)


class IntakeAccounting:
    """Matches intake outcomes, as they stream past in position order, with intake offsets."""

    def __init__(self, report: AuditReport, codec: AvroEventCodec, topic: str,
                 books: dict[int, _IntakePartition]) -> None:
        self.report = report
        self.codec = codec
        self.topic = topic
        self.books = books
        self.ahead: dict[bytes, tuple[int, int]] = {}  # causation → (partition, offset) expected
        self.done: dict[bytes, tuple[int, int, int]] = {}  # causation → (partition, offset, position)
        self.skipped: dict[bytes, tuple[int, int]] = {}  # passed over: no outcome seen (yet)
        self.outside: set[bytes] = set()  # offsets just before the range (time range)
        for book in books.values():
            book.next = book.ahead = book.start
            self._refill(book)
            for offset in range(max(0, book.start - INTAKE_WINDOW), book.start):
                self.outside.add(self._id(book.partition, offset))

    @classmethod
    def start(cls, scope: AuditScope, report: AuditReport, codec: AvroEventCodec,
              tracking: dict[str, int]) -> IntakeAccounting | None:
        """The accounting of the intake topic (``--kafka``) or of the tracked one; None when nothing came in."""
        prefix = "intake/"
        tracked: dict[str, dict[int, int]] = {}
        for name, offset in tracking.items():
            if name.startswith(prefix):
                topic, _, partition = name[len(prefix):].rpartition("/")
                if partition.isdigit():
                    tracked.setdefault(topic, {})[int(partition)] = offset
        kafka = scope.kafka
        if kafka is None:
            if not tracked:
                return None
            if len(tracked) > 1:
                report.notes.append("intake tracking records of several topics: "
                                    + ", ".join(sorted(tracked)) + "; accounting the first (pass --kafka "
                                    "to choose the configured one)")
            topic = sorted(tracked)[0]
            positions = tracked[topic]
            books = {p: _IntakePartition(p, 0, n, n) for p, n in sorted(positions.items())}
            report.notes.append(f"intake accounting from the tracking records of {topic} only: offsets "
                                "not consumed yet are listed with --kafka")
            return cls(report, codec, topic, books)
        topic = kafka.intake_topic
        positions = tracked.get(topic, {})
        assert scope.readers is not None
        ends, starts, stops, retained = _intake_offsets(scope.readers, kafka, scope.since, scope.until)
        past = {p: n for p, n in retained.items() if n > 0}
        if past:
            report.notes.append(
                f"intake topic {topic}: offsets below " + ", ".join(f"{n} (partition {p})" for p, n in sorted(past.items()))
                + " are past its retention (deleted by Kafka after they were applied); they are accounted by the "
                "ledger's outcome events alone")
        books = {}
        for p, end in sorted(ends.items()):
            # Offsets the topic no longer has (past its retention) are still accounted: an outcome names
            # its record by topic, partition and offset, not by its bytes.
            first = starts.get(p, 0) if scope.since is not None else 0
            books[p] = _IntakePartition(p, first, stops.get(p, end), positions.get(p, 0), retained_from=retained[p])
            if positions.get(p, 0) > end:
                report.flag("intake-tracking", f"the tracking position {positions[p]} is beyond the topic's end "
                            f"{end}: the intake topic was recreated or truncated", topic=topic, partition=p)
        for p in sorted(set(positions) - set(ends)):
            report.flag("intake-tracking", f"tracking record for partition {p}, which the intake topic does not "
                        "have", topic=topic, partition=p)
        return cls(report, codec, topic, books)

    def _id(self, partition: int, offset: int) -> bytes:
        return str(IntakeSource(self.topic, partition, offset).event_id).encode()

    def _refill(self, book: _IntakePartition) -> None:
        until = min(book.stop, book.next + INTAKE_WINDOW)
        while book.ahead < until:
            self.ahead[self._id(book.partition, book.ahead)] = (book.partition, book.ahead)
            book.ahead += 1

    def outcome(self, causation: bytes, position: int, name: str, state: bytes, end: int, fast: bool,
                event_id: bytes) -> None:
        """An outcome event streams past."""
        report = self.report
        report.intake_outcomes += 1
        hit = self.ahead.pop(causation, None)
        where: dict[str, Any] = {"position": position, "event_type": name, "event_id": event_id.decode(),
                                 "topic": self.topic}
        if hit is not None:
            partition, offset = hit
            book = self.books[partition]
            for skipped in range(book.next, offset):
                key = self._id(partition, skipped)
                self.ahead.pop(key, None)
                self.skipped[key] = (partition, skipped)
            book.next = offset + 1
            self.done[causation] = (partition, offset, position)
            book.recent.append(causation)
            if len(book.recent) > INTAKE_WINDOW:
                self.done.pop(book.recent.popleft(), None)
            self._refill(book)
            if offset >= book.tracked:
                report.flag("intake-beyond-tracking", f"outcome of offset {offset}, but the tracking position is "
                            f"{book.tracked}: the worker's position was rolled back or the outcome forged",
                            partition=partition, offset=offset, **where)
            self._check_source(name, state, end, fast, partition, offset, where)
            return
        first = self.done.get(causation)
        if first is not None:
            partition, offset, at = first
            report.flag("intake-doubled", f"a second outcome of intake offset {offset} (the first is at position "
                        f"{at}): recorded twice, or forged", partition=partition, offset=offset, **where)
            return
        late = self.skipped.pop(causation, None)
        if late is not None:
            partition, offset = late
            report.flag("intake-out-of-order", f"outcome of offset {offset} recorded after outcomes of later "
                        "offsets of its partition: the worker applies offsets in order, so it was moved or forged",
                        partition=partition, offset=offset, **where)
            return
        if causation in self.outside:
            return
        source = _source_of(self.codec, name, state, end, fast)
        if source is not None:
            topic, partition, offset = source
            if topic != self.topic:
                report.flag("intake-unknown", f"outcome of a record of another intake topic ({topic}/{partition}/"
                            f"{offset})", severity=WARNING, **where)
                return
            known = self.books.get(partition)
            if known is not None and offset < known.start:
                return  # a record before the time range
            report.flag("intake-unknown", f"outcome of intake offset {offset}, which is not on the intake topic "
                        "(or lies beyond the accounting window): forged, or the topic was truncated",
                        partition=partition, offset=offset, **where)
            return
        report.flag("intake-unknown", f"causation id {causation.decode(errors='replace')} matches no intake offset "
                    f"expected next (up to {INTAKE_WINDOW} ahead per partition): an outcome of no intake record, "
                    "or of one whose outcomes were reordered", **where)

    def _check_source(self, name: str, state: bytes, end: int, fast: bool, partition: int, offset: int,
                      where: dict[str, Any]) -> None:
        if name != "IntakeRejected" and name not in _SOURCE_FIRST:
            return
        source = _source_of(self.codec, name, state, end, fast)
        if source != (self.topic, partition, offset):
            self.report.flag("intake-source", f"names intake record {source} but its causation id is that of "
                             f"{self.topic}/{partition}/{offset}", partition=partition, offset=offset, **where)

    def finish(self) -> None:
        """Offsets without an outcome: consumed (errors) or not yet (warnings)."""
        report = self.report
        missing: dict[int, list[int]] = {}
        for partition, offset in self.skipped.values():
            missing.setdefault(partition, []).append(offset)
        for book in self.books.values():
            report.intake_offsets += max(0, book.stop - book.start)
            missing.setdefault(book.partition, []).extend(range(book.next, book.stop))
        for partition, offsets in sorted(missing.items()):
            book = self.books[partition]
            consumed = [o for o in offsets if o < book.tracked]
            waiting = [o for o in offsets if o >= book.tracked]
            for first, last in _ranges(sorted(consumed)):
                span = f"offset {first}" if first == last else f"offsets {first}..{last}"
                gone = " (past the topic's retention: the record itself is gone too)" if last < book.retained_from else ""
                self.report.flag("intake-no-outcome", f"{span} consumed (tracking position {book.tracked}) but "
                                 f"without any outcome in the ledger{gone}: the record's events were deleted",
                                 topic=self.topic, partition=partition, offset=first)
            for first, last in _ranges(sorted(waiting)):
                span = f"offset {first}" if first == last else f"offsets {first}..{last}"
                if first < book.retained_from:
                    self.report.flag("intake-lost-to-retention", f"{span} deleted by the topic's retention before the "
                                     f"intake worker consumed them (tracking position {book.tracked}): never "
                                     "applied, and gone — the retention is shorter than the worker's lag",
                                     topic=self.topic, partition=partition, offset=first)
                    continue
                self.report.flag("intake-unconsumed", f"{span} not consumed yet (tracking position "
                                 f"{book.tracked}): the intake worker is behind or stopped", severity=WARNING,
                                 topic=self.topic, partition=partition, offset=first)


def _ranges(values: list[int]) -> Iterator[tuple[int, int]]:
    """Consecutive runs of sorted integers as (first, last)."""
    start = previous = None
    for value in values:
        if start is None:
            start = previous = value
        elif value == previous + 1:  # type: ignore[operator]
            previous = value
        else:
            yield start, previous  # type: ignore[misc]
            start = previous = value
    if start is not None:
        yield start, previous  # type: ignore[misc]


def _intake_offsets(
    readers: TopicReaders, settings: KafkaSettings, since: datetime | None, until: datetime | None
) -> tuple[dict[int, int], dict[int, int], dict[int, int], dict[int, int]]:
    """(end offsets, first offsets in range, stop offsets in range, first offsets kept) of every intake partition."""
    with readers.open_reader(settings, topic=settings.intake_topic, group="audit") as reader:
        partitions = reader.partitions()
        if not partitions:
            raise BackendError(f"intake topic {settings.intake_topic} does not exist on {settings.bootstrap_servers}")
        ends = reader.end_offsets(partitions)
        starts = reader.beginning_offsets(partitions)
        retained = dict(starts)
        stops = dict(ends)
        for bound, target in ((since, starts), (until, stops)):
            if bound is None:
                continue
            for partition, hit in reader.offsets_for_time(partitions, int(bound.timestamp() * 1000)).items():
                target[partition] = hit if hit is not None else ends[partition]
        return ends, starts, stops, retained
