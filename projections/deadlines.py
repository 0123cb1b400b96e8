"""Deadlines: every acknowledgement, response, promise and confirmation deadline, pending, settled or missed.

One row per deadline: ``acknowledgement`` (ACKn, met when the acknowledgement is delivered),
``response`` (Cn, met when every item of the contact is answered or waived), ``promise``
(Pn, settled when kept, withdrawn, broken or waived) and ``confirmation`` (Wn, the written
confirmation of a promise made by phone or at a branch, met when it is delivered). While a case is closed or cancelled its
pending deadlines are ``suspended``; a reopen makes them pending again. ``settled_at`` is when the
ledger recorded what settled it (a response, a delivery report …), never a time a client claimed:
a deadline is met when ``settled_at`` is not after ``due_at``. ``missed`` is 1 once
the ledger recorded a DeadlineMissed for it. ``caseledger overdue`` lists pending rows past
due; ``caseledger tick`` records those not yet recorded — the same rule as the Case aggregate's
``due_deadlines``, which decides again when the events are recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from caseledger.projections.base import Projection, Tx, aggregate_key
from caseledger.projections.tables import INT, JSON, ROWS, TEXT, TIME, Table
from caseledger.projections.views import ViewStore

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger, TickReport
    from caseledger.ledger.domain.values import Actor

PENDING, SETTLED, SUSPENDED = "pending", "settled", "suspended"


class Deadlines(Projection):
    """Pending, settled and missed deadlines of acknowledgements, responses, promises and written confirmations."""

    name = "deadlines"
    # 2: written confirmations must be delivered (kind "confirmation"); 3: settled when recorded, not when claimed
    version = 3
    tables = (
        Table(
            "deadlines",
            {
                "case_id": TEXT, "kind": TEXT, "target_id": TEXT, "reference": TEXT, "customer_id": TEXT,
                "channel": TEXT, "due_at": TIME, "state": TEXT, "outcome": TEXT, "settled_at": TIME, "missed": INT,
            },
            key=("case_id", "kind", "target_id"),
            indexes=(("state", "due_at"), ("reference",)),
        ),
        # What a case's deadlines depend on: its open items per contact, and whether it is final.
        Table(
            "deadline_cases",
            {"case_id": TEXT, "reference": TEXT, "customer_id": TEXT, "final": INT, "targets": JSON,
             "open_items": JSON},
            key=("case_id",),
            kind=ROWS,
        ),
    )

    def _case(self, tx: Tx, event: Any) -> dict[str, Any]:
        case = tx.get("deadline_cases", aggregate_key(event))
        assert case is not None, f"case {event.originator_id} has events but was never opened"
        return case

    def _deadline(self, tx: Tx, case_id: str, kind: str, target_id: str) -> dict[str, Any] | None:
        return tx.get("deadlines", case_id, kind, target_id)

    def _add(self, tx: Tx, case: dict[str, Any], kind: str, target_id: str, due_at: datetime,
             channel: str | None) -> None:
        case["targets"].append([kind, target_id])
        tx.put("deadline_cases", case)
        tx.put("deadlines", {
            "case_id": case["case_id"], "kind": kind, "target_id": target_id, "reference": case["reference"],
            "customer_id": case["customer_id"], "channel": channel, "due_at": due_at,
            "state": SUSPENDED if case["final"] else PENDING, "outcome": None, "settled_at": None, "missed": 0,
        })

    def _settle(self, tx: Tx, case_id: str, kind: str, target_id: str, outcome: str, at: datetime) -> None:
        row = self._deadline(tx, case_id, kind, target_id)
        if row is None or row["state"] == SETTLED:
            return
        row.update(state=SETTLED, outcome=outcome, settled_at=at)
        tx.put("deadlines", row)

    # -- handlers ------------------------------------------------------------------------------------

    def on_CaseOpened(self, tx: Tx, e: Any) -> None:
        tx.put("deadline_cases", {"case_id": aggregate_key(e), "reference": e.reference,
                                  "customer_id": e.customer_id, "final": 0, "targets": [], "open_items": {}})

    def on_ContactReceived(self, tx: Tx, e: Any) -> None:
        case = self._case(tx, e)
        case["open_items"][e.contact_id] = [i["item_id"] for i in e.items]
        tx.put("deadline_cases", case)

    def on_AcknowledgementIssued(self, tx: Tx, e: Any) -> None:
        case = self._case(tx, e)
        self._add(tx, case, "acknowledgement", e.acknowledgement_id, e.acknowledge_by, e.channel)
        if case["open_items"].get(e.contact_id):
            self._add(tx, case, "response", e.contact_id, e.respond_by, e.channel)

    def _close_items(self, tx: Tx, e: Any, item_ids: list[str], outcome: str) -> None:
        case = self._case(tx, e)
        for contact_id, open_items in case["open_items"].items():
            remaining = [i for i in open_items if i not in item_ids]
            if len(remaining) != len(open_items):
                case["open_items"][contact_id] = remaining
                if not remaining:
                    self._settle(tx, case["case_id"], "response", contact_id, outcome, e.timestamp)
        tx.put("deadline_cases", case)

    def on_ResponseSent(self, tx: Tx, e: Any) -> None:
        self._close_items(tx, e, list(e.answers), "answered")

    def on_ItemWaived(self, tx: Tx, e: Any) -> None:
        self._close_items(tx, e, [e.item_id], "waived")

    def on_MessageDelivered(self, tx: Tx, e: Any) -> None:
        kind = "confirmation" if e.message_id.startswith("W") else "acknowledgement"
        self._settle(tx, aggregate_key(e), kind, e.message_id, "delivered", e.timestamp)

    def on_WrittenConfirmationIssued(self, tx: Tx, e: Any) -> None:
        if e.deliver_by is not None:
            self._add(tx, self._case(tx, e), "confirmation", e.confirmation_id, e.deliver_by, e.channel)

    def on_PromiseMade(self, tx: Tx, e: Any) -> None:
        self._add(tx, self._case(tx, e), "promise", e.promise_id, e.due_at, e.channel)

    def on_PromiseKept(self, tx: Tx, e: Any) -> None:
        self._settle(tx, aggregate_key(e), "promise", e.promise_id, "kept", e.timestamp)

    def on_PromiseWithdrawn(self, tx: Tx, e: Any) -> None:
        self._settle(tx, aggregate_key(e), "promise", e.promise_id, "withdrawn", e.timestamp)

    def on_PromiseBroken(self, tx: Tx, e: Any) -> None:
        self._settle(tx, aggregate_key(e), "promise", e.promise_id, "broken", e.timestamp)

    def on_PromiseWaived(self, tx: Tx, e: Any) -> None:
        self._settle(tx, aggregate_key(e), "promise", e.promise_id, "waived", e.timestamp)

    def on_DeadlineMissed(self, tx: Tx, e: Any) -> None:
        row = self._deadline(tx, aggregate_key(e), e.deadline_kind, e.target_id)
        if row is not None:
            row["missed"] = 1
            tx.put("deadlines", row)

    def _finality(self, tx: Tx, e: Any, final: bool) -> None:
        case = self._case(tx, e)
        if bool(case["final"]) == final:
            return
        case["final"] = int(final)
        tx.put("deadline_cases", case)
        before, after = (PENDING, SUSPENDED) if final else (SUSPENDED, PENDING)
        for kind, target_id in case["targets"]:
            row = self._deadline(tx, case["case_id"], kind, target_id)
            if row is not None and row["state"] == before:
                row["state"] = after
                tx.put("deadlines", row)

    def on_CaseClosed(self, tx: Tx, e: Any) -> None:
        self._finality(tx, e, True)

    def on_CaseCancelled(self, tx: Tx, e: Any) -> None:
        self._finality(tx, e, True)

    def on_CaseReopened(self, tx: Tx, e: Any) -> None:
        self._finality(tx, e, False)


# -- the read side -------------------------------------------------------------------------------------


def overdue(views: ViewStore, now: datetime, *, unrecorded_only: bool = False) -> list[dict[str, Any]]:
    """Pending deadlines past due at ``now``, the most overdue first."""
    table = Deadlines.tables[0]
    where = "state = ? AND due_at < ?" + (" AND missed = 0" if unrecorded_only else "")
    return views.select(table, where=where, params=(PENDING, now), order_by="due_at, reference, kind, target_id")


def overdue_references(views: ViewStore, now: datetime, *, page: int = 1000) -> Iterator[str]:
    """The references of the cases with a deadline past due at ``now`` and not yet recorded, each once, a page at
    a time (keyset on the reference): ``tick`` over a million open deadlines holds one page of them, not all."""
    if Deadlines.tables[0].name not in views.table_names():
        return
    after = ""
    while True:
        rows = views.fetch(
            # Walked along the reference's index (``state || ''`` keeps the planner off the state's): each page
            # starts where the last ended, rather than sorting every overdue row again.
            f"SELECT DISTINCT reference FROM {Deadlines.tables[0].name} WHERE reference > ? AND state || '' = ? "
            "AND due_at < ? AND missed = 0 ORDER BY reference LIMIT ?", (after, PENDING, now, page))
        yield from (row["reference"] for row in rows)
        if len(rows) < page:
            return
        after = rows[-1]["reference"]


def deadline_counts(views: ViewStore) -> dict[str, int]:
    """How many cases the deadlines projection knows."""
    if "deadline_cases" not in views.table_names():
        return {"cases": 0}
    rows = views.fetch("SELECT COUNT(*) AS n FROM deadline_cases")
    return {"cases": int(rows[0]["n"])}


def record_missed_deadlines(
    ledger: CaseLedger, references: Iterable[str], *, actor: Actor, batch_size: int = 200
) -> TickReport:
    """Let each case record the deadlines it finds missed on the ledger's clock (the aggregate decides, once).

    The projection only says which cases to look at; the Case aggregate checks again, so a lagging
    or wrong view can delay a record, never duplicate or invent one.
    """
    return ledger.tick(actor=actor, references=references, batch_size=batch_size)
