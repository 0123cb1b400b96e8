"""Group commit: the writes that arrive together are recorded in one transaction, each answered alone.

A contact recorded alone cost three write transactions (the Idempotency-Key's claim, the unit of
work, the key's answer) and a thread per request waiting on the database's one writer. Here one
thread per process (the committer, with a ledger of its own) takes every write waiting in its
queue and runs them in one unit of work (:meth:`CaseLedger.unit_of_work`). For each write with a
key, the same transaction holds its tracking record (``idempotency/<sha256>``) and the key's row
*with its answer*, so a key is claimed, applied and answered at once, or not at all.

- A write that fails (a 4xx) leaves nothing in the unit (the unit discards its half-applied
  aggregates) and is answered with its own problem; the others commit. A message id collision is
  recorded and its problem stored as the key's answer, as before.
- A key already answered is replayed without running anything; the same key twice in one batch
  runs once, the second answered as a replay; a key whose first request is still running
  in another process (a claim without an answer) is answered 409 at once (retry with the key), and a
  claim older than ``STALE_AFTER`` (its request died) is taken over by :class:`Idempotency`.
- When the batch cannot commit (another process changed one of its aggregates first, or answered
  one of its keys), it runs again from the store (``BATCH_ATTEMPTS``), then every write of it alone, as
  before group commit
  (:meth:`Idempotency.run`): a conflict of one never fails the others, and the database's
  uniqueness of tracking records and keys keeps each write recorded once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.persistence import Tracking

from caseledger.ledger.errors import BackendError, ConflictError, MessageIdCollision
from caseledger.ledger.reports.describe import plain
from caseledger.ledger.service.batch_thread import BatchThread
from caseledger.ledger.service.idempotency import (
    SECRET_SUBJECT,
    STALE_AFTER,
    Idempotency,
    IdempotencyRefused,
    KeyedRequest,
)
from caseledger.ledger.service.problems import problem_for

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger

__all__ = ["MAX_BATCH", "Answer", "GroupCommitter", "Write"]

log = logging.getLogger("caseledger.service")

MAX_BATCH = 128
PURGE_EVERY_S = 60.0  # how often the committer deletes idempotency rows past their window
BATCH_ATTEMPTS = 3  # a batch that conflicts with another process's write is run again this often, then alone
Answer = tuple[int, Any, bool]  # (status, JSON body, replayed)


@dataclass
class Write:
    """One write waiting for the committer: ``execute`` runs the command on the committer's ledger."""

    execute: Callable[[CaseLedger], tuple[int, Any]]
    principal: str
    key: str | None = None
    digest: bytes = b""
    lookups: Callable[[CaseLedger], Iterable[UUID]] | None = None  # what it will load: prefetched for the batch
    answer: Future[Answer] = field(default_factory=Future)
    keyed: KeyedRequest | None = None  # set by submit for a write with a key
    stored_digest: bytes = b""  # ``digest`` as its key's row keeps it

    @property
    def key_id(self) -> str:
        return self.keyed.key_id if self.keyed is not None else ""


