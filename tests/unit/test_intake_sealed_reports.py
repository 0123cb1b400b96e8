"""Issue 29 (bench intake): two thirds of a delivery report's CPU (and of a read receipt's) went to loading its case —
decoding its events, unwrapping its customer's data key and decrypting every text it holds — though a report reads
none of them. The worker now replays a case it only reports on with its texts left sealed.

What must hold beside it: a case so replayed is opened again before any other command uses it (a follow-up, a
hand-off, a response copy its texts into new events: as clear text sealed once under the case's customer's key,
never a token sealed again), and an erased customer's data never comes back through a case kept so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.directory import case_id_for
from caseledger.ledger.domain.personal import ERASED
from caseledger.ledger.domain.values import Actor, ActorKind, Channel, ContactDraft, Identity
from caseledger.ledger.intake.records import DeliveryReport, IntakeCodec, IntakeMessage, ReadReceipt
from caseledger.ledger.intake.worker import IntakeRecord, KafkaIntakeWorker
from caseledger.ledger.privacy.sealing import TOKEN, Sealer
from caseledger.ledger.settings import KafkaSettings
from tests.support.clock import FakeClock
from tests.support.environment import ledger_settings
from tests.support.memory import holding
from tests.support.personal_data import AGENT

CODEC = IntakeCodec()


class Worker:
    """An intake worker on its own ledger (it keeps aggregates), fed records by hand: partition 0, offsets in order."""

    def __init__(self, ledger: CaseLedger) -> None:
        self.ledger = ledger
        self.worker = KafkaIntakeWorker(ledger, KafkaSettings(bootstrap_servers="unused:9092"))
        self.offset = 0
        self.refused: list[str] = []
        reject = ledger.reject_intake

        def rejected(*args: Any, reason: str, **kwargs: Any) -> Any:
            self.refused.append(reason)
            return reject(*args, reason=reason, **kwargs)

        ledger.reject_intake = rejected  # type: ignore[method-assign]

    def apply(self, *messages: IntakeMessage) -> None:
        records = []
        for message in messages:
            records.append(IntakeRecord("caseledger.intake", 0, self.offset, CODEC.encode(message, adapter="sms-gw",
                                                                                    published_at=self.ledger.clock())))
            self.offset += 1
        self.worker.apply_batch(0, records)
        assert self.refused == []


@pytest.fixture
def two(tmp_path: Path, clock: FakeClock) -> Iterator[tuple[CaseLedger, Worker]]:
    """An agent's ledger and an intake worker's, on one store: the worker has not seen the agent's cases."""
    database = str(tmp_path / "l.sqlite")
    agent = CaseLedger(ledger_settings(database=database), clock=clock)
    worker = CaseLedger(ledger_settings(database=database), clock=clock)
    yield agent, Worker(worker)
    worker.close()
    agent.close()


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text any ledger decrypts, as it comes out."""
    seen: list[str] = []
    real = Sealer._open_text

    def watched(self: Sealer, match: Any) -> str:
        text = real(self, match)
        seen.append(str(text))
        return text

    monkeypatch.setattr(Sealer, "_open_text", watched)
    return seen


def draft(msg: str, who: str, secret: str, **kw: Any) -> ContactDraft:
    return ContactDraft(channel=Channel.EMAIL, channel_message_id=msg, identity=Identity.parse(who),
                        subject=f"{secret} subject", items=(f"{secret} item",), body=f"{secret} body", **kw)


def reports(reference: str, who: str, now: Any) -> tuple[DeliveryReport, ReadReceipt]:
    return (DeliveryReport(case_reference=reference, message_id="ACK1", delivered_at=now),
            ReadReceipt(case_reference=reference, message_id="ACK1", read_at=now,
                        reader=Actor(kind=ActorKind.CUSTOMER, id=who)))


@pytest.mark.parametrize("kind", ["delivery", "read"])
def test_a_report_on_a_case_the_worker_does_not_keep_decrypts_none_of_its_texts(
        two: tuple[CaseLedger, Worker], opened: list[str], clock: FakeClock, kind: str) -> None:
    """Before: each report decrypted its case's subject, items, body, channel message id and acknowledgement."""
    agent, worker = two
    cases = [agent.record_contact(draft(f"m{n}", f"email:r{n}@example.com", f"zq{n}")) for n in range(3)]
    clock.advance(minutes=1)
    opened.clear()
    worker.apply(*[reports(c.reference, f"email:r{n}@example.com", clock())[kind == "read"]
                   for n, c in enumerate(cases)])
    assert worker.worker.stats.reports == 3
    assert [t for t in opened if "zq" in t] == []  # subject, items, body, the acknowledgement quoting them
    if kind == "delivery":  # a read receipt's reader is named by her identity: her customer's is opened for it
        assert [t for t in opened if t not in ("", ERASED)] == []


