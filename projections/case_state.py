"""Case state: one row per case with everything an agent works from (``caseledger case show``).

The row mirrors the Case aggregate: status, owner and team, contacts, items, promises, messages,
proposed actions, missed deadlines and escalations (as JSON), plus columns computed from them
for queries: open items, open promises with due dates, the earliest respond-by still pending,
the last contact, the channels used and the handoff brief. Times inside JSON are ISO-8601 UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from caseledger.ledger.domain.case_parts import (
    ContactState,
    ItemState,
    MessageState,
    PromiseState,
    ProposalState,
)
from caseledger.projections.base import Projection, Tx, aggregate_key
from caseledger.projections.tables import INT, JSON, TEXT, TIME, Table
from caseledger.projections.views import utc_text

Row = dict[str, Any]


def _find(entries: list[Row], key: str, value: str) -> Row:
    for entry in entries:
        if entry[key] == value:
            return entry
    raise KeyError(f"{key}={value} not in the case row")


def _t(value: datetime | None) -> str | None:
    return utc_text(value) if value is not None else None


class CaseState(Projection):
    """Every case as an agent sees it: status, owner, open items and promises, deadlines, brief."""

    name = "case_state"
    version = 2  # 2: notices and written confirmations keep their text; confirmations their deliver-by
    tables = (
        Table(
            "case_state",
            {
                "case_id": TEXT, "reference": TEXT, "customer_id": TEXT, "subject": TEXT, "category": TEXT,
                "segment": TEXT, "status": TEXT, "opened_at": TIME, "assignee": TEXT, "team": TEXT,
                "follow_ups": INT, "handoffs": INT, "last_contact_at": TIME, "last_contact_channel": TEXT,
                "respond_by": TIME, "next_promise_due": TIME, "channels": JSON, "open_items": JSON,
                "open_promises": JSON, "brief": JSON, "contacts": JSON, "items": JSON, "promises": JSON,
                "messages": JSON, "proposals": JSON, "missed": JSON, "escalations": JSON,
                "events": INT, "updated_at": TIME,
            },
            key=("case_id",),
            indexes=(("reference",), ("customer_id",), ("status", "respond_by")),
        ),
    )

    # -- helpers -------------------------------------------------------------------------------------

    @staticmethod
    def _case(tx: Tx, event: Any) -> Row:
        row = tx.get("case_state", aggregate_key(event))
        assert row is not None, f"case {event.originator_id} has events but was never opened"
        row["events"] += 1
        row["updated_at"] = event.timestamp
        return row

    @staticmethod
    def _message(row: Row, message_id: str, channel: str | None, **fields: Any) -> None:
        row["messages"].append(
            {"message_id": message_id, "channel": channel, "due_at": None, "text": None, "delivered_at": None,
             "read_by": [], **fields}
        )

    def _notice(self, tx: Tx, event: Any, status: str | None) -> None:
        row = self._case(tx, event)
        self._message(row, event.notice_id, event.channel, text=event.text or event.notice)
        if status is not None:
            row["status"] = status
        tx.put("case_state", row)

    def before_flush(self, table: str, row: Row) -> None:
        """Columns computed from the JSON state, once per row and batch."""
        items = row["items"]
        open_items = [i for i in items if i["status"] == "open"]
        open_ids = {i["item_id"] for i in open_items}
        open_promises = [p for p in row["promises"] if p["status"] == "open"]
        last_by_channel: dict[str, Row] = {}
        for contact in row["contacts"]:
            last_by_channel[contact["channel"]] = contact
        pending = [c["respond_by"] for c in row["contacts"]
                   if c["respond_by"] and any(i in open_ids for i in c["item_ids"])]
        row["respond_by"] = datetime.fromisoformat(min(pending)) if pending else None
        dues = [p["due_at"] for p in open_promises]
        row["next_promise_due"] = datetime.fromisoformat(min(dues)) if dues else None
        row["channels"] = sorted(last_by_channel)
        row["open_items"] = [i["item_id"] for i in open_items]
        row["open_promises"] = [
            {"promise_id": p["promise_id"], "terms": p["terms"], "due_at": p["due_at"]} for p in open_promises
        ]
        row["brief"] = {
            "open_items": [
                {"item_id": i["item_id"], "text": i["text"], "contact_id": i["contact_id"]} for i in open_items
            ],
            "open_promises": row["open_promises"],
            "last_contacts": [
                {"channel": channel, "contact_id": c["contact_id"], "received_at": c["received_at"],
                 "subject": c["subject"]}
                for channel, c in sorted(last_by_channel.items())
            ],
        }

    # -- opening and contacts --------------------------------------------------------------------------

    def on_CaseOpened(self, tx: Tx, e: Any) -> None:
        tx.put("case_state", {
            "case_id": aggregate_key(e), "reference": e.reference, "customer_id": e.customer_id,
            "subject": e.subject, "category": e.category, "segment": e.segment, "status": "open",
            "opened_at": e.occurred_at, "assignee": None, "team": None, "follow_ups": 0, "handoffs": 0,
            "last_contact_at": None, "last_contact_channel": None, "respond_by": None, "next_promise_due": None,
            "channels": [], "open_items": [], "open_promises": [], "brief": {}, "contacts": [], "items": [],
            "promises": [], "messages": [], "proposals": [], "missed": [], "escalations": [],
            "events": 1, "updated_at": e.timestamp,
        })

    def on_ContactReceived(self, tx: Tx, e: Any) -> None:
        row = self._case(tx, e)
        for item in e.items:
            row["items"].append({"item_id": item["item_id"], "text": item["text"], "contact_id": e.contact_id,
                                 "status": "open", "answered_by": None, "waived_reason": None})
        row["contacts"].append({
            "contact_id": e.contact_id, "channel": str(e.channel), "channel_message_id": e.channel_message_id,
            "received_at": _t(e.occurred_at), "subject": e.subject, "item_ids": [i["item_id"] for i in e.items],
            "follow_up": e.follow_up, "respond_by": None, "acknowledgement_id": None,
        })
        self._message(row, e.contact_id, e.channel)
        if e.follow_up:
            row["follow_ups"] += 1
        row["last_contact_at"] = e.occurred_at
        row["last_contact_channel"] = str(e.channel)
        tx.put("case_state", row)

    def on_AcknowledgementIssued(self, tx: Tx, e: Any) -> None:
        row = self._case(tx, e)
        contact = _find(row["contacts"], "contact_id", e.contact_id)
        contact["respond_by"] = _t(e.respond_by)
        contact["acknowledgement_id"] = e.acknowledgement_id
        self._message(row, e.acknowledgement_id, e.channel, due_at=_t(e.acknowledge_by), text=e.text)
        tx.put("case_state", row)

    # -- answering -------------------------------------------------------------------------------------

    def on_ResponseSent(self, tx: Tx, e: Any) -> None:
        row = self._case(tx, e)
        for item_id in e.answers:
            item = _find(row["items"], "item_id", item_id)
            item["status"] = "answered"
            item["answered_by"] = e.response_id
        self._message(row, e.response_id, e.channel)
        tx.put("case_state", row)

    def on_ItemWaived(self, tx: Tx, e: Any) -> None:
        row = self._case(tx, e)
        item = _find(row["items"], "item_id", e.item_id)
        item["status"] = "waived"
        item["waived_reason"] = e.reason
        tx.put("case_state", row)

    # -- promises --------------------------------------------------------------------------------------

    def on_PromiseMade(self, tx: Tx, e: Any) -> None:
        row = self._case(tx, e)
        row["promises"].append({
            "promise_id": e.promise_id, "kind": e.kind, "terms": e.terms, "due_at": _t(e.due_at),
            "made_by": f"{e.actor_kind}:{e.actor_id}", "channel": str(e.channel), "status": "open",
            "confirmation_id": None, "closing_note": None,
        })
        tx.put("case_state", row)

    def on_WrittenConfirmationIssued(self, tx: Tx, e: Any) -> None:
        row = self._case(tx, e)
        _find(row["promises"], "promise_id", e.promise_id)["confirmation_id"] = e.confirmation_id
        self._message(row, e.confirmation_id, e.channel, due_at=_t(e.deliver_by) if e.deliver_by else None,
                      text=e.text)
        tx.put("case_state", row)

    def _settle(self, tx: Tx, e: Any, status: str, note: str, *, notice: bool = False) -> None:
        row = self._case(tx, e)
        if notice:
            self._message(row, e.notice_id, e.channel, text=e.text or e.notice)
        promise = _find(row["promises"], "promise_id", e.promise_id)
        promise["status"] = status
        promise["closing_note"] = note
        tx.put("case_state", row)

    def on_PromiseKept(self, tx: Tx, e: Any) -> None:
        self._settle(tx, e, "kept", e.evidence)

    def on_PromiseWithdrawn(self, tx: Tx, e: Any) -> None:
        self._settle(tx, e, "withdrawn", e.reason, notice=True)

    def on_PromiseBroken(self, tx: Tx, e: Any) -> None:
        self._settle(tx, e, "broken", e.reason)

    def on_PromiseWaived(self, tx: Tx, e: Any) -> None:
        self._settle(tx, e, "waived", e.reason)

    # -- status and people -----------------------------------------------------------------------------

    def on_StatusChanged(self, tx: Tx, e: Any) -> None:
        self._notice(tx, e, e.to_status)

    def on_CaseClosed(self, tx: Tx, e: Any) -> None:
        self._notice(tx, e, "closed")

    def on_CaseCancelled(self, tx: Tx, e: Any) -> None:
        self._notice(tx, e, "cancelled")

    def on_CaseReopened(self, tx: Tx, e: Any) -> None:
        self._notice(tx, e, "open")

    def on_CaseAssigned(self, tx: Tx, e: Any) -> None:
        row = self._case(tx, e)
        row["assignee"] = e.assignee
        row["team"] = e.team
        tx.put("case_state", row)

    def on_HandedOff(self, tx: Tx, e: Any) -> None:
        row = self._case(tx, e)
        row["handoffs"] += 1
        row["assignee"] = e.to_assignee
        row["team"] = e.to_team
        tx.put("case_state", row)

    def on_EscalatedToHuman(self, tx: Tx, e: Any) -> None:
        row = self._case(tx, e)
        row["escalations"].append(
            {"bot_id": e.bot_id, "waiting_since": _t(e.waiting_since), "wait_seconds": e.wait_seconds}
        )
        if e.to_team:
            row["team"] = e.to_team
        tx.put("case_state", row)

    # -- automation ------------------------------------------------------------------------------------

    def on_ActionProposed(self, tx: Tx, e: Any) -> None:
        row = self._case(tx, e)
        row["proposals"].append({
            "proposal_id": e.proposal_id, "rule_id": e.rule_id, "action": e.action, "params": dict(e.params),
            "rationale": e.rationale, "status": "proposed", "decided_by": None,
        })
        tx.put("case_state", row)

    def _decide(self, tx: Tx, e: Any, status: str, decided: bool) -> None:
        row = self._case(tx, e)
        proposal = _find(row["proposals"], "proposal_id", e.proposal_id)
        proposal["status"] = status
        if decided:
            proposal["decided_by"] = f"{e.actor_kind}:{e.actor_id}"
        tx.put("case_state", row)

    def on_ActionApproved(self, tx: Tx, e: Any) -> None:
        self._decide(tx, e, "approved", decided=True)

    def on_ActionRejected(self, tx: Tx, e: Any) -> None:
        self._decide(tx, e, "rejected", decided=True)

    def on_ActionExecuted(self, tx: Tx, e: Any) -> None:
        self._decide(tx, e, "executed", decided=False)

    # -- deadlines and messages ------------------------------------------------------------------------

    def on_DeadlineMissed(self, tx: Tx, e: Any) -> None:
        row = self._case(tx, e)
        missed = [e.deadline_kind, e.target_id]
        if missed not in row["missed"]:
            row["missed"].append(missed)
            row["missed"].sort()
        tx.put("case_state", row)

    def on_MessageDelivered(self, tx: Tx, e: Any) -> None:
        row = self._case(tx, e)
        message = _find(row["messages"], "message_id", e.message_id)
        message["delivered_at"], message["failure"] = _t(e.delivered_at), None
        tx.put("case_state", row)

    def on_MessageDeliveryFailed(self, tx: Tx, e: Any) -> None:
        row = self._case(tx, e)
        _find(row["messages"], "message_id", e.message_id)["failure"] = e.reason
        tx.put("case_state", row)

    def on_MessageRead(self, tx: Tx, e: Any) -> None:
        row = self._case(tx, e)
        _find(row["messages"], "message_id", e.message_id)["read_by"].append(f"{e.reader_kind}:{e.reader_id}")
        tx.put("case_state", row)


# -- the read side -------------------------------------------------------------------------------------


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class CaseView:
    """A case as the case state projection holds it, shaped like the Case aggregate for display."""

    def __init__(self, row: Row) -> None:
        self.row = row
        for name in ("reference", "customer_id", "subject", "category", "segment", "status", "opened_at",
                     "assignee", "team", "follow_ups", "handoffs"):
            setattr(self, name, row[name])
        self.contacts = {
            c["contact_id"]: ContactState(**{**c, "received_at": _dt(c["received_at"]),
                                             "respond_by": _dt(c["respond_by"])})
            for c in row["contacts"]
        }
        self.items = {i["item_id"]: ItemState(**i) for i in row["items"]}
        self.promises = {p["promise_id"]: PromiseState(**{**p, "due_at": _dt(p["due_at"])}) for p in row["promises"]}
        self.messages = {
            m["message_id"]: MessageState(**{**m, "due_at": _dt(m["due_at"]), "delivered_at": _dt(m["delivered_at"])})
            for m in row["messages"]
        }
        self.proposals = {x["proposal_id"]: ProposalState(**x) for x in row["proposals"]}
        self.missed = {(kind, target) for kind, target in row["missed"]}
        self.escalations = [(x["bot_id"], _dt(x["waiting_since"]), x["wait_seconds"]) for x in row["escalations"]]

    def open_item_ids(self) -> list[str]:
        return list(self.row["open_items"])

    def open_promise_ids(self) -> list[str]:
        return [p["promise_id"] for p in self.row["open_promises"]]

    def brief(self) -> dict[str, Any]:
        """The handoff brief, times as datetimes (as ``Case.brief`` gives them)."""
        brief = self.row["brief"]
        return {
            "open_items": brief["open_items"],
            "open_promises": [{**p, "due_at": _dt(p["due_at"])} for p in brief["open_promises"]],
            "last_contacts": [{**c, "received_at": _dt(c["received_at"])} for c in brief["last_contacts"]],
        }
