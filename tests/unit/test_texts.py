"""Customer texts: templates refused at load time with file and line, rendered per locale and zone, goldens."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caseledger.ledger.domain.texts import TEXT_KINDS, Audience, TextKind
from caseledger.ledger.texts import TemplateRefused, TemplateTexts
from caseledger.ledger.texts.facts import SAMPLES, VARIABLES
from caseledger.ledger.texts.formats import formats_for
from tests.support.examples import examples

PARIS = Audience(locale="fr_FR", time_zone="Europe/Paris")
AT = datetime(2026, 3, 4, 8, 0, tzinfo=UTC)  # mercredi 4 mars 2026, 09:00 à Paris


@pytest.fixture(scope="module")
def builtin() -> TemplateTexts:
    return TemplateTexts(company="Banque Exemple")


def company(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "templates" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path / "templates"


# -- the built-in templates --------------------------------------------------------------------------


def test_every_kind_is_written_in_french_and_english(builtin: TemplateTexts) -> None:
    assert builtin.locales() == ["en", "fr"]
    for language in ("fr", "en"):
        for kind in TEXT_KINDS:
            assert (language, kind) in builtin.builtin


def test_dates_are_in_the_customer_zone_and_language() -> None:
    assert formats_for("fr_FR", "Europe/Paris").datetime(AT) == "mercredi 4 mars 2026 à 09:00"
    assert formats_for("en_GB", "Europe/London").datetime(AT) == "Wednesday, 4 March 2026 at 08:00"
    assert formats_for("fr_CA", "America/Montreal").datetime(AT) == "mercredi 4 mars 2026 à 03 h 00"
    assert formats_for("fr_FR", "Europe/Paris").channel("web_form") == "formulaire de contact"
    assert formats_for("en", "UTC").channel_by("branch") == "at one of our branches"


GOLDEN_ACKNOWLEDGEMENT = """Madame, Monsieur,

Nous avons bien reçu votre demande du mercredi 4 mars 2026 à 09:00, envoyée via notre formulaire de contact.

Votre référence : CL-7K2QD-M3XPA. Rappelez-la dans chacun de vos échanges avec nous.

Nous nous engageons à vous apporter une réponse au plus tard le vendredi 6 mars 2026 à 09:00.

Votre demande, telle que nous l'avons enregistrée :
Objet : Frais de carte
  Q1. Pourquoi deux frais de carte en février ?
  Q2. Pouvez-vous m'envoyer le relevé ?

Bonjour, je ne comprends pas ces frais.

Pièces jointes : releve.pdf

Nous vous prions d'agréer, Madame, Monsieur, l'expression de nos salutations distinguées.

