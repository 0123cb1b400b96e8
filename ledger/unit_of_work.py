"""Units of work and the aggregate cache: many commands saved in one transaction, aggregates kept between them."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Tracking

from caseledger.ledger.avro.codec import event_hash
from caseledger.ledger.domain.directory import Customer
from caseledger.ledger.domain.events import LedgerEvent


class UnitOfWork:
    """The events of several commands, saved in one transaction; their aggregates, cached."""

    def __init__(self) -> None:
        self.aggregates: dict[UUID, Any] = {}
        self.events: list[LedgerEvent] = []
        self.saved = False
        self._by_aggregate: dict[UUID, list[LedgerEvent]] = {}
        self.absent: set[UUID] = set()  # ids a prefetch found not stored (saves one query each)
        # Added while the unit runs, saved with its events: tracking records, and statements of the
        # tables beside the events (e.g. the answers of idempotency keys) — all in one transaction.
        self.trackings: list[Tracking] = []
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def collect(self, *aggregates: Aggregate | None) -> None:
        for aggregate in aggregates:
            if aggregate is None:
                continue
            new = aggregate.collect_events()
            self.events.extend(new)  # type: ignore[arg-type]
            self._by_aggregate.setdefault(aggregate.id, []).extend(new)  # type: ignore[arg-type]
            self.aggregates[aggregate.id] = aggregate

    def discard_uncollected(self) -> None:
        """Forget cached aggregates a failed command changed; they are rebuilt on next use."""
        for aggregate_id, aggregate in list(self.aggregates.items()):
            if aggregate._pending_events:
                del self.aggregates[aggregate_id]

    def replay(self, aggregate_id: UUID, aggregate: Any | None) -> Any | None:
        """``aggregate`` (as stored, or None) with this unit's collected events applied."""
        mine = self._by_aggregate.get(aggregate_id, [])
        for event in mine:
            aggregate = event.mutate(aggregate)
        if mine and aggregate is not None:
            aggregate.chain_head = event_hash(vars(mine[-1])["_encoded"])
        return aggregate


class AggregateCache:
    """Aggregates as this process last saved or loaded them, kept between units of work (LRU).

    A unit of work *takes* an aggregate out and puts it back only once its transaction
    committed, so a failed unit never leaves a half-changed aggregate here. What another
    writer stored meanwhile is read on every take (only the events after the cached version:
    a customer with years of cases is not replayed from its first event for each contact);
    a write that races the read fails on the store's version check, as without the cache.

    A cached case or claim holds its customer's data opened, and an erasure is recorded on the
    customer, not on them: the ledger drops every aggregate of a customer erased by any process
    before its next unit of work (:meth:`forget_customers`, told by
    :class:`~caseledger.ledger.privacy.erasure_watch.ErasureWatch`).
    """

    def __init__(self, maxsize: int, *, skip: tuple[type, ...] = ()) -> None:
        if maxsize < 1:
            raise ValueError("an aggregate cache holds at least one aggregate")
        self.maxsize = maxsize
        self.skip = skip  # aggregates of these types are never kept
        self._items: OrderedDict[UUID, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def take(self, aggregate_id: UUID) -> Any | None:
        return self._items.pop(aggregate_id, None)

    def keep(self, aggregates: Iterable[Any], *, not_of: Collection[UUID] = ()) -> None:
        """Keep these aggregates, but none of the customers ``not_of`` (their Customer aggregates' ids)."""
        items, skip = self._items, self.skip
        for aggregate in aggregates:
            if skip and isinstance(aggregate, skip):
                continue
            if not_of and customer_of(aggregate) in not_of:
                items.pop(aggregate.id, None)
                continue
            items[aggregate.id] = aggregate
            items.move_to_end(aggregate.id)
        while len(items) > self.maxsize:
            items.popitem(last=False)

    def forget_customers(self, customers: Collection[UUID]) -> int:
        """Drop every aggregate of these customers (their Customer aggregates' ids); how many were dropped."""
        if not customers:
            return 0
        gone = [i for i, aggregate in self._items.items() if customer_of(aggregate) in customers]
        for aggregate_id in gone:
            del self._items[aggregate_id]
        return len(gone)


def customer_of(aggregate: Any) -> UUID | None:
    """The id of the Customer aggregate whose data ``aggregate`` may hold (None: a rejection, no customer's)."""
    customer_id = getattr(aggregate, "customer_id", None)
    return Customer.id_for(customer_id) if customer_id else None
