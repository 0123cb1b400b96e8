"""The installed package works outside the checkout: console script, schemas and policy as package data."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from caseledger.ledger.domain.catalog import EVENT_TYPES

ROOT = Path(__file__).resolve().parents[2]


def run_installed(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the console script from another directory, without the checkout on sys.path."""
    script = Path(sys.executable).with_name("caseledger")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_console_script_finds_its_schemas_and_policy(tmp_path: Path) -> None:
    listed = run_installed(["schemas", "list", "--json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = {row["event_type"] for row in json.loads(listed.stdout)}
    assert set(EVENT_TYPES) <= names
    recorded = run_installed(
        ["--database", str(tmp_path / "x.sqlite"), "contact", "record", "-c", "email", "-m", "m1",
         "--from", "email:jane@example.com", "--item", "Where is my refund?"],
        tmp_path,
    )
    assert recorded.returncode == 0, recorded.stderr
    assert "CL-" in recorded.stdout


def test_installed_modules_load_package_data_from_where_they_are_installed(tmp_path: Path) -> None:
    code = (
        "import caseledger.ledger as ledger; from caseledger.ledger.avro.codec import AvroEventCodec;"
        "from caseledger.ledger.domain.policy import ResponsePolicy; from caseledger.ledger.intake.records import IntakeCodec;"
        "AvroEventCodec(); IntakeCodec(); ResponsePolicy.default(); print(ledger.__file__)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    location = Path(out.stdout.strip())
    # In CI the package is installed from the wheel: it must not be the checkout's source.
    if os.environ.get("CI") == "true":
        assert "site-packages" in location.parts and not from_checkout(location), (
            f"the installed package is the checkout's source, not the wheel: {location}"
        )


def from_checkout(path: Path) -> bool:
    """Whether ``path`` is one of the checkout's source files (CI's venv itself lives inside the checkout)."""
    return any(path.resolve().is_relative_to(ROOT / folder) for folder in ("ledger", "projections", "cli", "schemas"))


def test_this_test_run_imports_the_installed_package_not_the_checkout() -> None:
    """The suite tests what users install: in CI caseledger comes from site-packages, and no module of
    the checkout is ever imported under its folder's generic name (``ledger``, ``cli`` …)."""
    import caseledger.cli.app
    import caseledger.ledger
    import caseledger.projections

    generic = sorted(name for name in ("ledger", "projections", "cli", "schemas") if name in sys.modules)
    assert generic == [], f"imported from the checkout under a generic top-level name: {generic}"
    if os.environ.get("CI") == "true":
        for module in (caseledger.ledger, caseledger.projections, caseledger.cli.app):
            where = Path(module.__file__ or "")
            assert "site-packages" in where.parts and not from_checkout(where), (
                f"{module.__name__} was imported from the checkout ({where}), not the installed wheel"
            )


def test_the_wheel_puts_nothing_but_caseledger_at_the_top_of_site_packages(caseledger_wheel: Path) -> None:
    wheel = caseledger_wheel  # built once for the session (tests/support/projection_plugins.py)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"caseledger"}, sorted(tops)
    assert not any(name.startswith("caseledger/__init__") for name in names)  # a namespace of its own
    for needed in ("caseledger/ledger/domain/default_policy.toml", "caseledger/schemas/CaseOpened.avsc",
                   "caseledger/schemas/intake/caseledger.intake.IntakeRecord.avsc", "caseledger/cli/app.py",
                   "caseledger/verify/__main__.py", "caseledger/verify/rfc9162.py",
                   # the agent pages' templates and words (issue 28: the workspace in the agent's language)
                   "caseledger/ledger/service/templates/case_section.html",
                   "caseledger/ledger/service/locales/workspace.pot",
                   "caseledger/ledger/service/locales/fr/LC_MESSAGES/workspace.po"):
        assert needed in names
    # the standalone verifier is in the wheel once, as caseledger.verify, not also under caseledger.ledger
    assert not any(name.startswith("caseledger/ledger/verifier/") for name in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    with zipfile.ZipFile(wheel) as archive:
        assert "caseledger = caseledger.cli.app:main" in archive.read(entry).decode()


def test_the_agent_pages_speak_french_from_the_wheel(caseledger_wheel: Path) -> None:
    """The catalogs are package data and load as the service loads them (babel's pofile, no compile step)."""
    from babel.messages.pofile import read_po

    with zipfile.ZipFile(caseledger_wheel) as archive:
        catalog = read_po(io.BytesIO(archive.read("caseledger/ledger/service/locales/fr/LC_MESSAGES/workspace.po")))
        templates = [n for n in archive.namelist() if n.startswith("caseledger/ledger/service/templates/")]
    found = catalog.get("Queue")
    assert found is not None and found.string == "File d’attente"
    assert {Path(n).name for n in templates} == {"case_section.html", "case_form.html", "case_page.html"}


# `caseledger demo` as a user runs it: the console script in a process of its own (tests/unit/test_demo.py
# plays the demo in-process).
def test_console_script_exits_zero(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("caseledger")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from caseledger.cli.app import main; main()"]
    env = {**os.environ, "COLUMNS": "100", "CASELEDGER_DATABASE": str(tmp_path / "not-used.sqlite")}
    result = subprocess.run([*command, "demo"], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "S11 — " in result.stdout
    assert "Done: " in result.stdout
