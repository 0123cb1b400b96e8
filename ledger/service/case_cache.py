"""Where the service keeps cases between reads: per process, brought up to date by their new events only.

``GET /v1/cases/REF`` used to replay the whole case on every request. A cached case is read again
only as far as what was recorded after its cached version (the query ``_refresh`` of the live
page makes), and its JSON is rendered once per version. That query also reads the new events of
the case's customer, which is how an erasure made by another process is seen on the next read.

A cached case holds opened personal data, so an erasure must not leave it here:

- an erasure (or retention by ``tick``) in this process forgets the customer's cases at once;
- another process's erasure is seen by the next read of the case (``CustomerErased`` among the
  customer's new events): the case is forgotten and read again from the store;
- a case whose customer was erased less than ``ERASED_GRACE_S`` ago is served but not kept (the
  erasing process destroys the keys just after recording the event; a read in between would
  still open the texts);
- no case is kept longer than ``MAX_AGE_S`` (a key destroyed without a new event, e.g. the
  retry of an erasure that crashed between recording and destroying, is in force after that).
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from caseledger.ledger.domain.case_references import normalise_reference
from caseledger.ledger.domain.catalog import name_of_topic
from caseledger.ledger.domain.directory import Customer, case_id_for
from caseledger.ledger.reports.describe import case_record
from caseledger.ledger.service.batch_thread import BatchThread

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.domain.case import Case

__all__ = ["CaseCache"]

log = logging.getLogger("caseledger.service")

MAX_CASES = 5000
MAX_AGE_S = 30.0
ERASED_GRACE_S = 60.0
_ERASED = "CustomerErased"


class _Entry:
    def __init__(self, case: Case, customer_version: int, *, kept_at: float) -> None:
        self.case = case
        self.customer_id = case.customer_id
        self.customer_version = customer_version
        self.kept_at = kept_at
        self.json: bytes | None = None
        self.json_version = -1


@dataclass
class _Read:
    reference: str
    view: Callable[[_Entry], Any]
    answer: Future[Any] = field(default_factory=Future)


class CaseCache(BatchThread["_Read"]):
    """Cases by id, LRU, kept by the one reader thread of a process (see the module docstring).

    The reader thread takes every read waiting and brings all their cached cases up to date with
    one query (``select_events_after`` of the cases and their customers), so a read costs the event
    loop no thread hop of its own and the database one query per batch instead of one per read.
    """

    thread_name = "caseledger-case-reads"

    def __init__(self, make_ledger: Callable[[], CaseLedger] | None = None, *, maxsize: int = MAX_CASES,
                 max_age_s: float = MAX_AGE_S) -> None:
        super().__init__(make_ledger)
        self.maxsize = maxsize
        self.max_age_s = max_age_s
        self._entries: OrderedDict[UUID, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def record_json(self, reference: str) -> Future[bytes]:
        """``case_record`` of the case as of now, as the JSON the API answers."""
        return self.read(reference, _json)

    def read(self, reference: str, view: Callable[[_Entry], Any]) -> Future[Any]:
        """``view(entry)`` of the case as of now, computed on the reader thread (the case does not change meanwhile)."""
        read = _Read(reference, view)
        self._enqueue(read)
        return read.answer

    def forget_customer(self, customer_id: str) -> None:
        """Forget every cached case of this customer (their personal data was just erased)."""
        with self._lock:
            for case_id in [i for i, e in self._entries.items() if e.customer_id == customer_id]:
                del self._entries[case_id]

    def close(self) -> None:
        super().close()
        with self._lock:
            self._entries.clear()

    # -- the reader thread ------------------------------------------------------------------------------

    def serve(self, ledger: CaseLedger, batch: list[_Read]) -> None:
        self.answer(ledger, batch)

    def answer(self, ledger: CaseLedger, reads: list[_Read]) -> None:
        """Bring the cases of ``reads`` up to date (one query for all the cached ones) and answer each."""
        wanted: dict[UUID, list[_Read]] = {}
        for read in reads:
            try:
                wanted.setdefault(case_id_for(normalise_reference(read.reference)), []).append(read)
            except Exception as error:
                read.answer.set_exception(error)
        with self._lock:
            cached = {i: e for i in wanted if (e := self._entries.get(i)) is not None}
            for case_id in cached:
                self._entries.move_to_end(case_id)
        now = time.monotonic()
        fresh = {i: e for i, e in cached.items() if now - e.kept_at <= self.max_age_s}
        stale = self._bring_up_to_date(ledger, fresh) | (set(cached) - set(fresh))
        for case_id in stale:
            self._drop(case_id, cached[case_id])
        for case_id, waiting in wanted.items():
            entry = fresh.get(case_id) if case_id not in stale else None
            if entry is None:
                try:
                    entry = self._load(ledger, waiting[0].reference)
                except BaseException as error:
                    for read in waiting:
                        read.answer.set_exception(error)
                    continue
            for read in waiting:
                try:
                    read.answer.set_result(read.view(entry))
                except BaseException as error:
                    read.answer.set_exception(error)

    def _drop(self, case_id: UUID, entry: _Entry) -> None:
        with self._lock:
            if self._entries.get(case_id) is entry:
                del self._entries[case_id]

    def _bring_up_to_date(self, ledger: CaseLedger, entries: dict[UUID, _Entry]) -> set[UUID]:
        """Apply what was recorded since, in one query; the ids of the cases to read again from the store."""
        if not entries:
            return set()
        after: dict[UUID, int] = {}
        for case_id, entry in entries.items():
            after[case_id] = entry.case.version
            customer = Customer.id_for(entry.customer_id)
            after[customer] = min(after.get(customer, entry.customer_version), entry.customer_version)
        new = ledger.recorder.select_events_after(list(after), after=after)
        stale: set[UUID] = set()
        try:
            for case_id, entry in entries.items():
                mine = [e for e in new.get(Customer.id_for(entry.customer_id), [])
                        if e.originator_version > entry.customer_version]
                if any(name_of_topic(e.topic) == _ERASED for e in mine):
                    stale.add(case_id)
                    continue
                if mine:
                    entry.customer_version = mine[-1].originator_version
                for stored in new.get(case_id, []):
                    entry.case = ledger.mapper.to_domain_event(stored).mutate(entry.case)  # type: ignore[attr-defined]
        finally:
            ledger.data_keys.forget()  # the next read asks the key store again: an erasure is in force
        return stale

    def _load(self, ledger: CaseLedger, reference: str) -> _Entry:
        try:
            case = ledger.get_case(reference)
        finally:
            ledger.data_keys.forget()
        customer = Customer.id_for(case.customer_id)
        stored = ledger.recorder.select_events_after([customer], after={customer: 0}).get(customer, [])
        entry = _Entry(case, stored[-1].originator_version if stored else 0, kept_at=time.monotonic())
        if not self._erased_lately(ledger, stored):
            with self._lock:
                self._entries[case.id] = entry
                while len(self._entries) > self.maxsize:
                    self._entries.popitem(last=False)
        return entry

    @staticmethod
    def _erased_lately(ledger: CaseLedger, stored: list[Any]) -> bool:
        erasures = [e for e in stored if name_of_topic(e.topic) == _ERASED]
        if not erasures:
            return False
        at: datetime = ledger.mapper.to_domain_event(erasures[-1]).timestamp  # type: ignore[attr-defined]
        return bool(ledger.clock() - at < timedelta(seconds=ERASED_GRACE_S))


def _json(entry: _Entry) -> bytes:
    # Rendered once per version; the same bytes FastAPI's JSONResponse would make of ``case_record``.
    if entry.json is None or entry.json_version != entry.case.version:
        entry.json = json.dumps(case_record(entry.case), ensure_ascii=False, allow_nan=False,
                                separators=(",", ":")).encode()
        entry.json_version = entry.case.version
    return entry.json
