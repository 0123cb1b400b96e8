"""How many examples a property test draws: as written in the full suite, a tenth in the fast loop.

The fast loop (``CASELEDGER_TEST_FAST=1 python -m pytest tests/unit``, README) runs every unit test with
fewer hypothesis examples, so that it answers within a minute; the README's test command draws them all.
"""

from __future__ import annotations

import os

FAST = os.environ.get("CASELEDGER_TEST_FAST", "") not in ("", "0")


def examples(n: int) -> int:
    """``n`` examples, or a tenth of them (at least 3) in the fast loop."""
    return max(3, n // 10) if FAST else n
