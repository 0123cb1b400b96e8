"""Files only their owner may read: what the ledger writes (database, views, exports) and the keys it reads.

Every file the ledger creates is created with mode 0600, whatever the process's umask: a database
or an export holds sealed personal data and who the customers are, a key opens it. A key file
(key-encryption key, signing key) that group or others may read is refused, with how to fix it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from caseledger.ledger.errors import ConfigurationError

__all__ = ["PRIVATE", "create_private", "open_private", "refuse_shared_key"]

PRIVATE = 0o600


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (a database file, before its engine opens it)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    except FileExistsError:
        return
    os.close(fd)


def open_private(path: Path) -> int:
    """A descriptor of ``path`` opened for writing from its start, the file made 0600 (created, or taken over)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
    os.fchmod(fd, PRIVATE)  # an existing file keeps its mode through O_CREAT
    return fd


def refuse_shared_key(path: Path, what: str) -> None:
    """A ConfigurationError if group or others may read (or write) the key file at ``path``."""
    if os.name != "posix":
        return
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return  # reading it says what is wrong
    if mode & 0o077:
        raise ConfigurationError(
            f"{what} {path} may be read by group or others (mode {mode:04o}); "
            f"make it private with `chmod 600 {path}`, then start again"
        )
