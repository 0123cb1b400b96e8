"""``Idempotency-Key``: a retried write returns the first response and records nothing twice.

For each (principal, key) the ledger keeps, for :data:`WINDOW` (docs/api.md), a keyed digest of the
request (method, path, body) and, once it is done, its response *sealed* (``caseledger_idempotency``).
Both are keyed by a secret derived from the principal and the Idempotency-Key under the ledger's own
idempotency secret (random, in the key store wrapped by the key-encryption key, :data:`SECRET_SUBJECT`):
the response quotes the customer's request, and only the caller that sent it can have it answered again,
for as long as the window lasts. Not from the key alone: a client's key may be guessable (a form's id, a
counter), the row's id (a SHA-256 of principal and key) confirms a guess, and whoever reads the table
would then open the answer; with the ledger's secret they also need the key-encryption key. Rows an
earlier release sealed under the key alone (``sealed:1:``) are still answered, for their window. Rows older than the window are
deleted (:meth:`Idempotency.purge`, on writes and on ``tick``); a key used again after that is
refused (422), never run twice. A write with a key:

1. claims the key (an insert that only one caller wins); the same key with another request is
   refused (422), a key whose first request is still running is waited for, then answered;
2. runs the command in a unit of work whose *tracking record* is the key's
   (``idempotency/<sha256>``): the events and the key are committed in one transaction, and the
   tracking table's primary key refuses a second commit under the same key, whatever happens to
   the claim (a crash between commit and answer, a takeover of a stale claim);
3. stores the response, which every retry gets from then on.

A command that fails records nothing: its claim is released and a retry runs afresh. A message id
collision is the exception (it *is* recorded): its problem is stored like a response.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import Tracking

from caseledger.ledger.errors import CaseLedgerError, ConflictError, MessageIdCollision, ValidationError
from caseledger.ledger.store_ports import IDEMPOTENCY_WINDOW, IdempotencyRow, IdempotencyStore

__all__ = ["SECRET_SUBJECT", "WINDOW", "Idempotency", "IdempotencyRefused", "KeyedRequest", "request_digest"]

MAX_KEY_LENGTH = 255
STALE_AFTER = timedelta(seconds=120)  # a claim with no answer this old: its request died
WINDOW = IDEMPOTENCY_WINDOW
SEALED_PREFIX = "sealed:2:"
LEGACY_PREFIX = "sealed:1:"  # sealed under the principal and key alone (before the ledger's secret)
SECRET_SUBJECT = "ledger:idempotency"
"""The key store's subject of the ledger's idempotency secret (:meth:`DataKeys.ledger_secret`: never erased)."""


class IdempotencyRefused(ValidationError):
    """The key cannot be used for this request (reused for another one, or its first is still running)."""

    title = "Idempotency-Key refused"

    def __init__(self, message: str, *, status: int, slug: str) -> None:
        super().__init__(message)
        self.status = self.http_status = status
        self.slug = slug
        self.exit_code = 3 if status == 409 else 2  # in progress or lost: retry; reused: a new key


def request_digest(method: str, path: str, body: bytes) -> bytes:
    """What makes two requests the same: method, path and body (JSON normalised when it is JSON)."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode() if body else b""
    except ValueError:
        canonical = body
    return hashlib.sha256(method.upper().encode() + b"\0" + path.encode() + b"\0" + canonical).digest()


class KeyedRequest:
    """One write's key as the ledger keeps it: its row id, and the secret its digest and answer are keyed by
    (``secret``: the ledger's idempotency secret, given now or with :meth:`keyed_by`)."""

    __slots__ = ("_legacy", "_named", "_secret", "key_id")

    def __init__(self, principal: str, key: str, secret: bytes | None = None) -> None:
        self.key_id = Idempotency.key_id(principal, key)
        self._named = f"{principal}\0{key}".encode()
        self._legacy = hmac.digest(b"caseledger idempotency answer", self._named, "sha256")
        self._secret = b""
        if secret is not None:
            self.keyed_by(secret)

    def keyed_by(self, secret: bytes) -> KeyedRequest:
        self._secret = hmac.digest(secret, b"caseledger idempotency answer v2\0" + self._named, "sha256")
        return self

    def digest(self, request_sha256: bytes) -> bytes:
        """What the row keeps of the request: keyed, so no one can test a guessed request against it."""
        if not self._secret:
            raise RuntimeError("KeyedRequest.keyed_by(the ledger's idempotency secret) first")
        return hmac.digest(self._secret, request_sha256, "sha256")

    def kept_forms(self, request_sha256: bytes) -> tuple[bytes, ...]:
        """Every form a row may keep of this request: this release's, an earlier one's keyed and in clear."""
        return self.digest(request_sha256), hmac.digest(self._legacy, request_sha256, "sha256"), request_sha256

    def seal(self, response: Any) -> str:
        nonce = os.urandom(12)
        sealed = AESGCM(self._secret).encrypt(nonce, json.dumps(response).encode(), self.key_id.encode())
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, stored: str | None) -> Any:
        """The answer kept; a row sealed or written in clear by an earlier release reads as it was."""
        prefix = next((p for p in (SEALED_PREFIX, LEGACY_PREFIX) if stored and stored.startswith(p)), None)
        if stored is None or prefix is None:
            return json.loads(stored or "null")
        data = base64.urlsafe_b64decode(stored[len(prefix):])
        secret = self._secret if prefix == SEALED_PREFIX else self._legacy
        try:
            return json.loads(AESGCM(secret).decrypt(data[:12], data[12:], self.key_id.encode()))
        except InvalidTag:  # not this key's (cannot happen but by tampering): answer as if lost
            raise IdempotencyRefused(
                "the answer kept for this Idempotency-Key cannot be read; read the case to see what the first "
                "request did (nothing will be recorded twice)", status=409, slug="idempotency-response-lost",
            ) from None


