"""The agent's queue: one row per case with what makes it urgent, and the queue's order, filters and counts.

A row holds the case's earliest pending deadline (``due_at``: an acknowledgement or a written
confirmation to deliver, a contact to answer, a promise due — the rules of :mod:`projections.deadlines`,
suspended while the case is closed or cancelled), its follow-ups still unanswered, the automation
proposals waiting for a human (and since when), who has it (assignee, team) and what it is filtered by
(the last contact's channel, segment, status). The subject stays sealed, as the events carry it: the
reader opens it (``[erased]`` after erasure); nothing else in the row is personal data.

The queue's order is urgency: the earliest due first (so every overdue case before every case not yet
due, the most overdue first), then cases with nothing due whose proposals wait longest, then the rest
by reference. The service keeps this projection itself, from the store (``ledger/service/queue_page.py``):
it is not among the built-ins ``caseledger run`` follows, so that what an agent sees never waits for the
events topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from caseledger.ledger.domain.case_parts import Status
from caseledger.projections.base import Projection, Tx, aggregate_key
from caseledger.projections.tables import INT, JSON, TEXT, TIME, Table
from caseledger.projections.views import ViewStore, utc_text

__all__ = ["ORDERS", "SOON", "STATES", "WHO", "AgentQueue", "QueueFilter", "queue_choices", "queue_counts", "queue_rows"]

Row = dict[str, Any]
SOON = timedelta(hours=24)
"""A deadline due within this is "due soon"."""
STATES = ("overdue", "soon", "follow_ups", "proposals")
"""What the queue counts and filters by: overdue, due soon, unanswered follow-ups, proposals waiting."""
WHO = ("all", "mine", "me", "team", "unassigned")
"""Whose cases: anyone's; mine, my team's and no one's (neither an agent nor a team: what an agent with a team
sees first); mine; my team's (the principal's team); with no agent (whatever their team)."""
ORDERS = ("urgency", "recent")
"""The queue's orders: by urgency (the default), or the latest contact first (what just arrived)."""


