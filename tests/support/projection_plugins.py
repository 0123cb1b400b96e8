"""A projection plugin as an analyst packages it: the docs' worked example (``fcr``) in a distribution of its own.

``installed_metadata`` installs it the way pip leaves an installed distribution (a module beside a
``*.dist-info`` with ``entry_points.txt``) in a folder the test puts on ``sys.path``: what
``importlib.metadata`` finds, without pip (the fast loop). ``plugin_project`` writes it as a source
project (``pyproject.toml``) for ``pip install`` (tests/system/test_plugin_installed.py).
"""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs" / "projections.md"
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
