"""Go programs the tests run against the ledger: each a module of its own under ``tests/support/go/<name>/``
(``go.mod`` and ``go.sum`` committed, versions pinned), built once per session into the pytest basetemp.

``go build`` resolves the pinned modules from the Go module proxy into Go's module cache on the first
run, and Go's build cache makes every later build of the session (or of the next one) a second or two.
The Go on the machine is used as it is (``GOTOOLCHAIN=local``: no module may need a newer one). No
``go`` on the PATH, or a build that fails, is an error naming what to do: CI fails, it never skips.

Pytest fixture (session scope): ``go_interop``, the program of tests/system/test_go_interop.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SOURCES = Path(__file__).resolve().parent / "go"


class GoUnavailable(RuntimeError):
    """Go is missing, or a program did not build."""


@dataclass(frozen=True)
class GoResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass(frozen=True)
class GoProgram:
    """A built Go program; :meth:`run` runs one of its subcommands."""

    binary: Path
    built_in_s: float

    def run(self, *args: str | Path, env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 120) -> GoResult:
        done = subprocess.run([str(self.binary), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        result = GoResult(done.returncode, done.stdout, done.stderr)
        if check and done.returncode != 0:
            raise AssertionError(f"{self.binary.name} {' '.join(map(str, args))} exited {done.returncode}:\n"
                                 f"{done.stderr}{done.stdout}")
        return result


def build(name: str, into: Path, *, timeout: float = 600) -> GoProgram:
    """``go build`` of ``tests/support/go/<name>`` into ``into/<name>``."""
    go = shutil.which("go")
    if go is None:
        raise GoUnavailable("the Go interop tests need Go 1.26 on the PATH (`go version`); install it, the "
                            "modules come from the Go module proxy")
    source = SOURCES / name
    binary = into / name
    started = time.monotonic()
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod -buildvcs=false", "CGO_ENABLED": "0"}
    done = subprocess.run([go, "build", "-o", str(binary), "."], cwd=source, capture_output=True, text=True,
                          timeout=timeout, env=env)
    if done.returncode != 0:
        raise GoUnavailable(f"go build of {source} failed:\n{done.stderr}{done.stdout}")
    return GoProgram(binary, time.monotonic() - started)


@pytest.fixture(scope="session")
def go_interop(tmp_path_factory: pytest.TempPathFactory) -> GoProgram:
    """tests/support/go/interop built: Go's reference tlog libraries as subcommands (its main.go lists them)."""
    return build("interop", tmp_path_factory.mktemp("go"))
