"""Which source a projection reads (the store or the Kafka events topic), and catching it up from it.

A projection that follows the store (the embedded default) is caught up before it is read, so
a reader sees what was just recorded; one that follows the events topic is read as it is.
:class:`ProjectionService` keeps projections up to date for ``caseledger run``.

The ledger is passed as a function that opens it (``ledger=…``): reading a projection that
follows the topic never opens the ledger.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.runtime.gc_pacing import NO_PACING, Pacing
from caseledger.projections.runner import (
    LIVE,
    TOUCH_EVERY_S,
    ProjectionRunner,
    RunStats,
    collecting_between_batches,
    read_status,
)
from caseledger.projections.sources import STORE, EventSource, StoreEventSource, kafka_source
from caseledger.projections.view_stores import open_views
from caseledger.projections.views import ViewStore

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.settings import KafkaSettings
    from caseledger.projections.base import Projection

KAFKA = "kafka"
SOURCE_KINDS = (STORE, KAFKA)
"""What ``--source`` accepts: the store's notification log, or the Kafka events topic."""

LedgerOpener = Callable[[], "CaseLedger"]

CATCH_UP_BATCH = 5000
"""Events applied per transaction when a view is caught up from the store."""

LONG_CATCH_UP = 100_000
"""Positions behind from which a catch-up holds the automatic garbage collections off (see the runner's rebuild)."""


def views_url(*, database: str | None, views: str | None = None) -> str:
    """The views database: ``views`` (``--views`` or CASELEDGER_VIEWS), else the ledger's own database."""
    from caseledger.ledger.settings import DEFAULT_DATABASE

    return views or database or DEFAULT_DATABASE


def open_source(kind: str, *, ledger: LedgerOpener, kafka: KafkaSettings | None = None,
                consumer: str = "confluent", shared: bool = False, partitions: list[int] | None = None) -> EventSource:
    """The store's notification log (``store``), or the Kafka events topic (``kafka``, configured by the root).

    ``shared``: a follower's topic, whose partitions the runners of the same projections split through
    Kafka's consumer group (one that dies, the others take over); ``partitions``: a fixed share instead.
    """
    if kind == STORE:
        return StoreEventSource(ledger())
    if kind == KAFKA:
        from caseledger.ledger.settings import KafkaSettings

        return kafka_source(kafka or KafkaSettings.resolve(), consumer=consumer, shared=shared, partitions=partitions)
    raise ConfigurationError(f"{kind!r} is not a projection source; use {' or '.join(SOURCE_KINDS)}")


def choose_source(views: ViewStore, projections: Sequence[Projection], source: str | None,
                  kafka: KafkaSettings | None) -> str:
    """The source kind to run ``projections`` from: ``source`` if given, else what they already
    follow, else kafka when Kafka is configured (``kafka`` is not None), else store."""
    if source:
        return source.strip().lower()
    follows = {p.name: st.source.split(":")[0] for p in projections for st in read_status(views, p.name, LIVE)}
    following = set(follows.values())
    if len(following) > 1:
        from caseledger.projections.registry import command_name

        groups = {kind: [command_name(p) for p in projections if follows.get(p.name) == kind] for kind in following}
        raise ConfigurationError(
            "these projections follow different sources ("
            + "; ".join(f"{kind}: {', '.join(names)}" for kind, names in sorted(groups.items()))
            + "); run them separately, e.g. "
            + " and ".join(f"`caseledger projections run {' '.join(names)}`" for _, names in sorted(groups.items()))
            + ", or give --source"
        )
    if following:
        return following.pop()
    return KAFKA if kafka is not None else STORE


FOLLOWED_WITHIN = timedelta(seconds=3 * TOUCH_EVERY_S)
"""A view whose follower said it was alive this recently is left to it by readers."""


def catch_up(views: ViewStore, projection: Projection, *, ledger: LedgerOpener) -> None:
    """Catch a projection up from the store, unless it follows the events topic or a live runner follows it.

    A reader (``caseledger serve``'s history, the CLI's reads) and a follower (``caseledger run``,
    ``projections run``) applying the same events to one view would each find the other had moved its
    positions and reload, batch after batch: a view a follower keeps is read as it is, as a view that
    follows the events topic is.
    """
    states = read_status(views, projection.name, LIVE)
    if states and (states[0].source != STORE or _followed(states[0].updated_at)):
        return
    opened = ledger()
    # The ledger's codec decodes as well as a new one, which would fingerprint every schema version again.
    runner = ProjectionRunner([projection], views, StoreEventSource(opened), codec=opened.codec,
                              batch_size=CATCH_UP_BATCH, idle_s=0, follower=False)
    runner.prepare()
    if runner.lag() < LONG_CATCH_UP:
        runner.run(until_caught_up=True)
        return
    # A view caught up over a full ledger is a batch job: its rows and events stay alive across batches, which
    # the automatic collections would traverse again and again (as a rebuild, collected between batches).
    with collecting_between_batches():
        runner.run(until_caught_up=True)


def _followed(updated_at: datetime | None) -> bool:
    if not isinstance(updated_at, datetime):
        return False
    if updated_at.tzinfo is None:
        updated_at = updated_at.replace(tzinfo=UTC)
    return -FOLLOWED_WITHIN < datetime.now(UTC) - updated_at < FOLLOWED_WITHIN  # a time ahead of ours: not trusted


class ProjectionService:
    """Projections (by default the built-ins), kept up to date from the source they follow until stopped."""

    def __init__(self, views: str, *, ledger: LedgerOpener, kafka: KafkaSettings | None, consumer: str,
                 projections: Sequence[Projection] | None = None) -> None:
        self.views = views
        self.ledger = ledger
        self.kafka = kafka
        self.consumer = consumer
        self.projections = list(projections) if projections is not None else None
        self.stats = RunStats()

    def run(
        self, stop: threading.Event, *, on_batch: Callable[[RunStats], None] | None = None, pacer: Pacing = NO_PACING
    ) -> RunStats:
        """Follow the source until ``stop`` is set; the views connection belongs to this thread."""
        from caseledger.projections.registry import load_projections

        projections = self.projections if self.projections is not None else load_projections(None)
        with open_views(self.views) as views:
            kind = choose_source(views, projections, None, self.kafka)
            source = open_source(kind, ledger=self.ledger, kafka=self.kafka, consumer=self.consumer, shared=True)
            try:
                runner = ProjectionRunner(projections, views, source)
                self.stats = runner.stats

                def report(_batch: Any) -> None:
                    if on_batch is not None:
                        on_batch(runner.stats)

                runner.run(stop, on_batch=report, pacer=pacer)
            finally:
                source.close()
        return self.stats