class Idempotency:
    """Runs writes under their Idempotency-Key (see the module docstring)."""

    def __init__(self, store: IdempotencyStore, *, wait_s: float = 10.0, secret: bytes | None = None) -> None:
        self.store = store
        self.wait_s = wait_s
        self.secret = secret  # the ledger's idempotency secret; None: read from the ledger a write runs on

    @staticmethod
    def key_id(principal: str, key: str) -> str:
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise ValidationError(
                f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters, e.g. a UUID per write"
            )
        return hashlib.sha256(f"{principal}\0{key}".encode()).hexdigest()

    def run(
        self, ledger: Any, *, principal: str, key: str, digest: bytes, execute: Callable[[], tuple[int, Any]],
        problem: Callable[[CaseLedgerError], dict[str, Any]],
    ) -> tuple[int, Any, bool]:
        """(status, body, replayed): the first response of this key, running ``execute`` only once."""
        secret = self.secret if self.secret is not None else ledger.data_keys.ledger_secret(SECRET_SUBJECT)
        keyed = KeyedRequest(principal, key, secret)
        key_id, request_sha256, digest = keyed.key_id, digest, keyed.digest(digest)
        now = datetime.now(UTC)
        if not self.store.insert_idempotency(key_id, digest, now):
            row = self._existing(key_id, keyed.kept_forms(request_sha256), ledger)
            if row.status is not None:
                return row.status, keyed.open(row.response), True
            # A stale claim whose request never committed: take it over (only one caller wins).
            if not self.store.restart_idempotency(key_id, row.created_at, datetime.now(UTC)):
                row = self._existing(key_id, keyed.kept_forms(request_sha256), ledger)
                if row.status is not None:
                    return row.status, keyed.open(row.response), True
                raise self.in_progress()
        elif ledger.recorder.has_tracking_id(f"idempotency/{key_id}", 1):
            # Recorded once, and its row deleted since: the window has passed.
            self.store.release_idempotency(key_id)
            raise self.expired()
        tracking = Tracking(application_name=f"idempotency/{key_id}", notification_id=1)
        collision: MessageIdCollision | None = None
        try:
            with ledger.unit_of_work(tracking=tracking):
                try:
                    status, body = execute()
                except MessageIdCollision as error:  # recorded, not applied: commit it, then refuse
                    collision = error
        except ConflictError:
            if ledger.recorder.has_tracking_id(tracking.application_name, 1):
                # Another run of this key committed first (a takeover raced the original).
                answered = self._wait(key_id)
                if answered is not None and answered.status is not None:
                    return answered.status, keyed.open(answered.response), True
                raise self.in_progress() from None
            self.store.release_idempotency(key_id)
            raise
        except BaseException:
            self.store.release_idempotency(key_id)
            raise
        if collision is not None:
            body = problem(collision)
            self.store.complete_idempotency(key_id, int(body["status"]), keyed.seal(body))
            raise collision
        self.store.complete_idempotency(key_id, status, keyed.seal(body))
        return status, body, False

    def purge(self, now: datetime | None = None) -> int:
        """Delete the rows older than :data:`WINDOW`; how many."""
        return self.store.purge_idempotency((now or datetime.now(UTC)) - WINDOW)

    def _existing(self, key_id: str, forms: tuple[bytes, ...], ledger: Any) -> IdempotencyRow:
        """The key's row; ``forms``: the request as a row may keep it (this release's, earlier releases')."""
        row = self.store.select_idempotency(key_id)
        if row is None:  # released meanwhile: the first request failed and recorded nothing
            raise ConflictError("the first request with this Idempotency-Key failed meanwhile; retry it")
        if row.request_sha256 not in forms:
            raise IdempotencyRefused(
                "this Idempotency-Key was used for a different request (method, path or body); use a new key "
                "for a new request", status=422, slug="idempotency-key-reused",
            )
        if row.status is None:
            row = self._wait(key_id) or row
            if row.status is None and datetime.now(UTC) - row.created_at < STALE_AFTER:
                raise self.in_progress()
            if row.status is None and ledger.recorder.has_tracking_id(f"idempotency/{key_id}", 1):
                raise IdempotencyRefused(
                    "the first request with this Idempotency-Key was recorded but its response was lost; "
                    "read the case to see what it did (nothing will be recorded twice)",
                    status=409, slug="idempotency-response-lost",
                )
        return row

    def _wait(self, key_id: str) -> IdempotencyRow | None:
        """The key's row once its first request answered, or as it is after ``wait_s``."""
        deadline = time.monotonic() + self.wait_s
        row = self.store.select_idempotency(key_id)
        while row is not None and row.status is None and time.monotonic() < deadline:
            time.sleep(0.05)
            row = self.store.select_idempotency(key_id)
        return row

    @staticmethod
    def expired() -> IdempotencyRefused:
        return IdempotencyRefused(
            f"this Idempotency-Key was used more than {WINDOW.total_seconds() / 3600:g} hours ago and its answer is "
            "no longer kept; read the case to see what it did, and use a new key for a new request",
            status=422, slug="idempotency-key-expired",
        )

    @staticmethod
    def in_progress() -> IdempotencyRefused:
        return IdempotencyRefused(
            "the first request with this Idempotency-Key is still running; retry in a moment with the same key",
            status=409, slug="idempotency-in-progress",
        )
