"""A program the tests need from a Debian package, installed with apt-get when missing (the tests run as root).

Fails, never skips: CI must not pass without the servers and the browser it is meant to test against.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def ensure_installed(program: str, package: str) -> str:
    """``program`` (an absolute path), installed from Debian's ``package`` with apt-get when it is missing."""
    if not os.path.exists(program):
        if shutil.which("apt-get") is None:
            pytest.fail(f"{program} is missing and there is no apt-get to install Debian's {package}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        lock = ["-o", "DPkg::Lock::Timeout=600"]  # another session may be installing packages
        for command in (["apt-get", *lock, "update"], ["apt-get", *lock, "install", "-y", package]):
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
            if done.returncode != 0 and command[-1] == package:
                pytest.fail(f"cannot install {package}: {' '.join(command)} exited {done.returncode}:\n"
                            f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    if not os.path.exists(program):
        pytest.fail(f"{program} is still missing after apt-get install {package}")
    return program
