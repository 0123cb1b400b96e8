"""Who is calling: principals, the bearer tokens the ledger issues, and OIDC JWTs checked against a JWKS.

A caller of the ledger service presents ``Authorization: Bearer <token>``; :class:`Authenticator`
turns it into a :class:`Principal` (name, role, how it was authenticated) or raises
:class:`~ledger.errors.AuthenticationError` — whose message never repeats the token. The actor of
every event a principal records is built from it (:meth:`Principal.actor`), never from the request.

Issued tokens are ``clt_`` + 43 characters (32 random bytes, base64url): high-entropy, so their
SHA-256 is what the store keeps and looks them up by; the hash found is compared again in constant
time. A revoked principal's hash is cleared, so its token can never match again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from caseledger.ledger.domain.permissions import (
    ACTOR_KIND,
    Authentication,
    Operation,
    Role,
    parse_role,
    require,
)
from caseledger.ledger.domain.values import Actor
from caseledger.ledger.errors import AuthenticationError, ConfigurationError, ValidationError
from caseledger.ledger.settings import OidcSection
from caseledger.ledger.store_ports import PrincipalRow, PrincipalStore

if TYPE_CHECKING:
    from caseledger.ledger.access.jwks import JwksKeys

__all__ = [
    "Authenticator",
    "IssuedToken",
    "OidcSettings",
    "Principal",
    "PrincipalRegistry",
    "token_hash",
]

TOKEN_PREFIX = "clt_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
_TOKEN = re.compile(r"^clt_[A-Za-z0-9_-]{43}$")


def token_hash(token: str) -> bytes:
    """What the store keeps of an issued token: SHA-256 of its text."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, kw_only=True)
class Principal:
    """An authenticated caller: its name (the actor id of its events), role, and how it proved it."""

    name: str
    role: Role
    authentication: Authentication

    def actor(self) -> Actor:
        """The actor of the events this principal records: its name, its role's kind, how it was authenticated."""
        return Actor(kind=ACTOR_KIND[self.role], id=self.name, authentication=self.authentication.value)

    def relaying(self, actor: Actor) -> Actor:
        """The actor of an event a principal relays for someone else (a customer's contact through an adapter)."""
        return Actor(kind=actor.kind, id=actor.id, authentication=self.authentication.value, principal=self.name)

    def require(self, operation: Operation) -> None:
        """Refuse (PermissionDenied) unless this principal's role may perform ``operation``."""
        require(self.role, operation, name=self.name)


@dataclass(frozen=True)
class IssuedToken:
    """A new principal and its token: shown once, never stored."""

    name: str
    role: Role
    token: str


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise ValidationError(
            f"principal name {name!r} must be 1-100 letters, digits, dots, dashes, underscores or @, "
            "starting with a letter or digit, e.g. alice or crm-sync"
        )
    return name


class PrincipalRegistry:
    """Adds, revokes and lists principals (``caseledger principals …`` and the admin API)."""

    def __init__(self, store: PrincipalStore) -> None:
        self.store = store

    def add(self, name: str, role: str | Role, *, now: datetime | None = None) -> IssuedToken:
        """A new principal with a fresh token; a name ever used before is refused."""
        check_name(name)
        chosen = role if isinstance(role, Role) else parse_role(role)
        token = TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        if not self.store.insert_principal(name, chosen.value, token_hash(token), now or datetime.now(UTC)):
            raise ValidationError(
                f"principal {name!r} exists already (or existed: names are never reused, so that an actor "
                "id names one principal); choose another name"
            )
        return IssuedToken(name, chosen, token)

    def revoke(self, name: str, *, now: datetime | None = None) -> None:
        if not self.store.revoke_principal(name, now or datetime.now(UTC)):
            from caseledger.ledger.errors import NotFound

            raise NotFound(f"no active principal {name!r}; `caseledger principals list` shows them")

    def list(self) -> list[PrincipalRow]:
        return self.store.select_principals()


@dataclass(frozen=True, kw_only=True)
class OidcSettings:
    """An identity provider whose JWTs the ledger accepts (CASELEDGER_OIDC_* environment)."""

    jwks_url: str
    issuer: str
    audience: str
    roles_claim: str = "roles"
    name_claim: str = "sub"
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    leeway_s: int = 30
    label: str = ""  # the namespace of this issuer's principals (CASELEDGER_OIDC_LABEL); "": from the issuer URL

    def principal_name(self, subject: str) -> str:
        """The name an OIDC subject acts under: ``LABEL/SUBJECT``. An issued name cannot hold a ``/``, so no JWT
        acts as an issued principal, and another issuer (another label) names its subjects apart."""
        return f"{self.label or issuer_label(self.issuer)}/{subject}"

    @classmethod
    def resolve(cls, settings: OidcSection | None = None, **given: Any) -> OidcSettings | None:
        """From keyword arguments, else ``settings`` (the environment); None when no JWKS URL is configured."""
        env = settings or OidcSection()
        jwks = given.get("jwks_url") or env.jwks_url
        if not jwks:
            return None
        issuer = given.get("issuer") or env.issuer
        audience = given.get("audience") or env.audience
        if not issuer or not audience:
            raise ConfigurationError(
                "OIDC needs an issuer and an audience besides the JWKS URL: set CASELEDGER_OIDC_ISSUER and "
                "CASELEDGER_OIDC_AUDIENCE (the iss and aud the ledger's tokens carry)"
            )
        return cls(
            jwks_url=jwks, issuer=issuer, audience=audience,
            roles_claim=given.get("roles_claim") or env.roles_claim or "roles",
            name_claim=given.get("name_claim") or env.name_claim or "sub",
            label=check_label(given.get("label") or env.label or issuer_label(issuer)),
        )


