"""torchwood's litewitness, a real C2SP tlog-witness, built from the Go module proxy and started on loopback.

``tests/support/go/witness/go.mod`` pins ``filippo.io/torchwood`` v0.6.1 and names its ``litewitness`` and
``witnessctl`` commands as tools; the session fixture builds both, and ``cosigcheck`` (our few lines: a
cosigned checkpoint opened by ``golang.org/x/mod/sumdb/note`` with torchwood's cosignature verifier), with
the machine's ``go`` into the pytest basetemp (Go's build cache makes a rebuild cheap). litewitness signs with an Ed25519 key held by
an ``ssh-agent`` (OpenSSH's, started here on a socket of its own with a key made for the session); its
database is a SQLite file that ``witnessctl add-log``/``add-key`` fill with each test ledger's origin and
verifier key. Nothing skips: a missing ``go``, ``ssh-agent`` or ``ssh-add`` fails the tests that need it.

Pytest fixture (session scope): ``litewitness``, a :class:`LiteWitness`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from caseledger.verify.cosignatures import WitnessKey

MODULE = Path(__file__).parent / "go" / "witness"
NAME = "witness.test/litewitness"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: the witness tests need Go (1.24 or later) and OpenSSH's ssh-agent and "
                    "ssh-add (Debian: apt-get install golang openssh-client)", pytrace=False)
    return found


def build(out: Path) -> tuple[Path, Path]:
    """litewitness and witnessctl (and our cosigcheck), built from the pinned module into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    done = subprocess.run([_tool("go"), "build", "-o", f"{out}/", "./cosigcheck", "filippo.io/torchwood/cmd/litewitness",
                           "filippo.io/torchwood/cmd/witnessctl"], cwd=MODULE, env=env, capture_output=True,
                          text=True, timeout=900)
    if done.returncode != 0:
        pytest.fail(f"building torchwood's litewitness failed:\n{done.stderr[-3000:]}", pytrace=False)
    return out / "litewitness", out / "witnessctl"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, ready: object, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(ready) and ready():
            return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    pytest.fail(f"{what} did not start", pytrace=False)


@dataclass
class LiteWitness:
    """A running litewitness: its cosigning key, its URL, and the logs it knows."""

    binary: Path
    witnessctl: Path
    folder: Path
    private: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    url: str = ""
    socket_dir: Path | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def key(self) -> WitnessKey:
        return WitnessKey(NAME, self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    @property
    def db(self) -> Path:
        return self.folder / "litewitness.db"

    def add_log(self, origin: str, verifier_key: str) -> None:
        """Let the witness cosign the log of ``origin`` signed by ``verifier_key`` (starting from size 0)."""
        for args in (["add-log", "-db", str(self.db), "-origin", origin],
                     ["add-key", "-db", str(self.db), "-origin", origin, "-key", verifier_key]):
            subprocess.run([str(self.witnessctl), *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self.socket_dir = socket_dir = Path(tempfile.mkdtemp(prefix="lw", dir="/tmp"))  # a unix socket path is short
        agent_socket = socket_dir / "agent"
        key_file = self.folder / "witness_key"
        key_file.write_bytes(self.private.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))
        key_file.chmod(0o600)
        agent = subprocess.Popen([_tool("ssh-agent"), "-a", str(agent_socket), "-D"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        self.processes.append(agent)
        _wait("ssh-agent", agent_socket.exists, agent)
        env = {**os.environ, "SSH_AUTH_SOCK": str(agent_socket)}
        subprocess.run([_tool("ssh-add"), str(key_file)], env=env, check=True, capture_output=True, timeout=30)
        port = _free_port()
        fingerprint = hashlib.sha256(self.key.public_key).hexdigest()  # litewitness's -key, hex form
        log = (self.folder / "litewitness.log").open("wb")
        witness = subprocess.Popen([str(self.binary), "-ssh-agent", str(agent_socket), "-name", NAME, "-key",
                                    fingerprint, "-listen", f"127.0.0.1:{port}", "-db", str(self.db)],
                                   stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        self.processes.append(witness)

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        _wait("litewitness", listening, witness)
        self.url = f"http://127.0.0.1:{port}"

    def go_check(self, note: str, log_key: str) -> subprocess.CompletedProcess[str]:
        """``cosigcheck``: the note opened by x/mod's ``note.Open`` with the log's key and this witness's
        cosignature verifier as torchwood builds it (its exit 0: both signatures verify)."""
        return subprocess.run([str(self.binary.parent / "cosigcheck"), "-log", log_key, "-witness", str(self.key)],
                              input=note, capture_output=True, text=True, timeout=60)

    def logged(self) -> str:
        return (self.folder / "litewitness.log").read_text(errors="replace")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # litewitness shuts down cleanly on an interrupt
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def litewitness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiteWitness]:
    """One litewitness for the session (each test adds its ledger's log under an origin of its own)."""
    folder = tmp_path_factory.mktemp("litewitness")
    binary, witnessctl = build(tmp_path_factory.getbasetemp() / "go-bin")
    witness = LiteWitness(binary, witnessctl, folder)
    try:
        witness.start()
        yield witness
    finally:
        witness.stop()
