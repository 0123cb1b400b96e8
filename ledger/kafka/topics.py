"""The ledger's topics (intake, events, checkpoints, outcomes): created with explicit configs, or checked when they exist."""

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
    # What adapters published, in clear: kept for CASELEDGER_INTAKE_RETENTION_HOURS at most (set per topic by
    # intake_topic_config), long enough for any worker lag. Once applied, a record is accounted by the ledger's
    # own outcome events (the audit names offsets past retention as such), and its personal data lives on
    # only sealed with the customer's key, so erasure reaches it.
    "retention.bytes": "-1",
    "cleanup.policy": "delete",
    "max.message.bytes": "4194304",
}
#: A segment of the intake topic rolls this many times per retention period (and at least every minute).
SEGMENTS_PER_RETENTION = 24


def intake_topic_config(retention_hours: int) -> dict[str, str]:
    """The intake topic's configuration: no record in clear lives longer than ``retention_hours``.

    Kafka deletes whole segments, once the newest record of one is older than ``retention.ms``, and
    rolls a segment after ``segment.ms``: a record can live ``retention.ms + segment.ms``. So the
    segment is a 24th of the period and ``retention.ms`` the period less one segment (plus the
    broker's ``log.retention.check.interval.ms``, 5 minutes by default, before the file goes).
    """
    period = retention_hours * 3_600_000
    segment = max(period // SEGMENTS_PER_RETENTION, 60_000)
    return {**INTAKE_TOPIC_CONFIG, "retention.ms": str(period - segment), "segment.ms": str(segment)}


def intake_topic_outlives(config: dict[str, str], retention_hours: int) -> str | None:
    """What is wrong when an existing intake topic can keep records in clear past ``retention_hours``, or None."""
    period = retention_hours * 3_600_000
    try:
        retention, segment = int(config["retention.ms"]), int(config["segment.ms"])
    except (KeyError, ValueError):
        return "its retention.ms or segment.ms cannot be read"
    if retention < 0 or retention + segment > period:
        wanted = intake_topic_config(retention_hours)
        return (f"retention.ms {retention} + segment.ms {segment} keeps records in clear past "
                f"CASELEDGER_INTAKE_RETENTION_HOURS ({retention_hours} h); set retention.ms={wanted['retention.ms']} "
                f"and segment.ms={wanted['segment.ms']} with kafka-configs.sh --alter")
    return None


def outcomes_topic_config(retention_hours: int) -> dict[str, str]:
    """The outcomes topic's: a verdict matters while its adapter waits, or resubmits after a crash; it is
    kept as long as the intake record it judges (the ledger's events keep the outcome for good)."""
    return {**intake_topic_config(retention_hours), "message.timestamp.type": "CreateTime"}


def ensure_topics(settings: KafkaSettings) -> dict[str, str]:
    """Create the intake, events, checkpoints and outcomes topics when missing; check existing ones. Returns
    what was done."""
    intake_config = intake_topic_config(settings.intake_retention_hours)
    wanted = {
        settings.intake_topic: (settings.intake_partitions, intake_config),
        settings.events_topic: (settings.events_partitions, EVENTS_TOPIC_CONFIG),
        settings.checkpoints_topic: (1, CHECKPOINTS_TOPIC_CONFIG),
        # Keyed by adapter: an adapter reads one partition. As many as the intake topic's.
        settings.outcomes_topic: (settings.intake_partitions, outcomes_topic_config(settings.intake_retention_hours)),
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
                if topic == settings.intake_topic and (
                        wrong := intake_topic_outlives(admin.topic_config(topic), settings.intake_retention_hours)):
                    raise ConfigurationError(f"topic {topic}: {wrong}")
            elif admin.create_topic(topic, partitions=partitions, replication_factor=settings.replication_factor,
                                    config=config):
                done[topic] = f"created ({partitions} partitions)"
            else:
                done[topic] = "exists (created concurrently)"
    return done