class GroupCommitter(BatchThread["Write"]):
    """The committer thread of one process (see the module docstring)."""

    thread_name = "caseledger-group-commit"

    def __init__(self, make_ledger: Callable[[], CaseLedger], *, max_batch: int = MAX_BATCH,
                 secret: Callable[[], bytes] | None = None) -> None:
        super().__init__(make_ledger, max_batch=max_batch)
        self.secret = secret  # the ledger's idempotency secret (ledger.service.idempotency); None: from a ledger
        self._next_purge = 0.0
        self.batches = 0  # how many units of work it committed (tests, benchmarks)

    def _secret(self, ledger: CaseLedger) -> bytes:
        """The ledger's idempotency secret: given, else read once from the committer's ledger."""
        if self.secret is None:
            found = ledger.data_keys.ledger_secret(SECRET_SUBJECT)
            self.secret = lambda: found
        return self.secret()

    def submit(self, write: Write) -> Future[Answer]:
        """Queue ``write``; its future gets (status, body, replayed) or the ledger error it failed with."""
        if write.key is not None:
            write.keyed = KeyedRequest(write.principal, write.key)  # a bad key: refused here, at once
            if self.secret is not None:
                write.stored_digest = write.keyed.keyed_by(self.secret()).digest(write.digest)
        self._enqueue(write)
        return write.answer

    # -- the committer thread ---------------------------------------------------------------------------

    def serve(self, ledger: CaseLedger, batch: list[Write]) -> None:
        # Answers past their window go, without a timer of their own: before the batch, so that a batch's
        # callers are answered only once everything its turn wrote is written.
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + PURGE_EVERY_S
            try:
                Idempotency(ledger.storage.idempotency()).purge()
            except BackendError as error:  # the next batch tries again
                log.warning("idempotency rows past their window not deleted: %s", type(error).__name__)
        self._commit(ledger, batch)

    def _commit(self, ledger: CaseLedger, batch: list[Write]) -> None:
        todo = self._without_replays(ledger, batch)
        for attempt in range(BATCH_ATTEMPTS):
            if not todo:
                return
            if attempt:  # another process changed an aggregate of the batch first: again, from the store
                time.sleep(random.uniform(0, 0.005 * 2**attempt))
                todo = self._without_replays(ledger, todo)
            if self._attempt(ledger, todo):
                return
        for write in todo:  # alone, as before group commit: one write's conflict fails no other
            self._alone(ledger, write)

    def _attempt(self, ledger: CaseLedger, todo: list[Write]) -> bool:
        """Run ``todo`` in one unit of work and answer each; False (nothing answered) if it could not commit."""
        outcomes: dict[int, tuple[int, Any] | BaseException] = {}
        try:
            with ledger.unit_of_work() as uow:
                store = ledger.storage.idempotency()
                now = datetime.now(UTC)
                ledger.prefetch(_lookups(ledger, todo))
                # The data keys of the batch's customers in one query, not one each when their events are sealed.
                ledger.data_keys.prefetch({a.customer_id for a in uow.aggregates.values()
                                           if getattr(a, "customer_id", None)})
                for write in todo:
                    try:
                        status, body = write.execute(ledger)
                        body = plain(body)
                    except MessageIdCollision as error:  # recorded, not applied: its problem is the answer
                        outcomes[id(write)] = error
                        status, body = int(problem_for(error)["status"]), problem_for(error)
                    except Exception as error:  # a 4xx (or a bug): nothing of it stays in the unit
                        outcomes[id(write)] = error
                        continue
                    else:
                        outcomes[id(write)] = (status, body)
                    if write.keyed is not None:
                        uow.trackings.append(Tracking(application_name=f"idempotency/{write.key_id}", notification_id=1))
                        uow.statements.append(store.answered_idempotency(
                            write.key_id, write.stored_digest, status, write.keyed.seal(body), now))
        except (ConflictError, BackendError):
            return False
        self.batches += 1
        for write in todo:
            outcome = outcomes.get(id(write))
            if isinstance(outcome, BaseException):
                write.answer.set_exception(outcome)
            elif outcome is not None:
                write.answer.set_result((outcome[0], outcome[1], False))
        return True

    def _without_replays(self, ledger: CaseLedger, batch: list[Write]) -> list[Write]:
        """Answer the writes whose key was answered before (or is another's in this batch); the rest, to run."""
        keyed = [w for w in batch if w.key is not None]
        for write in keyed:
            if not write.stored_digest:  # no secret given to the committer: the ledger's, from its key store
                assert write.keyed is not None
                write.stored_digest = write.keyed.keyed_by(self._secret(ledger)).digest(write.digest)
        rows = ledger.storage.idempotency().select_idempotency_many(list({w.key_id for w in keyed})) if keyed else {}
        todo: list[Write] = []
        first_of: dict[str, Write] = {}
        for write in batch:
            if write.key is None:
                todo.append(write)
                continue
            row = rows.get(write.key_id)
            if row is not None:
                assert write.keyed is not None
                if row.request_sha256 not in write.keyed.kept_forms(write.digest):
                    write.answer.set_exception(IdempotencyRefused(
                        "this Idempotency-Key was used for a different request (method, path or body); use a new "
                        "key for a new request", status=422, slug="idempotency-key-reused"))
                elif row.status is not None:
                    try:
                        write.answer.set_result((row.status, write.keyed.open(row.response), True))
                    except IdempotencyRefused as error:
                        write.answer.set_exception(error)
                elif datetime.now(UTC) - row.created_at < STALE_AFTER:
                    # Its first request runs in another process: answered at once (retry), the committer
                    # does not wait for it while the other writes wait behind.
                    write.answer.set_exception(Idempotency.in_progress())
                else:
                    self._alone(ledger, write)  # a claim whose request died: taken over there
                continue
            first = first_of.get(write.key_id)
            if first is None:
                first_of[write.key_id] = write
                todo.append(write)
            else:
                _follow(first, write)
        return todo

    def _alone(self, ledger: CaseLedger, write: Write) -> None:
        """Run one write in its own transactions (the claim-run-answer path of :class:`Idempotency`)."""
        try:
            if write.key is None:  # each command its own transaction, retried on a conflict by the ledger
                status, body = write.execute(ledger)
                write.answer.set_result((status, plain(body), False))
                return

            def run() -> tuple[int, Any]:
                code, answer = write.execute(ledger)
                return code, plain(answer)

            write.answer.set_result(Idempotency(ledger.storage.idempotency(), secret=self._secret(ledger)).run(
                ledger, principal=write.principal, key=write.key, digest=write.digest, execute=run,
                problem=problem_for))
        except BaseException as error:
            write.answer.set_exception(error)


def _lookups(ledger: CaseLedger, writes: list[Write]) -> set[UUID]:
    ids: set[UUID] = set()
    for write in writes:
        if write.lookups is not None:
            try:
                ids.update(write.lookups(ledger))
            except Exception:  # a bad reference: its command says so when it runs
                continue
    return ids


def _follow(first: Write, second: Write) -> None:
    """``second`` (the same key as ``first``, same batch) gets ``first``'s answer, as a replay."""
    if first.digest != second.digest:
        second.answer.set_exception(IdempotencyRefused(
            "this Idempotency-Key was used for a different request (method, path or body); use a new key for a "
            "new request", status=422, slug="idempotency-key-reused"))
        return

    def copy(done: Future[Answer]) -> None:
        error = done.exception()
        if error is not None and not isinstance(error, MessageIdCollision):
            second.answer.set_exception(error)
        elif error is not None:
            problem = problem_for(error)  # type: ignore[arg-type]
            second.answer.set_result((int(problem["status"]), problem, True))
        else:
            status, body, _replayed = done.result()
            second.answer.set_result((status, body, True))

    first.answer.add_done_callback(copy)