class AgentQueue(Projection):
    """Every case with its earliest pending deadline, unanswered follow-ups and proposals waiting for a human."""

    name = "queue"
    version = 1
    tables = (
        Table(
            "agent_queue",
            {
                "case_id": TEXT, "reference": TEXT, "subject": TEXT, "category": TEXT, "segment": TEXT,
                "channel": TEXT, "status": TEXT, "active": INT, "assignee": TEXT, "team": TEXT, "opened_at": TIME,
                "last_contact_at": TIME, "due_at": TIME, "due_kind": TEXT, "due_target": TEXT,
                "open_items": INT, "follow_ups": INT, "proposals": INT, "proposed_since": TIME,
                "pending": JSON, "contacts": JSON, "waiting": JSON, "updated_at": TIME, "position": INT,
            },
            key=("case_id",),
            # The order (due_at, then proposed_since) and each count read an index, not the whole table.
            indexes=(("active", "due_at"), ("active", "proposed_since"), ("active", "follow_ups"),
                     ("active", "proposals"), ("active", "last_contact_at"), ("status", "due_at"), ("assignee",), ("team",), ("reference",)),
        ),
    )

    def _row(self, tx: Tx, event: Any) -> Row:
        row = tx.get("agent_queue", aggregate_key(event))
        assert row is not None, f"case {event.originator_id} has events but was never opened"
        row["updated_at"], row["position"] = event.timestamp, tx.position
        return row

    def before_flush(self, table: str, row: Row) -> None:
        """The columns the queue sorts and filters by, computed from the pending deadlines and open contacts."""
        pending = row["pending"]
        final = row["status"] in Status.FINAL
        row["active"] = int(row["status"] in Status.ACTIVE)
        earliest = None if final or not pending else min(pending, key=lambda k: (pending[k], k))
        row["due_at"] = datetime.fromisoformat(pending[earliest]) if earliest else None
        row["due_kind"], _, row["due_target"] = earliest.partition(":") if earliest else (None, "", None)
        row["open_items"] = sum(len(c["open"]) for c in row["contacts"].values())
        row["follow_ups"] = sum(1 for c in row["contacts"].values() if c["follow_up"] and c["open"])
        row["proposals"] = len(row["waiting"])
        row["proposed_since"] = datetime.fromisoformat(min(row["waiting"].values())) if row["waiting"] else None

    # -- opening and contacts --------------------------------------------------------------------------

    def on_CaseOpened(self, tx: Tx, e: Any) -> None:
        tx.put("agent_queue", {
            "case_id": aggregate_key(e), "reference": e.reference, "subject": e.subject, "category": e.category,
            "segment": e.segment, "channel": None, "status": Status.OPEN, "active": 1, "assignee": None, "team": None,
            "opened_at": e.occurred_at, "last_contact_at": None, "due_at": None, "due_kind": None,
            "due_target": None, "open_items": 0, "follow_ups": 0, "proposals": 0, "proposed_since": None,
            "pending": {}, "contacts": {}, "waiting": {}, "updated_at": e.timestamp, "position": tx.position,
        })

    def on_ContactReceived(self, tx: Tx, e: Any) -> None:
        row = self._row(tx, e)
        if e.items:
            row["contacts"][e.contact_id] = {"follow_up": bool(e.follow_up), "open": [i["item_id"] for i in e.items]}
        row["channel"], row["last_contact_at"] = str(e.channel), e.occurred_at
        tx.put("agent_queue", row)

    def on_AcknowledgementIssued(self, tx: Tx, e: Any) -> None:
        row = self._row(tx, e)
        row["pending"][f"acknowledgement:{e.acknowledgement_id}"] = utc_text(e.acknowledge_by)
        if row["contacts"].get(e.contact_id):
            row["pending"][f"response:{e.contact_id}"] = utc_text(e.respond_by)
        tx.put("agent_queue", row)

    def _close_items(self, tx: Tx, e: Any, item_ids: list[str]) -> None:
        row = self._row(tx, e)
        for contact_id, contact in list(row["contacts"].items()):
            contact["open"] = [i for i in contact["open"] if i not in item_ids]
            if not contact["open"]:
                del row["contacts"][contact_id]
                row["pending"].pop(f"response:{contact_id}", None)
        tx.put("agent_queue", row)

    def on_ResponseSent(self, tx: Tx, e: Any) -> None:
        self._close_items(tx, e, list(e.answers))

    def on_ItemWaived(self, tx: Tx, e: Any) -> None:
        self._close_items(tx, e, [e.item_id])

    # -- deadlines of messages and promises -----------------------------------------------------------

    def _settle(self, tx: Tx, e: Any, key: str) -> None:
        row = self._row(tx, e)
        row["pending"].pop(key, None)
        tx.put("agent_queue", row)

    def on_MessageDelivered(self, tx: Tx, e: Any) -> None:
        kind = "confirmation" if e.message_id.startswith("W") else "acknowledgement"
        self._settle(tx, e, f"{kind}:{e.message_id}")

    def on_WrittenConfirmationIssued(self, tx: Tx, e: Any) -> None:
        row = self._row(tx, e)
        if e.deliver_by is not None:
            row["pending"][f"confirmation:{e.confirmation_id}"] = utc_text(e.deliver_by)
        tx.put("agent_queue", row)

    def on_PromiseMade(self, tx: Tx, e: Any) -> None:
        row = self._row(tx, e)
        row["pending"][f"promise:{e.promise_id}"] = utc_text(e.due_at)
        tx.put("agent_queue", row)

    def on_PromiseKept(self, tx: Tx, e: Any) -> None:
        self._settle(tx, e, f"promise:{e.promise_id}")

    on_PromiseWithdrawn = on_PromiseBroken = on_PromiseWaived = on_PromiseKept

    # -- status, people, automation --------------------------------------------------------------------

    def _status(self, tx: Tx, e: Any, status: str) -> None:
        row = self._row(tx, e)
        row["status"] = status
        tx.put("agent_queue", row)

    def on_StatusChanged(self, tx: Tx, e: Any) -> None:
        self._status(tx, e, e.to_status)

    def on_CaseClosed(self, tx: Tx, e: Any) -> None:
        self._status(tx, e, Status.CLOSED)

    def on_CaseCancelled(self, tx: Tx, e: Any) -> None:
        self._status(tx, e, Status.CANCELLED)

    def on_CaseReopened(self, tx: Tx, e: Any) -> None:
        self._status(tx, e, Status.OPEN)

    def on_CaseAssigned(self, tx: Tx, e: Any) -> None:
        row = self._row(tx, e)
        row["assignee"], row["team"] = e.assignee, e.team
        tx.put("agent_queue", row)

    def on_HandedOff(self, tx: Tx, e: Any) -> None:
        row = self._row(tx, e)
        row["assignee"], row["team"] = e.to_assignee, e.to_team
        tx.put("agent_queue", row)

    def on_EscalatedToHuman(self, tx: Tx, e: Any) -> None:
        row = self._row(tx, e)
        if e.to_team:
            row["team"] = e.to_team
        tx.put("agent_queue", row)

    def on_ActionProposed(self, tx: Tx, e: Any) -> None:
        row = self._row(tx, e)
        row["waiting"][e.proposal_id] = utc_text(e.timestamp)
        tx.put("agent_queue", row)

    def on_ActionApproved(self, tx: Tx, e: Any) -> None:
        row = self._row(tx, e)
        row["waiting"].pop(e.proposal_id, None)
        tx.put("agent_queue", row)

    on_ActionRejected = on_ActionApproved


