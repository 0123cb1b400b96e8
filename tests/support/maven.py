"""Jars from Maven Central for the tests, resolved with the machine's ``mvn`` into a cache.

Shared by ``tests/support/kafka_broker.py`` (the Kafka broker) and ``tests/support/avro_java.py`` (Apache
Avro for Java).  Each artifact set gets its own directory under the cache root
(``$CASELEDGER_KAFKA_CACHE`` or ``~/.cache/caseledger``)::

    <root>/<name>/pom.xml         the throw-away POM declaring the jars
    <root>/<name>/libs/           the runtime jars (only once complete)
    <root>/<name>/libs.complete   marker listing every jar: the commit point
    <root>/<name>/mvn.log         Maven's output of the last resolution
    <root>/<name>/.lock           serializes concurrent resolutions

Maven copies into ``libs.partial/``, which is renamed to ``libs/`` when Maven succeeded; the
marker is written last, so a copy cut short is never trusted.  Nothing here skips: a missing
``mvn`` or ``java`` is an error.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

#: Overrides the root of the jar cache.
CACHE_ENV = "CASELEDGER_KAFKA_CACHE"

#: Pinned so resolution does not depend on whatever plugin version the
#: local Maven would otherwise pick (Debian's 3.8.7 defaults to 2.8).
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

MARKER = "libs.complete"


def default_cache_root() -> Path:
    """Root of the jar cache: ``$CASELEDGER_KAFKA_CACHE`` or ``~/.cache/caseledger``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "caseledger"


def mvn_command(output_dir: Path) -> list[str]:
    """The Maven invocation that copies the POM's runtime jars to *output_dir*."""
    return [
        "mvn",
        "-q",
        "-B",
        "-f",
        "pom.xml",
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={output_dir}",
    ]


def cache_is_complete(version_dir: Path) -> bool:
    """True when *version_dir* holds a fully copied ``libs/``.

    The marker lists every jar and is written only after Maven succeeded, so a
    copy cut short (Ctrl-C, network failure, full disk) is never trusted.
    """
    marker = version_dir / MARKER
    libs = version_dir / "libs"
    if not marker.is_file() or not libs.is_dir():
        return False
    names = [line for line in marker.read_text().splitlines() if line.strip()]
    return bool(names) and all((libs / name).is_file() for name in names)


def resolve_jars(
    version_dir: Path,
    pom_xml: str,
    *,
    required_jar: str,
    what: str,
    missing_mvn_hint: str = "",
    timeout: float = 900.0,
) -> Path:
    """Return ``version_dir/libs`` holding the runtime jars *pom_xml* declares, resolving them if needed.

    Resolution runs Maven once per cache; concurrent callers (parallel test
    processes, a CI warm-up) serialize on a lock file so only one downloads.
    *required_jar* must be among the copied jars (a POM resolving to nothing is
    a failure); *what* names the artifact in error messages.
    """
    libs = version_dir / "libs"
    if cache_is_complete(version_dir):
        return libs

    version_dir.mkdir(parents=True, exist_ok=True)
    with open(version_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Someone else may have finished while we waited for the lock.
        if cache_is_complete(version_dir):
            return libs
        if shutil.which("mvn") is None:
            raise RuntimeError(f"cannot resolve {what}: `mvn` is not on PATH{missing_mvn_hint}")
        (version_dir / MARKER).unlink(missing_ok=True)
        shutil.rmtree(libs, ignore_errors=True)
        partial = version_dir / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        (version_dir / "pom.xml").write_text(pom_xml)
        log_path = version_dir / "mvn.log"
        with open(log_path, "wb") as log:
            try:
                proc = subprocess.run(
                    mvn_command(partial),
                    cwd=version_dir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(
                    f"mvn did not resolve {what} within {timeout:.0f}s; log:\n{tail(log_path)}"
                ) from exc
        jars = sorted(p.name for p in partial.glob("*.jar")) if partial.is_dir() else []
        if proc.returncode != 0 or required_jar not in jars:
            raise RuntimeError(
                f"mvn failed to resolve {what} (exit {proc.returncode}); log {log_path}:\n{tail(log_path)}"
            )
        # Rename first, marker last: the marker is the commit point.
        partial.rename(libs)
        (version_dir / MARKER).write_text("\n".join(jars) + "\n")
    return libs


def tail(path: Path, lines: int = 60) -> str:
    """Last *lines* lines of a log file, for error messages.

    Java stack frames ("\tat ...") are dropped: they would crowd the
    messages and "Caused by" lines, which say what went wrong, out of the tail.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    kept = [line for line in text.splitlines() if not line.startswith("\tat ")]
    return "\n".join(kept[-lines:])


def java_tool(tool: str, purpose: str) -> str:
    """``$JAVA_HOME/bin/<tool>`` if set, else *tool* on PATH; RuntimeError naming *purpose* if neither."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / tool).is_file():
        return str(Path(home) / "bin" / tool)
    found = shutil.which(tool)
    if found is None:
        raise RuntimeError(f"cannot {purpose}: `{tool}` (17+) is not on PATH")
    return found
