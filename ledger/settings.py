"""Typed settings: the one tree every setting is read into; what the ledger, Kafka and the service need to start.

:meth:`Settings.from_environ` is the only place the ledger's environment variables are read, and
only the composition roots call it (the CLI's root callback, the service's worker factory, the
benchmarks); library code takes the settings objects it builds. Options win over the environment,
the environment over the defaults: a root passes its options to the ``resolve`` of the section it
needs (``LedgerSettings.resolve``, ``KafkaSettings.resolve``, ``OidcSettings.resolve`` …).

Values are kept as given and checked where they are used, so a setting only the service needs
never stops a command that does not use it. The variables (README, section Configuration):

======================================  ==========================================================
``CASELEDGER_DATABASE``                 a SQLite file path (default ``caseledger.sqlite``) or a
                                        ``postgresql://user:pass@host:port/dbname[?schema=name]`` URL
``CASELEDGER_POLICY``                   a response policy TOML file or a shipped policy's name
                                        (default: the built-in policy)
``CASELEDGER_ORIGIN``                   the name of this ledger for whoever reads its events
                                        (default ``caseledger``)
``CASELEDGER_KAFKA_BOOTSTRAP``          Kafka bootstrap servers, ``host:port[,host:port]``
``CASELEDGER_KAFKA_SECURITY_PROTOCOL``  PLAINTEXT (default), SSL, SASL_PLAINTEXT, SASL_SSL
``CASELEDGER_KAFKA_SASL_MECHANISM``     PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
``CASELEDGER_KAFKA_SASL_USERNAME``      SASL user name
``CASELEDGER_KAFKA_SASL_PASSWORD``      SASL password
``CASELEDGER_KAFKA_SSL_CAFILE``         CA bundle to verify the brokers
``CASELEDGER_KAFKA_SSL_CERTFILE``       client certificate (mutual TLS)
``CASELEDGER_KAFKA_SSL_KEYFILE``        client key (mutual TLS)
``CASELEDGER_INTAKE_TOPIC``             default ``caseledger.intake``
``CASELEDGER_EVENTS_TOPIC``             default ``caseledger.events``
``CASELEDGER_CHECKPOINTS_TOPIC``        default: the events topic's name with ``.checkpoints`` for ``.events``
``CASELEDGER_OUTCOMES_TOPIC``           default: the intake topic's name with ``.outcomes`` for ``.intake``
``CASELEDGER_INTAKE_PARTITIONS``        default 6
``CASELEDGER_EVENTS_PARTITIONS``        default 6 — never change it once events are published
``CASELEDGER_KAFKA_REPLICATION``        replication factor of new topics, default 1
``CASELEDGER_INTAKE_RETENTION_HOURS``   how long the intake topic keeps a record, default 168 (7 days);
                                        it holds what adapters sent in clear (docs/privacy.md)
``CASELEDGER_KAFKA_SESSION_TIMEOUT_MS`` how long a consumer group waits for a silent member (an intake worker,
                                        a projection runner) before handing its partitions to the others (10000)
``CASELEDGER_KEK`` / ``_KEK_FILE``      the key-encryption key (``ledger/privacy/kek.py``)
``CASELEDGER_SIGNING_KEY_FILE`` /       the checkpoint signing key (``ledger/transparency/checkpoint_key.py``)
``CASELEDGER_SIGNING_KEY``
``CASELEDGER_CHECKPOINT_INTERVAL``      seconds between two signed checkpoints at most (default 10)
``CASELEDGER_WITNESSES``                the witnesses each checkpoint is submitted to, ``NAME VKEY URL``
                                        each, separated by ``;`` or newlines (``ledger/transparency/witnesses.py``)
``CASELEDGER_WITNESS_POLICY``           ``K of NAME,NAME…`` (or ``K``: of all): what ``audit`` asks of a checkpoint
``CASELEDGER_OIDC_*``                   the identity provider the service accepts (``ledger/access/principals.py``)
``CASELEDGER_VIEWS``                    the projections' views database (default: the ledger's)
``CASELEDGER_PROJECTIONS``              the projections ``caseledger run`` and ``projections run`` keep up to
                                        date: ``all`` (default: the built-ins and every installed plugin) or
                                        names separated by commas (``projections/registry.py``)
``CASELEDGER_TOKEN`` / ``_TOKEN_FILE``  the bearer token of ``--api`` (``ledger/service/client.py``)
======================================  ==========================================================

The CLI's own options read a few more through typer (``--as`` CASELEDGER_ACTOR, ``--api``
CASELEDGER_API, ``--consumer``/``--producer`` CASELEDGER_KAFKA_CONSUMER/_PRODUCER …): each
command's ``--help`` names them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from caseledger.ledger.errors import ConfigurationError

DEFAULT_DATABASE = "caseledger.sqlite"


@dataclass(frozen=True, kw_only=True)
class StoreSettings:
    """Where events are stored: a SQLite file, or a PostgreSQL database."""

    database: str = DEFAULT_DATABASE

    @property
    def is_postgres(self) -> bool:
        return self.database.startswith(("postgresql://", "postgres://"))

    def eventsourcing_env(self) -> dict[str, str]:
        """The environment eventsourcing's infrastructure factory reads.

        The one place where the backend is chosen: ``PERSISTENCE_MODULE`` names the storage provider
        eventsourcing builds (``SQLiteStorage`` or ``PostgresStorage``, in ``ledger/store/``), which builds
        every store of the ledger on that backend.
        """
        if self.is_postgres:
            return {**_postgres_env(self.database), "STORE_DESCRIPTION": self.describe()}
        if "://" in self.database:
            raise ConfigurationError(
                f"database {self.database!r}: use a SQLite file path or a postgresql:// URL"
            )
        path = Path(self.database).expanduser()
        if path.parent and not path.parent.exists():
            raise ConfigurationError(
                f"database {self.database!r}: directory {path.parent} does not exist; create it first"
            )
        return {
            "PERSISTENCE_MODULE": "caseledger.ledger.store.sqlite_storage:SQLiteStorage",
            "SQLITE_DBNAME": str(path),
            "SQLITE_LOCK_TIMEOUT": "30",
            "STORE_DESCRIPTION": self.describe(),
        }

    def describe(self) -> str:
        """The database without its password, for logs and status lines."""
        return _describe(self.database)


@lru_cache(maxsize=64)
def _describe(database: str) -> str:
    # Cached: every store access names its database for error messages (~8 µs a URL parse).
    if not database.startswith(("postgresql://", "postgres://")):
        return f"SQLite {database}"
    parts = urlsplit(database)
    host = parts.hostname or "localhost"
    return f"PostgreSQL {parts.username or ''}@{host}:{parts.port or 5432}{parts.path}"


def _postgres_env(url: str) -> dict[str, str]:
    try:
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "PostgreSQL needs eventsourcing's postgres extra: pip install 'eventsourcing[postgres]'"
        ) from None
    parts = urlsplit(url)
    dbname = parts.path.lstrip("/")
    if not dbname:
        raise ConfigurationError(f"PostgreSQL URL {_redact(url)} names no database (…/dbname)")
    env = {
        "PERSISTENCE_MODULE": "caseledger.ledger.store.postgres_storage:PostgresStorage",
        "POSTGRES_DBNAME": unquote(dbname),
        "POSTGRES_HOST": unquote(parts.hostname or "localhost"),
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_CONNECT_TIMEOUT": "10",
        "POSTGRES_LOCK_TIMEOUT": "10",
        "POSTGRES_POOL_SIZE": "5",
        # Not POSTGRES_ENABLE_DB_FUNCTIONS: in eventsourcing 9.5 its insert path skips the tracking
        # record of a process recorder, which would silently lose intake positions.
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
    }
    query = parse_qs(parts.query)
    if "schema" in query:
        env["POSTGRES_SCHEMA"] = query["schema"][0]
    if parts.hostname and parts.hostname.startswith("/"):
        env["POSTGRES_HOST"] = parts.hostname
    if "host" in query:  # postgresql:///db?host=/tmp/socketdir
        env["POSTGRES_HOST"] = query["host"][0]
    return env


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


DEFAULT_ORIGIN = "caseledger"
_ORIGIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.\-/]{0,200}[A-Za-z0-9])?$")

KEK_ENV = "CASELEDGER_KEK"
KEK_FILE_ENV = "CASELEDGER_KEK_FILE"
SIGNING_KEY_FILE_ENV = "CASELEDGER_SIGNING_KEY_FILE"
SIGNING_KEY_ENV = "CASELEDGER_SIGNING_KEY"
CHECKPOINT_INTERVAL_ENV = "CASELEDGER_CHECKPOINT_INTERVAL"
RECEIPT_DELAY_ENV = "CASELEDGER_RECEIPT_DELAY"
WITNESSES_ENV = "CASELEDGER_WITNESSES"
WITNESS_POLICY_ENV = "CASELEDGER_WITNESS_POLICY"

#: The variable of each field of :class:`KafkaSection`.
KAFKA_VARIABLES = {
    "bootstrap_servers": "CASELEDGER_KAFKA_BOOTSTRAP",
    "intake_topic": "CASELEDGER_INTAKE_TOPIC",
    "events_topic": "CASELEDGER_EVENTS_TOPIC",
    "checkpoints_topic": "CASELEDGER_CHECKPOINTS_TOPIC",
    "outcomes_topic": "CASELEDGER_OUTCOMES_TOPIC",
    "security_protocol": "CASELEDGER_KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "CASELEDGER_KAFKA_SASL_MECHANISM",
    "sasl_username": "CASELEDGER_KAFKA_SASL_USERNAME",
    "sasl_password": "CASELEDGER_KAFKA_SASL_PASSWORD",
    "ssl_cafile": "CASELEDGER_KAFKA_SSL_CAFILE",
    "ssl_certfile": "CASELEDGER_KAFKA_SSL_CERTFILE",
    "ssl_keyfile": "CASELEDGER_KAFKA_SSL_KEYFILE",
    "intake_partitions": "CASELEDGER_INTAKE_PARTITIONS",
    "events_partitions": "CASELEDGER_EVENTS_PARTITIONS",
    "replication_factor": "CASELEDGER_KAFKA_REPLICATION",
    "intake_retention_hours": "CASELEDGER_INTAKE_RETENTION_HOURS",
    "intake_key_salt": "CASELEDGER_INTAKE_KEY_SALT",
    "session_timeout_ms": "CASELEDGER_KAFKA_SESSION_TIMEOUT_MS",
}

#: The variable of each field of :class:`OidcSection`.
OIDC_VARIABLES = {
    "jwks_url": "CASELEDGER_OIDC_JWKS_URL",
    "issuer": "CASELEDGER_OIDC_ISSUER",
    "audience": "CASELEDGER_OIDC_AUDIENCE",
    "roles_claim": "CASELEDGER_OIDC_ROLES_CLAIM",
    "name_claim": "CASELEDGER_OIDC_NAME_CLAIM",
    "label": "CASELEDGER_OIDC_LABEL",
    "team_claim": "CASELEDGER_OIDC_TEAM_CLAIM",
}


@dataclass(frozen=True, kw_only=True)
class KafkaSection:
    """Kafka as the environment gives it (None: not set); ``KafkaSettings.resolve`` checks it and adds defaults."""

    bootstrap_servers: str | None = None
    intake_topic: str | None = None
    events_topic: str | None = None
    checkpoints_topic: str | None = None
    outcomes_topic: str | None = None
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    intake_partitions: str | None = None
    events_partitions: str | None = None
    replication_factor: str | None = None
    intake_retention_hours: str | None = None
    intake_key_salt: str | None = field(default=None, repr=False)
    session_timeout_ms: str | None = None


# -- Kafka: how to reach the brokers, which topics the ledger uses ---------------------------------------------

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_WHOLE_NUMBERS = ("intake_partitions", "events_partitions", "replication_factor", "intake_retention_hours",
                  "session_timeout_ms")
MIN_INTAKE_KEY_SALT = 16  # characters: fewer could be guessed, and with it every intake key's identity
MAX_RECORD_BYTES = 4_194_304  # the topics' max.message.bytes: a record of the ledger never exceeds it


@dataclass(frozen=True, kw_only=True)
class KafkaSettings:
    """How to reach Kafka and which topics the ledger uses."""

    bootstrap_servers: str
    intake_topic: str = "caseledger.intake"
    events_topic: str = "caseledger.events"
    checkpoints_topic: str = ""  # default: the events topic's name with .checkpoints for .events
    outcomes_topic: str = ""  # the intake records' verdicts; default: the intake topic's name with .outcomes for .intake
    intake_partitions: int = 6
    events_partitions: int = 6
    replication_factor: int = 1
    intake_retention_hours: int = 168  # the intake topic's retention.ms (new topics), in hours
    # A consumer group's member silent this long (killed, hung) loses its partitions to the others.
    session_timeout_ms: int = 10_000
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    client_id: str = "caseledger"
    # What adapters key intake records with (a keyed hash of the identity, ledger/intake/adapter_sdk.py); the same
    # for every adapter of a deployment, so a customer's records share a partition. Not personal data.
    intake_key_salt: str | None = field(default=None, repr=False)

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
        if not 1000 <= self.session_timeout_ms <= 300_000:
            raise ConfigurationError(
                f"CASELEDGER_KAFKA_SESSION_TIMEOUT_MS={self.session_timeout_ms}: give 1000 to 300000 ms (and within "
                "the broker's group.min.session.timeout.ms and group.max.session.timeout.ms)")
        if self.intake_key_salt is not None and len(self.intake_key_salt) < MIN_INTAKE_KEY_SALT:
            raise ConfigurationError(
                f"CASELEDGER_INTAKE_KEY_SALT has {len(self.intake_key_salt)} characters: give at least "
                f"{MIN_INTAKE_KEY_SALT} random ones (e.g. `openssl rand -base64 24`), the same to every adapter"
            )
        if self.intake_topic == self.events_topic:
            raise ConfigurationError("the intake and events topics must differ")
        if not self.checkpoints_topic:
            base = self.events_topic.removesuffix(".events")
            object.__setattr__(self, "checkpoints_topic", f"{base}.checkpoints")
        if not self.outcomes_topic:
            object.__setattr__(self, "outcomes_topic", f"{self.intake_topic.removesuffix('.intake')}.outcomes")
        if self.outcomes_topic in (self.intake_topic, self.events_topic, self.checkpoints_topic):
            raise ConfigurationError("the outcomes topic must differ from the intake, events and checkpoints topics")

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


@dataclass(frozen=True, kw_only=True)
class PrivacySettings:
    """Where the key-encryption key comes from: the key itself (base64) or a file holding it; neither: the default."""

    kek: str | None = field(default=None, repr=False)
    kek_file: str | None = None


@dataclass(frozen=True, kw_only=True)
class TransparencySettings:
    """The checkpoint signing key (a file, or the key itself), the most seconds between two checkpoints, and
    the most seconds a contact's receipt promises before every checkpoint includes it."""

    signing_key_file: str | None = None
    signing_key: str | None = field(default=None, repr=False)
    checkpoint_interval: str | None = None  # as given; ``checkpoint_interval()`` checks it (default 10)
    receipt_delay: str | None = None  # as given; ``receipt_delay()`` checks it (default a day)
    witnesses: str | None = None  # as given; ``ledger/transparency/witnesses.py`` reads it
    witness_policy: str | None = None  # as given, ``K of NAME,NAME…``; None: audit asks for no cosignature


