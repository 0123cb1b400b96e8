"""A view caught up from the store over a full ledger (issue 29): the log read as plain rows, a long lag as a batch job."""

from __future__ import annotations

import gc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from caseledger.cli.bench import environment
from caseledger.cli.bench.verify_bench import generate_ledger
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.settings import LedgerSettings
from caseledger.projections import catchup
from caseledger.projections.catchup import catch_up
from caseledger.projections.deadlines import Deadlines
from caseledger.projections.sources import StoreEventSource
from caseledger.projections.view_stores import open_views


@pytest.fixture
def ledger(tmp_path: Path) -> Any:
    opened = CaseLedger(LedgerSettings.resolve(database=str(tmp_path / "l.sqlite"), settings=environment()))
    generate_ledger(opened, 60)
    yield opened
    opened.close()


def test_the_store_source_reads_the_log_as_rows_not_notifications(ledger: CaseLedger,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: eventsourcing's notifications, a UUID and an object per row (a fifth of a catch-up's CPU)."""
    expected = ledger.recorder.select_notifications(start=1, limit=1000)

    def refused(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a Notification made per row")

    monkeypatch.setattr(ledger.recorder, "select_notifications", refused)
    source = StoreEventSource(ledger)
    source.start({0: 2})
    first = source.fetch(5, 0)
    rest = source.fetch(1000, 0)
    assert [(r.store_position, r.event_type, r.data) for r in first + rest] == [
        (n.id, n.topic.rsplit(".", 1)[1], bytes(n.state)) for n in expected[2:]]
    assert source.consumed_positions() == {0: expected[-1].id} and source.fetch(10, 0) == []


def test_a_long_catch_up_holds_the_automatic_collections_off(ledger: CaseLedger, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: every catch-up ran with the collector on, traversing the rows and events it keeps, batch after batch."""
    collecting: list[bool] = []

    class Watched(Deadlines):
        def on_CaseOpened(self, tx: Any, e: Any) -> None:
            collecting.append(gc.isenabled())
            super().on_CaseOpened(tx, e)

    monkeypatch.setattr(catchup, "LONG_CATCH_UP", 20, raising=False)
    with open_views(str(tmp_path / "views.sqlite")) as views:
        catch_up(views, Watched(), ledger=lambda: ledger)
        assert collecting and not any(collecting)
        assert gc.isenabled()
        generate_ledger(ledger, 10)  # a short lag: a reader's catch-up, the collector left alone
        catch_up(views, Watched(), ledger=lambda: ledger)
        assert collecting[-1] is True
        cases = views.fetch("SELECT COUNT(*) AS n FROM deadline_cases")[0]["n"]
    assert cases == len(collecting)


def test_a_reader_leaves_a_view_a_live_runner_follows_to_it(ledger: CaseLedger, tmp_path: Path) -> None:
    """Before: `serve`'s history reads caught the timeline view up from the store while `caseledger run`'s
    projections followed the same view: each found the other had moved its positions and reloaded, about once a
    second in the soak ("projection timeline (live) was moved by another runner or a rebuild; reloading")."""
    from caseledger.projections.runner import LIVE, ProjectionRunner, read_status

    def position(views: Any) -> int:
        return read_status(views, Deadlines.name, LIVE)[0].store_position

    with open_views(str(tmp_path / "views.sqlite")) as views:
        catch_up(views, Deadlines(), ledger=lambda: ledger)  # a reader alone: caught up, and says no follower
        assert read_status(views, Deadlines.name, LIVE)[0].updated_at is None
        head = ledger.recorder.max_notification_id()
        assert position(views) == head

        generate_ledger(ledger, 10)
        follower = ProjectionRunner([Deadlines()], views, StoreEventSource(ledger), idle_s=0)
        follower.prepare()
        follower.step()  # a batch applied by a follower: it says it is alive
        assert read_status(views, Deadlines.name, LIVE)[0].updated_at is not None
        generate_ledger(ledger, 10)
        followed = position(views)
        catch_up(views, Deadlines(), ledger=lambda: ledger)
        assert position(views) == followed  # left to the follower
        follower.step()
        assert position(views) == ledger.recorder.max_notification_id()  # which never found its positions moved

        with views.transaction() as tx:
            tx.execute("UPDATE projection_state SET updated_at = ?", (tx.param(datetime(2020, 1, 1, tzinfo=UTC)),))
        generate_ledger(ledger, 10)
        catch_up(views, Deadlines(), ledger=lambda: ledger)  # a follower silent for long: readers catch up again
        assert position(views) == ledger.recorder.max_notification_id()
