"""A real one-node Apache Kafka broker (KRaft mode) for tests.

The broker is plain Apache Kafka run with the machine's Java 17: its jars
(``org.apache.kafka:kafka_2.13`` plus runtime dependencies) are resolved from
Maven Central with the machine's ``mvn`` into a cache directory that is reused
between runs, the storage is formatted, and ``kafka.Kafka`` is started as a
subprocess on free loopback ports.  No Docker, no downloaded tarballs.

Pytest fixtures (session scope), registered as a plugin by ``tests/conftest.py``:

* ``kafka_broker``: the :class:`KafkaBroker` (so a test can ``restart()`` or
  ``kill()`` it), or ``None`` when ``CASELEDGER_TEST_KAFKA`` points at an
  external broker.
* ``kafka_bootstrap``: the ``"host:port"`` bootstrap servers string.

Both fail (never skip) when no broker can be had.

Command line::

    python -m tests.support.kafka_broker --prepare   # only resolve the jars (CI warm-up)
    python -m tests.support.kafka_broker --serve     # run a broker until Ctrl-C

Environment:

* ``CASELEDGER_TEST_KAFKA``: bootstrap servers of an external broker (e.g.
  the compose stack); nothing is started then.
* ``CASELEDGER_KAFKA_CACHE``: root of the jar cache (default
  ``~/.cache/caseledger``); jars land in ``<root>/kafka-<version>/libs``.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import pytest

from tests.support.maven import (  # noqa: F401  (CACHE_ENV, DEPENDENCY_PLUGIN, mvn_command, cache_is_complete: re-exported)
    CACHE_ENV,
    DEPENDENCY_PLUGIN,
    cache_is_complete,
    default_cache_root,
    java_tool,
    mvn_command,
    resolve_jars,
)
from tests.support.maven import tail as _tail

#: Apache Kafka release run by the tests.  4.3.1 is the newest 4.x release
#: whose ``kafka_2.13`` artifact resolves completely from Maven Central here.
KAFKA_VERSION = "4.3.1"

#: Kafka logs through slf4j 1.7 but its POM ships no slf4j binding (the
#: binary distribution adds one to libs/).  Without a binding every broker log
#: line is dropped, so we add the log4j2 bridge, at the version of the
#: log4j-core that kafka_2.13 4.3.1 itself depends on.
LOG4J_VERSION = "2.25.4"

#: Points the tests at an already running broker instead of starting one.
EXTERNAL_ENV = "CASELEDGER_TEST_KAFKA"

#: Topic created by the readiness probe: produced to on every start, so a
#: broker is only "ready" once it can take an acks=all write.
READY_TOPIC = "_caseledger_broker_ready"


# --------------------------------------------------------------------------
# Jar assembly
# --------------------------------------------------------------------------


def _pom_xml(version: str) -> str:
    """A throw-away POM whose only purpose is to declare the broker's jars."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by tests/support/kafka_broker.py: resolves the Kafka broker's jars. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>caseledger.tests</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""


def ensure_kafka_libs(
    version: str = KAFKA_VERSION,
    cache_root: Path | None = None,
    timeout: float = 900.0,
) -> Path:
    """Return the directory holding the broker's jars, resolving them if needed.

    Resolution runs Maven once per cache; concurrent callers (parallel test
    processes, a CI warm-up) serialize on a lock file so only one downloads.
    """
    root = cache_root or default_cache_root()
    return resolve_jars(
        root / f"kafka-{version}",
        _pom_xml(version),
        required_jar=f"kafka_2.13-{version}.jar",
        what=f"org.apache.kafka:kafka_2.13:{version}",
        missing_mvn_hint=f" (or set {EXTERNAL_ENV} to an external broker)",
        timeout=timeout,
    )


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """*count* distinct free loopback ports.

    All sockets are held open until every port is picked so the ports differ;
    the kernel could still hand one out again before the broker binds, which
    :meth:`KafkaBroker.start` handles by retrying with fresh ports.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _random_cluster_id() -> str:
    """A Kafka cluster id: a UUID in URL-safe base64 without padding.

    Same format as ``kafka-storage.sh random-uuid``; generated here to save a
    JVM start.  Ids starting with '-' are avoided like Kafka does, because
    they read as command-line options.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _java() -> str:
    """The java executable: ``$JAVA_HOME/bin/java`` if set, else ``java`` on PATH."""
    return java_tool("java", "start the Kafka broker")


