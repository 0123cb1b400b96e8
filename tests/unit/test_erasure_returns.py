"""Nothing comes back: an erasure reaches every copy a running process keeps, and the erased customer can always return.

Several ledgers on one SQLite file stand for the processes of ``caseledger run`` (the intake worker
keeps aggregates between batches, as here; a reader keeps none). What each holds in memory is
searched for the erased words (tests/support/memory.py); what they record afterwards is opened and
searched too. ``[erased]`` is a typed marker: refused as a value, never sealed as data. The same with
a running intake worker on a real broker: tests/integration/test_erased_customer_returns.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from caseledger.cli.app import app
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.personal import ERASED, is_erased
from caseledger.ledger.domain.texts import TextSettings, check_time_zone
from caseledger.ledger.domain.values import ContactDraft, Identity, check_locale
from caseledger.ledger.errors import ValidationError
from caseledger.ledger.privacy.data_keys import DataKeys
from caseledger.ledger.service.feeds import Feed, Watcher
from tests.support.clock import FakeClock
from tests.support.environment import ledger_settings
from tests.support.examples import examples
from tests.support.memory import holding
from tests.support.personal_data import AGENT

CHATHAM = "Pacific/Chatham"
ZONES = (CHATHAM, "Asia/Kathmandu", "America/St_Johns")  # none the policy's default


def worker_like(database: Path, clock: FakeClock) -> CaseLedger:
    """A ledger as the intake worker runs it: aggregates, cases too, kept between its batches."""
    ledger = CaseLedger(ledger_settings(database=str(database)), clock=clock)
    ledger.keep_aggregates(1000)
    return ledger


def draft(msg: str, who: str, secret: str, **kw: Any) -> ContactDraft:
    return ContactDraft(channel="email", channel_message_id=msg, identity=Identity.parse(who),
                        subject=f"{secret} subject", items=(f"{secret} item",), body=f"{secret} body", **kw)


def strings(value: Any) -> Iterator[Any]:
    """Every text in an event's attributes (nested records and lists too)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from strings(v)
    elif hasattr(value, "__dict__"):
        yield from strings({k: v for k, v in vars(value).items() if not k.startswith("_")})


@pytest.fixture
def three(tmp_path: Path, clock: FakeClock) -> Iterator[tuple[CaseLedger, CaseLedger, CaseLedger]]:
    """The worker (keeps aggregates), an agent's ledger that erases, a reader that keeps nothing: one store."""
    database = tmp_path / "l.sqlite"
    built = (worker_like(database, clock), CaseLedger(ledger_settings(database=str(database)), clock=clock),
             CaseLedger(ledger_settings(database=str(database)), clock=clock))
    yield built
    for ledger in built:
        ledger.close()


# -- every process forgets -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cases", [True, False], ids=["intake-worker", "service-committer"])
def test_a_ledger_that_keeps_aggregates_forgets_a_customer_another_erased_before_its_next_batch(
    three: tuple[CaseLedger, CaseLedger, CaseLedger], clock: FakeClock, cases: bool,
) -> None:
    """Before: the worker's kept case held her subject, items and zone after another process erased her (and a
    resent form was answered from that copy with her old acknowledgement; a resend is now a new contact of a new
    customer, tests/unit/test_unlinkable_erasure.py); the service's committer (customers and claims) kept her identity."""
    worker, agent, _reader = three
    worker.keep_aggregates(1000, cases=cases)
    who = "email:chatham@example.com"
    with worker.unit_of_work():
        first = worker.record_contact(draft("m-1", who, "zqkept", time_zone=CHATHAM, locale="en"))
    secrets = ["zqkept subject", "zqkept item", "zqkept body", CHATHAM] if cases else [CHATHAM, "chatham@example.com"]
    assert holding(worker, secrets) == secrets  # the walk sees what the worker keeps
    clock.advance(minutes=5)
    agent.erase_customer(who, reason="art. 17 request", actor=AGENT)
    with worker.unit_of_work():  # the next batch: she resends her form, and writes again
        new = worker.record_contact(ContactDraft(channel="email", channel_message_id="m-2",
                                                 identity=Identity.parse(who), items=("Me again",)))
    assert new.customer_id != first.customer_id and new.opened_case  # she is a new customer (see the links tests)
    assert holding(worker, secrets[:-1] if not cases else secrets) == []  # (her identity: she is back)
    ack = worker.get_case(new.reference).messages[new.acknowledgement_id]
    assert "Me again" in (ack.text or "") and not any(s in (ack.text or "") for s in secrets)


