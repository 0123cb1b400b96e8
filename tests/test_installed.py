"""The installed package works outside the checkout: console script, schemas and policy as package data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ledger.catalog import EVENT_TYPES

ROOT = Path(__file__).resolve().parent.parent


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
        "import ledger, schemas; from ledger.codec import AvroEventCodec; from ledger.policy import ResponsePolicy;"
        "from ledger.intake import IntakeCodec; AvroEventCodec(); IntakeCodec(); ResponsePolicy.default();"
        "print(ledger.__file__)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    location = Path(out.stdout.strip())
    # In CI the package is installed from the wheel: it must not be the checkout's source.
    if os.environ.get("CI") == "true":
        assert "site-packages" in location.parts and (ROOT / "ledger") not in location.parents, (
            f"the installed package is the checkout's source, not the wheel: {location}"
        )
