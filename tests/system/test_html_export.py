"""A customer's history exported as HTML, opened in Debian's headless Chromium (``/usr/bin/chromium``).

When the machine has no Chromium (outside CI), the page's structure is still checked with Python's
HTML parser (self-contained, well nested, one timeline entry per event).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

from tests.support.stories import JANE, run, tamper


def _chromium() -> str | None:
    """Debian's headless Chromium; in CI (as root) it is installed when missing, like the Kafka jars."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found or os.environ.get("CI") != "true" or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
                   capture_output=True, timeout=1200, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    found = shutil.which("chromium")
    assert found, "CI could not install Debian's chromium to render the HTML export"
    return found


CHROMIUM = _chromium()
# Without these, Chromium keeps trying to reach Google's services, which this network refuses.
QUIET = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic"]


class _Structure(HTMLParser):
    """Checks that a page is well nested and self-contained; counts timeline entries."""

    VOID = frozenset({"meta", "link", "br", "hr", "img", "input", "wbr", "col", "source"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.entries = 0
        self.external: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            self.scripts += 1
        for name in ("src", "href"):
            if values.get(name) and not str(values[name]).startswith("#"):
                self.external.append(str(values[name]))
        if tag == "li" and self.stack[-1:] == ["ol"]:  # the timeline is the page's only ordered list
            self.entries += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1:]}>"
        self.stack.pop()


def check_page(page: Path, *, events: int, verified: bool) -> str:
    """The page as a browser shows it (Chromium when present); returns its text."""
    text = page.read_text()
    structure = _Structure()
    structure.feed(text)
    structure.close()
    assert structure.stack == [] and structure.scripts == 0 and structure.external == []
    assert structure.entries == events
    if CHROMIUM is None:
        return text
    dom = subprocess.run(
        [CHROMIUM, *QUIET, f"--user-data-dir={page.parent / 'chromium-profile'}", "--dump-dom",
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert ("Verified" in dom) is verified and ("Not verified" in dom) is (not verified)
    assert dom.count('<li class="c-') == events
    shot = page.with_suffix(".png")
    subprocess.run(
        [CHROMIUM, *QUIET, f"--user-data-dir={page.parent / 'chromium-profile'}", "--hide-scrollbars",
         "--window-size=1000,1400",
         f"--screenshot={shot}", page.resolve().as_uri()],
        capture_output=True, timeout=120, check=True,
    )
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    return dom


def test_html_export_renders_as_a_readable_self_contained_timeline(story: str, tmp_path: Path) -> None:
    page = tmp_path / "jane.html"
    run(story, "history", JANE, "--export", "html", str(page), "--tz", "Europe/Paris")
    document = tmp_path / "jane.json"
    run(story, "history", JANE, "--export", "json", str(document))
    events = len(json.loads(document.read_text())["events"])
    dom = check_page(page, events=events, verified=True)
    assert "Card &lt;blocked&gt; &amp; fees" in dom  # customer text is escaped, never markup
    assert "Promise made" in dom and "Handed off" in dom and "Deadline missed" in dom
    assert "CET" in dom or "CEST" in dom

    tamper(story, "HandedOff")
    out = run(story, "history", JANE, "--export", "html", str(page)).stdout
    assert "NOT verified" in out
    dom = check_page(page, events=events, verified=False)
    assert "[chain-broken]" in dom
