"""The agent's workspace speaks the agent's language: one rule for times in words on every page, one event stream,
and (below) every word of the pages in the agent's language, with ``lang`` true."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.permissions import Role
from caseledger.ledger.domain.values import ContactDraft
from caseledger.ledger.service.agent_language import DOMAIN, LANGUAGES, words
from caseledger.ledger.service.agent_times import AgentClock
from caseledger.ledger.service.case_actions import FormRefused, message_page, read_form
from caseledger.ledger.service.case_page import (
    Form,
    PageState,
    SectionClock,
    Viewer,
    flash_text,
    render_page,
    viewer_for,
)
from caseledger.ledger.service.case_templates import FORMS
from caseledger.ledger.service.live import _login_page
from tests.support.case_pages import AGENT, JANE, janes_case
from tests.support.examples import examples
from tests.support.page_language import english_left, msgids

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


# -- finding 1: the whole workspace in the agent's language, lang true ---------------------------------------

FRENCH = "fr_FR"


def _catalog(language: str) -> Any:
    from babel.messages.pofile import read_po

    path = SERVICE / "locales" / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as po:
        return read_po(po, locale=language)


def _ids(catalog: Any) -> set[str]:
    return {part for m in catalog if m.id for part in ([m.id] if isinstance(m.id, str) else m.id)}


def test_every_word_the_pages_use_has_its_french_and_the_template_is_current() -> None:
    """Finding: every label, heading, button, flash and error was English on a French page."""
    from babel.messages.pofile import read_po

    used = msgids()
    with (SERVICE / "locales" / f"{DOMAIN}.pot").open("rb") as pot:
        assert _ids(read_po(pot)) == used, "the template is stale: pybabel extract (ledger/service/locales/babel.cfg says how)"
    french = _catalog("fr")
    missing = []
    for message in french:
        if message.id and (message.fuzzy or not all(message.string if isinstance(message.string, tuple)
                                                    else [message.string])):
            missing.append(message.id)
    assert sorted(used - _ids(french)) == [] and missing == [], "no French for some words: pybabel update"
    assert "fr" in LANGUAGES and words(FRENCH)._("Queue") == "File d’attente"


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Any:
    def work(ledger: CaseLedger, ref: str) -> None:
        ledger.respond(ref, actor=AGENT, body="A fraud check.", answers=["Q1"])
        ledger.waive_item(ref, actor=AGENT, item_id="Q3", reason="Asked twice")
        ledger.make_promise(ref, actor=AGENT, channel="phone", kind="callback", terms="Call back",
                            due_at=datetime.now(UTC) + timedelta(hours=1))
        ledger.hand_off(ref, actor=AGENT, to_assignee="bob", to_team="billing", note="She called twice")
        ledger.record_contact(ContactDraft(channel="chat", channel_message_id="m-2", identity=JANE, subject="Other",
                                           items=("Again?",)))

    return janes_case(tmp_path_factory.mktemp("fr"), subject="Card blocked", work=work)


def test_a_french_case_page_says_everything_in_french_and_marks_what_is_not(case: Any) -> None:
    """Finding: ``<html lang="fr-FR">`` over English labels, headings, buttons, flashes and errors."""
    found, context = case
    viewer = viewer_for(Role.SUPERVISOR, accept_language="fr-FR,fr;q=0.9", zone=None, default_locale="en",
                        default_zone="Europe/Paris")
    assert viewer.lang == "fr-FR"
    failed = {"respond-Q2": Form({"body": ""}, "Réponse : vide", "")}
    page = render_page(found, viewer, context, PageState(csrf="t", flash=flash_text("respond", "R1", "fr"),
                                                         failed=failed, error="case is closed", error_lang="en"),
                       now=datetime.now(UTC) + timedelta(hours=3))
    assert english_left(page, "fr-FR") == []
    assert "Réponse R1 envoyée" in page and "Envoyer la réponse" in page and "en retard" in page
    assert '<span lang="en">case is closed</span>' in page and '<span lang="">Card blocked</span>' in page
    assert 'data-live="en direct"' in page and ">Passation</h2>" in page
    english = render_page(found, viewer_for(Role.SUPERVISOR, accept_language="en-GB", zone=None,
                                            default_locale="fr_FR", default_zone="UTC"), context, PageState())
    assert '<html lang="en-GB"' in english and "Handoff brief" in english and "Passation" not in english


def test_a_language_without_words_falls_back_to_english_with_lang_en() -> None:
    for header in ("de-DE", "xx, *", "ja;q=0.9, zz"):
        viewer = viewer_for(Role.AGENT, accept_language=header, zone=None, default_locale="de_DE", default_zone="UTC")
        assert (viewer.locale, viewer.lang) == ("en", "en"), header
    chosen = viewer_for(Role.AGENT, accept_language="de-DE, fr;q=0.8", zone=None, default_locale="en", default_zone="UTC")
    assert chosen.lang == "fr"  # the first of the agent's languages that the pages speak


def test_the_french_sign_in_refusal_and_queue_pages_speak_french() -> None:
    from caseledger.ledger.service.queue_page import _refusal

    login = _login_page("/", "nonce", "fr-FR", error="token unknown")
    assert english_left(login, "fr-FR") == [] and '<span lang="en">token unknown</span>' in login
    refusal = message_page(403, "Not allowed", "role agent may not case.close", lang="fr-FR")
    assert english_left(refusal.body.decode(), "fr-FR") == [] and 'lang="en"' in refusal.body.decode()
    queue = _refusal(401, "Not signed in", "token expired", "fr-FR").body.decode()
    assert english_left(queue, "fr-FR") == []
    with pytest.raises(FormRefused, match="Réponse : vide"):
        read_form(FORMS["respond"], {"body": " ", "target": "Q1"}, "UTC", "fr")
