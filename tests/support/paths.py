"""Where the checkout, its schemas and the tests' data are, wherever a test module sits."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
DATA = ROOT / "tests" / "data"
#: The ledger ``caseledger demo`` wrote with commit def67ae (tests/data/README.md).
WRITTEN_BEFORE_THE_NAMESPACE = DATA / "ledger-written-by-0.1.0-before-the-namespace.sqlite"
