"""The agent's workspace speaks the agent's language: one rule for times in words on every page, one event stream,
and (below) every word of the pages in the agent's language, with ``lang`` true."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from caseledger.ledger.domain.permissions import Role
from caseledger.ledger.service.agent_times import AgentClock
from caseledger.ledger.service.case_page import SectionClock, Viewer
from tests.support.examples import examples

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
SERVICE = Path(__file__).resolve().parents[2] / "ledger" / "service"


# -- finding 2: one rule for "how far", the queue's and the case page's --------------------------------------


@settings(max_examples=examples(200), deadline=None)
@given(seconds=st.integers(min_value=-40 * 86400, max_value=40 * 86400), language=st.sampled_from(["fr_FR", "en_GB"]))
def test_the_queue_and_the_case_page_say_how_far_a_time_is_with_the_same_words(seconds: int, language: str) -> None:
    """Finding: the queue said "dans 30 secondes" where the case page said "maintenant" (two rules)."""
    at = NOW + timedelta(seconds=seconds)
    queue = AgentClock.choose(now=NOW, default_locale=language)
    page = SectionClock(Viewer(role=Role.AGENT, locale=language, zone="UTC"), NOW)
    assert queue.relative(at) == page.relative(at)


def test_within_a_minute_is_now_and_beyond_it_moves_by_whole_minutes() -> None:
    french = AgentClock.choose(now=NOW, default_locale="fr_FR")
    assert french.relative(NOW + timedelta(seconds=30)) == french.relative(NOW - timedelta(seconds=59)) == "maintenant"
    assert french.relative(NOW + timedelta(seconds=61)) == french.relative(NOW + timedelta(seconds=89))
    assert french.relative(NOW + timedelta(days=2)) == "dans 2 jours"


# -- finding 3: one event stream class ----------------------------------------------------------------------


def test_one_event_stream_serves_the_queue_and_the_case_page() -> None:
    """Finding: ``_Stream`` was written twice (live.py and queue_page.py); it is feeds.EventStream, once."""
    defined = {}
    for path in SERVICE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any("StreamingResponse" in ast.unparse(b) for b in node.bases):
                defined.setdefault(node.name, []).append(path.name)
    assert defined == {"EventStream": ["feeds.py"]}
