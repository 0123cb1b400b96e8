"""Typed settings: where the ledger keeps its events, and which response policy it applies.

Values come from keyword arguments (the CLI's options) or, failing those, from the
environment:

==========================  ================================================================
``CASELEDGER_DATABASE``     a SQLite file path (default ``caseledger.sqlite``) or a
                            ``postgresql://user:pass@host:port/dbname[?schema=name]`` URL
``CASELEDGER_POLICY``       a response policy TOML file (default: the built-in policy)
==========================  ================================================================
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
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


@dataclass(frozen=True, kw_only=True)
class LedgerSettings:
    """Everything the ledger application needs to start."""

    store: StoreSettings
    policy_path: Path | None = None
    policy_name: str | None = None  # a shipped policy by name (acpr-2022-r-01) when no file is given
    origin: str = DEFAULT_ORIGIN  # names this ledger to whoever reads its events (CloudEvents ce_source)

    def __post_init__(self) -> None:
        if not _ORIGIN.match(self.origin):
            raise ConfigurationError(
                f"origin {self.origin!r} (CASELEDGER_ORIGIN) must be a host-like name of letters, digits, dots, "
                "dashes and slashes, e.g. ledger.bank.example or bank.example/complaints"
            )

    @classmethod
    def resolve(
        cls, *, database: str | None = None, policy: str | Path | None = None, origin: str | None = None
    ) -> LedgerSettings:
        """Options win over the environment, the environment over the defaults."""
        origin = origin or os.environ.get("CASELEDGER_ORIGIN") or DEFAULT_ORIGIN
        database = database or os.environ.get("CASELEDGER_DATABASE") or DEFAULT_DATABASE
        policy = policy or os.environ.get("CASELEDGER_POLICY") or None
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
                   origin=origin)


def _presets() -> list[str]:
    from caseledger.ledger.domain.policy import ResponsePolicy

    return ResponsePolicy.presets()


def _is_preset(name: str) -> bool:
    return name.strip().lower() in _presets()
