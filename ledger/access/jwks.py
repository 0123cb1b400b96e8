"""Which keys sign the identity provider's JWTs: its JWKS, kept five minutes, fetched rarely and never waited on.

A JWKS is fetched when a token names a key id the ledger does not hold (a rotated key), and again
before the keys are :data:`LIFESPAN_S` old; a key the provider removed is trusted at most that long.
Fetching is guarded, because anyone can send a token naming any key id:

- at most one fetch at a time, in a thread of its own, with a short timeout (:data:`FETCH_TIMEOUT_S`);
  the request that starts it waits at most that long, every other request that would need it is
  refused at once ("try again later"), so a hung provider never holds the request threads;
- at most one fetch per :data:`MIN_INTERVAL_S`, and none for :data:`COOLDOWN_S` after a failure;
- a key is used only with the algorithm of the token, and only if the key is of that algorithm's
  type (an EC key named by an RS256 token is refused, not a TypeError).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from caseledger.ledger.errors import AuthenticationError

__all__ = ["COOLDOWN_S", "FETCH_TIMEOUT_S", "LIFESPAN_S", "MIN_INTERVAL_S", "JwksKeys"]

LIFESPAN_S = 300.0  # a fetched key is trusted this long (docs/api.md: 5 minutes)
REFRESH_AFTER_S = 240.0  # keys this old are fetched again in the background while still in use
MIN_INTERVAL_S = 10.0  # between two fetches
COOLDOWN_S = 30.0  # after a failed fetch
FETCH_TIMEOUT_S = 3.0
MAX_JWKS_BYTES = 1_048_576


def fetch_jwks(url: str, timeout: float) -> dict[str, Any]:
    """The JWKS document at ``url`` (at most 1 MiB)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "caseledger"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        data = answer.read(MAX_JWKS_BYTES + 1)
    if len(data) > MAX_JWKS_BYTES:
        raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
    document = json.loads(data)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("the JWKS has no keys list")
    return document


class JwksKeys:
    """The signing keys of one identity provider (see the module docstring)."""

    def __init__(self, url: str, *, fetch: Callable[[str, float], dict[str, Any]] = fetch_jwks,
                 clock: Callable[[], float] | None = None, fetch_timeout_s: float = FETCH_TIMEOUT_S) -> None:
        self.url = url
        self._fetch = fetch
        self._clock = clock
        self.fetch_timeout_s = fetch_timeout_s
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        self._next_fetch_at = 0.0
        self._failed = False
        self._inflight: threading.Event | None = None
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._clock() if self._clock is not None else time.monotonic()

    def signing_key(self, token: str, *, algorithms: tuple[str, ...]) -> tuple[Any, str]:
        """(the key, its algorithm) for checking ``token``'s signature; AuthenticationError when there is none."""
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise AuthenticationError(f"JWT refused: {error}") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in algorithms:
            raise AuthenticationError(f"JWT refused: its algorithm must be one of {', '.join(algorithms)}")
        if not isinstance(kid, str) or not kid or len(kid) > 200:
            raise AuthenticationError("JWT refused: its header names no key id (kid)")
        jwk = self._jwk(kid)
        if jwk.get("alg") not in (None, algorithm) or jwk.get("use") not in (None, "sig"):
            raise AuthenticationError(f"JWT refused: key {kid!r} is not a signing key for {algorithm}")
        try:
            return jwt.PyJWK(jwk, algorithm=algorithm).key, algorithm
        except (jwt.PyJWTError, ValueError, TypeError, KeyError, AttributeError):
            raise AuthenticationError(f"JWT refused: key {kid!r} is not a key for {algorithm}") from None

    def _jwk(self, kid: str) -> dict[str, Any]:
        now = self.now()
        with self._lock:
            age = None if self._fetched_at is None else now - self._fetched_at
            usable = age is not None and age < LIFESPAN_S
            if usable and kid in self._keys:
                if age is not None and age >= REFRESH_AFTER_S:
                    self._start_fetch(now)  # keep the keys fresh; this request does not wait
                return self._keys[kid]
            started = self._start_fetch(now)
        if started is None:
            raise AuthenticationError("JWT refused: its signing key is not known yet and the identity provider's "
                                      "keys cannot be fetched right now; try again later")
        started.wait(self.fetch_timeout_s)
        with self._lock:
            usable = self._fetched_at is not None and self.now() - self._fetched_at < LIFESPAN_S
            if usable and kid in self._keys:
                return self._keys[kid]
            failed = self._failed or not started.is_set()
        if failed:
            raise AuthenticationError("the identity provider's JWKS cannot be fetched; try again later")
        raise AuthenticationError(f"JWT refused: the identity provider has no key {kid!r}")

    def _start_fetch(self, now: float) -> threading.Event | None:
        """A fetch in a thread of its own, if none is under way and the rate allows one (lock held)."""
        if self._inflight is not None or now < self._next_fetch_at:
            return None
        done = self._inflight = threading.Event()
        self._next_fetch_at = now + MIN_INTERVAL_S
        threading.Thread(target=self._run_fetch, args=(done,), name="caseledger-jwks", daemon=True).start()
        return done

    def _run_fetch(self, done: threading.Event) -> None:
        keys: dict[str, dict[str, Any]] | None = None
        try:
            document = self._fetch(self.url, self.fetch_timeout_s)
            keys = {str(k["kid"]): k for k in document["keys"] if isinstance(k, dict) and isinstance(k.get("kid"), str)}
        except Exception:  # any failure of the provider: refuse for a while, never raise into a request
            keys = None
        with self._lock:
            if keys is None:
                self._failed = True
                self._next_fetch_at = self.now() + COOLDOWN_S
            else:
                self._failed = False
                self._keys, self._fetched_at = keys, self.now()
            self._inflight = None
            done.set()