_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def issuer_label(issuer: str) -> str:
    """The default label of an issuer: its URL's host and path, e.g. ``login.example.com.tenant-1`` for
    ``https://login.example.com/tenant-1/``."""
    parts = urlsplit(issuer)
    text = ".".join(x for x in (parts.netloc, *parts.path.split("/")) if x) if parts.netloc else issuer
    return re.sub(r"[^A-Za-z0-9._-]", "-", text.lower()).lstrip("._-")[:64] or "oidc"


def check_label(label: str) -> str:
    if not _LABEL.match(label):
        raise ConfigurationError(
            f"OIDC label {label!r} must be 1-64 letters, digits, dots, dashes or underscores, e.g. idp.example.com: "
            "set CASELEDGER_OIDC_LABEL"
        )
    return label


class Authenticator:
    """Turns an ``Authorization`` header into a principal, or refuses with AuthenticationError."""

    def __init__(self, store: PrincipalStore, *, oidc: OidcSettings | None = None) -> None:
        self.store = store
        self.oidc = oidc
        self._jwks: JwksKeys | None = None
        self._jwks_lock = threading.Lock()

    def _jwks_keys(self) -> JwksKeys:
        """The identity provider's keys (ledger.jwks: expiring, rate-limited, never waited on by many)."""
        with self._jwks_lock:
            if self._jwks is None:
                from caseledger.ledger.access.jwks import JwksKeys

                assert self.oidc is not None
                self._jwks = JwksKeys(self.oidc.jwks_url)
            return self._jwks

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise AuthenticationError("no credentials: send Authorization: Bearer <token>")
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise AuthenticationError("malformed Authorization header: send Authorization: Bearer <token>")
        if credential.startswith(TOKEN_PREFIX):
            return self._issued(credential)
        if credential.count(".") == 2:
            return self._jwt(credential)
        raise AuthenticationError("malformed bearer token: neither a token the ledger issued nor a JWT")

    def _issued(self, token: str) -> Principal:
        if not _TOKEN.match(token):
            raise AuthenticationError("malformed bearer token: a ledger token is clt_ and 43 base64url characters")
        digest = token_hash(token)
        row = self.store.select_principal_by_token(digest)
        # The lookup is by hash (a token's hash tells nothing of other tokens); compare again in constant time.
        if row is None or row.token_sha256 is None or not hmac.compare_digest(row.token_sha256, digest):
            raise AuthenticationError("unknown or revoked token: ask an admin for a token (caseledger principals add)")
        if row.revoked_at is not None:
            raise AuthenticationError("revoked token: ask an admin for a new one")
        return Principal(name=row.name, role=Role(row.role), authentication=Authentication.TOKEN)

    def _jwt(self, token: str) -> Principal:
        oidc = self.oidc
        if oidc is None:
            raise AuthenticationError("a JWT was given but this ledger accepts no OIDC tokens (no JWKS configured)")
        import jwt

        try:
            key, algorithm = self._jwks_keys().signing_key(token, algorithms=oidc.algorithms)
            claims = jwt.decode(
                token, key, algorithms=[algorithm], audience=oidc.audience, issuer=oidc.issuer,
                leeway=oidc.leeway_s, options={"require": ["exp", "iss", "aud", oidc.name_claim]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("expired JWT: get a new one from the identity provider") from None
        except (jwt.PyJWTError, ValueError, TypeError) as error:
            # PyJWT's messages name claims and keys, never the token itself.
            raise AuthenticationError(f"JWT refused: {error}") from None
        name = str(claims.get(oidc.name_claim, ""))
        try:
            check_name(name)
        except ValidationError:
            raise AuthenticationError(f"JWT refused: its {oidc.name_claim} claim is not a usable principal name") from None
        name = oidc.principal_name(name)  # the issuer's namespace: never an issued principal's name
        raw = claims.get(oidc.roles_claim)
        values = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
        roles = {r for r in Role if r.value in {str(v).lower() for v in values}}
        if len(roles) != 1:
            raise AuthenticationError(
                f"JWT refused: its {oidc.roles_claim!r} claim must name exactly one caseledger role "
                f"({', '.join(r.value for r in Role)}); it names {len(roles)}"
            )
        return Principal(name=name, role=roles.pop(), authentication=Authentication.OIDC)