Banque Exemple"""


def ack_facts(texts: TemplateTexts, audience: Audience, **extra: Any) -> dict[str, Any]:
    copy = texts.render("request_copy", audience, {
        "reference": "CL-7K2QD-M3XPA", "issued_at": AT, "subject": "Frais de carte",
        "items": [{"id": "Q1", "text": "Pourquoi deux frais de carte en février ?"},
                  {"id": "Q2", "text": "Pouvez-vous m'envoyer le relevé ?"}],
        "body": "Bonjour, je ne comprends pas ces frais.", "attachments": ["releve.pdf"],
    })
    return {"reference": "CL-7K2QD-M3XPA", "issued_at": AT, "acknowledgement_id": "ACK1", "contact_id": "C1",
            "received_at": AT, "channel": "web_form", "spoken": False, "follow_up": False,
            "respond_by": datetime(2026, 3, 6, 8, 0, tzinfo=UTC), "request_copy": copy.text, "receipt": "", **extra}


def test_golden_french_acknowledgement(builtin: TemplateTexts) -> None:
    rendered = builtin.render("acknowledgement", PARIS, ack_facts(builtin, PARIS))
    assert rendered.text == GOLDEN_ACKNOWLEDGEMENT
    assert rendered.template_id == "builtin:fr/acknowledgement"
    assert rendered.template_version.startswith("sha256:") and len(rendered.template_version) == 71
    assert rendered.locale == "fr_FR"


def test_golden_english_confirmation_says_what_who_when_reference_and_how_to_contest(builtin: TemplateTexts) -> None:
    facts = {**SAMPLES["written_confirmation"][0], "terms": "Refund of 45.00 EUR to your card"}
    text = builtin.render("written_confirmation", Audience(locale="en_GB", time_zone="Europe/London"), facts).text
    assert text.splitlines()[2] == (
        "We confirm in writing what was agreed with you by phone on Wednesday, 4 March 2026 at 08:00."
    )
    assert "What was agreed: Refund of 45.00 EUR to your card" in text
    assert "Agreed by: alice, for Banque Exemple" in text
    assert "Due: by Saturday, 7 March 2026 at 08:00 at the latest" in text
    assert "Reference: CL-7K2QD-M3XPA, commitment P1" in text
    assert "you may contest it by replying" in text


def test_golden_french_closing_notice_wraps_the_agents_words(builtin: TemplateTexts) -> None:
    text = builtin.render("notice_closed", PARIS, {"reference": "CL-7K2QD-M3XPA", "issued_at": AT,
                                                   "notice": "Le remboursement a été effectué."}).text
    assert text.splitlines()[:5] == [
        "Madame, Monsieur,", "", "Votre demande CL-7K2QD-M3XPA est clôturée depuis le mercredi 4 mars 2026 à 09:00.",
        "", "Le remboursement a été effectué.",
    ]


def test_a_regional_locale_uses_its_languages_templates_and_its_own_formats(builtin: TemplateTexts) -> None:
    rendered = builtin.render("acknowledgement", Audience(locale="fr_CA", time_zone="America/Montreal"),
                              ack_facts(builtin, PARIS))
    assert rendered.template_id == "builtin:fr/acknowledgement" and rendered.locale == "fr_CA"
    assert "mercredi 4 mars 2026 à 03 h 00" in rendered.text


def test_a_language_without_templates_is_refused(builtin: TemplateTexts) -> None:
    with pytest.raises(Exception, match="no customer texts are written in de"):
        builtin.render("notice_closed", Audience(locale="de", time_zone="Europe/Berlin"), SAMPLES["notice_closed"][0])


ZONES = st.sampled_from(["Europe/Paris", "America/Montreal", "Pacific/Kiritimati", "UTC", "Asia/Kolkata"])
LOCALES = st.sampled_from(["fr_FR", "fr_CA", "fr_BE", "en", "en_GB", "en_US"])
WORDS = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=60)
INSTANTS = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC))


@st.composite
def facts_for(draw: st.DrawFn, kind: TextKind) -> dict[str, Any]:
    """A random case of one kind: every variable the kind has, with a value of its type."""
    base = dict(draw(st.sampled_from(SAMPLES[kind])))
    for name, value in list(base.items()):
        if isinstance(value, datetime):
            base[name] = draw(INSTANTS)
        elif isinstance(value, bool):
            base[name] = draw(st.booleans())
        elif name in ("channel", "agreed_channel", "contact_channel") and value is not None:
            base[name] = draw(st.sampled_from(["web_form", "email", "phone", "chat", "chatbot", "social", "sms",
                                               "letter", "branch", "app"]))
        elif name in ("from_status", "to_status"):
            base[name] = draw(st.sampled_from(["open", "in_progress", "waiting_on_customer", "on_hold"]))
        elif name == "items":
            base[name] = [{"id": f"Q{n + 1}", "text": t} for n, t in enumerate(draw(st.lists(WORDS, min_size=1, max_size=5)))]
        elif name == "attachments":
            base[name] = draw(st.lists(WORDS, max_size=3))
        elif name == "notice":
            base[name] = draw(st.one_of(st.none(), WORDS))
        elif isinstance(value, str) and name not in ("locale", "company", "reference"):
            base[name] = draw(st.one_of(st.just(""), WORDS) if name in ("subject", "body") else WORDS)
    assert set(base) <= VARIABLES[kind]
    return base


@settings(max_examples=examples(60), deadline=None)
@given(data=st.data(), locale=LOCALES, zone=ZONES, kind=st.sampled_from(TEXT_KINDS))
def test_every_template_renders_every_random_case_in_every_shipped_locale(
    builtin: TemplateTexts, data: st.DataObject, locale: str, zone: str, kind: TextKind
) -> None:
    facts = data.draw(facts_for(kind))
    rendered = builtin.render(kind, Audience(locale=locale, time_zone=zone), facts)
    assert rendered.text.strip() and rendered.locale == locale
    if kind != "request_copy":
        assert facts["reference"] in rendered.text and rendered.text.rstrip().endswith("Banque Exemple")
    else:
        assert all(item["text"].strip() in rendered.text for item in facts["items"])


# -- a company's templates ------------------------------------------------------------------------------


def test_a_company_template_replaces_the_built_in_one(tmp_path: Path) -> None:
    folder = company(tmp_path, {"fr/notice_closed.txt": "Bonjour,\n\nDossier {{ reference }} clos le {{ issued_at|date }}.\n"})
    texts = TemplateTexts(company="Banque Exemple", folder=folder)
    rendered = texts.render("notice_closed", PARIS, SAMPLES["notice_closed"][0])
    assert rendered.text == "Bonjour,\n\nDossier CL-7K2QD-M3XPA clos le mercredi 4 mars 2026."
    assert rendered.template_id == "company:fr/notice_closed"
    assert texts.render("notice_cancelled", PARIS, SAMPLES["notice_cancelled"][0]).template_id.startswith("builtin:")


REFUSALS = [
    # (file, text, line, what the message says)
    ("fr/notice_closed.txt", "Bonjour\n{% if notice %}\n{{ notice }\n", 3, "syntax error"),
    ("fr/notice_closed.txt", "Bonjour\n\n{{ customer_name }}\n", 3, "unknown variable 'customer_name'"),
    ("fr/request_copy.txt", "{% for item in items %}\n{{ item.number }}\n{% endfor %}\n", 2, "has no attribute 'number'"),
    ("fr/notice_closed.txt", "A\n{{ reference.__class__.__mro__ }}\n", 2, "refused by the sandbox"),
    ("fr/notice_closed.txt", "A\nB\n{{ reference|datetime }}\n", 3, "fails to render a sample case"),
    ("fr/notice_closed.txt", "{% if false %}x{% endif %}\n", None, "renders an empty text"),
    ("fr/notice_closed.txt", "{% include 'other.txt' %}\n", 1, "fails to render"),
]


@pytest.mark.parametrize(("name", "text", "line", "problem"), REFUSALS,
                         ids=["syntax", "unknown-variable", "unknown-attribute", "sandbox", "render-error", "empty",
                              "include"])
def test_a_broken_template_is_refused_at_load_with_file_and_line(
    tmp_path: Path, name: str, text: str, line: int | None, problem: str
) -> None:
    folder = company(tmp_path, {name: text})
    with pytest.raises(TemplateRefused) as refused:
        TemplateTexts(company="Banque Exemple", folder=folder)
    assert refused.value.path == str(folder / name)
    assert refused.value.line == line
    assert problem in str(refused.value)
    assert (f"{folder / name}:{line}" if line else str(folder / name)) in str(refused.value)


@pytest.mark.parametrize(("files", "problem"), [
    ({"fr/acknowledgment.txt": "x"}, "unknown template"),
    ({"français/notice_closed.txt": "x"}, "the folder name must be a locale"),
    ({"de/notice_closed.txt": "Sehr geehrte Damen und Herren, {{ reference }}"}, "give every kind"),
    ({"fr/notice_closed.txt": b"\xff\xfe caf\xe9".decode("latin-1")}, None),
])
def test_a_folder_that_is_not_a_set_of_templates_is_refused(
    tmp_path: Path, files: dict[str, str], problem: str | None
) -> None:
    folder = company(tmp_path, files)
    if problem is None:  # written as Latin-1: not UTF-8
        (folder / "fr" / "notice_closed.txt").write_bytes(b"Caf\xe9 {{ reference }}")
        problem = "save it as UTF-8"
    with pytest.raises(TemplateRefused, match=problem):
        TemplateTexts(company="Banque Exemple", folder=folder)


def test_a_company_template_failing_on_an_unforeseen_case_falls_back_to_the_built_in(tmp_path: Path) -> None:
    folder = company(tmp_path, {"fr/notice_closed.txt": "{% if notice == 'boom' %}{{ 1 // 0 }}{% endif %}Clos {{ reference }}"})
    texts = TemplateTexts(company="Banque Exemple", folder=folder)
    rendered = texts.render("notice_closed", PARIS, {**SAMPLES["notice_closed"][0], "notice": "boom"})
    assert rendered.template_id == "builtin:fr/notice_closed" and "boom" in rendered.text
