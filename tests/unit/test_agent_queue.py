"""The agent's queue: its rows agree with the deadlines and the cases, its order is urgency, its filters leak
nothing, its counts are what it holds; times read in the agent's zone and language; sign-in may return to it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caseledger.ledger.domain.case_parts import Status
from caseledger.ledger.service.agent_times import AgentClock, parse_accept_language
from caseledger.ledger.service.live import _safe_next
from caseledger.projections.case_state import CaseState
from caseledger.projections.deadlines import Deadlines
from caseledger.projections.queue import (
    ORDERS,
    SOON,
    STATES,
    WHO,
    AgentQueue,
    QueueFilter,
    queue_counts,
    queue_rows,
)
from caseledger.projections.sources import StoreEventSource
from caseledger.projections.view_stores import open_views
from caseledger.projections.views import ViewStore
from tests.support.examples import examples
from tests.support.page_language import english_left
from tests.support.projection_scenarios import PROPERTY_SETTINGS, catch_up, generated_ledger, steps_strategy

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
TABLE = AgentQueue.tables[0]


# -- the rows agree with the deadlines projection and the case state -----------------------------------------


@settings(max_examples=examples(40), **PROPERTY_SETTINGS)  # type: ignore[arg-type]
@given(steps=steps_strategy)
def test_each_row_holds_its_cases_earliest_pending_deadline_follow_ups_and_proposals(
        steps: list[tuple[str, int]]) -> None:
    """Finding: there was no list of cases to start from; the queue's urgency is the deadlines' own rule."""
    with generated_ledger() as (ledger, scenario, tmp), open_views(str(tmp / "views.sqlite")) as views:
        for action, seed in steps:
            scenario.apply(action, seed)
        catch_up(views, StoreEventSource(ledger), projections=[AgentQueue(), Deadlines(), CaseState()])
        queue = {r["case_id"]: r for r in views.select(TABLE)}
        cases = {r["case_id"]: r for r in views.select(CaseState.tables[0])}
        pending: dict[str, list[Any]] = {}
        for d in views.select(Deadlines.tables[0], where="state = ?", params=("pending",)):
            pending.setdefault(d["case_id"], []).append((d["due_at"], d["kind"], d["target_id"]))
        assert set(queue) == set(cases)
        for case_id, row in queue.items():
            case = cases[case_id]
            earliest = min(pending.get(case_id, []), default=None)
            assert row["due_at"] == (earliest[0] if earliest else None), (row, pending.get(case_id))
            if earliest and [d for d in pending[case_id] if d[0] == earliest[0]] == [earliest]:
                assert (row["due_kind"], row["due_target"]) == earliest[1:]
            assert (row["status"], row["assignee"], row["team"]) == (case["status"], case["assignee"], case["team"])
            assert row["proposals"] == sum(1 for p in case["proposals"] if p["status"] == "proposed")
            open_ids = set(case["open_items"])
            assert row["follow_ups"] == sum(1 for c in case["contacts"]
                                            if c["follow_up"] and open_ids & set(c["item_ids"]))
            assert row["open_items"] == len(open_ids)
            assert row["subject"] == case["subject"]  # sealed alike: the queue holds no text in clear


# -- order, filters and counts over any set of rows ---------------------------------------------------------


@pytest.fixture(scope="module")
def views(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ViewStore]:
    with open_views(str(tmp_path_factory.mktemp("queue") / "views.sqlite")) as store:
        with store.transaction() as tx:
            tx.create_table(TABLE, TABLE.name)
        yield store


MINUTES = st.one_of(st.none(), st.integers(-60 * 24 * 30, 60 * 24 * 30))
ROWS = st.lists(st.tuples(MINUTES, st.sampled_from(("email", "chat", "phone")), st.sampled_from((None, "premium")),
                          st.sampled_from(Status.ALL), st.sampled_from((None, "alice", "bob")),
                          st.sampled_from((None, "billing", "loans")), st.integers(0, 2), st.integers(0, 2), MINUTES),
                max_size=30)
FILTERS = st.builds(QueueFilter, channel=st.sampled_from((None, "email", "chat")),
                    segment=st.sampled_from((None, "premium")),
                    status=st.sampled_from(("active", "all", *Status.ALL)), who=st.sampled_from(WHO),
                    team=st.sampled_from((None, "billing")), state=st.sampled_from((None, *STATES)),
                    order=st.sampled_from(ORDERS))


def _row(n: int, due: int | None, channel: str, segment: str | None, status: str, assignee: str | None,
         team: str | None, follow_ups: int, proposals: int, since: int | None) -> dict[str, Any]:
    return {"case_id": f"case-{n}", "reference": f"CL-{n:05d}-AAAAA", "subject": "enc:1:x", "category": None,
            "segment": segment, "channel": channel, "status": status, "active": int(status in Status.ACTIVE), "assignee": assignee, "team": team,
            "opened_at": NOW, "last_contact_at": NOW - timedelta(minutes=n * 37 % 101),
            "due_at": None if due is None else NOW + timedelta(minutes=due), "due_kind": "response",
            "due_target": "C1", "open_items": 1, "follow_ups": follow_ups, "proposals": proposals,
            "proposed_since": None if not proposals or since is None else NOW + timedelta(minutes=since),
            "pending": {}, "contacts": {}, "waiting": {}, "updated_at": NOW, "position": n}


def _holds(queue: QueueFilter, row: dict[str, Any], *, state: bool = True, my_team: str | None = None) -> bool:
    due = row["due_at"]
    in_state = {None: True, "overdue": due is not None and due < NOW,
                "soon": due is not None and NOW <= due < NOW + SOON, "follow_ups": row["follow_ups"] > 0,
                "proposals": row["proposals"] > 0}
    return ((queue.status == "all" or (queue.status == "active" and row["status"] in Status.ACTIVE)
             or row["status"] == queue.status)
            and all(getattr(queue, c) in (None, row[c]) for c in ("channel", "segment", "team"))
            and {"all": True, "me": row["assignee"] == "alice", "unassigned": row["assignee"] is None,
                 "team": my_team is not None and row["team"] == my_team,
                 "mine": row["assignee"] == "alice" or (my_team is not None and row["team"] == my_team)
                 or (row["assignee"] is None and row["team"] is None)}[queue.who]
            and (not state or in_state[queue.state]))


@settings(max_examples=examples(200), deadline=None)
@given(drawn=ROWS, queue=FILTERS, my_team=st.sampled_from((None, "billing")))
def test_the_queue_is_in_urgency_order_its_filters_leak_nothing_and_its_counts_are_what_it_holds(
        views: ViewStore, drawn: list[tuple[Any, ...]], queue: QueueFilter, my_team: str | None) -> None:
    """Finding: there was no list of cases to start from. Any deadlines: overdue first (most overdue first),
    then the soonest due, then proposals waiting longest; a filter shows its cases only, and all of them.
    Issue 28's review: "my team" (the principal's) and "mine, my team's and no one's" are filters like the others."""
    rows = [_row(n, *values) for n, values in enumerate(drawn)]
    with views.transaction() as tx:
        tx.execute("DELETE FROM agent_queue")
        if rows:
            tx.upsert_rows(TABLE, TABLE.name, rows)
    listed = queue_rows(views, queue=queue, me="alice", now=NOW, limit=100, my_team=my_team)
    assert sorted(r["case_id"] for r in listed) == sorted(r["case_id"] for r in rows
                                                          if _holds(queue, r, my_team=my_team))

    def urgency(r: dict[str, Any]) -> tuple[Any, ...]:
        far = datetime.max.replace(tzinfo=UTC)
        return (r["due_at"] is None, r["due_at"] or far, r["proposed_since"] is None, r["proposed_since"] or far,
                r["reference"])

    if queue.order == "recent":  # the latest contact first
        assert [(r["last_contact_at"], r["reference"]) for r in listed] == sorted(
            ((r["last_contact_at"], r["reference"]) for r in listed), key=lambda k: (-k[0].timestamp(), k[1]))
    else:
        assert [urgency(r) for r in listed] == sorted(urgency(r) for r in listed)
        overdue = [r["due_at"] is not None and r["due_at"] < NOW for r in listed]
        assert overdue == sorted(overdue, reverse=True)  # every overdue case before every other
    counts = queue_counts(views, queue=queue, me="alice", now=NOW, my_team=my_team)
    base = [r for r in rows if _holds(queue, r, state=False, my_team=my_team)]
    assert counts["all"] == len(base)
    for state in STATES:
        assert counts[state] == sum(1 for r in base if _holds(QueueFilter(state=state, status="all"), r))


def test_a_filter_given_nonsense_falls_back_to_the_whole_queue() -> None:
    odd = QueueFilter(status="drop table", who="everyone'", state="1=1", channel="  ", team="x" * 500, order="x")
    assert (odd.status, odd.who, odd.state, odd.channel, len(odd.team or ""), odd.order) == (
        "active", "all", None, None, 100, "urgency")


# -- times as people read them ---------------------------------------------------------------------------


def test_a_time_reads_in_the_agents_zone_and_language_in_words() -> None:
    """Finding: times were raw UTC ISO strings with microseconds (2026-12-07T05:25:57.914095+00:00)."""
    french = AgentClock.choose(now=NOW, accept_language="fr-FR,fr;q=0.9,en;q=0.5", default_zone="Europe/Paris")
    assert french.both(datetime(2026, 12, 9, 8, 0, tzinfo=UTC)) == "mercredi 9 décembre à 09:00 — dans 2 jours"
    assert french.relative(NOW - timedelta(hours=3)) == "il y a 3 heures"
    assert french.is_overdue(NOW - timedelta(seconds=1)) and not french.is_overdue(NOW + timedelta(seconds=1))
    assert french.language == "fr-FR"
    english = AgentClock.choose(now=NOW, zone="America/New_York", accept_language="en-GB", default_locale="fr_FR")
    assert english.when(datetime(2027, 1, 9, 15, 0, tzinfo=UTC)) == "Saturday, 9 January 2027 at 10:00"


def test_the_agents_choice_wins_over_the_browser_and_the_company_and_junk_is_skipped() -> None:
    chosen = AgentClock.choose(now=NOW, principal_zone="Asia/Tokyo", principal_locale="de", zone="Europe/Paris",
                               accept_language="fr", default_zone="UTC", default_locale="en")
    assert (chosen.zone.key, chosen.language) == ("Asia/Tokyo", "de")
    junk = AgentClock.choose(now=NOW, zone="../../etc/passwd", accept_language="xx-ZZ, *;q=0.5, <script>",
                             default_zone="Not/AZone", default_locale="zz")
    assert (junk.zone.key, junk.language) == ("UTC", "en")
    assert parse_accept_language("en;q=0.5, fr;q=0.9, de, es;q=0, it;q=x") == ["de", "fr", "en"]


# -- sign-in returns to the queue, never elsewhere ----------------------------------------------------------


def test_sign_in_may_return_to_the_queue_and_its_filters_but_never_off_this_server() -> None:
    """Finding: /login's next allowed only /cases/…, so the queue at / could not be returned to."""
    assert _safe_next("/") == "/"
    assert _safe_next("/?channel=chat&state=overdue") == "/?channel=chat&state=overdue"
    assert _safe_next("/cases/CL-7K2QD-M3XPA") == "/cases/CL-7K2QD-M3XPA"
    for hostile in ("//evil.example/", "https://evil.example/", "/\\evil.example", "/?next=//evil.example",
                    "javascript:alert(1)", "/%0d%0aSet-Cookie:x=1", "/admin"):
        assert _safe_next(hostile) == "/", hostile


