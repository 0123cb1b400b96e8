"""Kafka connection settings, client construction and topic administration.

Settings come from keyword arguments (CLI options) or the environment:

=====================================  =====================================================
``CASELEDGER_KAFKA_BOOTSTRAP``         bootstrap servers, ``host:port[,host:port]``
``CASELEDGER_KAFKA_SECURITY_PROTOCOL`` PLAINTEXT (default), SSL, SASL_PLAINTEXT, SASL_SSL
``CASELEDGER_KAFKA_SASL_MECHANISM``    PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
``CASELEDGER_KAFKA_SASL_USERNAME``     SASL user name
``CASELEDGER_KAFKA_SASL_PASSWORD``     SASL password
``CASELEDGER_KAFKA_SSL_CAFILE``        CA bundle to verify the brokers
``CASELEDGER_KAFKA_SSL_CERTFILE``      client certificate (mutual TLS)
``CASELEDGER_KAFKA_SSL_KEYFILE``       client key (mutual TLS)
``CASELEDGER_INTAKE_TOPIC``            default ``caseledger.intake``
``CASELEDGER_EVENTS_TOPIC``            default ``caseledger.events``
``CASELEDGER_INTAKE_PARTITIONS``       default 6
``CASELEDGER_EVENTS_PARTITIONS``       default 6 — never change it once events are published
``CASELEDGER_KAFKA_REPLICATION``       replication factor of new topics, default 1
=====================================  =====================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from caseledger.ledger.errors import BackendError, ConfigurationError

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, kw_only=True)
class KafkaSettings:
    """How to reach Kafka and which topics the ledger uses."""

    bootstrap_servers: str
    intake_topic: str = "caseledger.intake"
    events_topic: str = "caseledger.events"
    intake_partitions: int = 6
    events_partitions: int = 6
    replication_factor: int = 1
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    client_id: str = "caseledger"

    def __post_init__(self) -> None:
        if not self.bootstrap_servers.strip():
            raise ConfigurationError(
                "no Kafka bootstrap servers: pass --kafka HOST:PORT or set CASELEDGER_KAFKA_BOOTSTRAP"
            )
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigurationError(
                f"Kafka security protocol {self.security_protocol!r}: use one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ConfigurationError(
                    f"{self.security_protocol} needs CASELEDGER_KAFKA_SASL_MECHANISM, one of "
                    f"{', '.join(SASL_MECHANISMS)}"
                )
            if not (self.sasl_username and self.sasl_password):
                raise ConfigurationError(
                    f"{self.security_protocol} needs CASELEDGER_KAFKA_SASL_USERNAME and _PASSWORD"
                )
        for name in ("intake_partitions", "events_partitions", "replication_factor"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"Kafka {name.replace('_', ' ')} must be at least 1")
        if self.intake_topic == self.events_topic:
            raise ConfigurationError("the intake and events topics must differ")

    @classmethod
    def resolve(cls, *, bootstrap_servers: str | None = None, **options: Any) -> KafkaSettings:
        """Options win over the environment (``CASELEDGER_KAFKA_*``), which wins over defaults."""
        env = os.environ
        values: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers or env.get("CASELEDGER_KAFKA_BOOTSTRAP", ""),
        }
        text_vars = {
            "intake_topic": "CASELEDGER_INTAKE_TOPIC",
            "events_topic": "CASELEDGER_EVENTS_TOPIC",
            "security_protocol": "CASELEDGER_KAFKA_SECURITY_PROTOCOL",
            "sasl_mechanism": "CASELEDGER_KAFKA_SASL_MECHANISM",
            "sasl_username": "CASELEDGER_KAFKA_SASL_USERNAME",
            "sasl_password": "CASELEDGER_KAFKA_SASL_PASSWORD",
            "ssl_cafile": "CASELEDGER_KAFKA_SSL_CAFILE",
            "ssl_certfile": "CASELEDGER_KAFKA_SSL_CERTFILE",
            "ssl_keyfile": "CASELEDGER_KAFKA_SSL_KEYFILE",
        }
        int_vars = {
            "intake_partitions": "CASELEDGER_INTAKE_PARTITIONS",
            "events_partitions": "CASELEDGER_EVENTS_PARTITIONS",
            "replication_factor": "CASELEDGER_KAFKA_REPLICATION",
        }
        for name, var in text_vars.items():
            if env.get(var):
                values[name] = env[var]
        for name, var in int_vars.items():
            if env.get(var):
                try:
                    values[name] = int(env[var])
                except ValueError:
                    raise ConfigurationError(f"{var}={env[var]!r} is not a whole number") from None
        values.update({k: v for k, v in options.items() if v is not None})
        return cls(**values)

    @classmethod
    def from_env_if_configured(cls, bootstrap_servers: str | None = None) -> KafkaSettings | None:
        """Settings when Kafka is configured (option or environment); None for the embedded default."""
        if not (bootstrap_servers or os.environ.get("CASELEDGER_KAFKA_BOOTSTRAP")):
            return None
        return cls.resolve(bootstrap_servers=bootstrap_servers)

    def client_options(self) -> dict[str, Any]:
        """Connection options every kafka-python client takes."""
        options: dict[str, Any] = {
            "bootstrap_servers": [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()],
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(self, name):
                options[name] = getattr(self, name)
        return options


# Topic configurations, explicit so a broker's defaults never decide retention or durability.
EVENTS_TOPIC_CONFIG = {
    "retention.ms": "-1",  # the ledger's history is kept forever
    "retention.bytes": "-1",
    "cleanup.policy": "delete",
    "message.timestamp.type": "CreateTime",
    "max.message.bytes": "4194304",
}
INTAKE_TOPIC_CONFIG = {
    # Kept forever too: the audit reconciles every intake offset with its outcome.
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "cleanup.policy": "delete",
    "max.message.bytes": "4194304",
}


def ensure_topics(settings: KafkaSettings) -> dict[str, str]:
    """Create the intake and events topics when missing; check existing ones. Returns what was done."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    wanted = {
        settings.intake_topic: (settings.intake_partitions, INTAKE_TOPIC_CONFIG),
        settings.events_topic: (settings.events_partitions, EVENTS_TOPIC_CONFIG),
    }
    if settings.replication_factor > 1:
        durable = {"min.insync.replicas": str(min(2, settings.replication_factor))}
        wanted = {topic: (n, {**config, **durable}) for topic, (n, config) in wanted.items()}
    done: dict[str, str] = {}
    try:
        admin = KafkaAdminClient(**settings.client_options(), request_timeout_ms=30_000)
    except KafkaError as error:
        raise BackendError(f"cannot reach Kafka at {settings.bootstrap_servers}: {error}") from error
    try:
        existing = set(admin.list_topics())
        for topic, (partitions, config) in wanted.items():
            if topic in existing:
                actual = partition_count(admin, topic)
                if topic == settings.events_topic and actual != partitions:
                    raise ConfigurationError(
                        f"topic {topic} has {actual} partitions but CASELEDGER_EVENTS_PARTITIONS is {partitions}; "
                        "a customer's events must stay on one partition: set it to the topic's count"
                    )
                done[topic] = f"exists ({actual} partitions)"
                continue
            try:
                admin.create_topics(
                    {topic: {"num_partitions": partitions, "replication_factor": settings.replication_factor,
                             "configs": config}},
                    wait_for_metadata=True,
                )
                done[topic] = f"created ({partitions} partitions)"
            except TopicAlreadyExistsError:
                done[topic] = "exists (created concurrently)"
    except KafkaError as error:
        raise BackendError(f"Kafka topic administration failed: {error}") from error
    finally:
        admin.close()
    return done