# -- the read side -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueFilter:
    """What an agent asked the queue for (the page's GET form); every field is checked when built."""

    channel: str | None = None
    segment: str | None = None
    status: str = "active"  # "active" (every status but closed and cancelled), "all", or one status
    who: str = "all"  # one of WHO
    team: str | None = None
    state: str | None = None  # one of STATES, or None for all
    order: str = "urgency"  # one of ORDERS

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            object.__setattr__(self, "order", "urgency")
        if self.status not in ("active", "all", *Status.ALL):
            object.__setattr__(self, "status", "active")
        if self.who not in WHO:
            object.__setattr__(self, "who", "all")
        if self.state not in (None, *STATES):
            object.__setattr__(self, "state", None)
        for name in ("channel", "segment", "team"):
            value = getattr(self, name)
            object.__setattr__(self, name, value.strip()[:100] if value and value.strip() else None)

    def where(self, *, me: str, now: datetime, state: bool = True, my_team: str | None = None) -> tuple[str, list[Any]]:
        """The SQL condition (``?`` placeholders) and its parameters; ``state=False`` leaves out the state.
        ``me`` is the principal's name, ``my_team`` its team (``team`` and ``mine`` hold no team's cases
        without one)."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.status == "active":
            clauses.append("active = 1")
        elif self.status != "all":
            clauses.append("status = ?")
            params.append(self.status)
        for column in ("channel", "segment", "team"):
            if getattr(self, column) is not None:
                clauses.append(f"{column} = ?")
                params.append(getattr(self, column))
        if self.who == "me":
            clauses.append("assignee = ?")
            params.append(me)
        elif self.who == "team":
            clauses.append("team = ?")
            params.append(my_team)  # NULL when the principal has none: no case
        elif self.who == "mine":
            clauses.append("(assignee = ? OR team = ? OR (assignee IS NULL AND team IS NULL))")
            params += [me, my_team]
        elif self.who == "unassigned":
            clauses.append("assignee IS NULL")
        if state and self.state is not None:
            condition, values = _STATE_SQL[self.state](now)
            clauses.append(condition)
            params.extend(values)
        return " AND ".join(clauses), params


_STATE_SQL = {
    "overdue": lambda now: ("due_at < ?", [now]),
    "soon": lambda now: ("due_at >= ? AND due_at < ?", [now, now + SOON]),
    "follow_ups": lambda now: ("follow_ups > 0", []),
    "proposals": lambda now: ("proposals > 0", []),
}
DUE_ORDER = "due_at, (proposed_since IS NULL), proposed_since, reference"
WAITING_ORDER = "(proposed_since IS NULL), proposed_since, reference"
"""Urgency: the earliest due first, then (nothing due) the longest-waiting proposals, then by reference."""


def queue_rows(views: ViewStore, *, queue: QueueFilter, me: str, now: datetime, limit: int = 50,
               my_team: str | None = None) -> list[Row]:
    """The queue's first ``limit`` cases, most urgent first, or the latest contact first (subjects still sealed).

    Two reads, each in the order of an index: the cases with a deadline, then, if the page has room,
    those without one."""
    table = AgentQueue.tables[0]
    where, params = queue.where(me=me, now=now, my_team=my_team)
    both = f"{where} AND " if where else ""
    if queue.order == "recent":
        return views.select(table, where=both + "last_contact_at IS NOT NULL", params=params,
                            order_by=f"last_contact_at DESC, reference LIMIT {int(limit)}")
    rows = views.select(table, where=both + "due_at IS NOT NULL", params=params,
                        order_by=f"{DUE_ORDER} LIMIT {int(limit)}")
    if len(rows) < limit:
        rows += views.select(table, where=both + "due_at IS NULL", params=params,
                             order_by=f"{WAITING_ORDER} LIMIT {int(limit) - len(rows)}")
    return rows


def queue_counts(views: ViewStore, *, queue: QueueFilter, me: str, now: datetime,
                 my_team: str | None = None) -> dict[str, int]:
    """How many cases the filter holds (``all``), and how many of them in each of :data:`STATES`."""
    if "agent_queue" not in views.table_names():
        return {"all": 0, **dict.fromkeys(STATES, 0)}
    where, params = queue.where(me=me, now=now, state=False, my_team=my_team)
    counted: list[str] = []
    values: list[Any] = []
    for name, (condition, extra) in [("all", ("1 = 1", [])), *((s, _STATE_SQL[s](now)) for s in STATES)]:
        counted.append(f"(SELECT COUNT(*) FROM agent_queue WHERE {where + ' AND ' if where else ''}{condition}) "
                       f"AS n_{name}")
        values += [*params, *extra]
    (found,) = views.fetch("SELECT " + ", ".join(counted), values)
    return {name: int(found[f"n_{name}"] or 0) for name in ("all", *STATES)}


def queue_choices(views: ViewStore) -> dict[str, list[str]]:
    """The channels, segments and teams the queue holds, for the filter form's lists."""
    if "agent_queue" not in views.table_names():
        return {"channel": [], "segment": [], "team": []}
    return {column: [str(r["v"]) for r in views.fetch(
        f"SELECT DISTINCT {column} AS v FROM agent_queue WHERE {column} IS NOT NULL ORDER BY {column}")]
        for column in ("channel", "segment", "team")}
