"""Issue 25, finding "the adapter role has no read of its own submissions over HTTP": ``POST /v1/intake/verdict``.

An adapter principal reads the verdict of one of its own intake records, by where its receipt says the record
was stored (and, for a contact, its channel message id); another adapter's record, a record not applied yet and
an unknown one all read 404 alike; bad input is a 4xx, never a 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from caseledger.ledger.domain.permissions import Role
from caseledger.ledger.domain.values import Actor, ContactDraft, Identity
from caseledger.ledger.intake.records import DeliveryReport, IntakeCodec, ReadReceipt
from caseledger.ledger.intake.verdict_reads import read_verdict
from caseledger.ledger.intake.worker import IntakeRecord, KafkaIntakeWorker
from caseledger.ledger.settings import KafkaSettings
from tests.support.service_server import Service, start_service, stop_service

TOPIC = "caseledger.intake"
ADAPTER = "adapter-1"  # the adapter principal start_service issues
CODEC = IntakeCodec()


def contact(msg: str, **kw: Any) -> ContactDraft:
    kw.setdefault("subject", "Refund")
    return ContactDraft(channel="email", channel_message_id=msg, identity=Identity.parse("email:ann@example.com"),
                        items=("Where is my refund?",), **kw)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    where: Path = tmp_path_factory.mktemp("verdict-api")
    running = start_service(where)
    ledger = running.ledger()
    try:  # the service is stopped whatever happens from here on, a failed setup too
        worker = KafkaIntakeWorker(ledger, KafkaSettings(bootstrap_servers="unused:9092"))
        future = datetime.now(UTC) + timedelta(hours=2)
        worker.apply_batch(0, [
            IntakeRecord(TOPIC, 0, 0, CODEC.encode(contact("<m-1@mail>"), adapter=ADAPTER)),
            IntakeRecord(TOPIC, 0, 1, CODEC.encode(contact("<m-1@mail>"), adapter=ADAPTER)),  # resubmitted
            IntakeRecord(TOPIC, 0, 2, CODEC.encode(contact("<m-2@mail>", occurred_at=future), adapter=ADAPTER)),
            IntakeRecord(TOPIC, 0, 3, CODEC.encode(contact("<m-3@mail>"), adapter="adapter-2")),
            IntakeRecord(TOPIC, 0, 4, CODEC.encode(contact("<m-4@mail>", case_reference="CL-AAAAA-BBBBB"),
                                                   adapter="adapter-2")),
            IntakeRecord(TOPIC, 0, 5, CODEC.encode(contact("<m-1@mail>", subject="Other"), adapter=ADAPTER)),
        ])
        reference = read_verdict(ledger, adapter=ADAPTER, topic=TOPIC, partition=0, offset=0, channel="email",
                                 channel_message_id="<m-1@mail>").reference  # type: ignore[attr-defined]
        now = datetime.now(UTC)
        worker.apply_batch(0, [  # unsigned reports: their verdicts go to the adapter each record names
            IntakeRecord(TOPIC, 0, 6, CODEC.encode(DeliveryReport(case_reference=reference, message_id="ACK1",
                                                                  delivered_at=now), adapter=ADAPTER)),
            IntakeRecord(TOPIC, 0, 7, CODEC.encode(ReadReceipt(
                case_reference=reference, message_id="ACK1", reader=Actor.parse("customer:email:ann@example.com"),
                read_at=now), adapter="adapter-2")),
        ])
    except BaseException:
        stop_service(running)
        raise
    finally:
        ledger.close()
    try:
        yield running
    finally:
        stop_service(running)


def ask(service: Service, role: Role = Role.ADAPTER, **body: Any) -> Any:
    with service.client(role) as client:
        return client.post("/v1/intake/verdict", json={"topic": TOPIC, "partition": 0, **body})


def test_an_adapter_reads_the_verdict_of_its_own_contact(service: Service) -> None:
    answer = ask(service, offset=0, channel="email", channel_message_id="<m-1@mail>")
    assert answer.status_code == 200, answer.text
    verdict = answer.json()
    assert verdict["outcome"] == "recorded" and verdict["received"] is True
    assert verdict["reference"].startswith("CL-") and verdict["acknowledgement_id"] == "ACK1"
    again = ask(service, offset=1, channel="email", channel_message_id="<m-1@mail>").json()
    assert again["outcome"] == "resubmission" and again["reference"] == verdict["reference"]


def test_rejections_and_collisions_are_found_by_the_record_alone(service: Service) -> None:
    rejected = ask(service, offset=2).json()
    assert rejected["outcome"] == "rejected" and rejected["received"] is False
    assert (rejected["reason"]["code"], rejected["reason"]["field"]) == ("time-in-future", "occurred_at")
    collided = ask(service, offset=5).json()
    assert collided["outcome"] == "collision" and collided["collision_kind"] == "content"
    assert "reference" not in collided


def test_an_unsigned_report_is_found_by_its_case_reference_for_the_adapter_that_sent_it(service: Service) -> None:
    """Finding: an unsigned delivery or read report's verdict was keyed by an empty adapter name, so over HTTP only
    a rejected report's verdict was found."""
    reference = ask(service, offset=0, channel="email", channel_message_id="<m-1@mail>").json()["reference"]
    applied = ask(service, offset=6, case_reference=reference)
    assert applied.status_code == 200, applied.text
    assert (applied.json()["outcome"], applied.json()["adapter"]) == ("applied", ADAPTER)
    assert ask(service, offset=6).status_code == 404  # a report is found by its case
    assert ask(service, offset=7, case_reference=reference).status_code == 404  # adapter-2's, as if not applied
    assert ask(service, offset=6, case_reference="CL-AAAAA-BBBBB").status_code == 404


def test_another_adapters_record_reads_as_not_found(service: Service) -> None:
    for body in ({"offset": 3, "channel": "email", "channel_message_id": "<m-3@mail>"}, {"offset": 4}):
        answer = ask(service, **body)
        assert answer.status_code == 404, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert "<m-3@mail>" not in answer.text and "ann@example.com" not in answer.text
    # the same answer as a record nobody sent
    assert ask(service, offset=99).status_code == 404
    # a contact's message id with another record's offset does not lend it that record's verdict
    assert ask(service, offset=3, channel="email", channel_message_id="<m-1@mail>").status_code == 404


def test_bad_input_is_refused_never_a_500(service: Service) -> None:
    for body in ({"offset": -1}, {"offset": "x"}, {"offset": 0, "channel": "pigeon", "channel_message_id": "a"},
                 {"offset": 0, "extra": 1}, {"offset": 0, "topic": ""}, {"offset": 10**30}):
        answer = ask(service, **body)
        assert 400 <= answer.status_code < 500, (body, answer.status_code, answer.text)
    with service.client(Role.ADAPTER) as client:
        for raw in (b"{not json",  # and lone surrogates, as a JSON escape: no lookup secret can be made of them
                    b'{"topic": "t", "partition": 0, "offset": 0, "channel": "email", "channel_message_id": "\\ud800"}',
                    b'{"topic": "\\udfff", "partition": 0, "offset": 0}'):
            answer = client.post("/v1/intake/verdict", content=raw, headers={"content-type": "application/json"})
            assert 400 <= answer.status_code < 500, (raw, answer.text)


def test_only_the_adapter_role_reads_verdicts(service: Service) -> None:
    assert ask(service, Role.AGENT, offset=0).status_code == 403
    assert ask(service, Role.ADMIN, offset=0).status_code == 403
