"""The ledger's topics (intake, events, checkpoints): created with explicit configs, or checked when they exist."""

from __future__ import annotations

from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.kafka.clients import open_topic_admin
from caseledger.ledger.settings import KafkaSettings

# Topic configurations, explicit so a broker's defaults never decide retention or durability.
EVENTS_TOPIC_CONFIG = {
    "retention.ms": "-1",  # the ledger's history is kept forever
    "retention.bytes": "-1",
    "cleanup.policy": "delete",
    "message.timestamp.type": "CreateTime",
    "max.message.bytes": "4194304",
}
# One partition: checkpoints are read in signing order, and an auditor follows one log.
CHECKPOINTS_TOPIC_CONFIG = EVENTS_TOPIC_CONFIG
INTAKE_TOPIC_CONFIG = {
    # What adapters published, in clear: kept for CASELEDGER_INTAKE_RETENTION_HOURS (set per topic below),
    # long enough for any worker lag. Once applied, a record is accounted by the ledger's own outcome
    # events (the audit names offsets past retention as such), and its personal data lives on only
    # sealed with the customer's key, so erasure reaches it.
    "retention.ms": str(7 * 24 * 3600 * 1000),
    "retention.bytes": "-1",
    "cleanup.policy": "delete",
    "max.message.bytes": "4194304",
}


def ensure_topics(settings: KafkaSettings) -> dict[str, str]:
    """Create the intake, events and checkpoints topics when missing; check existing ones. Returns what was done."""
    intake_config = {**INTAKE_TOPIC_CONFIG, "retention.ms": str(settings.intake_retention_hours * 3600 * 1000)}
    wanted = {
        settings.intake_topic: (settings.intake_partitions, intake_config),
        settings.events_topic: (settings.events_partitions, EVENTS_TOPIC_CONFIG),
        settings.checkpoints_topic: (1, CHECKPOINTS_TOPIC_CONFIG),
    }
    if settings.replication_factor > 1:
        durable = {"min.insync.replicas": str(min(2, settings.replication_factor))}
        wanted = {topic: (n, {**config, **durable}) for topic, (n, config) in wanted.items()}
    done: dict[str, str] = {}
    with open_topic_admin(settings) as admin:
        existing = admin.topics()
        for topic, (partitions, config) in wanted.items():
            if topic in existing:
                actual = admin.partition_count(topic)
                if topic == settings.events_topic and actual != partitions:
                    raise ConfigurationError(
                        f"topic {topic} has {actual} partitions but CASELEDGER_EVENTS_PARTITIONS is {partitions}; "
                        "a customer's events must stay on one partition: set it to the topic's count"
                    )
                done[topic] = f"exists ({actual} partitions)"
            elif admin.create_topic(topic, partitions=partitions, replication_factor=settings.replication_factor,
                                    config=config):
                done[topic] = f"created ({partitions} partitions)"
            else:
                done[topic] = "exists (created concurrently)"
    return done
