"""Channel metrics (S10): how fast and how reliably each channel and customer segment is served.

Counters per (channel, segment), so any grouping is a SUM away and events in any order give
the same totals (durations are summed in whole milliseconds, never as floats):

- time to acknowledge: from a contact to the delivery of its acknowledgement (``ack_*``);
- time to first response: from a contact to the next response on its case (``first_response_*``);
  both between the times the ledger recorded them, never times a client claimed (the measured
  party cannot shorten its own figures);
- promises made, kept, broken, withdrawn, waived — on the channel the promise was made on;
- chatbot → human: escalations and the customer's total wait (up to the ledger's now);
- contacts, follow-ups and cases opened, for follow-ups per case; deadlines missed;
- every duration kept, one row each (``channel_metrics_durations``), so medians and percentiles
  are exact, per month in any time zone: each contact's time to first response, and each closed
  case's time to resolution (from its first contact to its closing; a reopened case counts again
  once closed again, from the same first contact).

The segment is the case's (set when it was opened); ``-`` when there is none.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from caseledger.ledger.errors import ValidationError
from caseledger.projections.base import Projection, Tx, aggregate_key
from caseledger.projections.tables import COUNTERS, INT, JSON, ROWS, TEXT, TIME, Table
from caseledger.projections.views import ViewStore, utc_text

NO_SEGMENT = "-"
COUNTER_COLUMNS = (
    "cases_opened", "contacts", "follow_ups", "acks_delivered", "ack_ms_total", "first_responses",
    "first_response_ms_total", "promises_made", "promises_kept", "promises_broken", "promises_withdrawn",
    "promises_waived", "escalations", "escalation_wait_s_total", "deadlines_missed",
)
FIRST_RESPONSE, RESOLUTION = "first_response", "resolution"
"""The measures kept duration by duration (``channel_metrics_durations.measure``)."""
WHOLE_CASE = "-"
"""The ``item`` of a resolution: it measures the whole case."""


def _ms(start: str, end: datetime) -> int:
    return max(0, int((end - datetime.fromisoformat(start)).total_seconds() * 1000))


class ChannelMetrics(Projection):
    """Response times, promises kept, chatbot waits and follow-ups per channel and customer segment."""

    name = "channel_metrics"
    version = 3  # 2: durations between recorded times, never claimed ones; 3: each duration kept
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
            {"case_id": TEXT, "segment": TEXT, "channel": TEXT, "first_contact_at": TEXT, "waiting": JSON,
             "acks": JSON, "promises": JSON},
            key=("case_id",),
            kind=ROWS,
        ),
        # Every measured duration: the contact's (or the case's) channel and segment, when its clock started
        # (recorded, UTC), how long it ran. Percentiles and months are computed from these rows when read.
        Table(
            "channel_metrics_durations",
            {"case_id": TEXT, "measure": TEXT, "item": TEXT, "channel": TEXT, "segment": TEXT,
             "started_at": TIME, "ms": INT},
            key=("case_id", "measure", "item"),
            kind=ROWS,
        ),
    )

    def _case(self, tx: Tx, event: Any) -> dict[str, Any]:
        case = tx.get("channel_metrics_cases", aggregate_key(event))
        assert case is not None, f"case {event.originator_id} has events but was never opened"
        return case

    def on_CaseOpened(self, tx: Tx, e: Any) -> None:
        tx.put("channel_metrics_cases", {"case_id": aggregate_key(e), "segment": e.segment or NO_SEGMENT,
                                         "channel": None, "first_contact_at": None, "waiting": [], "acks": {},
                                         "promises": {}})

    def on_ContactReceived(self, tx: Tx, e: Any) -> None:
        case = self._case(tx, e)
        segment = case["segment"]
        opened = case["channel"] is None
        received_at = utc_text(e.timestamp)
        if opened:
            case["channel"] = e.channel
            case["first_contact_at"] = received_at
        case["waiting"].append([e.contact_id, e.channel, received_at])
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
        case_id = aggregate_key(e)
        for contact_id, channel, received_at in case["waiting"]:
            ms = _ms(received_at, e.timestamp)
            tx.add("channel_metrics", channel, case["segment"], first_responses=1, first_response_ms_total=ms)
            tx.put("channel_metrics_durations", {
                "case_id": case_id, "measure": FIRST_RESPONSE, "item": contact_id, "channel": channel,
                "segment": case["segment"], "started_at": datetime.fromisoformat(received_at), "ms": ms,
            })
        case["waiting"] = []
        tx.put("channel_metrics_cases", case)

    def on_CaseClosed(self, tx: Tx, e: Any) -> None:
        case = self._case(tx, e)
        first = case["first_contact_at"]
        if first is None:  # closed before any contact was received: nothing to measure from
            return
        tx.put("channel_metrics_durations", {
            "case_id": aggregate_key(e), "measure": RESOLUTION, "item": WHOLE_CASE, "channel": case["channel"],
            "segment": case["segment"], "started_at": datetime.fromisoformat(first), "ms": _ms(first, e.timestamp),
        })

    def on_CaseReopened(self, tx: Tx, e: Any) -> None:
        tx.delete("channel_metrics_durations", aggregate_key(e), RESOLUTION, WHOLE_CASE)

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

PERCENTILES = (50, 90, 99)
"""The percentiles every summary gives of each kept measure (``<measure>_p50_s`` …)."""
DEFAULT_ZONE = "UTC"
"""The zone months are counted in unless another is asked for."""


def nearest_rank(ordered: list[int], percent: int) -> int:
    """The ``percent``-th percentile of ascending ``ordered`` by the nearest-rank method.

    The smallest kept value with at least ``percent`` % of the values at or below it: always a
    duration that was measured, exact in integers (no interpolation), the same on every backend.
    """
    rank = -(-percent * len(ordered) // 100)  # ceil(percent × n / 100), in integers
    return ordered[max(rank, 1) - 1]


def month_zone(name: str) -> ZoneInfo:
    """The IANA zone months are counted in; a ValidationError says how to name one."""
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown time zone {name!r}; use an IANA name such as Europe/Paris or UTC") from None


def _measures(durations: list[int], prefix: str, count: str) -> dict[str, Any]:
    ordered = sorted(durations)
    out: dict[str, Any] = {count: len(ordered)}
    out[f"{prefix}_avg_s"] = sum(ordered) / len(ordered) / 1000 if ordered else None
    for p in PERCENTILES:
        out[f"{prefix}_p{p}_s"] = nearest_rank(ordered, p) / 1000 if ordered else None
    return out


def _kept(views: ViewStore) -> list[dict[str, Any]]:
    table = ChannelMetrics.tables[2]
    return views.select(table, order_by="started_at, case_id, measure, item")


def _grouped(rows: list[dict[str, Any]], key: Any) -> dict[Any, dict[str, list[int]]]:
    groups: dict[Any, dict[str, list[int]]] = {}
    for row in rows:
        measures = groups.setdefault(key(row), {FIRST_RESPONSE: [], RESOLUTION: []})
        measures[row["measure"]].append(int(row["ms"]))
    return groups


def _durations(measures: dict[str, list[int]]) -> dict[str, Any]:
    return {**_measures(measures[FIRST_RESPONSE], "first_response", "first_responses"),
            **_measures(measures[RESOLUTION], "resolution", "resolutions")}


def summary(views: ViewStore, *, by: tuple[str, ...] = ("channel",), month: bool = False,
            zone: str = DEFAULT_ZONE) -> list[dict[str, Any]]:
    """The metrics grouped by ``by`` (channel and/or segment), with averages, ratios and percentiles.

    With ``month``, one row per group and month (``YYYY-MM`` in ``zone``) of the kept durations: a
    duration counts in the month its clock started (the contact's recording; for a resolution, the
    case's first contact). The counters without a time (contacts, promises …) are then left out.
    """
    for column in by:
        if column not in ("channel", "segment"):
            raise ValueError(f"group by channel or segment, not {column!r}")
    where = month_zone(zone)
    if "channel_metrics" not in views.table_names():
        return []
    kept = _kept(views)
    if month:
        groups = _grouped(kept, lambda r: (*(r[c] for c in by), r["started_at"].astimezone(where).strftime("%Y-%m")))
        return [{**dict(zip(by, key[:-1], strict=True)), "month": key[-1], "zone": where.key, **_durations(m)}
                for key, m in sorted(groups.items())]
    durations = _grouped(kept, lambda r: tuple(r[c] for c in by))
    group = ", ".join(by)
    sums = ", ".join(f"SUM({c}) AS {c}" for c in COUNTER_COLUMNS)
    rows = views.fetch(f"SELECT {group}, {sums} FROM channel_metrics GROUP BY {group} ORDER BY {group}")
    out = []
    for row in rows:
        n = {c: int(row[c] or 0) for c in COUNTER_COLUMNS}
        settled = n["promises_kept"] + n["promises_broken"] + n["promises_withdrawn"]
        kept_here = durations.get(tuple(row[c] for c in by), {FIRST_RESPONSE: [], RESOLUTION: []})
        out.append({
            **{c: row[c] for c in by},
            **n,
            "ack_avg_s": n["ack_ms_total"] / n["acks_delivered"] / 1000 if n["acks_delivered"] else None,
            "first_response_avg_s": (
                n["first_response_ms_total"] / n["first_responses"] / 1000 if n["first_responses"] else None
            ),
            **{k: v for k, v in _durations(kept_here).items() if k not in ("first_responses", "first_response_avg_s")},
            "promises_kept_ratio": n["promises_kept"] / settled if settled else None,
            "escalation_wait_avg_s": (
                n["escalation_wait_s_total"] / n["escalations"] if n["escalations"] else None
            ),
            "follow_ups_per_case": n["follow_ups"] / n["cases_opened"] if n["cases_opened"] else None,
        })
    return out
