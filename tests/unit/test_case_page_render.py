"""The case page's section without a server: overdue in words (not colour alone), every value escaped whatever it
holds, the viewer's language and zone from anything a browser sends, the forms' CSRF token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import escape

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.permissions import Role
from caseledger.ledger.errors import PermissionDenied
from caseledger.ledger.service.case_actions import FormRefused, read_form
from caseledger.ledger.service.case_page import CustomerContext, Viewer, render_case, viewer_for
from caseledger.ledger.service.case_templates import FORMS
from caseledger.ledger.service.sessions import check_form_origin, form_token
from tests.support.case_pages import AGENT, janes_case
from tests.support.examples import examples


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Any:
    def promise(ledger: CaseLedger, ref: str) -> None:
        ledger.make_promise(ref, actor=AGENT, channel="phone", kind="callback", terms="Call back",
                            due_at=datetime.now(UTC) + timedelta(days=1))

    return janes_case(tmp_path_factory.mktemp("page"), subject="Card", work=promise)[0]


def test_an_overdue_deadline_says_so_in_words_and_in_red(case: Any) -> None:
    """Finding: deadlines were raw ISO strings; overdue must read as overdue, in the agent's language, not by
    colour alone."""
    later = datetime.now(UTC) + timedelta(days=30)
    for locale, word in (("fr_FR", "en retard"), ("en_GB", "overdue")):
        section = render_case(case, Viewer(Role.AGENT, locale, "Europe/Paris"), now=later)
        deadlines = section[section.index('id="deadlines"'):section.index('id="missed"')]
        assert f"<strong>{word}</strong>" in deadlines and 'class="overdue"' in deadlines, locale
    fresh = render_case(case, Viewer(Role.AGENT, "en_GB", "Europe/Paris"), now=datetime.now(UTC))
    assert "<strong>overdue</strong>" not in fresh


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=1, max_size=60) | st.just("<script>alert(1)</script>\"'&"))
def test_whatever_a_customer_writes_is_shown_escaped(case: Any, text: str) -> None:
    case.subject = text
    case.items["Q1"].text = text
    section = render_case(case, Viewer(Role.AGENT), CustomerContext(case.customer_id, identities=[f"email:{text}"]))
    assert str(escape(text)) in section
    assert "<script" not in section.lower()


@settings(max_examples=examples(200), deadline=None)
@given(header=st.text(max_size=80), zone=st.one_of(st.none(), st.text(max_size=70)))
def test_any_accept_language_and_zone_give_a_viewer(header: str, zone: str | None) -> None:
    viewer = viewer_for(Role.AGENT, accept_language=header, zone=zone, default_locale="fr_FR",
                        default_zone="Europe/Paris")
    assert viewer.locale and viewer.zone


def test_the_viewer_takes_the_best_language_and_a_known_zone() -> None:
    """The best language the pages have words in (issue 28: German has none, English is the next asked for)."""
    chosen = viewer_for(Role.AGENT, accept_language="xx;q=0.9, de-DE;q=0.8, en;q=0.1", zone="Nowhere/City",
                        default_locale="fr_FR", default_zone="Europe/Paris")
    assert (chosen.locale, chosen.zone) == ("en", "Europe/Paris")


@settings(max_examples=examples(200), deadline=None)
@given(values=st.dictionaries(st.sampled_from(["body", "reason", "target", "due", "kind", "terms", "channel"]),
                              st.text(max_size=50)), action=st.sampled_from(sorted(FORMS)))
def test_a_form_is_read_or_refused_with_a_reason_never_anything_else(values: dict[str, str], action: str) -> None:
    spec = FORMS[action]
    try:
        target, read, due = read_form(spec, values, "Europe/Paris")
    except FormRefused as refused:
        assert str(refused)
        return
    assert set(read) == {f.name for f in spec.fields}
    assert all(read[f.name].strip() for f in spec.fields if f.required)
    assert (due is not None) == any(f.kind == "datetime" for f in spec.fields)
    assert bool(target) == bool(spec.target)


def test_a_forms_token_is_the_sessions_and_the_origin_this_servers() -> None:
    secret, own = b"s" * 32, "http://127.0.0.1:8000"
    token = form_token("cls_a", secret)
    check_form_origin(session_id="cls_a", token=token, secret=secret, origin=own, fetch_site="same-origin",
                      own_origin=own)
    for session, sent, origin, site in (("cls_b", token, own, "same-origin"), ("cls_a", "", own, None),
                                        ("cls_a", token, "https://evil.example", None),
                                        ("cls_a", token, None, "cross-site"),
                                        ("cls_a", form_token("cls_a", b"t" * 32), own, None)):
        with pytest.raises(PermissionDenied):
            check_form_origin(session_id=session, token=sent, secret=secret, origin=origin, fetch_site=site,
                              own_origin=own)


def test_the_page_module_stays_small() -> None:
    root = Path(__file__).resolve().parents[2] / "ledger" / "service"
    assert all(len((root / f).read_text().splitlines()) < 700 for f in ("case_page.py", "case_actions.py",
                                                                       "case_templates.py"))
