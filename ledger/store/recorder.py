"""What the ledger needs of an event store, beyond eventsourcing's process recorder.

Both backends (:mod:`~caseledger.ledger.store.sqlite_recorder`, :mod:`~caseledger.ledger.store.postgres_recorder`)
implement it; the application reads and writes through it and never tells them apart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from uuid import UUID

from eventsourcing.persistence import ProcessRecorder, StoredEvent


class LedgerRecorder(ProcessRecorder, ABC):
    """A process recorder that also reads many aggregates at once.

    Its ``insert_events`` takes, besides eventsourcing's ``tracking``, ``also_tracking``: further
    tracking records written in the same transaction (one per partition an intake poll read).
    """

    def select_events_after(
        self, originator_ids: Iterable[UUID], *, after: Mapping[UUID, int] | None = None
    ) -> dict[UUID, list[StoredEvent]]:
        """The stored events of each of ``originator_ids`` that has any, in version order.

        ``after`` gives, for some ids, a version already known: only later events are read for those.
        """
        ordered = list(originator_ids)
        known = [after.get(i, -1) for i in ordered] if after else [-1] * len(ordered)
        return self._select_events_after(ordered, known)

    @abstractmethod
    def _select_events_after(self, ids: list[UUID], known: list[int]) -> dict[UUID, list[StoredEvent]]:
        """The events of ``ids[n]`` after version ``known[n]`` (-1: all of them), grouped by id."""