def test_the_service_keeps_the_queue_not_caseledger_run() -> None:
    """``caseledger run`` may follow the events topic: the queue is kept from the store by the service."""
    from caseledger.projections.registry import BUILT_INS

    assert AgentQueue.name not in BUILT_INS


# -- the page's queue section ----------------------------------------------------------------------------


class _Ledger:
    """What the queue's rendering asks of a ledger: its clock, and opening sealed texts."""

    def __init__(self, opened: str) -> None:
        self.opened = opened

    def clock(self) -> datetime:
        return NOW

    def reveal(self, values: list[Any]) -> list[Any]:
        return [self.opened for _ in values]


def test_the_section_escapes_what_it_shows_withholds_subjects_and_says_when_it_lags(views: ViewStore) -> None:
    from caseledger.ledger.access.principals import Principal
    from caseledger.ledger.domain.permissions import Authentication, Role
    from caseledger.ledger.service.queue_feed import Snapshot
    from caseledger.ledger.service.queue_page import ViewKey, _page, render_queue

    rows = [_row(1, -90, "email", None, "open", None, None, 1, 0, None), _row(2, 600, "chat", None, "open",
                                                                              "alice", "billing", 0, 1, -30)]
    with views.transaction() as tx:
        tx.execute("DELETE FROM agent_queue")
        tx.upsert_rows(TABLE, TABLE.name, rows)
    hostile = '<script>alert("x")</script>'
    key = ViewKey(QueueFilter(), "", "Europe/Paris", "fr_FR", personal=True)
    shown = render_queue(_Ledger(hostile), views, key, Snapshot(position=10, behind=0))
    assert "<script>" not in shown and "&lt;script&gt;" in shown and "catching up" not in shown
    assert shown.index("CL-00001-AAAAA") < shown.index("CL-00002-AAAAA") and "En retard :" in shown
    assert "il y a 2 heures" in shown and "dans 10 heures" in shown
    assert "1 proposition en attente depuis il y a 30 minutes" in shown and "Overdue" not in shown
    choices = {"channel": ["chat", "email"], "segment": [], "team": ["billing"]}
    page = _page(key, shown, Principal(name="alice", role=Role.AGENT, authentication=Authentication.TOKEN), choices,
                 AgentClock.choose(now=NOW, zone=key.zone, default_locale=key.locale), None)
    assert english_left(page, "fr-FR") == [] and 'data-live="en direct"' in page  # issue 28: lang true of the words
    withheld = render_queue(_Ledger(hostile), views, ViewKey(QueueFilter(), "", "UTC", "en", personal=False),
                            Snapshot(position=10, behind=1234))
    assert "script" not in withheld and "not shown to this role" in withheld
    assert "catching up with the ledger: 1234 events still to read" in withheld
