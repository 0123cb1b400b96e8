"""Who is calling, remembered for a moment: the service's cache of principals by issued token.

Looking a token up in the principal table on every request cost a database read and, because it
ran in a thread of its own, a second thread hop per request. A principal found by its issued token
is kept ``TTL_S`` seconds in this process, so most requests authenticate on the event loop without
touching the database. Revocation stays in force:

- at once in this process (``DELETE /v1/principals/NAME`` forgets the name here);
- within ``TTL_S`` in every other process (another worker, ``caseledger principals revoke``):
  no entry outlives it, and an entry is only ever made from a fresh lookup.

JWTs are not kept: they are checked on every request (the authenticator and its JWKS cache).
Entries are keyed by the token's SHA-256, so this cache holds no token.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

from caseledger.ledger.access.principals import TOKEN_PREFIX, Principal

__all__ = ["TTL_S", "Callers"]

TTL_S = 1.0
MAX_ENTRIES = 10_000


class Callers:
    """Principals by the hash of their issued token, each kept ``ttl_s`` seconds (see the module docstring)."""

    def __init__(self, authenticate: Callable[[str | None], Principal], *, ttl_s: float = TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._authenticate = authenticate
        self.ttl_s = ttl_s
        self._clock = clock
        self._known: dict[bytes, tuple[Principal, float]] = {}
        self._forgotten: dict[str, float] = {}  # name → when it was revoked here (a lookup under way may predate it)
        self._lock = threading.Lock()

    def cached(self, authorization: str | None) -> Principal | None:
        """The principal of this header if it was authenticated less than ``ttl_s`` ago (no I/O: event loop)."""
        key = _key(authorization)
        if key is None:
            return None
        found = self._known.get(key)
        if found is None or self._clock() >= found[1]:
            return None
        return found[0]

    def authenticate(self, authorization: str | None) -> Principal:
        """Authenticate against the store (blocking), and remember an issued token's principal."""
        started = self._clock()
        principal = self._authenticate(authorization)
        key = _key(authorization)
        if key is not None:
            with self._lock:
                if self._forgotten.get(principal.name, float("-inf")) >= started:
                    return principal  # revoked while it was being looked up: answered, not kept
                if len(self._known) >= MAX_ENTRIES:
                    now = self._clock()
                    self._known = {k: v for k, v in self._known.items() if v[1] > now}
                    if len(self._known) >= MAX_ENTRIES:
                        self._known.clear()
                self._known[key] = (principal, started + self.ttl_s)
        return principal

    def forget(self, name: str) -> None:
        """Forget every entry of this principal (it was just revoked in this process)."""
        with self._lock:
            now = self._clock()
            self._known = {k: v for k, v in self._known.items() if v[0].name != name}
            self._forgotten = {n: t for n, t in self._forgotten.items() if t > now - 60 * self.ttl_s}
            self._forgotten[name] = now


def _key(authorization: str | None) -> bytes | None:
    if not authorization:
        return None
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential.startswith(TOKEN_PREFIX):
        return None
    return hashlib.sha256(credential.encode()).digest()
