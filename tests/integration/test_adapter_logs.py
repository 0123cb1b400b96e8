"""What an adapter's process logs while it publishes (issue 25): never the customer's identity or words, even with
the process's logging at DEBUG. Against a real Kafka broker."""

from __future__ import annotations

import logging

import pytest

from caseledger.ledger import ContactDraft, Identity, KafkaIntakeClient, KafkaSettings

pytestmark = pytest.mark.kafka

SECRET = "log.searched@example.com"


@pytest.mark.parametrize("producer", ["kafka-python", "confluent"])
def test_the_log_searched_for_an_email_finds_nothing(
    kafka: KafkaSettings, producer: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The attack: an adapter runs with DEBUG logging (to chase a timeout), and its logs are shipped to a log
    platform; search them for the customer's address. kafka-python's DEBUG lines printed every record sent."""
    caplog.set_level(logging.DEBUG)
    draft = ContactDraft.free_text(channel="email", channel_message_id="<log-1@mail.example>",
                                   identity=Identity.parse(f"email:{SECRET}"), body="My card is blocked, Jane Doe")
    with KafkaIntakeClient(kafka, adapter="mail-gateway-1", producer=producer) as intake:
        intake.submit(draft)
    assert caplog.records or producer == "confluent", "the client logged (librdkafka logs to stderr, not here)"
    assert SECRET not in caplog.text and "Jane Doe" not in caplog.text
