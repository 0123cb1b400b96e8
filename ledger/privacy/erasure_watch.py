"""How a process learns of erasures made by another before it uses what it keeps in memory.

A process that keeps aggregates between units of work (the intake worker, the service's committer)
holds customers' personal data opened: a case's subject and items, a claim's identity. Another
process may erase that customer at any moment. Before each unit of work, the process reads the
``CustomerErased`` events recorded since its last look — the notification log from where it left,
by topic: two indexed queries, nothing when nobody was erased — and drops every aggregate of those
customers, so nothing opened before an erasure is used after it.

An erasure records its event *then* destroys the keys. In between (or for good, if the eraser
stopped there until ``tick`` finishes the job), the store still opens the customer's data: their
aggregates are read from the store as usual but not kept, until every key the event names is seen
destroyed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any
from uuid import UUID

from caseledger.ledger.domain.catalog import topic_of
from caseledger.ledger.store_ports import DataKeyStore, LedgerRecorder

__all__ = ["ErasureWatch"]

_PAGE = 500


class ErasureWatch:
    """The customers erased since this process last looked, and those whose keys are not destroyed yet."""

    def __init__(self, recorder: LedgerRecorder, keys: Callable[[], DataKeyStore],
                 decode: Callable[[Any], Any]) -> None:
        self.recorder = recorder
        self.keys = keys  # the key store, asked only while an erasure is pending
        self.decode = decode  # a stored CustomerErased as its event (the keys it names)
        self._topic = topic_of("CustomerErased")
        self._seen_upto: int | None = None
        self._pending: dict[UUID, set[str]] = {}  # Customer aggregate id → keys named but not yet seen destroyed

    @property
    def pending(self) -> Collection[UUID]:
        """Customers (their aggregates' ids) erased whose keys may still open their data: never keep theirs."""
        return self._pending.keys()

    def look(self) -> set[UUID]:
        """The customers (their aggregates' ids) erased since the last look; the first look starts the watch."""
        head = self.recorder.max_notification_id() or 0
        start, self._seen_upto = self._seen_upto, head
        erased: set[UUID] = set()
        while start is not None and start < head:
            page = self.recorder.select_notifications(start=start, limit=_PAGE, stop=head, topics=[self._topic],
                                                      inclusive_of_start=False)
            for notification in page:
                erased.add(notification.originator_id)
                self._pending.setdefault(notification.originator_id, set()).update(
                    self.decode(notification).key_ids)
            if len(page) < _PAGE:
                break
            start = page[-1].id
        if self._pending:
            self._settle()
        return erased

    def _settle(self) -> None:
        """Forget the pending erasures whose keys are all destroyed now."""
        wanted = {k for keys in self._pending.values() for k in keys}
        live = {row.key_id for row in self.keys().by_ids(wanted) if row.wrapped is not None} if wanted else set()
        for customer, keys in list(self._pending.items()):
            if not keys & live:
                del self._pending[customer]
