"""The outcomes topic against the store: each verdict once, with its event; none without one.

The publisher produces one verdict for each event that decides an intake record's outcome, in the Kafka
transaction of the event (:mod:`caseledger.ledger.intake.verdicts`). With ``--kafka`` the audit reads the
whole outcomes topic (read committed), then, as the scan streams past the store's events, derives each
event's verdict as the publisher does and takes its record: ``outcome-missing`` when the topic lacks it
although it holds later positions (``outcome-unpublished``, a warning, when the publisher is behind, and
nothing when the topic's retention already deleted the records of its time), ``outcome-duplicate`` when it
is there twice, ``outcome-differs`` when the record says another thing than its event (adapter, intake
record, outcome, reference …), ``outcome-key`` when it is not keyed by its adapter on that key's partition.
A record left over names an event the store does not decide a verdict with: ``outcome-extra`` — a verdict
without its event. Ledger-wide audits only (a customer's or a time range's events decide only some verdicts).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from caseledger.ledger.audit.report import WARNING, AuditReport, AuditScope
from caseledger.ledger.errors import SchemaError
from caseledger.ledger.intake.verdict_records import VERDICT_EVENTS, fields_of_bytes
from caseledger.ledger.intake.verdicts import VerdictCodec, fields_of_verdict

if TYPE_CHECKING:
    from caseledger.ledger.avro.codec import AvroEventCodec

__all__ = ["OutcomesTopicCheck"]

STALL_S = 60.0


@dataclass(slots=True)
class _Verdict:
    partition: int
    offset: int
    key: bytes | None
    fields: dict[str, Any]


def _record(partition: int, offset: int, key: bytes | None, value: bytes | None, _headers: Any, _ts: int
            ) -> tuple[int, int, bytes | None, bytes | None]:
    return partition, offset, key, value


class OutcomesTopicCheck:
    """Reads the outcomes topic whole, then matches each store event that decides a verdict with its record."""

    def __init__(self, scope: AuditScope, report: AuditReport, codec: AvroEventCodec) -> None:
        assert scope.kafka is not None and scope.readers is not None
        self.report = report
        self.codec = codec
        self.topic = scope.kafka.outcomes_topic
        self.by_event: dict[str, list[_Verdict]] = {}
        self.published_head = 0  # the highest position a verdict on the topic names
        self.retained_from: dict[int, int] = {}  # partition → lowest position kept, where retention deleted some
        self.records = 0
        self.exists = self._read(scope)

    def _read(self, scope: AuditScope) -> bool:
        assert scope.kafka is not None and scope.readers is not None
        verdicts = VerdictCodec()
        self.key_hash = scope.readers.key_hash
        with scope.readers.open_reader(scope.kafka, topic=self.topic, group="audit", fetch_wait_ms=100) as reader:
            partitions = reader.partitions()
            if not partitions:
                self.report.flag("outcome-topic", f"the outcomes topic {self.topic} does not exist: no verdict was "
                                 "published (create it with `caseledger topics create`)", severity=WARNING,
                                 topic=self.topic)
                return False
            self.partitions = len(partitions)
            ends = reader.end_offsets(partitions)
            trimmed = {p for p, at in reader.beginning_offsets(partitions).items() if at > 0}
            reader.assign(dict.fromkeys(partitions, 0))
            stalled = time.monotonic() + STALL_S
            while any(at < ends[p] for p, at in reader.positions().items()):
                batch = reader.fetch(5000, 0.5, _record)
                if batch:
                    stalled = time.monotonic() + STALL_S
                elif time.monotonic() > stalled:
                    self.report.flag("outcome-topic", f"the outcomes topic {self.topic} could not be read to its end "
                                     f"in {STALL_S:g} s", topic=self.topic)
                    break
                for partition, offset, key, value in batch:
                    if offset >= ends[partition]:
                        continue
                    self.records += 1
                    try:
                        fields = fields_of_verdict(verdicts.decode(value or b""))
                    except SchemaError as error:
                        self.report.flag("outcome-extra", f"a record that is not a verdict: {error}", topic=self.topic,
                                         partition=partition, offset=offset)
                        continue
                    self.by_event.setdefault(fields["event_id"], []).append(_Verdict(partition, offset, key, fields))
                    self.published_head = max(self.published_head, fields["position"])
                    if partition in trimmed:
                        self.retained_from[partition] = min(self.retained_from.get(partition, fields["position"]),
                                                            fields["position"])
        self.report.checks.append("outcomes topic")
        return True

    def match(self, position: int, name: str, state: bytes) -> None:
        """The store event at ``position``: its verdict, if it decides one, is on the topic once, as derived."""
        if not self.exists or name not in VERDICT_EVENTS:
            return
        expected = fields_of_bytes(self.codec, name, state, position)
        if expected is None:
            return
        where: dict[str, Any] = {"position": position, "event_type": name, "event_id": expected["event_id"],
                                 "topic": self.topic}
        found = self.by_event.pop(expected["event_id"], [])
        if not found:
            partition = self.key_hash(expected["adapter"].encode()) % self.partitions
            if position < self.retained_from.get(partition, 0):
                return  # its time is past the topic's retention
            if position > self.published_head:
                self.report.flag("outcome-unpublished", "its verdict is not on the outcomes topic yet (the topic's "
                                 f"verdicts reach position {self.published_head}): the publisher is behind",
                                 severity=WARNING, **where)
            else:
                self.report.flag("outcome-missing", "the event decides an intake record's verdict, which the "
                                 "outcomes topic lacks although it holds later ones: its adapter was never told",
                                 **where)
            return
        if len(found) > 1:
            self.report.flag("outcome-duplicate", f"its verdict is on the outcomes topic {len(found)} times (offsets "
                             + ", ".join(f"{v.partition}/{v.offset}" for v in found) + ")", **where)
        record = found[0]
        at = {**where, "partition": record.partition, "offset": record.offset}
        differs = sorted(k for k, v in expected.items() if record.fields.get(k) != v)
        if differs:
            self.report.flag("outcome-differs", f"the verdict on the topic differs from its event in {', '.join(differs)}",
                             **at)
        key = expected["adapter"].encode()
        if record.key != key or record.partition != self.key_hash(key) % self.partitions:
            self.report.flag("outcome-key", "the verdict is not keyed by its adapter's name on that key's partition: "
                             "the adapter reading its own partition never sees it", **at)

    def finish(self, first: int, last: int) -> None:
        """Verdicts left over in ``[first, last]`` name no event of the store that decides one."""
        for found in self.by_event.values():
            for record in found:
                position = record.fields["position"]
                if first <= position <= last:
                    self.report.flag("outcome-extra", "a verdict on the outcomes topic whose event the store does not "
                                     "hold (or does not decide it): a verdict without its event", position=position,
                                     event_id=record.fields["event_id"], topic=self.topic, partition=record.partition,
                                     offset=record.offset)
        self.by_event.clear()
