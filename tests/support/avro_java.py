"""Apache Avro for Java, the reference implementation, run by the interop tests.

``org.apache.avro:avro`` and its runtime dependencies (jackson, commons-compress, slf4j-api)
are resolved from Maven Central with the machine's ``mvn`` into the same cache as the Kafka
jars (``tests/support/maven.py``: ``$CASELEDGER_KAFKA_CACHE`` or ``~/.cache/caseledger``, in
``avro-<version>/libs``).  ``tests/support/java/AvroInterop.java`` is compiled with the machine's
``javac`` into ``avro-<version>/classes-<hash of the source>/``, so a changed source is
recompiled and an unchanged one never is (classes of other sources are left for the checkouts
that may share the cache).  Nothing skips: a missing ``mvn``, ``java`` or
``javac`` fails the tests that need Java.

Pytest fixture (session scope): ``avro_java``, an :class:`AvroJava` whose :meth:`AvroJava.run`
runs one subcommand of the program.

Command line::

    python -m tests.support.avro_java --prepare   # resolve the jars and compile (CI warm-up)
    python -m tests.support.avro_java fingerprint schemas   # run a subcommand
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.maven import default_cache_root, java_tool, resolve_jars

#: The Avro release the interop tests hold the ledger's bytes against: the newest 1.12.x
#: whose artifact resolves from Maven Central (1.12.3 does not, here).
AVRO_VERSION = "1.12.2"

#: The Java program, one file, no build tool.
SOURCE = Path(__file__).parent / "java" / "AvroInterop.java"
MAIN_CLASS = "AvroInterop"


def _pom_xml(version: str) -> str:
    """A throw-away POM whose only purpose is to declare Avro's jars."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by tests/support/avro_java.py: resolves Apache Avro for Java and its runtime dependencies. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>caseledger.tests</groupId>
  <artifactId>avro-java-libs</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.avro</groupId>
      <artifactId>avro</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""


def ensure_avro_libs(version: str = AVRO_VERSION, cache_root: Path | None = None, timeout: float = 600.0) -> Path:
    """The directory holding Avro's runtime jars, resolved with ``mvn`` on first use."""
    root = cache_root or default_cache_root()
    return resolve_jars(
        root / f"avro-{version}",
        _pom_xml(version),
        required_jar=f"avro-{version}.jar",
        what=f"org.apache.avro:avro:{version}",
        timeout=timeout,
    )


def ensure_compiled(libs: Path, source: Path = SOURCE, timeout: float = 300.0) -> Path:
    """The class directory of *source* compiled against *libs*; compiled once per source hash.

    Compiled into ``classes-<hash>.partial`` and renamed when ``javac`` succeeded, under the
    same kind of lock as the jars, so a concurrent or interrupted compile is never used.
    """
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    version_dir = libs.parent
    classes = version_dir / f"classes-{digest}"
    if (classes / f"{MAIN_CLASS}.class").is_file():
        return classes
    with open(version_dir / ".compile.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (classes / f"{MAIN_CLASS}.class").is_file():
            return classes
        javac = java_tool("javac", f"compile {source.name} for the Avro interop tests")
        partial = version_dir / f"classes-{digest}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            proc = subprocess.run(
                [javac, "--release", "17", "-encoding", "UTF-8", "-Xlint:all", "-Xlint:-options",
                 "-cp", str(libs / "*"), "-d", str(partial), str(source)],
                capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"javac did not compile {source} within {timeout:.0f}s") from exc
        if proc.returncode != 0:
            raise RuntimeError(f"javac failed on {source} (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
        # Classes of other sources stay: another checkout sharing the cache may be running them.
        partial.rename(classes)
    return classes


@dataclass(frozen=True)
class JavaResult:
    """What one run of the program gave: exit code and its output."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


class AvroJavaError(RuntimeError):
    """The Java program failed (exit code other than expected); the message holds its stderr."""

    def __init__(self, message: str, result: JavaResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class AvroJava:
    """Runs ``AvroInterop`` (tests/support/java/AvroInterop.java) on Apache Avro for Java."""

    def __init__(self, libs: Path, classes: Path, version: str = AVRO_VERSION) -> None:
        self.libs = libs
        self.classes = classes
        self.version = version
        self.java = java_tool("java", "run the Avro interop program")

    def command(self, *args: str | Path) -> list[str]:
        return [
            self.java,
            # A short-lived tool: the fastest JIT start, a small heap.
            "-XX:TieredStopAtLevel=1", "-Xmx256m",
            "-Dfile.encoding=UTF-8",
            # slf4j-api without a provider warns on every start; Avro logs nothing we need.
            "-Dslf4j.internal.verbosity=ERROR",
            "-cp", f"{self.classes}:{self.libs / '*'}",
            MAIN_CLASS,
            *(str(a) for a in args),
        ]

    def run(
        self, *args: str | Path, input: bytes | None = None, timeout: float = 120.0, check: bool | int = True
    ) -> JavaResult:
        """Run one subcommand; with *check* (True means 0, an int that exit code) anything else raises.

        The error message holds the command, the exit code and the program's stderr (a Java
        exception's message and its "Caused by" lines; stack frames are dropped).
        """
        cmd = self.command(*args)
        try:
            proc = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise AvroJavaError(f"{' '.join(cmd[-len(args) - 1:])} did not finish within {timeout:.0f}s") from exc
        result = JavaResult(proc.returncode, proc.stdout.decode("utf-8", "replace"),
                            proc.stderr.decode("utf-8", "replace"))
        expected = 0 if check is True else check
        if check is not False and result.returncode != expected:
            stderr = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("\tat "))
            raise AvroJavaError(
                f"AvroInterop {' '.join(str(a) for a in args)} exited {result.returncode} "
                f"(expected {expected}):\n{stderr[-6000:]}",
                result,
            )
        return result


def prepare(version: str = AVRO_VERSION, cache_root: Path | None = None) -> AvroJava:
    """Jars resolved, program compiled: the :class:`AvroJava` to run it."""
    libs = ensure_avro_libs(version, cache_root)
    return AvroJava(libs, ensure_compiled(libs), version)


@pytest.fixture(scope="session")
def avro_java() -> AvroJava:
    """Apache Avro for Java, ready to run ``AvroInterop``; errors (never skips) when it cannot be had."""
    return prepare()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.avro_java", description=__doc__.split("\n")[0])
    parser.add_argument("--prepare", action="store_true", help="resolve the jars, compile the program and exit")
    parser.add_argument("args", nargs="*", help="a subcommand of AvroInterop and its arguments")
    options = parser.parse_args(argv)
    started = time.monotonic()
    java = prepare()
    if options.prepare or not options.args:
        print(f"Avro {java.version} for Java ready in {java.classes} ({time.monotonic() - started:.1f}s)")
        return 0
    result = java.run(*options.args, check=False)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["AVRO_VERSION", "AvroJava", "AvroJavaError", "JavaResult", "avro_java", "prepare"]
