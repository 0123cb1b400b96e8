"""Benchmarks (``caseledger bench …``): intake and lag, projection rebuilds, audit verify. Not imported by the product."""

from __future__ import annotations

import os

from caseledger.ledger.settings import Settings


def environment() -> Settings:
    """The settings of this process's environment: a benchmark is a composition root, as the CLI is."""
    return Settings.from_environ(os.environ)