def partition_count(admin: Any, topic: str) -> int:
    described = admin.describe_topics([topic])
    return len(described[0]["partitions"])


@lru_cache(maxsize=1 << 16)
def key_hash(key: bytes) -> int:
    """Kafka's default partitioner hash of a record key (murmur2, positive), cached per key."""
    from kafka.partitioner.default import murmur2

    return murmur2(key) & 0x7FFFFFFF  # type: ignore[no-any-return]


def key_partitioner() -> Any:
    """Kafka's default key partitioner (murmur2, as the Java client), with the hash cached per key.

    kafka-python hashes every key in pure Python; the publisher sends every event of a customer
    with the same key, so the cache saves most of that work. The partition chosen is the same.
    """
    from kafka.partitioner.abc import Partitioner

    class KeyPartitioner(Partitioner):  # type: ignore[misc]
        def partition(self, topic: str, key: Any, serialized_key: bytes | None, value: Any,
                      serialized_value: Any, cluster: Any) -> int:
            if topic not in cluster.topics():
                raise ValueError(f"Topic {topic} not found in ClusterMetadata")
            if serialized_key is None:
                raise ValueError("every event record has a key (the customer id)")
            partitions = sorted(cluster.partitions_for_topic(topic))
            return partitions[key_hash(serialized_key) % len(partitions)]  # type: ignore[no-any-return]

    return KeyPartitioner()