@dataclass(frozen=True, kw_only=True)
class OidcSection:
    """The identity provider as the environment gives it; ``OidcSettings.resolve`` checks it."""

    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | None = None
    roles_claim: str | None = None
    name_claim: str | None = None
    label: str | None = None
    team_claim: str | None = None


@dataclass(frozen=True, kw_only=True)
class ServiceSection:
    """What ``caseledger serve`` reads besides its options: the identity provider and the views database."""

    oidc: OidcSection = OidcSection()
    views: str | None = None


@dataclass(frozen=True, kw_only=True)
class ClientSection:
    """The bearer token ``--api`` sends: the token itself, or a file holding it."""

    token: str | None = field(default=None, repr=False)
    token_file: str | None = None



@dataclass(frozen=True, kw_only=True)
class LedgerSettings:
    """Everything the ledger application needs to start."""

    store: StoreSettings
    policy_path: Path | None = None
    policy_name: str | None = None  # a shipped policy by name (acpr-2022-r-01) when no file is given
    origin: str = DEFAULT_ORIGIN  # names this ledger to whoever reads its events (CloudEvents ce_source)
    privacy: PrivacySettings = PrivacySettings()  # the key-encryption key (ledger/privacy/kek.py)
    transparency: TransparencySettings = TransparencySettings()  # the checkpoint signing key and interval

    def __post_init__(self) -> None:
        if not _ORIGIN.match(self.origin):
            raise ConfigurationError(
                f"origin {self.origin!r} (CASELEDGER_ORIGIN) must be a host-like name of letters, digits, dots, "
                "dashes and slashes, e.g. ledger.bank.example or bank.example/complaints"
            )

    @classmethod
    def resolve(
        cls, *, database: str | None = None, policy: str | Path | None = None, origin: str | None = None,
        settings: Settings | None = None,
    ) -> LedgerSettings:
        """Options win over ``settings`` (the environment, read by a root), which win over the defaults."""
        given = settings or Settings()
        origin = origin or given.origin
        database = database or given.store.database
        policy = policy or given.policy
        policy_path = Path(policy) if policy else None
        policy_name = None
        if policy_path is not None and not policy_path.exists() and _is_preset(str(policy)):
            policy_path, policy_name = None, str(policy).strip().lower()
        if policy_path is not None and not policy_path.is_file():
            raise ConfigurationError(
                f"response policy file {policy_path} does not exist; give the path of an existing TOML policy "
                "with --policy or CASELEDGER_POLICY (its format is in the README, section Configuration), the "
                f"name of a shipped one ({', '.join(_presets())}), or unset both to use the built-in policy"
            )
        return cls(store=StoreSettings(database=database), policy_path=policy_path, policy_name=policy_name,
                   origin=origin, privacy=given.privacy, transparency=given.transparency)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The one settings tree: every setting of the ledger, as the environment gives it (see the module docstring)."""

    store: StoreSettings = StoreSettings()
    policy: str | None = None  # a policy file or a shipped policy's name; None: the built-in policy
    origin: str = DEFAULT_ORIGIN
    kafka: KafkaSection = KafkaSection()
    privacy: PrivacySettings = PrivacySettings()
    transparency: TransparencySettings = TransparencySettings()
    service: ServiceSection = ServiceSection()
    client: ClientSection = ClientSection()
    projections: str | None = None  # as given: ``all`` or names; None: all (``projections/registry.py`` reads it)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """The settings an environment gives (a variable set to the empty string counts as unset).

        Only composition roots call this, with ``os.environ``; tests pass a mapping of their own.
        """

        def get(name: str) -> str | None:
            return environ.get(name) or None

        return cls(
            store=StoreSettings(database=get("CASELEDGER_DATABASE") or DEFAULT_DATABASE),
            policy=get("CASELEDGER_POLICY"),
            origin=get("CASELEDGER_ORIGIN") or DEFAULT_ORIGIN,
            kafka=KafkaSection(**{name: get(variable) for name, variable in KAFKA_VARIABLES.items()}),
            privacy=PrivacySettings(kek=get(KEK_ENV), kek_file=get(KEK_FILE_ENV)),
            transparency=TransparencySettings(signing_key_file=get(SIGNING_KEY_FILE_ENV),
                                              signing_key=get(SIGNING_KEY_ENV),
                                              checkpoint_interval=get(CHECKPOINT_INTERVAL_ENV),
                                              receipt_delay=get(RECEIPT_DELAY_ENV),
                                              witnesses=get(WITNESSES_ENV),
                                              witness_policy=get(WITNESS_POLICY_ENV)),
            service=ServiceSection(oidc=OidcSection(**{name: get(variable) for name, variable in OIDC_VARIABLES.items()}),
                                   views=get("CASELEDGER_VIEWS")),
            client=ClientSection(token=get("CASELEDGER_TOKEN"), token_file=get("CASELEDGER_TOKEN_FILE")),
            projections=get("CASELEDGER_PROJECTIONS"),
        )


def _presets() -> list[str]:
    from caseledger.ledger.domain.policy import ResponsePolicy

    return ResponsePolicy.presets()


def _is_preset(name: str) -> bool:
    return name.strip().lower() in _presets()
