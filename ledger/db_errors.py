"""Where database errors become the ledger's own: a conflict to retry, or a failed backend.

eventsourcing's datastores already turn each driver's errors into its own classes
(``eventsourcing.persistence.IntegrityError`` …); :func:`translate_errors` is the one place
where those become :class:`~caseledger.ledger.errors.ConflictError` or
:class:`~caseledger.ledger.errors.BackendError`, whatever the backend.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from eventsourcing.persistence import IntegrityError, OperationalError, PersistenceError, ProgrammingError

from caseledger.ledger.errors import BackendError, ConflictError


@contextmanager
def translate_errors(where: str) -> Iterator[None]:
    """The one place where database errors become the ledger's own errors."""
    try:
        yield
    except IntegrityError as error:
        raise ConflictError(
            "another command changed the same case first; nothing was recorded — reload and retry"
        ) from error
    except (OperationalError, ProgrammingError, PersistenceError) as error:
        raise BackendError(f"{where}: {error}") from error


def lost_schema_race(error: BaseException) -> bool:
    """Whether ``error`` comes from another process creating the same tables at the same moment."""
    if isinstance(error, ConflictError):  # both backends: a duplicate migration record
        return True
    cause: BaseException | None = error
    while cause is not None:
        if is_schema_race(cause):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


CREATE_ATTEMPTS = 5  # a lost creation race is retried; the winner's tables are there at the second


def created_despite_races(create: Callable[[], None]) -> None:
    """Run ``create`` (``CREATE … IF NOT EXISTS`` statements), again if another process creating the same tables
    at the same moment made it fail (on PostgreSQL the loser's statement fails, the tables exist all the same)."""
    for attempt in range(CREATE_ATTEMPTS):
        try:
            create()
            return
        except Exception as error:
            if attempt == CREATE_ATTEMPTS - 1 or not lost_schema_race(error):
                raise
            time.sleep(random.uniform(0.01, 0.05))


# What a process that lost the race to create the tables sees on PostgreSQL, by SQLSTATE (the driver's own
# classes are not imported here: a SQLite ledger never loads psycopg): a duplicate migration record (unique
# violation), type, table or function, or "tuple concurrently updated" (internal error) from a catalog row
# another one changed.
_SCHEMA_RACES = {"23505", "42710", "42P07", "42723"}
_INTERNAL_ERROR = "XX000"


def is_schema_race(error: BaseException) -> bool:
    """Whether this driver error is another process creating the same tables at the same moment."""
    if not type(error).__module__.startswith("psycopg"):
        return False
    state = getattr(error, "sqlstate", None)
    if state == _INTERNAL_ERROR:
        return "concurrently" in str(error)
    return state in _SCHEMA_RACES
