"""Issue 25, outbound, end to end against a real ``caseledger serve``: contact → acknowledgement delivered by the
adapter of its channel → delivery recorded → deadline met (and, with no delivery or a failure, missed).

Finding: "What must be delivered cannot be read by who delivers it. The acknowledgement's text is sealed on the
events topic, so the adapter that must deliver it (and then report it delivered) cannot read it; no outbound path
is documented. In the trial every acknowledgement deadline was recorded as missed because nothing ever reported a
delivery." Before this change ``GET /v1/outbound`` did not exist (404) and no adapter could report a failure.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from caseledger.ledger import DeliveryFailure, OutboundClient, OutboundMessage
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.permissions import Role
from caseledger.ledger.domain.values import Identity
from caseledger.ledger.errors import PermissionDenied, ValidationError
from caseledger.ledger.settings import KafkaSettings
from caseledger.projections.view_stores import open_views
from tests.support.clock import FakeClock
from tests.support.environment import ledger_settings
from tests.support.personal_data import (
    BODY,
    ITEM,
    JANE,
    SECRETS,
    SUBJECT,
    all_views,
    assert_nowhere,
    jane_contact,
    store_bytes,
)
from tests.support.service_server import Service, add_adapter_key, start_service, stop_service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    running = start_service(tmp_path_factory.mktemp("outbound"))
    try:
        yield running
    finally:
        stop_service(running)


def adapter(service: Service, channels: list[str]) -> str:
    """An adapter principal with an adapter key of the same name for ``channels``; its token."""
    name = f"gw-{uuid.uuid4().hex[:8]}"
    with service.client(Role.ADMIN) as admin:
        token = admin.post("/v1/principals", json={"name": name, "role": "adapter"}).json()["token"]
    if channels:
        add_adapter_key(service, name, channels)
    return str(token)


def contact(service: Service, *, identity: str = f"email:{JANE.value}", channel: str = "email") -> dict[str, Any]:
    body = {"channel": channel, "channel_message_id": f"<{uuid.uuid4()}@mail.example>", "from": identity,
            "subject": SUBJECT, "body": BODY, "items": [ITEM]}
    with service.client(Role.AGENT) as agent:
        answer = agent.post("/v1/contacts", json=body)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def pending(client: OutboundClient, reference: str) -> list[OutboundMessage]:
    client.position = 0
    return [m for m in client.poll(wait_s=0) if m.reference == reference]


def later(service: Service, days: int) -> CaseLedger:
    """The service's ledger read with a clock ``days`` ahead: what its tick will find then."""
    return CaseLedger(ledger_settings(database=service.database),
                      clock=FakeClock(datetime.now(UTC) + timedelta(days=days)))


def test_contact_acknowledgement_delivered_by_the_adapter_delivery_recorded_deadline_met(
    service: Service, tmp_path: Path,
) -> None:
    delivered = contact(service)
    missed = contact(service)
    with OutboundClient(service.url, adapter(service, ["email"])) as mail:
        (ack,) = pending(mail, delivered["reference"])
        assert (ack.message_id, ack.kind, ack.address, ack.channel) == ("ACK1", "acknowledgement",
                                                                        f"email:{JANE.value}", "email")
        assert ack.text == delivered["acknowledgement"] and SUBJECT in ack.text  # in clear, for this adapter
        assert ack.deliver_by is not None and ack.deliver_by > ack.issued_at
        mail.delivered(ack)
        assert pending(mail, delivered["reference"]) == []  # reported: not handed out again
        assert len(pending(mail, missed["reference"])) == 1
    with service.client(Role.AGENT) as agent:
        messages = {m["message_id"]: m for m in agent.get(f"/v1/cases/{delivered['reference']}").json()["messages"]}
    assert messages["ACK1"]["delivered_at"] is not None
    ledger = later(service, 60)
    try:
        ledger.tick()
        assert ("acknowledgement", "ACK1") not in ledger.get_case(delivered["reference"]).missed
        assert ("acknowledgement", "ACK1") in ledger.get_case(missed["reference"]).missed
        with open_views(str(tmp_path / "views.sqlite")) as views:
            tables = all_views(views, ledger)
        rows = {(r["case_id"], r["target_id"]): r for r in tables["deadlines"]["deadlines"]
                if r["kind"] == "acknowledgement"}
        met = rows[delivered["case_id"], "ACK1"]
        assert met["outcome"] == "delivered" and met["settled_at"] <= met["due_at"] and met["missed"] == 0
        assert rows[missed["case_id"], "ACK1"]["missed"] == 1
    finally:
        ledger.close()


def test_a_failure_is_recorded_visible_to_agents_and_the_deadline_is_missed(service: Service) -> None:
    failed = contact(service)
    with OutboundClient(service.url, adapter(service, ["email"])) as mail:
        (ack,) = pending(mail, failed["reference"])
        with pytest.raises(ValidationError, match="delivery failure code"):
            mail.failed(ack, "550 5.1.1 mailbox unknown")
        mail.failed(ack, DeliveryFailure.BOUNCED)
        assert pending(mail, failed["reference"]) == []
    with service.client(Role.AGENT) as agent:
        case = agent.get(f"/v1/cases/{failed['reference']}").json()
    (message,) = [m for m in case["messages"] if m["message_id"] == "ACK1"]
    assert message["failure"] == "bounced" and message["delivered_at"] is None
    ledger = later(service, 60)
    try:
        ledger.tick()
        assert ("acknowledgement", "ACK1") in ledger.get_case(failed["reference"]).missed
    finally:
        ledger.close()