def test_a_reader_does_not_open_with_keys_it_loaded_before_another_process_erased(
    three: tuple[CaseLedger, CaseLedger, CaseLedger],
) -> None:
    """Before: a ledger that read a case kept its customer's keys unwrapped in memory, and went on opening her
    data with them after another process destroyed them (history, case show)."""
    _worker, agent, reader = three
    who = "email:reader@example.com"
    out = agent.record_contact(draft("r-1", who, "zqread"))
    assert reader.get_case(out.reference).subject == "zqread subject"
    assert any(getattr(e, "body", None) == "zqread body" for e in reader.history(who))
    agent.erase_customer(who, reason="art. 17 request", actor=AGENT)
    assert reader.get_case(out.reference).subject == ERASED
    assert not any(s.startswith("zqread") for e in reader.history(out.customer_id) for s in strings(e))
    assert holding(reader, ["zqread"]) == []


def test_an_erasure_whose_keys_are_not_destroyed_yet_is_never_kept(
    three: tuple[CaseLedger, CaseLedger, CaseLedger], monkeypatch: pytest.MonkeyPatch, clock: FakeClock,
) -> None:
    """Between ``CustomerErased`` and the keys' destruction (or for good, if the eraser stopped there) the store still
    opens her data: the worker reads it when it must, but keeps none of it until the keys are gone."""
    worker, agent, _reader = three
    who = "email:pending@example.com"
    with worker.unit_of_work():
        out = worker.record_contact(draft("p-1", who, "zqpending"))
    with monkeypatch.context() as patch:
        patch.setattr(DataKeys, "destroy", lambda self, key_ids: None)  # the eraser stops after its event
        agent.erase_customer(who, reason="art. 17 request", actor=AGENT)
    clock.advance(minutes=1)
    with worker.unit_of_work():  # she quotes her case: read (still readable), not kept; she is a new customer
        follow = worker.record_contact(draft("p-2", who, "zqfollow", case_reference=out.reference))
    assert follow.opened_case and follow.reference != out.reference
    assert holding(worker, ["zqpending"]) == []
    agent.erase_customer(out.customer_id, reason="art. 17 request, finished", actor=AGENT)  # as `tick` or a retry
    with worker.unit_of_work():
        assert worker.get_case(out.reference).subject == ERASED
    assert holding(worker, ["zqpending"]) == []


def test_an_erased_customer_who_quotes_her_old_case_and_sends_it_again_is_answered_not_collided(
    three: tuple[CaseLedger, CaseLedger, CaseLedger], clock: FakeClock,
) -> None:
    """Found by the property below: her follow-up quoting the case of her erased self opened a new case, and the
    same request sent again (an adapter's retry) was kept as a collision "on another case than the one it names"."""
    worker, agent, _reader = three
    who = "email:again@example.com"
    with worker.unit_of_work():
        out = worker.record_contact(draft("a-1", who, "zqagain"))
    agent.erase_customer(who, reason="art. 17 request", actor=AGENT)
    clock.advance(minutes=1)
    follow_up = draft("a-2", who, "zqfollowup", case_reference=out.reference, follow_up=True)
    with worker.unit_of_work():
        first = worker.record_contact(follow_up)
    assert first.opened_case and first.reference != out.reference
    with worker.unit_of_work():
        again = worker.record_contact(follow_up)
    assert again.reference == first.reference and not again.opened_case
    assert list(worker.collisions()) == []


class _Lender:
    """The service's state as the live page's watcher uses it: a ledger lent per read."""

    def __init__(self, ledger: CaseLedger) -> None:
        self.ledger = ledger

    @contextmanager
    def leased_ledger(self) -> Iterator[CaseLedger]:
        yield self.ledger


def test_the_live_page_shows_a_case_again_from_the_store_once_its_customer_is_erased_elsewhere(
    three: tuple[CaseLedger, CaseLedger, CaseLedger],
) -> None:
    """Before: a live page kept showing (and sending to every new stream) the case as opened before another process
    erased its customer, since an erasure is recorded on the customer and the watcher only followed the case."""
    _worker, agent, service = three
    who = "email:live@example.com"
    out = agent.record_contact(draft("l-1", who, "zqlive"))
    watcher = Watcher(_Lender(service), render=lambda case, _view, _context: f"{case.subject} / {case.contacts['C1'].subject}")
    feed = watcher.feeds[out.case_id] = Feed(service.get_case(out.reference))
    watcher._changed()
    assert watcher._update(feed, False) and "zqlive" in feed.html
    agent.erase_customer(who, reason="art. 17 request", actor=AGENT)
    changed = watcher._changed()
    assert out.case_id not in changed  # nothing happened to the case itself
    assert watcher._update(feed, True, watcher._reload(feed))
    assert "zqlive" not in feed.html and "[erased]" in feed.html
    assert holding(watcher, ["zqlive"]) == []
    assert not watcher._update(feed, True, watcher._reload(feed))  # read again for a while; nothing new to send


