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
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from caseledger.ledger.describe import case_record
from caseledger.ledger.domain.catalog import name_of_topic
from caseledger.ledger.domain.directory import Customer, case_id_for
from caseledger.ledger.intake_commands import normalise_reference

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.domain.case import Case

__all__ = ["CaseCache"]

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
        self.lock = threading.Lock()
        self.json: bytes | None = None
        self.json_version = -1


class CaseCache:
    """Cases by id, LRU, shared by the threads of one process (see the module docstring)."""

    def __init__(self, *, maxsize: int = MAX_CASES, max_age_s: float = MAX_AGE_S) -> None:
        self.maxsize = maxsize
        self.max_age_s = max_age_s
        self._entries: OrderedDict[UUID, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def record_json(self, ledger: CaseLedger, reference: str) -> bytes:
        """``case_record`` of the case as of now, as the JSON the API answers."""
        return self.read(ledger, reference, _json)  # type: ignore[no-any-return]

    def read(self, ledger: CaseLedger, reference: str, view: Any) -> Any:
        """``view(entry)`` of the case as of now (under the entry's lock: the case is not changing meanwhile)."""
        case_id = case_id_for(normalise_reference(reference))
        with self._lock:
            entry = self._entries.get(case_id)
            if entry is not None:
                self._entries.move_to_end(case_id)
        if entry is not None:
            with entry.lock:
                if self._up_to_date(ledger, entry):
                    return view(entry)
            self._drop(case_id, entry)
        entry = self._load(ledger, reference)
        with entry.lock:
            return view(entry)

    def forget_customer(self, customer_id: str) -> None:
        """Forget every cached case of this customer (their personal data was just erased)."""
        with self._lock:
            for case_id in [i for i, e in self._entries.items() if e.customer_id == customer_id]:
                del self._entries[case_id]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _drop(self, case_id: UUID, entry: _Entry) -> None:
        with self._lock:
            if self._entries.get(case_id) is entry:
                del self._entries[case_id]

    def _up_to_date(self, ledger: CaseLedger, entry: _Entry) -> bool:
        """Apply what was recorded since; False when the entry must be read again from the store."""
        if time.monotonic() - entry.kept_at > self.max_age_s:
            return False
        case, customer = entry.case.id, Customer.id_for(entry.customer_id)
        new = ledger.recorder.select_events_after(
            [case, customer], after={case: entry.case.version, customer: entry.customer_version})
        mine = new.get(customer, [])
        if any(name_of_topic(e.topic) == _ERASED for e in mine):
            return False
        if mine:
            entry.customer_version = mine[-1].originator_version
        try:
            for stored in new.get(case, []):
                entry.case = ledger.mapper.to_domain_event(stored).mutate(entry.case)  # type: ignore[attr-defined]
        finally:
            ledger.data_keys.forget()  # the next read asks the key store again: an erasure is in force
        return True

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
        return datetime.now(UTC) - at < timedelta(seconds=ERASED_GRACE_S)


def _json(entry: _Entry) -> bytes:
    # Rendered once per version; the same bytes FastAPI's JSONResponse would make of ``case_record``.
    if entry.json is None or entry.json_version != entry.case.version:
        entry.json = json.dumps(case_record(entry.case), ensure_ascii=False, allow_nan=False,
                                separators=(",", ":")).encode()
        entry.json_version = entry.case.version
    return entry.json