def stored_tokens(ledger: CaseLedger) -> list[tuple[str, str]]:
    """(event topic, sealed token) of every token in the store's events, as stored."""
    out = []
    for notification in ledger.recorder.select_notifications(start=1, limit=10_000):
        state = bytes(notification.state).decode("latin-1")
        out += [(notification.topic, m.group(0)) for m in TOKEN.finditer(state)]
    return out


def test_a_case_reported_on_then_followed_up_handed_off_and_answered_copies_clear_texts_sealed_once(
        two: tuple[CaseLedger, Worker], clock: FakeClock) -> None:
    """Every command that copies a case's texts into a new event after the worker replayed the case sealed:
    a follow-up (contact and acknowledgement), a hand-off (its brief), a response, in later batches and in the same
    unit as the report. Each text is stored sealed once under the customer's key, and opens to the clear text."""
    agent, worker = two
    who = "email:copy@example.com"
    out = agent.record_contact(draft("c-1", who, "zqcopy"))
    clock.advance(minutes=1)
    worker.apply(*reports(out.reference, who, clock()))  # kept sealed by the worker
    clock.advance(minutes=1)
    worker.apply(draft("c-2", who, "zqfollow", case_reference=out.reference, follow_up=True, occurred_at=clock()))
    ledger = worker.ledger
    case_id = case_id_for(out.reference)
    with ledger.unit_of_work():  # a report, then a hand-off and a response in the same unit
        ledger.prefetch([case_id], sealed=[case_id])
        ledger.hand_off(out.reference, actor=AGENT, to_assignee="bob", note="zqnote")
        brief = ledger.hand_off(out.reference, actor=AGENT, to_assignee="carol", note="")
        ledger.respond(out.reference, actor=AGENT, body="zqanswer")
    assert "zqcopy item" in str(brief) and "zqfollow item" in str(brief) and "enc:1:" not in str(brief)
    fresh = CaseLedger(ledger_settings(database=str(agent.settings.store.database)), clock=clock)
    try:
        case = fresh.get_case(out.reference)
        assert case.subject == "zqcopy subject"
        assert sorted(i.text for i in case.items.values()) == ["zqcopy item", "zqfollow item"]
        for event in fresh.history(out.customer_id):
            for text in _strings(vars(event)):
                assert not text.startswith("enc:1:"), (type(event).__name__, "a token sealed again")
        handed = [e for e in fresh.history(out.customer_id) if type(e).__name__ == "HandedOff"]
        assert [sorted(i["text"] for i in vars(e)["brief"]["open_items"]) for e in handed] == [
            ["zqcopy item", "zqfollow item"]] * 2
        key_ids = {token.split(":")[2] for _, token in stored_tokens(fresh)}
        assert key_ids == set(fresh.data_keys.live_keys_of(out.customer_id)), "only her key"
    finally:
        fresh.close()


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def test_an_erased_customer_does_not_come_back_through_a_case_the_worker_replayed_sealed(
        two: tuple[CaseLedger, Worker], clock: FakeClock) -> None:
    """Attack: the worker keeps her case (replayed sealed by a report, then opened by a follow-up); another process
    erases her; her texts are never opened again by the worker, whatever it is sent next."""
    agent, worker = two
    who = "email:gone@example.com"
    out = agent.record_contact(draft("g-1", who, "zqgone"))
    clock.advance(minutes=1)
    delivered, read = reports(out.reference, who, clock())
    worker.apply(delivered, read)
    clock.advance(minutes=1)
    worker.apply(draft("g-2", who, "zqagain", case_reference=out.reference, follow_up=True, occurred_at=clock()))
    assert holding(worker.ledger, ["zqgone subject"]) == ["zqgone subject"]  # kept opened, as before
    agent.erase_customer(who, reason="art. 17 request", actor=AGENT)
    clock.advance(minutes=1)
    worker.apply(DeliveryReport(case_reference=out.reference, message_id="ACK2", delivered_at=clock()))
    worker.apply(draft("g-3", who, "zqback", case_reference=out.reference, follow_up=True, occurred_at=clock()))
    assert holding(worker.ledger, ["zqgone", "zqagain"]) == []
    with worker.ledger.unit_of_work():
        assert worker.ledger.get_case(out.reference).subject == ERASED