# -- [erased] is a marker, not a value -----------------------------------------------------------------------


def test_the_erased_marker_is_refused_as_a_value_and_an_erased_zone_or_locale_is_the_default() -> None:
    for refuse in (lambda: check_time_zone(ERASED), lambda: check_locale(ERASED),
                   lambda: Identity(kind="email", value=ERASED),
                   lambda: draft("x", "email:a@example.com", "s", time_zone=ERASED),
                   lambda: ContactDraft(channel="email", channel_message_id="x", identity=Identity.parse("email:a@b.co"),
                                        items=(ERASED,)),
                   lambda: ContactDraft(channel="email", channel_message_id="x", identity=Identity.parse("email:a@b.co"),
                                        items=("ok",), subject=ERASED)):
        with pytest.raises(ValidationError, match="erased with the customer's personal data"):
            refuse()
    assert check_time_zone("Europe/Paris") == "Europe/Paris"  # text that reads "[erased]" is text, not the marker
    assert not is_erased("[erased]") and is_erased(ERASED) and ERASED == "[erased]"
    audience = TextSettings(locale="fr_FR").audience("email", "Europe/Paris", locale=ERASED, time_zone=ERASED)
    assert (audience.locale, audience.time_zone) == ("fr_FR", "Europe/Paris")


def test_an_erased_customers_case_handed_off_keeps_the_marker_and_seals_nothing_under_a_new_key(
    sqlite_ledger: CaseLedger,
) -> None:
    """Before: the brief copied "[erased]" from the case and sealed it under a key made for it, as if it were her
    data; now the brief carries the marker, in clear, and opens to the marker again."""
    ledger = sqlite_ledger
    who = "email:handoff@example.com"
    out = ledger.record_contact(draft("h-1", who, "zqbrief"))
    ledger.erase_customer(who, reason="art. 17 request", actor=AGENT)
    brief = ledger.hand_off(out.reference, actor=AGENT, to_assignee="bob", note="")
    assert "zqbrief" not in json.dumps(brief, default=str)
    assert ledger.data_keys.live_keys_of(out.customer_id) == []  # nothing of hers was sealed: no new key
    handed = [e for e in ledger.history(out.customer_id) if type(e).__name__ == "HandedOff"][-1]
    assert [i["text"] for i in handed.brief["open_items"]] == [ERASED]
    assert all(is_erased(i["text"]) for i in handed.brief["open_items"])
    (stored,) = [n for n in ledger.notifications_of("HandedOff")]
    assert b"[erased]" in bytes(stored.state) and b"enc:1:" not in bytes(stored.state)


# -- the CLI: an erased customer who had a time zone writes again ----------------------------------------------


def test_an_erased_customer_who_had_a_time_zone_contacts_the_company_again_through_the_cli(tmp_path: Path) -> None:
    """The issue saw `contact record` exit 2 "unknown time zone '[erased]'" for her (fixed on main by eb5a85b;
    held here on every path the CLI has: a new request, a follow-up on her old case, her locale set again)."""
    runner = CliRunner()
    base = ["--database", str(tmp_path / "c.sqlite")]
    who = "email:chatham@example.com"
    first = runner.invoke(app, [*base, "contact", "record", "-c", "email", "-m", "c-1", "--from", who,
                                "--item", "zqcli item", "--zone", CHATHAM, "--locale", "en", "--json"])
    assert first.exit_code == 0, first.output
    reference = json.loads(first.stdout)["reference"]
    assert runner.invoke(app, [*base, "customer", "erase", who, "--reason", "art. 17"]).exit_code == 0
    again = runner.invoke(app, [*base, "contact", "record", "-c", "email", "-m", "c-2", "--from", who,
                                "--item", "Me again", "--json"])
    assert again.exit_code == 0, again.output
    follow = runner.invoke(app, [*base, "contact", "record", "-c", "email", "-m", "c-3", "--from", who,
                                 "--item", "About my old request", "--case", reference, "--follow-up", "--json"])
    assert follow.exit_code == 0, follow.output
    for answer in (again, follow):
        text = json.loads(answer.stdout)["acknowledgement"]
        assert "zqcli" not in text and "[erased]" not in text.split("Your request")[0].split("Votre demande")[0]
    locale = runner.invoke(app, [*base, "customer", "set-locale", who, "--locale", "en", "--json"])
    assert locale.exit_code == 0, locale.output
    assert json.loads(locale.stdout)["time_zone"] != CHATHAM


# -- the property: erasures, new contacts and restarts interleaved, several processes --------------------------

STEP = st.tuples(st.sampled_from(["contact", "zoned", "follow_up", "resend", "erase", "restart", "handoff"]),
                 st.integers(0, 2), st.integers(0, 1))


