"""How many examples a property test draws, and how many candidates a brute force tries: as written in the
full suite, fewer in the fast loop.

The fast loop (``CASELEDGER_TEST_FAST=1 python -m pytest tests/unit``, README) runs every unit test with
fewer hypothesis examples and smaller brute forces, so that it answers within a minute; the README's test
command draws and tries them all.
"""

from __future__ import annotations

import os

FAST = os.environ.get("CASELEDGER_TEST_FAST", "") not in ("", "0")


def examples(n: int) -> int:
    """``n`` examples, or a tenth of them (at least 3) in the fast loop."""
    return max(3, n // 10) if FAST else n


def tries(n: int) -> int:
    """``n`` candidates for a brute force, or a fiftieth of them (at least 1,000) in the fast loop."""
    return max(1_000, n // 50) if FAST else n
