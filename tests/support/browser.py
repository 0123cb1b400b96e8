"""Debian's headless Chromium for the pages the ledger serves, driven by Playwright (never `playwright install`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.debian_packages import ensure_installed

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def ensure_chromium() -> str:
    """/usr/bin/chromium, installed with apt-get when missing (the tests run as root); fails, never skips."""
    return ensure_installed(CHROMIUM, "chromium")


@pytest.fixture(scope="module")  # sync Playwright runs an event loop on this thread: not past its tests
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (Playwright's sync API on Debian's binary)."""
    path = ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
