"""The live page's browser sessions: ``/login`` trades a bearer token for a server-side session.

The cookie is never the token: it carries a random session id (``cls_`` + 43 characters), and the
ledger keeps only its SHA-256 (``caseledger_sessions``), whose principal and until when
(:data:`SESSION_TTL`, or an OIDC token's own expiry if sooner), and the principal's team, zone and locale
(an issued principal's read again at each use, an OIDC principal's as its token said). A session ends when it expires or
when its principal is revoked (the revocation deletes it; each use checks the principal again).

Login is protected against cross-site request forgery (a site signing a victim in as the attacker):
``GET /login`` sets a pre-session cookie (random, HttpOnly, SameSite=Strict, path ``/login``) and puts
the same value in the form; ``POST /login`` needs both to match, and refuses a request whose
``Origin`` is another site's or whose ``Sec-Fetch-Site`` says cross-site.

The case page's forms (:mod:`ledger.service.case_actions`) are the only writes a session may make,
and they are protected the same three ways: the cookie is SameSite=Strict (a browser does not send
it with a request another site starts); each form carries :func:`form_token`, an HMAC of the session
id under a secret of the ledger's key store that no page of another origin can read or compute (the
id is HttpOnly, the secret never leaves the server); and :func:`check_form_origin` refuses a
cross-site ``Origin`` or ``Sec-Fetch-Site``. A bearer token is never sent by a browser on its own, so a
form posted with ``Authorization`` needs no token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

from caseledger.ledger.access.principals import Principal
from caseledger.ledger.domain.permissions import Authentication, Role
from caseledger.ledger.errors import AuthenticationError, PermissionDenied
from caseledger.ledger.store_ports import PrincipalStore

__all__ = ["CSRF_SUBJECT", "LOGIN_COOKIE", "SESSION_COOKIE", "SESSION_TTL", "Sessions", "check_form_origin",
           "check_login_origin", "form_token", "new_login_nonce"]

SESSION_COOKIE = "caseledger_session"
LOGIN_COOKIE = "caseledger_login"
SESSION_TTL = timedelta(hours=8)
LOGIN_TTL_S = 600  # the sign-in form is good for 10 minutes
_PREFIX = "cls_"
CSRF_SUBJECT = "ledger:page-forms"
"""The key store's subject of the secret the forms' tokens are keyed by (:meth:`DataKeys.ledger_secret`)."""


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).digest()


class Sessions:
    """Opens and reads browser sessions in the principals' database."""

    def __init__(self, store: PrincipalStore) -> None:
        self.store = store

    def open(self, principal: Principal, *, token: str, now: datetime | None = None) -> tuple[str, int]:
        """A new session for ``principal`` (signed in with ``token``): (its id, its lifetime in seconds)."""
        now = now or datetime.now(UTC)
        expires = now + SESSION_TTL
        if principal.authentication is Authentication.OIDC:
            expires = min(expires, _jwt_expiry(token) or expires)
        session_id = _PREFIX + secrets.token_urlsafe(32)
        self.store.insert_session(_digest(session_id), principal.name, principal.role.value,
                                  principal.authentication.value, now, expires,
                                  profile={"team": principal.team, "zone": principal.zone, "locale": principal.locale})
        return session_id, max(1, int((expires - now).total_seconds()))

    def principal(self, session_id: str, *, now: datetime | None = None) -> Principal:
        """The principal of a live session; AuthenticationError if it is unknown, expired or revoked."""
        if not session_id.startswith(_PREFIX) or len(session_id) > 100:
            raise AuthenticationError("no valid session: sign in again at /login")
        row = self.store.select_session(_digest(session_id))
        if row is None or row.expires_at <= (now or datetime.now(UTC)):
            raise AuthenticationError("the session has ended: sign in again at /login")
        if row.authentication == Authentication.TOKEN.value and not row.principal_active:
            raise AuthenticationError("the session's principal was revoked: ask an admin for a new token")
        return Principal(name=row.name, role=Role(row.role), authentication=Authentication(row.authentication),
                         team=row.team, zone=row.zone, locale=row.locale)

    def close(self, session_id: str) -> None:
        self.store.delete_session(_digest(session_id))


def _jwt_expiry(token: str) -> datetime | None:
    import jwt

    try:  # the token was verified by the authenticator just before; only its exp is read here
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
        return datetime.fromtimestamp(int(exp), UTC) if exp is not None else None
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError):
        return None


def new_login_nonce() -> str:
    """The pre-session value that binds a sign-in form to the browser that fetched it."""
    return secrets.token_urlsafe(32)


def _same_site(origin: str | None, fetch_site: str | None, own_origin: str) -> bool:
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    # "null": what a browser sends from a page with Referrer-Policy: no-referrer, as the pages here have;
    # a cross-site form still fails the Sec-Fetch-Site check and lacks the SameSite=Strict cookie.
    return origin is None or origin == "null" or origin.rstrip("/") == own_origin


def check_login_origin(*, nonce_cookie: str | None, nonce_form: str | None, origin: str | None,
                       fetch_site: str | None, own_origin: str) -> None:
    """Refuse a sign-in that does not come from this server's own form (login CSRF)."""
    if not _same_site(origin, fetch_site, own_origin):
        raise AuthenticationError("sign-in refused: it came from another site; open /login on this server")
    if not nonce_cookie or not nonce_form or not hmac.compare_digest(nonce_cookie.encode(), nonce_form.encode()):
        raise AuthenticationError("sign-in refused: the form has expired or was not this server's; reload /login")


def form_token(session_id: str, secret: bytes) -> str:
    """The token a session's forms carry: HMAC-SHA256 of the session id under the ledger's forms secret."""
    mac = hmac.new(secret, b"caseledger-form\0" + session_id.encode("utf-8", "replace"), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def check_form_origin(*, session_id: str, token: str | None, secret: bytes, origin: str | None,
                      fetch_site: str | None, own_origin: str) -> None:
    """Refuse a form posted with a session that this server's page did not send (CSRF); PermissionDenied."""
    if not _same_site(origin, fetch_site, own_origin):
        raise PermissionDenied("refused: the form was sent from another site; act from the case page on this server")
    expected = form_token(session_id, secret)
    if not token or not hmac.compare_digest(expected.encode(), token.encode("utf-8", "replace")):
        raise PermissionDenied("refused: the form is not this session's (reload the case page and send it again)")