def wait_for_kafka(
    bootstrap_servers: str,
    timeout: float = 90.0,
    probe_topic: str | None = READY_TOPIC,
    is_alive: Callable[[], bool] | None = None,
    describe_failure: Callable[[], str] | None = None,
) -> None:
    """Block until the broker answers metadata and (optionally) takes a write.

    Listing topics only proves the socket server is up; after a (re)start the
    partitions may still be leaderless, so when *probe_topic* is given it is
    created if missing and an acks=all, idempotent produce must succeed too.

    Raises RuntimeError on timeout, or as soon as *is_alive* reports the
    broker process is gone.
    """
    # Imported here so `--prepare` works without kafka-python installed.
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.errors import TopicAlreadyExistsError

    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None

    def check_alive() -> None:
        if is_alive is not None and not is_alive():
            extra = describe_failure() if describe_failure else ""
            raise RuntimeError(f"Kafka broker exited during startup.\n{extra}")

    def remaining_ms(cap: float) -> int:
        return max(500, int(min(cap, deadline - time.monotonic()) * 1000))

    stage = "metadata"
    while time.monotonic() < deadline:
        check_alive()
        stage = "metadata"
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap_servers,
                client_id="caseledger-readiness",
                bootstrap_timeout_ms=remaining_ms(3.0),
                request_timeout_ms=remaining_ms(10.0),
            )
            try:
                topics = admin.list_topics()
                if probe_topic is None:
                    return
                stage = "create probe topic"
                if probe_topic not in topics:
                    # Another process (or our previous try) may have won the race.
                    with contextlib.suppress(TopicAlreadyExistsError):
                        admin.create_topics(
                            {probe_topic: {"num_partitions": 1, "replication_factor": 1}},
                            wait_for_metadata=True,
                        )
            finally:
                admin.close()
            stage = "produce"
            producer = KafkaProducer(
                bootstrap_servers=bootstrap_servers,
                client_id="caseledger-readiness",
                acks="all",
                enable_idempotence=True,
                max_block_ms=remaining_ms(10.0),
                request_timeout_ms=remaining_ms(10.0),
            )
            try:
                producer.send(probe_topic, b"ready").get(timeout=remaining_ms(10.0) / 1000)
            finally:
                producer.close(timeout=5)
            return
        except Exception as exc:  # any failure here just means "not ready yet"
            last_error = exc
            time.sleep(0.25)
    check_alive()
    extra = describe_failure() if describe_failure else ""
    raise RuntimeError(
        f"Kafka at {bootstrap_servers} not ready after {timeout:.0f}s "
        f"(stage: {stage}; last error: {last_error!r}).\n{extra}"
    )


# --------------------------------------------------------------------------
# The broker
# --------------------------------------------------------------------------

_LOG4J2_PROPERTIES = """\
# Written by tests/support/kafka_broker.py.  WARN and above go to stdout, which the
# launcher appends to broker.log next to this file: quiet, but errors kept.
status = error
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
# One INFO line per start/stop makes restarts easy to follow in the log.
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
"""


