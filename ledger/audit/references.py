"""Cross references: a whole case deleted is seen from the events that name it.

Every case is linked once to its customer (the customer's ``CaseLinked``) and every contact it
received (``ContactReceived``) has its registered channel message (``MessageRegistered``). Verify's
loop counts these per case id as the events stream past (``CASE_COUNTED``); ``check`` then names
a case that is named but has no ``CaseOpened`` (``case-missing``), is not linked exactly once
(``case-unlinked``), or whose contacts and messages differ in number (``contacts-unmatched``).
Checked on whole histories only (not with ``--since/--until``).

The counters of at most ``CASES_HELD`` cases are kept in memory; past that, the loop's window is
added to a tally on disk (``StoreSnapshot.case_tally``: a temporary file, summed by SQLite) between
pages, and ``check`` reads the broken cases back from it: verify's memory does not grow with the
number of cases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from caseledger.ledger.audit.report import AuditReport

if TYPE_CHECKING:
    from collections.abc import Iterable

    from caseledger.ledger.avro.codec import AvroEventCodec
    from caseledger.ledger.store_ports import CaseTally, StoreSnapshot

__all__ = ["CASES_HELD", "CASE_COUNTED", "CrossReferences"]

CASES_HELD = 50_000
"""Cases whose counters verify keeps in memory; beyond, they go to the tally on disk (~100 bytes each here)."""

CASE_COUNTED = frozenset({"CaseOpened", "ContactReceived", "MessageRegistered", "CaseLinked"})
"""The event types verify counts per case."""


class CrossReferences:
    """Per case (keyed by the case id's text): [CaseLinked seen, contacts, messages registered, opened at]."""

    def __init__(self, store: StoreSnapshot, report: AuditReport, codec: AvroEventCodec, *,
                 held: int = CASES_HELD) -> None:
        self.store = store
        self.report = report
        self.codec = codec
        self.held = held
        self.cases: dict[bytes, list[int]] = {}  # the window the loop counts into
        self.tally: CaseTally | None = None

    def let_go(self) -> None:
        """Between pages: past ``held`` cases, add the window to the tally on disk and empty it."""
        if len(self.cases) > self.held:
            if self.tally is None:
                self.tally = self.store.case_tally()
            self.tally.add(self.cases)
            self.cases.clear()

    def opened(self) -> int:
        """How many cases have their CaseOpened in scope."""
        if self.tally is not None:
            self._settle()
            return self.tally.opened()
        return sum(1 for c in self.cases.values() if c[3])

    def _settle(self) -> None:
        assert self.tally is not None
        if self.cases:
            self.tally.add(self.cases)
            self.cases.clear()

    def close(self) -> None:
        """Delete the tally on disk."""
        if self.tally is not None:
            self.tally.close()
            self.tally = None

    def check(self) -> None:
        """Every case is linked once to its customer, every contact has its registered channel message."""
        counted: Iterable[tuple[bytes, int, int, int, int]]
        if self.tally is not None:
            self._settle()
            counted = self.tally.broken()
        else:
            counted = ((case_id, *entry) for case_id, entry in self.cases.items())  # type: ignore[misc]
        flag = self.report.flag
        for case_id, links, contacts, messages, opened in counted:
            case = case_id.decode(errors="replace")
            if opened and (links != 1 or contacts != messages):
                case = f"{self._reference_at(opened)} ({case})"
            if not opened:
                if links:
                    flag("case-missing", f"a CaseLinked names case {case} but the store holds no CaseOpened "
                         "for it: the case's events were deleted", aggregate_id=case)
                else:
                    flag("case-missing", f"{messages} MessageRegistered entries name case {case} but the "
                         "store holds no CaseOpened for it: the case's events were deleted",
                         aggregate_id=case)
                continue
            if links != 1:
                flag("case-unlinked", f"case {case} (opened at position {opened}) is linked to its customer "
                     f"{links} times (CaseLinked), not once: the customer's case list was altered",
                     aggregate_id=case_id.decode(errors="replace"), position=opened, event_type="CaseOpened")
            if contacts != messages:
                flag("contacts-unmatched", f"case {case} has {contacts} ContactReceived but {messages} "
                     "MessageRegistered: contacts or their channel messages were deleted",
                     aggregate_id=case_id.decode(errors="replace"), position=opened, event_type="CaseOpened")

    def _reference_at(self, position: int) -> str:
        """The reference in the CaseOpened at ``position`` (for naming a case in the report)."""
        row = self.store.row_at_or_after(position)
        try:
            return str(self.codec.decode_record("CaseOpened", bytes(row[4]))["reference"])  # type: ignore[index]
        except Exception:
            return "?"