def test_only_the_adapter_of_the_channel_reads_or_reports_it(service: Service) -> None:
    """Another adapter, a principal of another role, an adapter with no channels, no token: 403/401, never 500."""
    case = contact(service)
    with OutboundClient(service.url, adapter(service, ["sms", "chat"])) as sms:
        assert pending(sms, case["reference"]) == []
        (ack,) = pending(OutboundClient(service.url, adapter(service, ["email"])), case["reference"])
        for report in (lambda: sms.delivered(ack), lambda: sms.failed(ack, "bounced")):
            with pytest.raises(PermissionDenied, match="forbidden channel"):
                report()
    for role in Role:
        if role is not Role.ADAPTER:
            with service.client(role) as other:
                refused = other.get("/v1/outbound")
                assert refused.status_code == 403 and "outbound.read" in refused.json()["detail"], role
    with service.client(token=adapter(service, [])) as unregistered:
        refused = unregistered.get("/v1/outbound")
        assert refused.status_code == 403 and "caseledger adapters add" in refused.json()["detail"]
    with service.client() as anonymous:
        assert anonymous.get("/v1/outbound").status_code == 401
    with service.client(token=adapter(service, ["email"])) as mail:
        for query in ("after=-1", "limit=0", "limit=100000", "wait=soon", "after=99999999999999999999", "wait=1e9"):
            answer = mail.get(f"/v1/outbound?{query}")
            assert answer.status_code == 400, (query, answer.text)


def test_a_long_poll_answers_as_soon_as_a_message_is_issued(service: Service) -> None:
    with OutboundClient(service.url, adapter(service, ["sms"])) as sms:
        sms.poll(wait_s=0)
        while sms.poll(wait_s=0):  # drain what other tests left
            pass
        got: list[OutboundMessage] = []
        started = time.monotonic()
        waiting = threading.Thread(target=lambda: got.extend(sms.poll(wait_s=15)))
        waiting.start()
        time.sleep(0.5)
        case = contact(service, identity="phone:+33611223344", channel="sms")
        waiting.join(20)
        assert [(m.reference, m.address) for m in got] == [(case["reference"], "phone:+33611223344")]
        assert time.monotonic() - started < 5


def test_an_erased_customers_pending_messages_are_not_delivered(service: Service) -> None:
    case = contact(service, identity="email:erase-me-4711@example.com")
    with OutboundClient(service.url, adapter(service, ["email"])) as mail:
        assert len(pending(mail, case["reference"])) == 1
        with service.client(Role.SUPERVISOR) as supervisor:
            erased = supervisor.post(f"/v1/customers/{case['customer_id']}/erase",
                                     json={"reason": "art. 17 request of 2026-12-01, ticket 4711"})
            assert erased.status_code == 200, erased.text
        assert pending(mail, case["reference"]) == []


def test_the_texts_and_addresses_are_in_clear_nowhere_but_in_the_adapters_answer(service: Service) -> None:
    """The feed writes nothing: the store keeps only tokens, the service's log names no address and no text."""
    case = contact(service)
    with OutboundClient(service.url, adapter(service, ["email"])) as mail:
        (ack,) = pending(mail, case["reference"])
        mail.delivered(ack)
    ledger = service.ledger()
    try:
        assert_nowhere(store_bytes(ledger, service.database), "the store", SECRETS)
    finally:
        ledger.close()
    assert_nowhere(service.log().encode(), "the service's log", [*SECRETS, JANE.value])


@pytest.mark.kafka
def test_through_kafka_a_contact_is_acknowledged_delivered_and_the_topic_holds_no_text_in_clear(
    kafka: KafkaSettings, tmp_path: Path,
) -> None:
    """Contact on the intake topic → the worker records it and its acknowledgement → the adapter of its channel
    reads the acknowledgement in clear from the feed and reports it delivered (another, failed) → published: the
    events topic holds neither text nor address in clear."""
    from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
    from caseledger.ledger.intake.outbound import OutboundFeed
    from caseledger.ledger.intake.worker import KafkaIntakeWorker
    from tests.support.kafka_topics import drain, publish_all, read_topic

    ledger = CaseLedger(ledger_settings(database=str(tmp_path / "k.sqlite")), clock=lambda: datetime.now(UTC))
    try:
        with KafkaIntakeClient(kafka, adapter="mail-gateway-1") as intake:
            intake.submit(jane_contact("<k-1@mail.example>"))
            intake.submit(jane_contact("<k-2@mail.example>", identity=Identity.parse("email:max-4711@example.com")))
        drain(KafkaIntakeWorker(ledger, kafka), until=2)
        delivered, failed = OutboundFeed(ledger).page(channels=["email"]).messages
        assert (delivered.address, delivered.in_reply_to) == (f"email:{JANE.value}", "<k-1@mail.example>")
        assert SUBJECT in delivered.text and failed.address == "email:max-4711@example.com"
        ledger.record_delivery(delivered.reference, message_id=delivered.message_id, delivered_at=ledger.clock())
        ledger.record_delivery_failure(failed.reference, message_id=failed.message_id, reason="bounced")
        assert OutboundFeed(ledger).page(channels=["email"]).messages == []
        publish_all(ledger, kafka)
        published = b"\n".join(b"\n".join([r.value or b"", r.key or b"", *[v for _k, v in r.headers or [] if v]])
                               for r in read_topic(kafka, kafka.events_topic, committed=False))
        assert b"MessageDeliveryFailed" in published  # the failure is published like any event
        texts = [line for m in (delivered, failed) for line in m.text.splitlines() if len(line) > 24]
        assert_nowhere(published, "the events topic", [*SECRETS, "max-4711@example.com", *texts])
    finally:
        ledger.close()
