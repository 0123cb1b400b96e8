"""Which view store a URL names: PostgreSQL for a ``postgresql://`` URL, else a SQLite file.

The one place that chooses a backend of :class:`~caseledger.projections.views.ViewStore`; each backend
module imports the port, and the port imports neither.
"""

from __future__ import annotations

from caseledger.ledger.errors import ConfigurationError
from caseledger.projections.views import ViewStore

__all__ = ["open_views"]


def open_views(url: str) -> ViewStore:
    """The view store at ``url``: a ``postgresql://`` URL, or a SQLite file path."""
    if url.startswith(("postgresql://", "postgres://")):
        from caseledger.projections.postgres_views import PostgresViewStore

        return PostgresViewStore(url)
    if "://" in url:
        raise ConfigurationError(f"views database {url!r}: use a SQLite file path or a postgresql:// URL")
    from caseledger.projections.sqlite_views import SQLiteViewStore

    return SQLiteViewStore(url)
