"""The reference e-mail adapter's loop: mailbox → intake, outbound feed → SMTP, each outcome reported once.

One thread does both, in turn: it reads the new mails of the mailbox (each submitted through the adapter
SDK like any adapter's contact, then marked handled), then waits on the outbound feed for up to the
polling interval and sends what it hands out. A temporary SMTP failure is retried with a doubling delay;
a message whose deadline passes while it is retried is reported ``expired``, one without a deadline
``unreachable`` after :data:`GIVE_UP_AFTER`. A message is reported once: a report the service did not
take is retried on its own, the mail is never sent again for it. Where the outbound feed was read up to
is kept in a state file, behind any message still being retried, so a restart picks those up again.

Logs name UIDs, case references and message ids, never an address, a subject, a text or a Message-ID.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from caseledger.ledger.domain.values import ContactDraft, DeliveryFailure
from caseledger.ledger.errors import BackendError, CaseLedgerError, ValidationError
from caseledger.ledger.intake.outbound import OutboundMessage
from caseledger.ledger.intake.verdicts import Verdict, VerdictTimeout
from caseledger.ledger.mail.attachment_store import AttachmentStore
from caseledger.ledger.mail.imap_reader import ImapReader
from caseledger.ledger.mail.mail_drafts import MailRefused, draft_from_mail
from caseledger.ledger.mail.smtp_sender import SmtpSender, TemporaryFailure

__all__ = ["MailAdapter", "Outbound", "Submitter"]

log = logging.getLogger("caseledger.mail")

FIRST_RETRY = timedelta(seconds=30)
LAST_RETRY = timedelta(hours=1)  # the longest wait between two attempts
GIVE_UP_AFTER = timedelta(days=2)  # for a message without a deadline
BATCH = 100  # mails fetched at a time
MAX_WAIT_S = 15.0  # one long poll of the outbound feed at most (the service caps a wait at 20 s)
VERDICT_WAIT_S = 30.0  # how long a mail waits for the ledger's verdict before it is read again next time


class Submitter(Protocol):
    """What the adapter submits a contact through (the SDK's ``KafkaIntakeClient``)."""

    def submit(self, message: ContactDraft, *, wait: float | None = None) -> Any: ...


class Outbound(Protocol):
    """The outbound feed of this adapter (the SDK's ``OutboundClient``)."""

    position: int

    def poll(self, *, wait_s: float | None = None) -> list[OutboundMessage]: ...

    def delivered(self, message: OutboundMessage, *, at: datetime | None = None) -> None: ...

    def failed(self, message: OutboundMessage, reason: str | DeliveryFailure, *, at: datetime | None = None) -> None: ...


@dataclass
class _Retry:
    message: OutboundMessage
    attempts: int
    due: datetime
    first_try: datetime


class MailAdapter:
    """Ties a mailbox and an SMTP server to the ledger (see the module docstring)."""

    def __init__(
        self, *, reader: ImapReader, intake: Submitter, attachments: AttachmentStore, outbound: Outbound,
        sender: SmtpSender, state_file: str | Path, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        first_retry: timedelta = FIRST_RETRY, own_address: str | None = None,
        verdict_wait_s: float | None = VERDICT_WAIT_S,
    ) -> None:
        self.reader = reader
        self.intake = intake
        self.attachments = attachments
        self.outbound = outbound
        self.sender = sender
        self.state_file = Path(state_file)
        self.clock = clock
        self.first_retry = first_retry
        self.verdict_wait_s = verdict_wait_s  # None: a mail counts as taken once the broker has it
        self.own_identity = f"email:{own_address.strip().lower()}" if own_address else None  # our From
        self.retries: dict[tuple[str, str], _Retry] = {}
        self.unreported: dict[tuple[str, str], tuple[OutboundMessage, DeliveryFailure | None, datetime]] = {}
        saved = self._load_position()
        if saved > self.outbound.position:
            self.outbound.position = saved

    # --- inbound -----------------------------------------------------------------------------------------

    def read_mailbox(self) -> int:
        """Submit every new mail of the mailbox; how many were submitted. Stops at the first one the intake
        could not take (the broker away): it is read again next time."""
        submitted, seen = 0, BATCH
        while seen == BATCH:  # a backlog is read batch after batch, not one batch per polling interval
            seen, done, stop = self._read_batch()
            submitted += done
            if stop:
                break
        return submitted

    def _read_batch(self) -> tuple[int, int, bool]:
        """(mails seen, submitted, whether the intake could not take one)."""
        seen = submitted = 0
        for uid, raw in self.reader.new_mails(limit=BATCH):
            seen += 1
            try:
                draft = draft_from_mail(raw, attachments=self.attachments, now=self.clock())
            except MailRefused as refusal:
                log.warning("mail UID %d not recorded: %s", uid, refusal)
                self.reader.done(uid)
                continue
            if str(draft.identity) == self.own_identity:  # our own mail come back (a copy, a forward): no loop
                log.warning("mail UID %d not recorded: it is from our own address", uid)
                self.reader.done(uid)
                continue
            try:
                verdict = self.intake.submit(draft, wait=self.verdict_wait_s)
            except ValidationError as error:
                log.warning("mail UID %d not recorded: %s", uid, error)
            except VerdictTimeout:  # stored, maybe, but not decided yet: read again, resubmitted (and traced)
                log.warning("mail UID %d: no verdict of the ledger within %g s; read again next time", uid,
                            self.verdict_wait_s)
                return seen, submitted, True
            except Exception as error:  # the broker away or slow (IntakeUnavailable): read again next time
                log.warning("mail UID %d not submitted (%s): read again next time", uid, type(error).__name__)
                return seen, submitted, True
            else:
                submitted += 1
                if not isinstance(verdict, Verdict):
                    log.info("mail UID %d submitted%s", uid,
                             f" on case {draft.case_reference}" if draft.case_reference else " (a new request)")
                elif verdict.received:
                    log.info("mail UID %d recorded on case %s", uid, getattr(verdict, "reference", ""))
                else:  # its public reason names a code, a field and a fix, never a value of the mail
                    log.warning("mail UID %d not recorded by the ledger: %s", uid, getattr(verdict, "reason", ""))
            self.reader.done(uid)
        return seen, submitted, False

    # --- outbound ----------------------------------------------------------------------------------------

    def deliver(self, *, wait_s: float) -> int:
        """Send what the feed hands out (waiting up to ``wait_s`` for it) and what is due for a retry; how many
        mails the SMTP server took."""
        self._report_pending()
        sent = 0
        for message in self.outbound.poll(wait_s=min(wait_s, self._until_next_retry(wait_s))):
            if self._key(message) not in self.retries and self._key(message) not in self.unreported:
                sent += self._attempt(message, attempts=0, first_try=self.clock())
        now = self.clock()
        for key, retry in sorted(self.retries.items(), key=lambda kv: kv[1].due):
            if retry.due <= now:
                del self.retries[key]
                sent += self._attempt(retry.message, attempts=retry.attempts, first_try=retry.first_try)
        self._save_position()
        return sent

    def run(self, *, until: Callable[[], bool], poll_s: float = 10.0) -> None:
        """Read the mailbox every ``poll_s`` seconds and deliver in between, until ``until()`` says stop."""
        next_read = time.monotonic()
        while not until():
            if time.monotonic() >= next_read:
                next_read = time.monotonic() + poll_s
                try:
                    self.read_mailbox()
                except BackendError as error:
                    log.warning("%s", error)
            try:  # one long poll at most MAX_WAIT_S (the service caps it), then the stop flag is looked at
                self.deliver(wait_s=max(0.0, min(MAX_WAIT_S, next_read - time.monotonic())))
            except BackendError as error:
                log.warning("outbound feed: %s", error)
                time.sleep(min(poll_s, MAX_WAIT_S))  # the service away: not a busy loop

    def close(self) -> None:
        self.reader.close()
        self.sender.close()

    def _attempt(self, message: OutboundMessage, *, attempts: int, first_try: datetime) -> int:
        try:
            failure = self.sender.send(message)
        except TemporaryFailure as error:
            self._retry_or_give_up(message, attempts + 1, first_try, str(error))
            return 0
        self._report(message, failure, self.clock())
        return int(failure is None)

    def _retry_or_give_up(self, message: OutboundMessage, attempts: int, first_try: datetime, why: str) -> None:
        now = self.clock()
        delay = min(self.first_retry * 2 ** min(attempts - 1, 20), LAST_RETRY)  # capped: no overflow after days
        if message.deliver_by is not None and now + delay > message.deliver_by:
            log.warning("%s %s: %s; its deadline passes before the next attempt: reported expired",
                        message.reference, message.message_id, why)
            self._report(message, DeliveryFailure.EXPIRED, now)
        elif message.deliver_by is None and now - first_try > GIVE_UP_AFTER:
            log.warning("%s %s: %s; given up after %d attempts: reported unreachable",
                        message.reference, message.message_id, why, attempts)
            self._report(message, DeliveryFailure.UNREACHABLE, now)
        else:
            log.info("%s %s: %s; attempt %d in %ds", message.reference, message.message_id, why, attempts + 1,
                     delay.total_seconds())
            self.retries[self._key(message)] = _Retry(message, attempts, now + delay, first_try)

    def _report(self, message: OutboundMessage, failure: DeliveryFailure | None, at: datetime) -> None:
        try:
            if failure is None:
                self.outbound.delivered(message, at=at)
                log.info("%s %s delivered", message.reference, message.message_id)
            else:
                self.outbound.failed(message, failure, at=at)
                log.warning("%s %s not delivered: %s", message.reference, message.message_id, failure.value)
        except BackendError as error:  # the service away: report again, never send again
            log.warning("%s %s: the report waits (%s)", message.reference, message.message_id, type(error).__name__)
            self.unreported[self._key(message)] = (message, failure, at)
        except CaseLedgerError as error:  # already reported, the case erased …: nothing left to do for it
            log.warning("%s %s: the report was refused (%s)", message.reference, message.message_id,
                        type(error).__name__)

    def _report_pending(self) -> None:
        pending, self.unreported = self.unreported, {}
        for message, failure, at in pending.values():
            self._report(message, failure, at)

    def _until_next_retry(self, default: float) -> float:
        if self.unreported:
            return 0.0
        if not self.retries:
            return default
        return max(0.0, (min(r.due for r in self.retries.values()) - self.clock()).total_seconds())

    @staticmethod
    def _key(message: OutboundMessage) -> tuple[str, str]:
        return message.reference, message.message_id

    def _load_position(self) -> int:
        try:
            return int(json.loads(self.state_file.read_text())["outbound_position"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError):
            log.warning("the outbound state file is unreadable: reading the feed from its start "
                        "(only what is still pending is handed out again)")
            return 0

    def _save_position(self) -> None:
        """The feed's position, but behind every message still owed an attempt or a report (a restart resumes them)."""
        owed = [m.position for m in (r.message for r in self.retries.values())]
        owed += [m.position for m, _, _ in self.unreported.values()]
        position = min([self.outbound.position, *(p - 1 for p in owed)])
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.state_file.parent, prefix=".outbound-state-")
        with os.fdopen(handle, "w") as out:
            json.dump({"outbound_position": position}, out)
        os.replace(temporary, self.state_file)