class KafkaBroker:
    """One Apache Kafka node (combined broker + controller, KRaft) on loopback.

    Everything lives under *data_dir*: ``server.properties``,
    ``log4j2.properties``, the Kafka log dir ``kafka-logs/`` and ``broker.log``
    (the JVM's stdout/stderr, appended across restarts).  Ports are picked on
    the first :meth:`start` and kept, so :meth:`restart` brings the same
    broker back at the same address with its data.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        version: str = KAFKA_VERSION,
        cache_root: Path | None = None,
        startup_timeout: float = 90.0,
        stop_timeout: float = 30.0,
        heap: str = "512m",
        extra_properties: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.version = version
        self.cache_root = cache_root
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.heap = heap
        self.extra_properties = dict(extra_properties or {})
        self.log_path = self.data_dir / "broker.log"
        self.log_dir = self.data_dir / "kafka-logs"
        self.cluster_id = _random_cluster_id()
        self._port: int | None = None
        self._controller_port: int | None = None
        # Ports become fixed once a start succeeded: restart() must reuse them.
        self._ports_fixed = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._libs: Path | None = None

    # -- public API --------------------------------------------------------

    @property
    def port(self) -> int:
        """The PLAINTEXT listener port (only valid after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("KafkaBroker has not been started")
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:PORT"``: stable across :meth:`restart`."""
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """True while the broker JVM is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the broker and block until it serves metadata and takes a write.

        Formats storage on the first start only.  Raises RuntimeError (with the
        tail of ``broker.log``) if the JVM exits early or is not ready within
        ``startup_timeout``.  A no-op when already running.
        """
        if self.running:
            return
        self._libs = ensure_kafka_libs(self.version, self.cache_root)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Free ports are picked racily (see _free_ports): before the first
        # successful start a bind failure is retried with new ports.
        attempts = 1 if self._ports_fixed else 3
        for attempt in range(1, attempts + 1):
            if not self._ports_fixed:
                self._port, self._controller_port = _free_ports(2)
            self._write_config()
            if not (self.log_dir / "meta.properties").is_file():
                self._format_storage()
            self._launch()
            try:
                wait_for_kafka(
                    self.bootstrap_servers,
                    timeout=self.startup_timeout,
                    is_alive=lambda: self.running,
                    describe_failure=self._failure_report,
                )
            except RuntimeError:
                bind_clash = "Address already in use" in _tail(self.log_path, 200)
                self.kill()
                if bind_clash and attempt < attempts:
                    # Storage pinned to the clashing controller port is useless.
                    shutil.rmtree(self.log_dir, ignore_errors=True)
                    continue
                raise
            self._ports_fixed = True
            return

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), SIGKILL after ``stop_timeout``; waits for exit."""
        self._terminate(graceful=True)

    def kill(self) -> None:
        """SIGKILL the broker (simulates a crash); waits for exit. Data stays on disk."""
        self._terminate(graceful=False)

    def restart(self) -> None:
        """Stop, then start again on the same ports with the same data."""
        self.stop()
        self.start()

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        where = f"127.0.0.1:{self._port}" if self._port else "no port yet"
        return f"<KafkaBroker {self.version} {where} {state} data={self.data_dir}>"

    # -- internals ---------------------------------------------------------

    def _properties(self) -> dict[str, str]:
        assert self._port is not None and self._controller_port is not None
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            # A static voter set: simplest KRaft quorum, formats without
            # --standalone and survives restarts without a voter change.
            "controller.quorum.voters": f"1@127.0.0.1:{self._controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self._port},CONTROLLER://127.0.0.1:{self._controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self._port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            # One node: every internal topic must fit on one replica.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Defaults are 50 partitions each: creating them on the first
            # group/transaction use costs seconds on a 2-core machine.
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.num.partitions": "1",
            # After a SIGKILL the restarted controller keeps the dead
            # incarnation's registration until its session expires (9 s by
            # default) and the broker cannot register before that; shorter
            # sessions make crash-restart tests take ~3 s instead of ~12 s.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            # Tests join groups often; don't wait 3 s for more members.
            "group.initial.rebalance.delay.ms": "0",
            # Let tests use short consumer session timeouts.
            "group.min.session.timeout.ms": "1000",
            "num.partitions": "1",
            # Topics are created explicitly by the code under test.
            "auto.create.topics.enable": "false",
            # Fewer threads than the server defaults: this broker shares two
            # cores with the test process.
            "num.network.threads": "2",
            "num.io.threads": "4",
            "background.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
        }
        props.update(self.extra_properties)
        return props

    def _write_config(self) -> None:
        lines = [f"{k}={v}" for k, v in self._properties().items()]
        (self.data_dir / "server.properties").write_text(
            "# Written by tests/support/kafka_broker.py\n" + "\n".join(lines) + "\n"
        )
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2_PROPERTIES)

    def _java_cmd(self, main: str, *args: str, server: bool) -> list[str]:
        assert self._libs is not None
        jvm = [
            _java(),
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
        ]
        if server:
            jvm += [
                "-Xms128m",
                f"-Xmx{self.heap}",
                # Kafka's own defaults (kafka-run-class.sh): short GC pauses.
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:+ExitOnOutOfMemoryError",
            ]
        else:
            # Short-lived tool: a small heap and the fastest JIT start.
            jvm += ["-Xmx256m", "-XX:TieredStopAtLevel=1"]
        return [*jvm, "-cp", str(self._libs / "*"), main, *args]

    def _log_header(self, text: str) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {text} =====\n".encode())

    def _format_storage(self) -> None:
        """``kafka-storage.sh format``: writes meta.properties and bootstrap metadata."""
        self._log_header(f"format storage, cluster id {self.cluster_id}")
        cmd = self._java_cmd(
            "kafka.tools.StorageTool",
            "format",
            "-t",
            self.cluster_id,
            "-c",
            str(self.data_dir / "server.properties"),
            server=False,
        )
        with open(self.log_path, "ab") as log:
            proc = subprocess.run(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=120,
                check=False,
            )
        if proc.returncode != 0:
            raise RuntimeError(
                f"formatting Kafka storage failed (exit {proc.returncode}).\n{self._failure_report()}"
            )

    def _launch(self) -> None:
        self._log_header(f"start broker on {self.bootstrap_servers}")
        # The child gets its own copy of the descriptor; ours can close at once.
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self._java_cmd("kafka.Kafka", str(self.data_dir / "server.properties"), server=True),
                cwd=self.data_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Own process group: a Ctrl-C aimed at pytest does not hit the
                # broker mid-test, and stop() can signal the whole group.
                start_new_session=True,
            )
        # If the test process dies without tearing the fixture down, don't
        # leave a JVM holding ports and memory behind.
        atexit.register(self._atexit_kill)

    def _terminate(self, graceful: bool) -> None:
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
                try:
                    proc.wait(timeout=self.stop_timeout if graceful else 30)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
            self._proc = None
            atexit.unregister(self._atexit_kill)

    def _atexit_kill(self) -> None:
        with contextlib.suppress(Exception):
            self.kill()

    def _failure_report(self) -> str:
        code = self._proc.poll() if self._proc is not None else None
        return (
            f"broker exit code: {code}; data dir: {self.data_dir}\n"
            f"--- tail of {self.log_path} ---\n{_tail(self.log_path)}"
        )


# --------------------------------------------------------------------------
# Pytest fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker | None]:
    """The session's Kafka broker, or None when ``CASELEDGER_TEST_KAFKA`` is set.

    Tests that restart or kill the broker use this; everything else should
    only need :func:`kafka_bootstrap`.  Startup failures raise (the tests then
    error) rather than skip: the real broker is part of the test contract.
    """
    if os.environ.get(EXTERNAL_ENV):
        yield None
        return
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker | None) -> str:
    """Bootstrap servers (``"host:port"``) of the session's Kafka broker.

    With ``CASELEDGER_TEST_KAFKA`` set this is that value, checked to answer
    metadata requests (nothing is created on an external broker).
    """
    if kafka_broker is not None:
        return kafka_broker.bootstrap_servers
    external = os.environ[EXTERNAL_ENV]
    wait_for_kafka(external, timeout=60.0, probe_topic=None)
    return external


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler for ``--serve``: shut down exactly like on Ctrl-C."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """``--prepare``: resolve the jars only; ``--serve``: run a broker until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.kafka_broker", description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--prepare", action="store_true", help="resolve the broker jars into the cache and exit"
    )
    mode.add_argument("--serve", action="store_true", help="start a broker and keep it running until Ctrl-C")
    parser.add_argument("--version", default=KAFKA_VERSION, help=f"Kafka version (default {KAFKA_VERSION})")
    parser.add_argument(
        "--data-dir", type=Path, help="storage dir for --serve (default: a temp dir, removed after)"
    )
    args = parser.parse_args(argv)

    if args.prepare:
        started = time.monotonic()
        libs = ensure_kafka_libs(args.version)
        print(f"Kafka {args.version} jars ready in {libs} ({time.monotonic() - started:.1f}s)")
        return 0

    temp_dir: Path | None = None
    data_dir: Path
    if args.data_dir is None:
        data_dir = temp_dir = Path(tempfile.mkdtemp(prefix="caseledger-kafka-"))
    else:
        data_dir = args.data_dir
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    broker = KafkaBroker(data_dir, version=args.version)
    try:
        started = time.monotonic()
        broker.start()
        print(
            f"Kafka {args.version} ready in {time.monotonic() - started:.1f}s\n"
            f"bootstrap servers: {broker.bootstrap_servers}\n"
            f"log: {broker.log_path}\n"
            "Ctrl-C to stop.",
            flush=True,
        )
        while broker.running:
            time.sleep(1)
        print(f"broker exited unexpectedly:\n{broker._failure_report()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        broker.stop()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
