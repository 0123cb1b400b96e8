"""The questions asked of the built-in projections, each read after catching the projection up.

A projection that follows the store is caught up first (read-your-writes: a command sees what
was just recorded); one that follows the events topic is read as it is. Every function takes
an open view store and a function that opens the ledger (see :mod:`projections.catchup`).
Views keep customers' personal data sealed, as the events carry it: every answer here is
revealed by the ledger on the way out, and reads ``[erased]`` where the customer was erased.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING, Any

from caseledger.ledger.errors import NotFound
from caseledger.ledger.privacy.sealing import TOKEN_PREFIX
from caseledger.projections.case_state import CaseState, CaseView
from caseledger.projections.catchup import LedgerOpener, catch_up
from caseledger.projections.channel_metrics import DEFAULT_ZONE, ChannelMetrics, month_zone, summary
from caseledger.projections.deadlines import (
    Deadlines,
    deadline_counts,
    overdue,
    overdue_references,
    record_missed_deadlines,
)
from caseledger.projections.timeline import CustomerTimeline
from caseledger.projections.views import ViewStore

if TYPE_CHECKING:
    from caseledger.ledger.application import TickReport
    from caseledger.ledger.domain.values import Actor


def case_view(views: ViewStore, reference: str, *, ledger: LedgerOpener) -> CaseView:
    """The case state of a (normalised) reference; NotFound when no case has it."""
    projection = CaseState()
    catch_up(views, projection, ledger=ledger)
    rows = views.select(projection.tables[0], where="reference = ?", params=(reference,))
    if not rows:
        raise NotFound(
            f"no case with reference {reference}; find a customer's cases with `caseledger cases CUSTOMER`"
        )
    return CaseView(ledger().reveal(rows[0]))


#: What a customer's history shows (``history``, the service's route): the timeline's columns but the typed ones.
HISTORY_COLUMNS = ("position", "customer_id", "recorded_at", "occurred_at", "event_type", "case_reference", "channel",
                   "actor", "line", "event_id", "aggregate_id", "aggregate_version", "previous_hash")


def customer_timeline(views: ViewStore, customer_id: str, *, ledger: LedgerOpener) -> list[dict[str, Any]]:
    """A customer's timeline rows in the store's order (positions), as the exports list them: the columns history
    shows (:data:`HISTORY_COLUMNS`; the typed ones are for analysts: half the columns read and decoded)."""
    projection = CustomerTimeline()
    catch_up(views, projection, ledger=ledger)
    table = projection.tables[0]
    shown = dataclasses.replace(table, columns={c: table.columns[c] for c in HISTORY_COLUMNS})
    rows = views.select(shown, table.name, where="customer_id = ?", params=(customer_id,), order_by="position")
    # Only the line quotes the customer's texts (the other columns are what the events carry in clear): no walk.
    lines = ledger().reveal_texts([row["line"] for row in rows])
    for row, line in zip(rows, lines, strict=True):
        row["line"] = line
    return rows


def overdue_deadlines(views: ViewStore, now: datetime, *, ledger: LedgerOpener) -> list[dict[str, Any]]:
    """Pending deadlines past due at ``now``, the most overdue first."""
    catch_up(views, Deadlines(), ledger=ledger)
    return ledger().reveal(overdue(views, now))  # type: ignore[no-any-return]


def channel_summary(views: ViewStore, *, by: tuple[str, ...], ledger: LedgerOpener, month: bool = False,
                    zone: str = DEFAULT_ZONE) -> list[dict[str, Any]]:
    """Service per channel and/or segment, per month in ``zone`` if asked (see
    :func:`projections.channel_metrics.summary`)."""
    month_zone(zone)  # an unknown zone is refused before any catching up
    catch_up(views, ChannelMetrics(), ledger=ledger)
    return summary(views, by=by, month=month, zone=zone)


def revealed(rows: list[dict[str, Any]], *, ledger: LedgerOpener) -> list[dict[str, Any]]:
    """Rows of any query over the views with every sealed token opened, ``[erased]`` where erased.

    The ledger is opened only when a row holds a token, so a query on clear columns needs no keys.
    """
    if not any(isinstance(v, str) and TOKEN_PREFIX in v for row in rows for v in row.values()):
        return rows
    return ledger().reveal(rows)  # type: ignore[no-any-return]


def tick_missed_deadlines(views: ViewStore, *, ledger: LedgerOpener, actor: Actor) -> TickReport:
    """Record every deadline the deadlines projection finds past due on the ledger's clock and not yet recorded.

    The projection only says which cases to look at; each Case aggregate decides again, once.
    """
    catch_up(views, Deadlines(), ledger=ledger)
    opened = ledger()
    checked = deadline_counts(views)["cases"]
    # Streamed a page at a time: the overdue rows of a full ledger are never all in memory.
    report = record_missed_deadlines(opened, overdue_references(views, opened.clock()), actor=actor)
    return dataclasses.replace(report, cases_checked=checked)
