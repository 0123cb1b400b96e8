"""Cross references: a whole case deleted is seen from the events that name it.

Every case is linked once to its customer (the customer's ``CaseLinked``) and every contact it
received (``ContactReceived``) has its registered channel message (``MessageRegistered``). Verify's
loop counts these per case id as the events stream past (``CASE_COUNTED``); ``check`` then names
a case that is named but has no ``CaseOpened`` (``case-missing``), is not linked exactly once
(``case-unlinked``), or whose contacts and messages differ in number (``contacts-unmatched``).
Checked on whole histories only (not with ``--since/--until``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from caseledger.ledger.audit.report import AuditReport

if TYPE_CHECKING:
    from caseledger.ledger.avro.codec import AvroEventCodec
    from caseledger.ledger.store_ports import StoreSnapshot

__all__ = ["CASE_COUNTED", "CrossReferences"]

CASE_COUNTED = frozenset({"CaseOpened", "ContactReceived", "MessageRegistered", "CaseLinked"})
"""The event types verify counts per case."""


class CrossReferences:
    """Per case (keyed by the case id's text): [CaseLinked seen, contacts, messages registered, opened at]."""

    def __init__(self, store: StoreSnapshot, report: AuditReport, codec: AvroEventCodec) -> None:
        self.store = store
        self.report = report
        self.codec = codec
        self.cases: dict[bytes, list[int]] = {}

    def opened(self) -> int:
        """How many cases have their CaseOpened in scope."""
        return sum(1 for c in self.cases.values() if c[3])

    def check(self) -> None:
        """Every case is linked once to its customer, every contact has its registered channel message."""
        flag = self.report.flag
        for case_id, (links, contacts, messages, opened) in self.cases.items():
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
