"""What a benchmark needs before it starts anything: an empty ledger, and the keys its services cannot start without.

A benchmark's ledger is thrown away with its run, so it makes what it needs rather than asking for it: without
``CASELEDGER_KEK`` or ``CASELEDGER_KEK_FILE`` (a PostgreSQL ledger refuses to start without one) it writes a
throw-away key-encryption key into its own temporary folder (mode 0600, never printed) and gives every process
of the run that file. A key the caller did set is used, and checked now: one that cannot be read is said before
any service starts, not as "a benchmarked service died" later.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from caseledger.cli.bench import environment
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.settings import KEK_ENV, KEK_FILE_ENV, LedgerSettings

__all__ = ["THROWAWAY_KEK", "checked_ledger_env"]

#: The file a benchmark's throw-away key-encryption key is written to, inside the run's temporary folder.
THROWAWAY_KEK = "throwaway.kek"


def checked_ledger_env(environ: Mapping[str, str], folder: Path, *, database: str, bench: str) -> dict[str, str]:
    """``environ`` with what the run's ledger needs (a throw-away key-encryption key in ``folder`` when none is
    set), once the ledger at ``database`` is known to be empty and to open with it; raises ConfigurationError."""
    from caseledger.ledger.privacy.kek import KeyEncryptionKey, write_new_kek

    env = dict(environ)
    if not env.get(KEK_ENV) and not env.get(KEK_FILE_ENV):
        env[KEK_FILE_ENV] = str(write_new_kek(folder / THROWAWAY_KEK).origin)
    probe = CaseLedger(LedgerSettings.resolve(database=database, settings=environment(env)))
    try:
        if (probe.recorder.max_notification_id() or 0) > 0:
            raise ConfigurationError(f"{probe.settings.store.describe()} is not empty; benchmark on an empty database")
        try:
            KeyEncryptionKey.resolve(probe.settings.privacy, database_file=probe.storage.database_file)
        except ConfigurationError as error:
            raise ConfigurationError(f"{bench} runs an intake worker and a publisher on "
                                     f"{probe.settings.store.describe()}, which cannot start: {error}") from None
    finally:
        probe.close()
    return env
