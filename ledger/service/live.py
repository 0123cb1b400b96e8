"""The live case page (``/cases/REF``): server-rendered, updated by server-sent events."""

from __future__ import annotations

from typing import Any


def add_routes(app: Any, state: Any) -> None:
    """Register the live page's routes."""
