"""Kafka connection settings: how to reach the brokers and which topics the ledger uses.

Settings come from keyword arguments (CLI options) or the environment, read by a composition root
into :class:`~caseledger.ledger.settings.KafkaSection` (``Settings.from_environ(os.environ).kafka``):

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
``CASELEDGER_INTAKE_RETENTION_HOURS``  how long the intake topic keeps a record, default 168 (7 days);
                                       it holds what adapters sent in clear (docs/privacy.md)
=====================================  =====================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.settings import KAFKA_VARIABLES, KafkaSection, Settings

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_WHOLE_NUMBERS = ("intake_partitions", "events_partitions", "replication_factor", "intake_retention_hours")
MAX_RECORD_BYTES = 4_194_304  # the topics' max.message.bytes: a record of the ledger never exceeds it


@dataclass(frozen=True, kw_only=True)
class KafkaSettings:
    """How to reach Kafka and which topics the ledger uses."""

    bootstrap_servers: str
    intake_topic: str = "caseledger.intake"
    events_topic: str = "caseledger.events"
    checkpoints_topic: str = ""  # default: the events topic's name with .checkpoints for .events
    intake_partitions: int = 6
    events_partitions: int = 6
    replication_factor: int = 1
    intake_retention_hours: int = 168  # the intake topic's retention.ms (new topics), in hours
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
        for name in ("intake_partitions", "events_partitions", "replication_factor", "intake_retention_hours"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"Kafka {name.replace('_', ' ')} must be at least 1")
        if self.intake_topic == self.events_topic:
            raise ConfigurationError("the intake and events topics must differ")
        if not self.checkpoints_topic:
            base = self.events_topic.removesuffix(".events")
            object.__setattr__(self, "checkpoints_topic", f"{base}.checkpoints")

    @classmethod
    def resolve(cls, *, bootstrap_servers: str | None = None, settings: KafkaSection | None = None,
                **options: Any) -> KafkaSettings:
        """Options win over ``settings`` (the ``CASELEDGER_KAFKA_*`` environment), which win over defaults."""
        given = settings or KafkaSection()
        values: dict[str, Any] = {"bootstrap_servers": bootstrap_servers or given.bootstrap_servers or ""}
        for name, variable in KAFKA_VARIABLES.items():
            value = getattr(given, name)
            if name == "bootstrap_servers" or not value:
                continue
            if name in _WHOLE_NUMBERS:
                try:
                    value = int(value)
                except ValueError:
                    raise ConfigurationError(f"{variable}={value!r} is not a whole number") from None
            values[name] = value
        values.update({k: v for k, v in options.items() if v is not None})
        return cls(**values)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], **options: Any) -> KafkaSettings:
        """For an adapter's own process (its composition root): ``KafkaSettings.from_environ(os.environ)``."""
        return cls.resolve(settings=Settings.from_environ(environ).kafka, **options)

    @classmethod
    def configured(cls, settings: KafkaSection | None, bootstrap_servers: str | None = None) -> KafkaSettings | None:
        """Settings when Kafka is configured (option or environment); None for the embedded default."""
        if not (bootstrap_servers or (settings and settings.bootstrap_servers)):
            return None
        return cls.resolve(bootstrap_servers=bootstrap_servers, settings=settings)

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
