"""Benchmarks (``caseledger bench …``): intake and lag, projection rebuilds, audit verify. Not imported by the product."""

from __future__ import annotations

import os
from collections.abc import Mapping

from caseledger.ledger.settings import Settings


def environment(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of this process's environment (or of the run's, ``environ``, which a benchmark gives the
    services it starts): a benchmark is a composition root, as the CLI is."""
    return Settings.from_environ(os.environ if environ is None else environ)
