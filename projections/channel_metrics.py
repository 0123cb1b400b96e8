"""Channel metrics (S10): how fast and how reliably each channel and customer segment is served.

Counters per (channel, segment), so any grouping is a SUM away and events in any order give
the same totals (durations are summed in whole milliseconds, never as floats):

- time to acknowledge: from a contact to the delivery of its acknowledgement (``ack_*``);
- time to first response: from a contact to the next response on its case (``first_response_*``);
  both between the times the ledger recorded them, never times a client claimed (the measured
  party cannot shorten its own figures);
- promises made, kept, broken, withdrawn, waived — on the channel the promise was made on;
- chatbot → human: escalations and the customer's total wait (up to the ledger's now);
- contacts, follow-ups and cases opened, for follow-ups per case; deadlines missed.

The segment is the case's (set when it was opened); ``-`` when there is none.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from caseledger.projections.base import Projection, Tx, aggregate_key
from caseledger.projections.tables import COUNTERS, INT, JSON, ROWS, TEXT, Table
from caseledger.projections.views import ViewStore, utc_text

NO_SEGMENT = "-"
COUNTER_COLUMNS = (
    "cases_opened", "contacts", "follow_ups", "acks_delivered", "ack_ms_total", "first_responses",
    "first_response_ms_total", "promises_made", "promises_kept", "promises_broken", "promises_withdrawn",
    "promises_waived", "escalations", "escalation_wait_s_total", "deadlines_missed",
)


def _ms(start: str, end: datetime) -> int:
    return max(0, int((end - datetime.fromisoformat(start)).total_seconds() * 1000))


class ChannelMetrics(Projection):
    """Response times, promises kept, chatbot waits and follow-ups per channel and customer segment."""

    name = "channel_metrics"
    version = 2  # 2: durations between recorded times, never claimed ones
    tables = (
        Table(
            "channel_metrics",
            {"channel": TEXT, "segment": TEXT, **{c: INT for c in COUNTER_COLUMNS}},
            key=("channel", "segment"),
            kind=COUNTERS,
        ),
        # Per case: what is still waiting for a measure (acknowledgements, first responses, promises).
        Table(
            "channel_metrics_cases",
            {"case_id": TEXT, "segment": TEXT, "channel": TEXT, "waiting": JSON, "acks": JSON, "promises": JSON},
            key=("case_id",),
            kind=ROWS,
        ),
    )

    def _case(self, tx: Tx, event: Any) -> dict[str, Any]:
        case = tx.get("channel_metrics_cases", aggregate_key(event))
        assert case is not None, f"case {event.originator_id} has events but was never opened"
        return case

    def on_CaseOpened(self, tx: Tx, e: Any) -> None:
        tx.put("channel_metrics_cases", {"case_id": aggregate_key(e), "segment": e.segment or NO_SEGMENT,
                                         "channel": None, "waiting": [], "acks": {}, "promises": {}})

    def on_ContactReceived(self, tx: Tx, e: Any) -> None:
        case = self._case(tx, e)
        segment = case["segment"]
        opened = case["channel"] is None
        if opened:
            case["channel"] = e.channel
        case["waiting"].append([e.contact_id, e.channel, utc_text(e.timestamp)])
        tx.put("channel_metrics_cases", case)
        tx.add("channel_metrics", e.channel, segment, contacts=1, follow_ups=int(e.follow_up),
               cases_opened=int(opened))

    def on_AcknowledgementIssued(self, tx: Tx, e: Any) -> None:
        case = self._case(tx, e)
        contact = next(w for w in case["waiting"] if w[0] == e.contact_id)
        case["acks"][e.acknowledgement_id] = [contact[1], contact[2]]
        tx.put("channel_metrics_cases", case)

    def on_MessageDelivered(self, tx: Tx, e: Any) -> None:
        case = self._case(tx, e)
        ack = case["acks"].pop(e.message_id, None)
        if ack is None:
            return
        tx.put("channel_metrics_cases", case)
        channel, received_at = ack
        tx.add("channel_metrics", channel, case["segment"], acks_delivered=1,
               ack_ms_total=_ms(received_at, e.timestamp))

    def on_ResponseSent(self, tx: Tx, e: Any) -> None:
        case = self._case(tx, e)
        if not case["waiting"]:
            return
        for _contact_id, channel, received_at in case["waiting"]:
            tx.add("channel_metrics", channel, case["segment"], first_responses=1,
                   first_response_ms_total=_ms(received_at, e.timestamp))
        case["waiting"] = []
        tx.put("channel_metrics_cases", case)

    def on_PromiseMade(self, tx: Tx, e: Any) -> None:
        case = self._case(tx, e)
        case["promises"][e.promise_id] = e.channel
        tx.put("channel_metrics_cases", case)
        tx.add("channel_metrics", e.channel, case["segment"], promises_made=1)

    def _settled(self, tx: Tx, e: Any, counter: str) -> None:
        case = self._case(tx, e)
        channel = case["promises"].pop(e.promise_id)
        tx.put("channel_metrics_cases", case)
        tx.add("channel_metrics", channel, case["segment"], **{counter: 1})

    def on_PromiseKept(self, tx: Tx, e: Any) -> None:
        self._settled(tx, e, "promises_kept")

    def on_PromiseBroken(self, tx: Tx, e: Any) -> None:
        self._settled(tx, e, "promises_broken")

    def on_PromiseWithdrawn(self, tx: Tx, e: Any) -> None:
        self._settled(tx, e, "promises_withdrawn")

    def on_PromiseWaived(self, tx: Tx, e: Any) -> None:
        self._settled(tx, e, "promises_waived")

    def on_EscalatedToHuman(self, tx: Tx, e: Any) -> None:
        case = self._case(tx, e)
        tx.add("channel_metrics", e.channel, case["segment"], escalations=1, escalation_wait_s_total=e.wait_seconds)

    def on_DeadlineMissed(self, tx: Tx, e: Any) -> None:
        case = self._case(tx, e)
        tx.add("channel_metrics", case["channel"] or NO_SEGMENT, case["segment"], deadlines_missed=1)


# -- the read side -------------------------------------------------------------------------------------


def summary(views: ViewStore, *, by: tuple[str, ...] = ("channel",)) -> list[dict[str, Any]]:
    """The metrics grouped by ``by`` (channel and/or segment), with averages and ratios."""
    for column in by:
        if column not in ("channel", "segment"):
            raise ValueError(f"group by channel or segment, not {column!r}")
    if "channel_metrics" not in views.table_names():
        return []
    group = ", ".join(by)
    sums = ", ".join(f"SUM({c}) AS {c}" for c in COUNTER_COLUMNS)
    rows = views.fetch(f"SELECT {group}, {sums} FROM channel_metrics GROUP BY {group} ORDER BY {group}")
    out = []
    for row in rows:
        n = {c: int(row[c] or 0) for c in COUNTER_COLUMNS}
        settled = n["promises_kept"] + n["promises_broken"] + n["promises_withdrawn"]
        out.append({
            **{c: row[c] for c in by},
            **n,
            "ack_avg_s": n["ack_ms_total"] / n["acks_delivered"] / 1000 if n["acks_delivered"] else None,
            "first_response_avg_s": (
                n["first_response_ms_total"] / n["first_responses"] / 1000 if n["first_responses"] else None
            ),
            "promises_kept_ratio": n["promises_kept"] / settled if settled else None,
            "escalation_wait_avg_s": (
                n["escalation_wait_s_total"] / n["escalations"] if n["escalations"] else None
            ),
            "follow_ups_per_case": n["follow_ups"] / n["cases_opened"] if n["cases_opened"] else None,
        })
    return out
