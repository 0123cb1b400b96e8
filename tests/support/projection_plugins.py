"""A projection plugin as an analyst packages it: the docs' worked example (``fcr``) in a distribution of its own.

``installed_metadata`` installs it the way pip leaves an installed distribution (a module beside a
``*.dist-info`` with ``entry_points.txt``) in a folder the test puts on ``sys.path``: what
``importlib.metadata`` finds, without pip (the fast loop). ``plugin_project`` writes it as a source
project (``pyproject.toml``); the session fixtures build the caseledger wheel once
(``caseledger_wheel``, also tests/system/test_installed.py's) and pip-install both into a venv of
their own (``plugin_venv``, tests/system/test_plugin_installed.py).
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "projections.md"
GROUP = "caseledger.projections"
MODULE = "fcr_plugin"
DISTRIBUTION = "fcr-plugin"
FCR = {"fcr": f"{MODULE}:FirstContactResolution"}


def fcr_source(version: int = 1) -> str:
    """The worked example of docs/projections.md, as written there (its ``version`` set to ``version``)."""
    code = re.search(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    assert code is not None, "docs/projections.md lost its worked example"
    source = code.group(1)
    assert "    version = 1\n" in source
    return source.replace("    version = 1\n", f"    version = {version}\n") + (
        "\n\ndef not_a_projection() -> None:\n    \"\"\"What a mistyped entry point names.\"\"\"\n"
    )


def _entry_points_txt(entry_points: dict[str, str]) -> str:
    return f"[{GROUP}]\n" + "".join(f"{name} = {target}\n" for name, target in entry_points.items())


def installed_metadata(site: Path, entry_points: dict[str, str] | None = None, *, version: str = "1.0") -> Path:
    """The plugin installed in ``site`` as pip leaves it: its module and its ``.dist-info``."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{MODULE}.py").write_text(fcr_source(), encoding="utf-8")
    info = site / f"{DISTRIBUTION.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: {version}\n",
                                   encoding="utf-8")
    (info / "entry_points.txt").write_text(_entry_points_txt(FCR if entry_points is None else entry_points),
                                           encoding="utf-8")
    return site


def plugin_project(folder: Path, *, version: str = "1.0", projection_version: int = 1) -> Path:
    """The plugin as a source project pip installs: pyproject.toml and its module."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{MODULE}.py").write_text(fcr_source(projection_version), encoding="utf-8")
    entries = "".join(f'{name} = "{target}"\n' for name, target in FCR.items())
    (folder / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=69"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{DISTRIBUTION}"\nversion = "{version}"\ndependencies = ["caseledger"]\n\n'
        f'[tool.setuptools]\npy-modules = ["{MODULE}"]\n\n'
        f'[project.entry-points."{GROUP}"]\n{entries}',
        encoding="utf-8",
    )
    return folder


# -- the plugin pip-installed into a venv of its own, beside the caseledger wheel ------------------------


@pytest.fixture(scope="session")
def caseledger_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout built as the wheel users install: once per run, shared by the pytest-xdist workers (their
    base temps share a parent; the first to take the lock builds it)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / "caseledger-wheel"
    with (root / "caseledger-wheel.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not list(folder.glob("caseledger-*.whl")):
            built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(folder),
                                    str(ROOT)], capture_output=True, text=True, timeout=300)
            assert built.returncode == 0, built.stderr
    (wheel,) = folder.glob("caseledger-*.whl")
    return wheel


@dataclass(frozen=True)
class PluginVenv:
    """A throwaway venv holding the caseledger wheel and the fcr plugin, both installed by pip."""

    bin: Path

    def caseledger(self, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The venv's console script, outside the checkout and without PYTHONPATH."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"COLUMNS": "200", "TZ": "UTC"}
        return subprocess.run([str(self.bin / "caseledger"), *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=timeout)


@pytest.fixture(scope="session")
def plugin_venv(tmp_path_factory: pytest.TempPathFactory, caseledger_wheel: Path) -> PluginVenv:
    """caseledger (the wheel) and the fcr plugin (its pyproject) pip-installed into a fresh venv.

    caseledger's own dependencies come from this interpreter's site-packages (a ``.pth``), so only
    the build backend is fetched (as for the wheel); caseledger itself and the plugin are the venv's own.
    """
    root = tmp_path_factory.mktemp("plugin-venv")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "caseledger_test_dependencies.pth").write_text("\n".join(sorted(here)) + "\n", encoding="utf-8")
    project = plugin_project(root / "fcr-plugin")
    # As an analyst installs it (pip builds the plugin with its build backend, as for the wheel above).
    # --ignore-installed: the .pth shows pip the caseledger of this interpreter (in CI the installed wheel), which it
    # would take as the requirement met, leaving the venv without its own caseledger and console script.
    for what in (str(caseledger_wheel), str(project)):
        installed = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", what],
                                   capture_output=True, text=True, timeout=300)
        assert installed.returncode == 0, installed.stderr
    return PluginVenv(venv / "bin")
