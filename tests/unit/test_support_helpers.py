"""The test helpers keep one way of doing each thing: a Debian package a fixture needs is installed by
``tests/support/debian_packages.py`` alone (the browser's chromium and the mail tests' dovecot had a copy each)."""

from __future__ import annotations

from pathlib import Path

SUPPORT = Path(__file__).resolve().parents[1] / "support"


def test_one_helper_installs_debian_packages() -> None:
    runs_apt = sorted(p.name for p in SUPPORT.rglob("*.py") if '"apt-get"' in p.read_text(encoding="utf-8"))
    assert runs_apt == ["debian_packages.py"]
