"""The publisher: every event the ledger records goes to the events topic, in order, exactly once.

How exactly-once holds across crashes and restarts:

1. The publisher follows the store's notification log (a total order of every recorded event;
   inserts are serialized, so positions become visible in order).
2. It publishes with a *transactional* producer whose ``transactional.id`` is fixed per events
   topic. A batch of consecutive positions is one Kafka transaction: on the topic it appears
   whole or not at all (consumers read with ``isolation.level=read_committed``).
3. On start, ``init_transactions`` fences any previous publisher (a zombie cannot write after
   that) and aborts its unfinished transaction. The publisher then reads the ``position``
   header of the last committed record of every partition: since batches commit whole and
   in order, every position up to the highest one found is on the topic and none after it.
   It resumes from there. No checkpoint outside the topic can disagree with the topic.

Record layout (key, value, CloudEvents headers): :mod:`caseledger.ledger.kafka.events_record`.

Verdicts: the event that decides an intake record's outcome (its registration, traced resubmission,
collision, rejection or applied report) also yields the record's verdict
(:mod:`caseledger.ledger.intake.verdicts`), produced to the outcomes topic, keyed by the adapter's name, in
the same Kafka transaction as the event: a verdict is read committed exactly when its event is, and a
restarted publisher, resuming after the events topic's last position, never produces one twice. Without an
outcomes topic (created by ``caseledger topics create``) the publisher publishes events only, and says so.

Checkpoints: given the ledger's signing key (``signer``), the publisher also keeps the Merkle
tree: after each Kafka transaction it appends the batch's event hashes (which it computed for the
``ce_eventhash`` headers anyway — a separate appender would read every event a second time) and
signs a checkpoint at most every ``CASELEDGER_CHECKPOINT_INTERVAL`` seconds, and once more on stop.
After each batch (and once a second when idle) it publishes, in signing order, every stored
checkpoint whose last leaf is already on the events topic to the checkpoints topic (one partition;
key the origin, value the signed note, ``ce_sequence`` its tree size), so a reader never holds a
checkpoint of events it cannot read. It resumes after the tree size of the topic's last record.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.errors import BackendError, ConfigurationError, TreeMoved
from caseledger.ledger.intake.verdict_records import VERDICT_EVENTS, fields_of_bytes
from caseledger.ledger.intake.verdicts import VerdictCodec, verdict_headers
from caseledger.ledger.kafka.clients import DEFAULT_CLIENT, KAFKA_PYTHON, KafkaClient
from caseledger.ledger.kafka.events_record import (
    CONTENT_TYPE,
    ID,
    SEQUENCE,
    SOURCE,
    SPECVERSION,
    TYPE,
    event_record,
    last_position_in,
    source_for,
)
from caseledger.ledger.runtime.gc_pacing import NO_PACING, Pacing
from caseledger.ledger.settings import KafkaSettings
from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner
from caseledger.ledger.transparency.checkpoints import checkpoint_interval, sign_checkpoint
from caseledger.ledger.transparency.customer_map import event_customer
from caseledger.ledger.transparency.tree import MerkleLog
from caseledger.ledger.transparency.witnesses import WitnessSubmitter

log = logging.getLogger("caseledger.publisher")

# At most one transaction begins per interval while the store's log trickles in. A commit costs
# the broker 3-6 ms of CPU (measured on Apache Kafka 4.3, six partitions), so at one per worker
# batch (50-100/s at 1,000 contacts/s) the broker took half a core of two; 20/s costs 0.1 core
# and adds at most 50 ms before an event is on the topic.
TRANSACTION_INTERVAL_S = 0.05
CHECKPOINT_POLL_S = 1.0
"""When idle, how often the publisher looks for checkpoints to publish."""
CHECKPOINT_TYPE = b"caseledger.checkpoint"


@dataclass
class PublisherStats:
    published: int = 0
    verdicts: int = 0
    batches: int = 0
    checkpoints: int = 0
    position: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        rate = self.published / max(time.monotonic() - self.started, 1e-9)
        return f"{self.published} events published ({rate:.0f}/s), at position {self.position}"


class KafkaEventPublisher:
    """Publishes the store's notification log to the events topic, in order, exactly once."""

    def __init__(
        self,
        ledger: CaseLedger,
        settings: KafkaSettings,
        *,
        batch_size: int = 1000,
        idle_sleep_s: float = 0.01,  # an idle look at the store is one cheap query; latency matters more
        transaction_interval_s: float = TRANSACTION_INTERVAL_S,
        producer: str = DEFAULT_CLIENT,
        signer: CheckpointSigner | None = None,
        checkpoint_interval_s: float | None = None,
    ) -> None:
        self._kafka = KafkaClient(producer, "producer")
        self.signer = signer
        self.checkpoint_interval_s = checkpoint_interval(
            checkpoint_interval_s, given=ledger.settings.transparency.checkpoint_interval)
        self.producer = self._kafka.name
        self.ledger = ledger
        self.settings = settings
        self.batch_size = batch_size
        self.idle_sleep_s = idle_sleep_s
        if not 0 <= transaction_interval_s <= 10:
            raise ConfigurationError(
                f"transaction interval {transaction_interval_s * 1000:g} ms: give 0 to 10000 ms"
            )
        self.transaction_interval_s = transaction_interval_s
        self.stats = PublisherStats()
        self.transactional_id = f"caseledger-publisher-{settings.events_topic}"
        self._merkle: Any = None
        self._verdicts = VerdictCodec()
        # Each checkpoint signed goes to the configured witnesses, on the submitter's own thread.
        self.witnesses = WitnessSubmitter.configured(ledger) if signer is not None else None

    def outcomes_topic_exists(self) -> bool:
        """Whether the outcomes topic exists (verdicts are published only then)."""
        reader = KafkaClient(KAFKA_PYTHON, "consumer").open_reader(
            self.settings, topic=self.settings.outcomes_topic, group="publisher", fetch_wait_ms=500)
        with reader:
            return bool(reader.partitions())

    def _verdict(self, producer: Any, notification: Any, data: bytes, source: bytes) -> None:
        """Produce the verdict ``notification``'s event decides, if it decides one, in the open transaction."""
        name = notification.topic.rsplit(".", 1)[-1]
        if name not in VERDICT_EVENTS:  # most events: nothing read
            return
        fields = fields_of_bytes(self.ledger.codec, name, data, notification.id)
        if fields is None:
            return
        producer.send(self.settings.outcomes_topic, key=fields["adapter"].encode(),
                      value=self._verdicts.encode_fields(fields), headers=verdict_headers(fields, source))
        self.stats.verdicts += 1

    def last_published_position(self) -> int:
        """The highest store position on the events topic (committed records only); 0 when empty."""
        # Read with kafka-python whichever client publishes: a small read, once per start.
        reader = KafkaClient(KAFKA_PYTHON, "consumer").open_reader(
            self.settings, topic=self.settings.events_topic, group="publisher", fetch_wait_ms=500)
        with reader:
            partitions = reader.partitions()
            if not partitions:
                raise BackendError(
                    f"events topic {self.settings.events_topic} does not exist; create it with "
                    "`caseledger topics create`"
                )
            ends = reader.end_offsets(partitions)
            return max(last_position_in(reader, partition, ends[partition]) for partition in partitions)

    def last_published_checkpoint(self) -> int:
        """The tree size of the checkpoints topic's last committed record; -1 when empty or missing."""
        reader = KafkaClient(KAFKA_PYTHON, "consumer").open_reader(
            self.settings, topic=self.settings.checkpoints_topic, group="publisher", fetch_wait_ms=500)
        with reader:
            if 0 not in reader.partitions():
                return -1
            end = reader.end_offsets([0])[0]
            return last_position_in(reader, 0, end) if end else -1

    def _publish_checkpoints(self, producer: Any, position: int, after_size: int, source: bytes) -> int:
        """Publish the stored checkpoints after ``after_size`` whose events are on the topic; the new last size."""
        if self._merkle is None:
            self._merkle = self.ledger.storage.merkle()
        ready = [c for c in self._merkle.checkpoints(after_size=after_size) if c.last_position <= position]
        if not ready:
            return after_size
        producer.begin_transaction()
        for checkpoint in ready:
            headers = [SPECVERSION, (ID, f"{checkpoint.tree_size}-{checkpoint.key_id}".encode()), (SOURCE, source),
                       (TYPE, CHECKPOINT_TYPE), (SEQUENCE, str(checkpoint.tree_size).encode()),
                       (CONTENT_TYPE, b"text/plain; charset=utf-8")]
            producer.send(self.settings.checkpoints_topic, key=self.ledger.settings.origin.encode(),
                          value=checkpoint.note.encode(), headers=headers)
        producer.commit_transaction()
        self.stats.checkpoints += len(ready)
        return ready[-1].tree_size

    def _feed_tree(self, tree: MerkleLog, before: int, entries: list[tuple[int, bytes]],
                   customers: list[bytes]) -> None:
        """Append a published batch to the tree, with each event's customer for the customer map (``before``:
        the position published before it)."""
        if tree.last_position < before:  # behind (a key newly configured, another appender's crash): read
            tree.catch_up(self.ledger)
            return
        try:
            fresh = [k for k, e in enumerate(entries) if e[0] > tree.last_position]
            tree.append([entries[k] for k in fresh], [customers[k] for k in fresh])
        except TreeMoved:  # `audit checkpoint` appended meanwhile
            tree.reload()
            tree.catch_up(self.ledger)

    def run(
        self, stop: threading.Event, *, on_batch: Callable[[PublisherStats], None] | None = None,
        pacer: Pacing = NO_PACING,
    ) -> PublisherStats:
        """Publish until ``stop`` is set, reporting each batch to the process's ``pacer``. Safe to kill at any moment."""
        producer = self._kafka.open_transactional_writer(self.settings, transactional_id=self.transactional_id)
        with producer, self.witnesses or contextlib.nullcontext():
            producer.init_transactions()  # fences any earlier publisher and aborts its open batch
            position = self.last_published_position()
            self.stats.position = position
            log.info("publisher resuming after position %s (%s producer)", position, self.producer)
            source = source_for(self.ledger.settings.origin)
            verdicts = self.outcomes_topic_exists()
            if not verdicts:
                log.warning("outcomes topic %s does not exist: no verdicts are published (create it with "
                            "`caseledger topics create`)", self.settings.outcomes_topic)
            checkpoint_size = self.last_published_checkpoint()
            checkpoints_looked = -math.inf
            tree = MerkleLog.of(self.ledger) if self.signer is not None else None
            if tree is not None:
                tree.catch_up(self.ledger, limit=max(0, position - tree.last_position))
            signed_size, signed_at = -1, -math.inf
            began = -math.inf
            full = False
            while not stop.is_set():
                # Pacing: a transaction costs the broker milliseconds of CPU (its markers go to every
                # partition it wrote), whatever its size. Under a trickle, gather what arrives for
                # up to ``transaction_interval_s`` after the last one began; with a backlog, go on.
                pause = began + self.transaction_interval_s - time.monotonic()
                if pause > 0 and not full:
                    stop.wait(pause)
                    continue
                notifications = self.ledger.recorder.select_notifications(start=position + 1, limit=self.batch_size)
                if not notifications:
                    if (tree is not None and tree.size != signed_size
                            and time.monotonic() - signed_at >= self.checkpoint_interval_s):
                        assert self.signer is not None  # the last batch, signed once its interval is up
                        sign_checkpoint(self.ledger, self.signer, tree=tree, catch_up=False, witnesses=self.witnesses)
                        signed_size, signed_at = tree.size, time.monotonic()
                        checkpoints_looked = -math.inf
                    if time.monotonic() - checkpoints_looked >= CHECKPOINT_POLL_S:
                        checkpoint_size = self._publish_checkpoints(producer, position, checkpoint_size, source)
                        checkpoints_looked = time.monotonic()
                    stop.wait(self.idle_sleep_s)
                    continue
                began, full = time.monotonic(), len(notifications) == self.batch_size
                producer.begin_transaction()
                hashes = []
                customers = [event_customer(n.state) for n in notifications] if tree is not None else []
                for notification in notifications:
                    key, value, headers = event_record(self.ledger.codec, notification, source=source)
                    producer.send(self.settings.events_topic, key=key, value=value, headers=headers)
                    hashes.append((notification.id, headers[-1][1]))
                    if verdicts:
                        self._verdict(producer, notification, value, source)
                producer.commit_transaction()
                if tree is not None:
                    self._feed_tree(tree, position, [(p, bytes.fromhex(h.decode())) for p, h in hashes], customers)
                    if tree.size != signed_size and time.monotonic() - signed_at >= self.checkpoint_interval_s:
                        assert self.signer is not None
                        sign_checkpoint(self.ledger, self.signer, tree=tree, catch_up=False, witnesses=self.witnesses)
                        signed_size, signed_at = tree.size, time.monotonic()
                        checkpoints_looked = -math.inf  # publish it now
                position = notifications[-1].id
                self.stats.position = position
                self.stats.published += len(notifications)
                self.stats.batches += 1
                if time.monotonic() - checkpoints_looked >= CHECKPOINT_POLL_S / 4:
                    checkpoint_size = self._publish_checkpoints(producer, position, checkpoint_size, source)
                    checkpoints_looked = time.monotonic()
                if on_batch:
                    on_batch(self.stats)
                pacer.after_batch()
            if tree is not None and self.signer is not None and tree.size != signed_size:
                # once more on stop
                sign_checkpoint(self.ledger, self.signer, tree=tree, catch_up=False, witnesses=self.witnesses)
                self._publish_checkpoints(producer, position, checkpoint_size, source)
        return self.stats