def librdkafka_config(settings: KafkaSettings) -> dict[str, Any]:
    """The connection and security settings in librdkafka's (confluent-kafka's) terms."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.client_id,
        "security.protocol": settings.security_protocol,
    }
    if settings.sasl_mechanism:
        config.update({"sasl.mechanism": settings.sasl_mechanism, "sasl.username": settings.sasl_username,
                       "sasl.password": settings.sasl_password})
    for name, key in (("ssl_cafile", "ssl.ca.location"), ("ssl_certfile", "ssl.certificate.location"),
                      ("ssl_keyfile", "ssl.key.location")):
        if getattr(settings, name):
            config[key] = getattr(settings, name)
    return config


def librdkafka_assigned_consumer_config(settings: KafkaSettings, group_id: str) -> dict[str, Any]:
    """A confluent-kafka consumer that is assigned partitions and keeps its positions elsewhere.

    librdkafka wants a group id; the group is never joined (partitions are assigned) nor
    committed to: positions live beside what the records produced.
    """
    config = librdkafka_config(settings)
    config.update({"group.id": group_id, "enable.auto.commit": False, "enable.auto.offset.store": False})
    return config


def consume_available(consumer: Any, max_records: int, timeout_s: float) -> list[Any]:
    """Up to ``max_records`` messages from a confluent-kafka consumer, returning as soon as any are there.

    ``Consumer.consume(n, timeout)`` waits until it has ``n`` messages or the timeout passed: at a
    steady trickle that adds the whole timeout to every record's latency. Take what is queued;
    only when nothing is, wait (up to ``timeout_s``) for the first message.
    """
    messages: list[Any] = consumer.consume(max_records, 0)
    if messages:
        return messages
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]


class ConfluentPartitioner:
    """Kafka's default partition of a key (murmur2, as kafka-python and the Java client pick it)
    for records a confluent-kafka producer sends; each topic's partition count is asked once."""

    def __init__(self, producer: Any, settings: KafkaSettings, timeout_s: float) -> None:
        self._producer = producer
        self._settings = settings
        self._timeout_s = timeout_s
        self._counts: dict[str, int] = {}

    def partition(self, topic: str, key: bytes) -> int:
        count = self._counts.get(topic)
        if count is None:
            count = self._counts[topic] = self._count(topic)
        return key_hash(key) % count

    def _count(self, topic: str) -> int:
        confluent_kafka = import_confluent("producer")
        try:
            found = self._producer.list_topics(topic, self._timeout_s).topics.get(topic)
        except confluent_kafka.KafkaException as error:
            raise BackendError(f"cannot reach Kafka at {self._settings.bootstrap_servers}: {error}") from error
        if found is None or found.error is not None or not found.partitions:
            reason = f" ({found.error})" if found is not None and found.error is not None else ""
            raise BackendError(f"topic {topic} does not exist{reason}; create it with `caseledger topics create`")
        return len(found.partitions)


def produce_waiting(producer: Any, topic: str, **record: Any) -> None:
    """confluent-kafka's ``produce``, waiting for room while librdkafka's local queue is full."""
    while True:
        try:
            producer.produce(topic, **record)
            return
        except BufferError:
            producer.poll(0.05)  # let deliveries drain, then retry


def import_confluent(role: str) -> Any:
    """The confluent_kafka module, or a clear error naming the option that needs it."""
    try:
        import confluent_kafka
    except ImportError:
        raise ConfigurationError(
            f"the confluent {role} needs confluent-kafka: pip install 'caseledger[confluent]', "
            f"or use the default {role} (kafka-python)"
        ) from None
    return confluent_kafka


KAFKA_PYTHON, CONFLUENT = "kafka-python", "confluent"
KAFKA_CLIENTS = (KAFKA_PYTHON, CONFLUENT)


def check_client(name: str, role: str) -> str:
    """``name`` if it names a Kafka client the ledger can use as ``role`` (consumer or producer)."""
    if name not in KAFKA_CLIENTS:
        raise ConfigurationError(f"Kafka {role} {name!r}: use one of {', '.join(KAFKA_CLIENTS)}")
    return name
