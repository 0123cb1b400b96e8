"""What the customer reads, end to end: on record verbatim, in their language and zone, on the right calendar."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.avro.codec import MAGIC, schema_fingerprint
from caseledger.ledger.domain.business_time import BusinessCalendar
from caseledger.ledger.domain.policy import ResponsePolicy
from caseledger.ledger.domain.values import Actor, ContactDraft, Identity
from caseledger.ledger.errors import ConfigurationError, ValidationError
from caseledger.ledger.intake.records import IntakeCodec
from tests.support.clock import FakeClock
from tests.support.environment import ledger_settings

JANE = Identity.parse("email:jane@example.com")
ALICE = Actor.parse("agent:alice")
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def draft(msg: str = "m-1", **extra: Any) -> ContactDraft:
    fields: dict[str, Any] = {"channel": "web_form", "channel_message_id": msg, "identity": JANE,
                              "subject": "Frais de carte", "items": ("Pourquoi deux frais ?",), **extra}
    return ContactDraft(**fields)


def policy_file(tmp_path: Path, templates: str | None = None, extra: str = "") -> Path:
    path = tmp_path / "policy.toml"
    texts = f'templates = "{templates}"\n' if templates else ""
    path.write_text(
        '[calendar]\ntimezone = "Europe/Paris"\npublic_holidays = "FR"\n[acknowledge]\nwithin = "1h"\n'
        f'[respond]\ndefault = "2d"\n[texts]\ncompany = "Banque Exemple"\n{texts}{extra}',
        encoding="utf-8",
    )
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()  # Monday 2 March 2026, 09:00 in Paris


@pytest.fixture
def open_ledger(tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    built: list[CaseLedger] = []

    def make(policy: str | Path | None = None) -> CaseLedger:
        ledger = CaseLedger(ledger_settings(database=str(tmp_path / "l.sqlite"),
                                                   policy=str(policy) if policy else None), clock=clock)
        built.append(ledger)
        return ledger

    yield make
    for ledger in built:
        ledger.close()


# -- on record, verbatim ---------------------------------------------------------------------------------


def test_changing_a_template_never_changes_what_was_sent(tmp_path: Path, open_ledger: Any) -> None:
    folder = tmp_path / "templates" / "fr"
    folder.mkdir(parents=True)
    (folder / "notice_closed.txt").write_text("Version 1 : dossier {{ reference }} clos.", encoding="utf-8")
    first = open_ledger(policy_file(tmp_path, "templates"))
    ref = first.record_contact(draft()).reference
    first.respond(ref, actor=ALICE, body="Réponse", answers=["Q1"])
    first.close_case(ref, actor=ALICE, reason="answered", notice="Merci.")
    before = first.get_case(ref)
    sent = next(e for e in first.history("email:jane@example.com") if type(e).__name__ == "CaseClosed")
    assert sent.text == f"Version 1 : dossier {ref} clos." and sent.template_id == "company:fr/notice_closed"
    assert sent.locale == "fr_FR" and sent.time_zone == "Europe/Paris"
    first.close()

    (folder / "notice_closed.txt").write_text("Version 2 : {{ reference }} est clos.", encoding="utf-8")
    again = open_ledger(policy_file(tmp_path, "templates"))
    reread = next(e for e in again.history("email:jane@example.com") if type(e).__name__ == "CaseClosed")
    assert (reread.text, reread.template_version) == (sent.text, sent.template_version)
    assert again.get_case(ref).messages["N1"].text == before.messages["N1"].text
    again.reopen_case(ref, actor=ALICE, reason="customer objected", notice="Nous reprenons.")
    again.close_case(ref, actor=ALICE, reason="answered again", notice="Merci.")
    texts = [e for e in again.history("email:jane@example.com") if type(e).__name__ == "CaseClosed"]
    assert [t.text.split(" :")[0] for t in texts] == ["Version 1", "Version 2"]
    assert texts[0].template_version != texts[1].template_version


def test_a_broken_company_template_stops_the_ledger_at_start(tmp_path: Path, open_ledger: Any) -> None:
    folder = tmp_path / "templates" / "fr"
    folder.mkdir(parents=True)
    (folder / "acknowledgement.txt").write_text("Bonjour\n{{ respond_by|datetime }\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"acknowledgement\.txt:2: syntax error"):
        open_ledger(policy_file(tmp_path, "templates"))


def test_the_acknowledgement_keeps_its_template_locale_and_zone(open_ledger: Any) -> None:
    ledger = open_ledger()
    outcome = ledger.record_contact(draft())
    assert "Nous avons bien reçu votre demande du lundi 2 mars 2026 à 09:00" in outcome.acknowledgement
    assert "via notre formulaire de contact" in outcome.acknowledgement
    ack = next(e for e in ledger.history("email:jane@example.com") if type(e).__name__ == "AcknowledgementIssued")
    assert ack.template_id == "builtin:fr/acknowledgement" and ack.locale == "fr_FR"
    assert ack.time_zone == "Europe/Paris" and ack.request_copy_template.startswith("builtin:fr/request_copy@sha256:")
    assert ack.request_copy in ack.text


# -- the customer's language and time -------------------------------------------------------------------


def test_the_intake_record_gives_the_customers_locale_and_zone(open_ledger: Any) -> None:
    ledger = open_ledger()
    outcome = ledger.record_contact(draft(locale="en-GB", time_zone="America/Montreal"))
    assert "We have received your request of Monday, 2 March 2026 at 03:00" in outcome.acknowledgement
    events = [type(e).__name__ for e in ledger.history("email:jane@example.com")]
    assert events.count("CustomerLocaleSet") == 1
    ledger.record_contact(draft("m-2", locale="en_GB", case_reference=outcome.reference))  # same choice: no event
    assert [type(e).__name__ for e in ledger.history("email:jane@example.com")].count("CustomerLocaleSet") == 1


def test_a_command_sets_the_locale_for_the_texts_that_follow(open_ledger: Any, clock: FakeClock) -> None:
    ledger = open_ledger()
    ref = ledger.record_contact(draft()).reference
    customer_id, audience, changed = ledger.set_customer_locale("email:jane@example.com", actor=ALICE,
                                                                locale="en_GB", time_zone="Europe/London")
    assert changed and audience.locale == "en_GB"
    clock.advance(minutes=5)
    _, w = ledger.make_promise(ref, actor=ALICE, channel="phone", kind="refund", terms="Refund 45 EUR",
                               due_at=clock.now + timedelta(days=2))
    case = ledger.get_case(ref)
    assert case.messages[w].text.startswith("Dear Sir or Madam,")
    assert "by phone on Monday, 2 March 2026 at 08:05" in case.messages[w].text
    assert case.messages["ACK1"].text.startswith("Madame, Monsieur,")  # sent before: unchanged
    with pytest.raises(ValidationError, match="no customer texts are written in de"):
        ledger.set_customer_locale(customer_id, actor=ALICE, locale="de", time_zone=None)


def test_the_policy_gives_a_default_per_channel(tmp_path: Path, open_ledger: Any) -> None:
    ledger = open_ledger(policy_file(tmp_path, extra='[texts.channel.social]\nlocale = "en"\ntimezone = "UTC"\n'))
    social = ledger.record_contact(draft(channel="social", identity=Identity.parse("handle:@jane")))
    assert "sent on social media" in social.acknowledgement and "at 8:00\u202fAM" in social.acknowledgement
    assert ledger.record_contact(draft("m-2")).acknowledgement.startswith("Madame, Monsieur,")


def test_a_locale_without_templates_from_intake_falls_back_to_the_default(open_ledger: Any) -> None:
    outcome = open_ledger().record_contact(draft(locale="de_DE"))
    assert outcome.acknowledgement.startswith("Madame, Monsieur,")


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("time_zone", "Paris", "unknown time zone"), ("locale", "français", "not a language"),
])
def test_a_contact_with_a_bad_locale_or_zone_is_refused(field: str, value: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        draft(**{field: value})


def test_intake_records_carry_locale_and_zone_and_old_adapters_still_decode() -> None:
    codec = IntakeCodec()
    sent = draft(locale="fr_FR", time_zone="Europe/Paris", occurred_at=datetime(2026, 3, 2, 8, tzinfo=UTC))
    _, back = codec.decode(codec.encode(sent, adapter="form-1"))
    assert isinstance(back, ContactDraft) and (back.locale, back.time_zone) == ("fr_FR", "Europe/Paris")
    retired = next((SCHEMAS / "intake").glob("caseledger.intake.IntakeRecord.*.avsc"))
    old = parse_schema(json.loads(retired.read_text(encoding="utf-8")))
    out = BytesIO()
    out.write(MAGIC + schema_fingerprint(old))
    record = {"channel": "email", "channel_message_id": "old-1", "identity": {"kind": "email", "value": "a@b.example"},
              "customer_id": None, "segment": None, "subject": "", "body": "", "items": ["hello"], "attachments": [],
              "case_reference": None, "follow_up": False, "category": None,
              "occurred_at": datetime(2026, 3, 2, tzinfo=UTC), "metadata": {}}
    schemaless_writer(out, old, {"adapter": "old", "published_at": datetime(2026, 3, 2, tzinfo=UTC),
                                 "payload": ("caseledger.intake.Contact", record)})
    _, decoded = codec.decode(out.getvalue())
    assert isinstance(decoded, ContactDraft) and decoded.locale is None and decoded.items == ("hello",)


# -- written confirmations that count ---------------------------------------------------------------------


def test_a_written_confirmation_not_delivered_in_time_is_missed(open_ledger: Any, clock: FakeClock) -> None:
    ledger = open_ledger()
    ref = ledger.record_contact(draft()).reference
    ledger.record_delivery(ref, message_id="ACK1", delivered_at=clock.now)
    _, w1 = ledger.make_promise(ref, actor=ALICE, channel="phone", kind="callback", terms="Rappel demain 10h",
                                due_at=clock.now + timedelta(days=5))
    _, w2 = ledger.make_promise(ref, actor=ALICE, channel="branch", kind="repair", terms="Carte refaite",
                                due_at=clock.now + timedelta(days=5))
    case = ledger.get_case(ref)
    assert case.messages[w1].due_at == datetime(2026, 3, 3, 8, tzinfo=UTC)  # 1 business day (policy [confirm])
    clock.advance(hours=2)  # a delivery is reported once it happened, not ahead of the ledger's clock
    ledger.record_delivery(ref, message_id=w2, delivered_at=clock.now)
    clock.advance(hours=23)
    report = ledger.tick()
    assert report.missed == {"confirmation": 1}
    missed = [e for e in ledger.history("email:jane@example.com") if type(e).__name__ == "DeadlineMissed"]
    assert [(m.deadline_kind, m.target_id) for m in missed] == [("confirmation", w1)]
    clock.advance(hours=1)
    assert ledger.tick().total == 0


def test_under_the_acpr_preset_a_phone_complaint_is_acknowledged_in_writing(open_ledger: Any) -> None:
    ledger = open_ledger("acpr-2022-r-01")
    outcome = ledger.record_contact(draft(channel="phone", identity=Identity.parse("phone:+33612345678")))
    case = ledger.get_case(outcome.reference)
    assert case.messages["ACK1"].channel == "letter"  # no written channel yet: a letter
    assert outcome.acknowledgement.startswith("Madame, Monsieur,\n\nVous nous avez fait part par téléphone")
    assert case.messages["ACK1"].due_at == datetime(2026, 3, 13, 8, tzinfo=UTC)  # 10 jours ouvrables (Mon-Sat)
    assert outcome.respond_by == datetime(2026, 5, 2, 7, tzinfo=UTC)  # two months, 09:00 Paris (summer time)


# -- calendars from a maintained source ------------------------------------------------------------------


def test_public_holidays_come_from_the_holidays_package() -> None:
    france = BusinessCalendar(public_holidays="FR")
    alsace = BusinessCalendar(public_holidays="FR", subdivision="6AE")
    assert france.is_holiday(date(2026, 5, 1)) and france.is_holiday(date(2026, 7, 14))  # Fête du Travail, 14 juillet
    assert france.is_holiday(date(2027, 5, 6))  # Ascension 2027, never typed by hand
    for alsace_only in (date(2026, 4, 3), date(2026, 12, 26)):  # Vendredi saint, Saint-Étienne
        assert alsace.is_holiday(alsace_only) and not france.is_holiday(alsace_only)
    assert not france.is_holiday(date(2026, 3, 4))
    closing = BusinessCalendar(public_holidays="FR", holidays=frozenset({date(2026, 12, 24)}))
    assert closing.is_holiday(date(2026, 12, 24)) and closing.is_holiday(date(2026, 12, 25))


def test_a_policy_file_names_country_subdivision_and_closing_days(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[calendar]\ntimezone = "Europe/Paris"\npublic_holidays = "FR"\nsubdivision = "Alsace"\n'
                    'closing_days = [2026-12-24]\n[acknowledge]\nwithin = "1h"\n[respond]\ndefault = "2d"\n')
    calendar = ResponsePolicy.from_toml(path).calendar
    assert calendar.is_holiday(date(2026, 12, 26)) and calendar.is_holiday(date(2026, 12, 24))
    # Thursday 2 April 2026 17:00 + 2 business hours: Good Friday and Easter Monday are holidays in Alsace.
    due = calendar.add_business_time(datetime(2026, 4, 2, 15, tzinfo=UTC), timedelta(hours=2))
    assert due == datetime(2026, 4, 7, 8, tzinfo=UTC)


@pytest.mark.parametrize(("calendar", "problem"), [
    ('public_holidays = "XX"', "calendar.public_holidays: the holidays package knows no country 'XX'"),
    ('public_holidays = "FR"\nsubdivision = "Bretagne"', "calendar.subdivision:"),
    ('subdivision = "6AE"', "needs a country"),
])
def test_an_unknown_country_or_subdivision_is_refused(tmp_path: Path, calendar: str, problem: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(f'[calendar]\ntimezone = "Europe/Paris"\n{calendar}\n[acknowledge]\nwithin = "1h"\n'
                    '[respond]\ndefault = "2d"\n')
    with pytest.raises(ConfigurationError, match=problem):
        ResponsePolicy.from_toml(path)


def test_the_acpr_preset_is_selectable_by_name_and_cites_its_source() -> None:
    assert "acpr-2022-r-01" in ResponsePolicy.presets()
    policy = ResponsePolicy.load("acpr-2022-r-01")
    assert policy.name == "acpr-2022-r-01" and str(policy.acknowledge_within) == "10d"
    assert str(policy.default_respond_within) == "2mo" and policy.acknowledge_spoken_in_writing
    text = (Path(__file__).resolve().parents[2] / "ledger/domain/presets/acpr-2022-r-01.toml").read_text()
    assert "Recommandation 2022-R-01" in text and "acpr.banque-france.fr" in text
    with pytest.raises(ConfigurationError, match="no shipped policy named 'acpr-2099'"):
        ResponsePolicy.named("acpr-2099")


def test_two_calendar_months_end_on_the_same_date_or_the_months_last_day() -> None:
    calendar = BusinessCalendar()
    assert calendar.add_months(datetime(2026, 12, 31, 10, tzinfo=UTC), 2) == datetime(2027, 2, 28, 10, tzinfo=UTC)
    assert calendar.add_months(datetime(2026, 1, 15, 10, tzinfo=UTC), 2) == datetime(2026, 3, 15, 10, tzinfo=UTC)


# -- the command line ---------------------------------------------------------------------------------


def test_the_command_line_sets_a_locale_and_checks_a_templates_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from caseledger.cli.app import app

    runner = CliRunner(env={"CASELEDGER_DATABASE": None, "CASELEDGER_POLICY": None, "TZ": "UTC", "COLUMNS": "200"})
    db = str(tmp_path / "cli.sqlite")
    recorded = runner.invoke(app, ["-d", db, "--policy", "acpr-2022-r-01", "contact", "record", "-c", "web_form",
                                   "-m", "m-1", "--from", "email:jane@example.com", "--item", "Pourquoi ?"])
    assert recorded.exit_code == 0, recorded.stdout + recorded.stderr
    assert "Nous avons bien reçu votre demande" in recorded.stdout and "Le service Réclamations" in recorded.stdout
    changed = runner.invoke(app, ["-d", db, "customer", "set-locale", "email:jane@example.com", "--locale", "en_GB",
                                  "--zone", "Europe/London", "--json"])
    answer = json.loads(changed.stdout)
    assert changed.exit_code == 0 and answer["customer_id"].startswith("cus-")  # a pseudonym (docs/privacy.md)
    assert {k: v for k, v in answer.items() if k != "customer_id"} == {
        "locale": "en_GB", "time_zone": "Europe/London", "changed": True}
    refused = runner.invoke(app, ["-d", db, "customer", "set-locale", "email:jane@example.com", "--locale", "it"])
    assert refused.exit_code == 2 and "no customer texts are written in it" in refused.stderr

    folder = tmp_path / "templates" / "fr"
    folder.mkdir(parents=True)
    (folder / "notice_closed.txt").write_text("Bonjour\n\n{{ customer_name }}\n", encoding="utf-8")
    broken = runner.invoke(app, ["--policy", str(policy_file(tmp_path, "templates")), "texts", "check"])
    assert broken.exit_code == 4
    assert f"{folder / 'notice_closed.txt'}:3: unknown variable 'customer_name'" in " ".join(broken.stderr.split())
    (folder / "notice_closed.txt").write_text("Bonjour\n\nDossier {{ reference }} clos.\n", encoding="utf-8")
    good = runner.invoke(app, ["--policy", str(policy_file(tmp_path, "templates")), "texts", "check", "--json"])
    assert good.exit_code == 0, good.stderr
    ids = {t["template_id"] for t in json.loads(good.stdout)["templates"]}
    assert "company:fr/notice_closed" in ids and "builtin:fr/notice_closed" not in ids  # it replaces the built-in


@pytest.mark.parametrize(("texts", "problem"), [
    ('[texts]\nlocale = "français"\n', "texts.locale: 'français' is not a locale"),
    ('[texts]\ntimezone = "Paris"\n', "texts.timezone: unknown time zone 'Paris'"),
    ('[texts]\ntemplates = "nowhere"\n', "texts.templates: "),
    ('[texts]\nsignature = "x"\n', "texts.signature: unknown key"),
    ('[texts.channel.fax]\nlocale = "fr"\n', "texts.channel.fax: unknown channel 'fax'"),
    ('[confirm]\nwithin = "soon"\n', "confirm.within: 'soon' is not a delay"),
])
def test_a_bad_texts_or_confirm_section_is_refused_with_the_key(tmp_path: Path, texts: str, problem: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[calendar]\ntimezone = "Europe/Paris"\n[acknowledge]\nwithin = "1h"\n[respond]\ndefault = "2d"\n'
                    + texts, encoding="utf-8")
    with pytest.raises(ConfigurationError, match=problem.replace(".", r"\.").replace("(", r"\(")):
        ResponsePolicy.from_toml(path)
