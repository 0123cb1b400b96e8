"""Settings as a composition root reads them: the tests' ledgers see this process's environment, as the CLI does.

The library reads no environment variable (``Settings.from_environ`` is called by the roots only); the
suite sets some for every ledger (``tests/conftest.py``: one key-encryption key) and a test may set
more, so a test that builds a ledger itself builds its settings here, at the moment it builds it.
"""

from __future__ import annotations

import os
from pathlib import Path

from caseledger.ledger.settings import LedgerSettings, Settings


def environment() -> Settings:
    """The settings this process's environment gives, now (a test may have just changed it)."""
    return Settings.from_environ(os.environ)


def ledger_settings(*, database: str | None = None, policy: str | Path | None = None,
                    origin: str | None = None) -> LedgerSettings:
    """``LedgerSettings.resolve`` over this process's environment, as the CLI resolves them."""
    return LedgerSettings.resolve(database=database, policy=policy, origin=origin, settings=environment())
