"""Real mail servers for the reference e-mail adapter: Debian's Dovecot (IMAP) and aiosmtpd (SMTP), on loopback.

Dovecot is installed with apt-get when /usr/sbin/dovecot is missing (the tests run as root), like
tests/support/browser.py installs chromium: a missing server fails the tests, never skips them. It runs
from a configuration of its own under the test's temporary folder — loopback port, no TLS, a
passwd-file user database and a Maildir there — never the machine's /etc/dovecot. aiosmtpd runs in
this process; a test sets what it answers (``SmtpServer.answer``) and reads what it received.
"""

from __future__ import annotations

import email
import imaplib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.support.debian_packages import ensure_installed
from tests.support.service_server import free_port

DOVECOT = "/usr/sbin/dovecot"
USER, PASSWORD = "support", "imap-test-password-3141"
SMTP_USER, SMTP_PASSWORD = "relay", "smtp-test-password-2718"


def loopback_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (cert, key), its own CA: what --cafile names."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "loopback.crt", folder / "loopback.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def ensure_dovecot() -> str:
    """/usr/sbin/dovecot, installed with apt-get when missing; fails, never skips."""
    return ensure_installed(DOVECOT, "dovecot-imapd")


@dataclass
class ImapServer:
    """A running Dovecot: one user whose INBOX is a Maildir under ``root``."""

    host: str
    port: int  # IMAP, with STARTTLS
    tls_port: int  # IMAP over TLS
    cafile: Path  # the server's self-signed certificate
    username: str
    password: str
    root: Path
    process: subprocess.Popen[bytes]
    config: Path

    def append(self, mail: EmailMessage | bytes, mailbox: str = "INBOX") -> None:
        """Deliver ``mail`` to the mailbox, as an MTA would (IMAP APPEND)."""
        raw = mail if isinstance(mail, bytes) else mail.as_bytes(policy=policy.SMTP)
        imap = imaplib.IMAP4(self.host, self.port, timeout=10)
        try:
            imap.login(self.username, self.password)
            status, answer = imap.append(mailbox, "", imaplib.Time2Internaldate(time.time()), raw)
            assert status == "OK", answer
        finally:
            imap.logout()

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_dovecot() -> ImapServer:
    """Dovecot in a folder of its own: pytest's temporary folders are closed to the users Dovecot drops to."""
    binary = ensure_dovecot()
    root = Path(tempfile.mkdtemp(prefix="caseledger-dovecot-"))
    port, tls_port = free_port(), free_port()
    cert, key = loopback_certificate(root)
    # As root, Dovecot drops to its own users and refuses UID 0 for mail: the mailbox belongs to user dovecot.
    owner = pwd.getpwnam("dovecot") if os.geteuid() == 0 else pwd.getpwuid(os.getuid())
    internal = "dovecot" if os.geteuid() == 0 else owner.pw_name
    login = "dovenull" if os.geteuid() == 0 else owner.pw_name
    mail = root / "mail"
    (mail / "Maildir").mkdir(parents=True, exist_ok=True)
    for run in ("run", "state"):
        (root / run).mkdir(exist_ok=True)
    for path in (mail, mail / "Maildir"):
        os.chown(path, owner.pw_uid, owner.pw_gid)
    users = root / "users"
    users.write_text(f"{USER}:{{PLAIN}}{PASSWORD}:{owner.pw_uid}:{owner.pw_gid}::{mail}::\n")
    config = root / "dovecot.conf"
    config.write_text(f"""
base_dir = {root}/run
state_dir = {root}/state
instance_name = caseledger-test-{port}
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = {min(owner.pw_uid, 100)}
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {users}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
""")
    os.chmod(root, 0o755)
    process = subprocess.Popen([binary, "-F", "-c", str(config)], stdout=subprocess.DEVNULL,
                               stderr=(root / "dovecot.stderr").open("wb"))
    server = ImapServer("127.0.0.1", port, tls_port, cert, USER, PASSWORD, root, process, config)
    deadline = time.monotonic() + 30
    while True:
        try:
            imap = imaplib.IMAP4(server.host, port, timeout=5)
            imap.login(USER, PASSWORD)
            imap.logout()
            return server
        except (OSError, imaplib.IMAP4.error) as error:
            if process.poll() is not None or time.monotonic() > deadline:
                stop_dovecot(server)
                stderr = (root / "dovecot.stderr").read_text(errors="replace")
                pytest.fail(f"dovecot did not start ({error}):\n{stderr}\n{server.log()[-3000:]}")
            time.sleep(0.2)


def stop_dovecot(server: ImapServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def imap_server() -> Iterator[ImapServer]:
    """A fresh Dovecot for one test: an empty INBOX."""
    server = start_dovecot()
    try:
        yield server
    finally:
        stop_dovecot(server)


@dataclass
class SmtpServer:
    """aiosmtpd on loopback: the mails it took, and what it answers next (``answer``: None accepts)."""

    host: str
    port: int
    received: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    answer: str | None = None  # e.g. "550 5.1.1 mailbox unknown" at RCPT, or "451 4.3.0 try later"
    answer_times: int = 1_000_000  # how many RCPTs get ``answer`` before the server accepts again
    controller: Any = None
    cafile: Path | None = None  # with TLS: the server's self-signed certificate

    def messages_to(self, address: str) -> list[EmailMessage]:
        return [m for m, (_, rcpts) in zip(self.received, self.envelopes, strict=True) if address in rcpts]


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(self, _server: Any, _session: Any, envelope: Any, address: str, _options: Any) -> str:
        if self.server.answer is not None and self.server.answer_times > 0:
            self.server.answer_times -= 1
            return self.server.answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.server.received.append(email.message_from_bytes(envelope.content, policy=policy.default))
        self.server.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_tls_server(tmp_path: Path) -> Iterator[SmtpServer]:
    """aiosmtpd that requires STARTTLS, then a login (``SMTP_USER``/``SMTP_PASSWORD``); its CA at ``cafile``."""
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    cert, key = loopback_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def login(_server: Any, _session: Any, _envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = getattr(data, "login", None) == SMTP_USER.encode() and getattr(data, "password", None) == SMTP_PASSWORD.encode()
        return AuthResult(success=ok)

    server = SmtpServer("127.0.0.1", free_port(), cafile=cert)
    controller = Controller(_Handler(server), hostname=server.host, port=server.port, tls_context=context,
                            require_starttls=True, auth_require_tls=True, authenticator=login)
    controller.start()
    server.controller = controller
    try:
        yield server
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    from aiosmtpd.controller import Controller

    server = SmtpServer("127.0.0.1", free_port())
    controller = Controller(_Handler(server), hostname=server.host, port=server.port)
    controller.start()
    server.controller = controller
    try:
        yield server
    finally:
        controller.stop()