@settings(max_examples=examples(15), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(plan=st.lists(STEP, min_size=3, max_size=14))
# Found by this property: a ledger told "already erased", or erasing someone else, kept what it held of her.
@example(plan=[("contact", 1, 0), ("erase", 0, 0), ("erase", 1, 0)])
@example(plan=[("contact", 0, 1), ("contact", 1, 0), ("erase", 0, 0), ("erase", 1, 1)])
def test_no_process_reads_back_or_reseals_what_was_erased_and_every_contact_is_recorded(
    plan: list[tuple[str, int, int]], tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp = tmp_path_factory.mktemp("returns")
    database = tmp / "l.sqlite"
    clock = FakeClock()
    processes = [worker_like(database, clock) for _ in range(3)]
    reader = CaseLedger(ledger_settings(database=str(database)), clock=clock)
    default = reader.audience_of(None, "email")
    live: dict[int, list[str]] = {0: [], 1: []}  # words written since the customer's last erasure
    erased: list[str] = []  # words written before some erasure
    zone: dict[int, str | None] = {0: None, 1: None}  # the zone she gave since her last erasure
    sent: dict[int, list[ContactDraft]] = {0: [], 1: []}
    refs: dict[int, list[str]] = {0: [], 1: []}  # her cases since her last erasure
    old_refs: dict[int, list[str]] = {0: [], 1: []}  # the cases of her erased self: no one's now
    recorded: list[Any] = []
    try:
        for step, (action, p, c) in enumerate(plan):
            clock.advance(minutes=7)
            ledger, who, word = processes[p], f"email:c{c}@example.com", f"zq{step}w{c}"
            acted = True
            if action in ("contact", "zoned", "follow_up") or (action == "resend" and not sent[c]):
                extra: dict[str, Any] = {}
                if action == "zoned":
                    extra = {"time_zone": ZONES[step % 3], "locale": "en"}
                quoted = (refs[c] or old_refs[c] or [None])[-1] if action == "follow_up" else None
                if quoted is not None:
                    extra = {"case_reference": quoted, "follow_up": True}
                contact = draft(f"m{step}", who, word, **extra)
                with ledger.unit_of_work():
                    out = ledger.record_contact(contact)
                if quoted is not None and not refs[c]:  # she quotes the case of her erased self: a new case
                    assert out.opened_case and out.reference != quoted
                zone[c] = extra.get("time_zone", zone[c])
                live[c].append(word)
                sent[c].append(contact)
                refs[c].append(out.reference)
                recorded.append(out)
                ack = next(e for e in reader.history(who) if type(e).__name__ == "AcknowledgementIssued"
                           and e.acknowledgement_id == out.acknowledgement_id and e.reference == out.reference)
                assert ack.time_zone == (zone[c] or default.time_zone), (ack.time_zone, zone[c])
                assert ack.locale == ("en" if zone[c] else default.locale)
                assert word in ack.text
            elif action == "resend":
                with ledger.unit_of_work():
                    out = ledger.record_contact(sent[c][-1])
                assert out.duplicate
            elif action == "erase" and refs[c]:
                ledger.erase_customer(who, reason="art. 17 request", actor=AGENT)
                erased += live[c]
                live[c], zone[c], sent[c] = [], None, []  # she is a new customer from here on
                old_refs[c] += refs[c]
                refs[c] = []
            elif action == "restart":
                ledger.close()
                processes[p] = worker_like(database, clock)
            elif action == "handoff" and refs[c]:
                with ledger.unit_of_work():
                    ledger.hand_off(refs[c][-1], actor=AGENT, to_assignee=f"agent-{step}", note="")
            else:
                acted = False  # nothing to erase or hand off yet: the process did nothing
            if acted:  # the process that just worked (a batch, an erasure, a start) holds nothing erased
                assert holding(processes[p], erased) == [], (step, action)
        for ledger in processes:  # every other process, from its next batch on
            with ledger.unit_of_work():
                pass
            assert holding(ledger, erased) == []
        for out in recorded:  # every contact is recorded, readable unless erased since
            case = reader.get_case(out.reference)
            assert out.contact_id in case.contacts
        for c in (0, 1):
            history = reader.history(f"email:c{c}@example.com") if refs[c] else []
            for event in history:
                for text in strings(event):
                    assert not any(word in text for word in erased), (type(event).__name__, text)
                    assert text != "[erased]" or is_erased(text), (type(event).__name__, "sealed as data")
            shown = [t for e in history for t in strings(e)]
            for word in live[c]:
                assert any(word in t for t in shown)  # what was not erased stays readable
    finally:
        for ledger in (*processes, reader):
            ledger.close()
