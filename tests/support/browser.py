"""Debian's headless Chromium for the pages the ledger serves, driven by Playwright (never `playwright install`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def ensure_chromium() -> str:
    """/usr/bin/chromium, installed with apt-get when missing (the tests run as root); fails, never skips."""
    if not os.path.exists(CHROMIUM):
        if shutil.which("apt-get") is None:
            pytest.fail(f"{CHROMIUM} is missing and there is no apt-get to install Debian's chromium")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        lock = ["-o", "DPkg::Lock::Timeout=600"]  # another session may be installing packages
        for command in (["apt-get", *lock, "update"], ["apt-get", *lock, "install", "-y", "chromium"]):
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
            if done.returncode != 0 and command[-1] == "chromium":
                pytest.fail(f"cannot install chromium: {' '.join(command)} exited {done.returncode}:\n"
                            f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is still missing after apt-get install chromium")
    return CHROMIUM


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
