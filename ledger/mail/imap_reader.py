"""The customers' mailbox, read over IMAP so that a restart neither loses nor re-reads a mail.

The reader tracks the mailbox's UIDs: what it handed out and the caller confirmed (:meth:`ImapReader.done`)
is written to a small state file (UIDVALIDITY and the last UID, atomically), and the next reading asks
only for UIDs above it. A crash between submitting a mail and confirming it reads that one mail again,
which the ledger recognises as a resubmission of the same Message-ID. A mailbox whose UIDVALIDITY
changed (recreated, restored) is read again from its start, for the same reason harmlessly. The
mailbox is opened read-only (``EXAMINE``) and fetched with ``BODY.PEEK[]``: the adapter changes nothing
in it, not even the \\Seen flag.

TLS (port 993) or STARTTLS verify the server's certificate; plain IMAP is allowed only on loopback.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import logging
import os
import re
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from caseledger.ledger.errors import BackendError, ConfigurationError

__all__ = ["ImapReader", "ImapSettings", "MailboxPosition"]

log = logging.getLogger(__name__)

SECURITY = ("tls", "starttls", "plain")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")


@dataclass(frozen=True, kw_only=True)
class ImapSettings:
    """Where the customers' mail arrives."""

    host: str
    port: int | None = None  # default: 993 for tls, 143 otherwise
    username: str
    password: str = field(repr=False)
    security: str = "tls"  # tls, starttls, or plain (loopback only)
    mailbox: str = "INBOX"
    cafile: str | None = None  # the CA that signs the server's certificate, if not the system's
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.security not in SECURITY:
            raise ConfigurationError(f"IMAP security must be one of {', '.join(SECURITY)}, not {self.security!r}")
        if self.security == "plain" and self.host not in _LOOPBACK:
            raise ConfigurationError(
                "plain IMAP would send the mailbox password and the customers' mail unencrypted: use "
                "--imap-security tls (port 993) or starttls; plain is for a server on loopback only"
            )

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.security == "tls" else 143)


@dataclass(frozen=True)
class MailboxPosition:
    """How far the mailbox was read: its UIDVALIDITY and the last UID handled."""

    uidvalidity: int = 0
    last_uid: int = 0


class ImapReader:
    """New mails of one mailbox, each once, as (UID, bytes); :meth:`done` after each one is handled."""

    def __init__(self, settings: ImapSettings, state_file: str | Path) -> None:
        self.settings = settings
        self.state_file = Path(state_file)
        self.position = self._load()
        self._imap: imaplib.IMAP4 | None = None
        self._uidvalidity = 0

    def new_mails(self, *, limit: int = 100) -> Iterator[tuple[int, bytes]]:
        """Up to ``limit`` mails above the last UID handled, oldest first. Connection errors raise BackendError."""
        try:
            imap = self._connection()
            uids = self._new_uids(imap)[:limit]
            for uid in uids:
                status, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[])")
                raw = next((part[1] for part in data or () if isinstance(part, tuple)), None)
                if status != "OK" or raw is None:
                    continue  # expunged meanwhile: nothing to read
                yield uid, bytes(raw)
        except (imaplib.IMAP4.error, OSError) as error:
            self.close()
            raise BackendError(f"IMAP server {self.settings.host}:{self.settings.effective_port}: "
                               f"{type(error).__name__}; retrying") from None

    def done(self, uid: int) -> None:
        """Mail ``uid`` is handled (submitted, or refused for good): never read again."""
        self.position = MailboxPosition(self._uidvalidity, max(uid, self.position.last_uid))
        self._save(self.position)

    def close(self) -> None:
        if self._imap is not None:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                self._imap.logout()
            self._imap = None

    def _connection(self) -> imaplib.IMAP4:
        if self._imap is not None:
            try:
                self._imap.noop()  # also makes the server tell of new mail
                return self._imap
            except (imaplib.IMAP4.error, OSError):
                self.close()
        s = self.settings
        context = ssl.create_default_context(cafile=s.cafile)
        imap: imaplib.IMAP4
        if s.security == "tls":
            imap = imaplib.IMAP4_SSL(s.host, s.effective_port, ssl_context=context, timeout=s.timeout_s)
        else:
            imap = imaplib.IMAP4(s.host, s.effective_port, timeout=s.timeout_s)
            if s.security == "starttls":
                imap.starttls(ssl_context=context)
        try:
            imap.login(s.username, s.password)
        except imaplib.IMAP4.error:
            imap.logout()
            raise ConfigurationError(
                f"the IMAP server {s.host} refused the login of {s.username!r}: check the user and "
                "CASELEDGER_MAIL_IMAP_PASSWORD (or its _FILE)"
            ) from None
        status, _ = imap.select(_quoted(s.mailbox), readonly=True)
        if status != "OK":
            imap.logout()
            raise ConfigurationError(f"the IMAP mailbox {s.mailbox!r} cannot be opened: check --imap-mailbox")
        self._imap = imap
        return imap

    def _new_uids(self, imap: imaplib.IMAP4) -> list[int]:
        _, data = imap.response("UIDVALIDITY")
        validity = int(data[0]) if data and data[0] else self._ask_uidvalidity(imap)
        self._uidvalidity = validity
        after = self.position.last_uid
        if self.position.uidvalidity not in (0, validity):
            log.warning("mailbox UIDVALIDITY changed: reading it again from its start (the ledger traces "
                        "what it already has as resubmissions)")
            after = 0
            self.position = MailboxPosition(validity, 0)
        status, data = imap.uid("SEARCH", "UID", f"{after + 1}:*")
        if status != "OK":
            return []
        # "N:*" names the last mail even when its UID is below N: keep only the new ones.
        return sorted(uid for uid in (int(u) for u in b" ".join(data or [b""]).split()) if uid > after)

    def _ask_uidvalidity(self, imap: imaplib.IMAP4) -> int:
        _, data = imap.status(_quoted(self.settings.mailbox), "(UIDVALIDITY)")
        found = _UIDVALIDITY.search(data[0] if data and isinstance(data[0], bytes) else b"")
        return int(found.group(1)) if found else 0

    def _load(self) -> MailboxPosition:
        try:
            state = json.loads(self.state_file.read_text())
            return MailboxPosition(int(state["uidvalidity"]), int(state["last_uid"]))
        except FileNotFoundError:
            return MailboxPosition()
        except (ValueError, KeyError, TypeError):
            raise ConfigurationError(f"the mail adapter's state file {self.state_file} is not its own: move it "
                                     "away to read the mailbox from its start (the ledger traces resubmissions)") \
                from None

    def _save(self, position: MailboxPosition) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.state_file.parent, prefix=".mail-state-")
        with os.fdopen(handle, "w") as out:
            json.dump({"uidvalidity": position.uidvalidity, "last_uid": position.last_uid}, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.state_file)


def _quoted(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'
