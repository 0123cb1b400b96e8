"""Who is calling: principals, the bearer tokens the ledger issues, and OIDC JWTs checked against a JWKS.

A caller of the ledger service presents ``Authorization: Bearer <token>``; :class:`Authenticator`
turns it into a :class:`Principal` (name, role, how it was authenticated) or raises
:class:`~ledger.errors.AuthenticationError` — whose message never repeats the token. The actor of
every event a principal records is built from it (:meth:`Principal.actor`), never from the request.

Issued tokens are ``clt_`` + 43 characters (32 random bytes, base64url): high-entropy, so their
SHA-256 is what the store keeps and looks them up by; the hash found is compared again in constant
time. A revoked principal's hash is cleared, so its token can never match again.

A principal may also carry its team (an organisation unit: the queue's "my team"), its IANA time zone
and its locale (a BCP 47 tag Babel knows): the agent's pages show times in them. An issued principal's
are set by an admin (``caseledger principals add|set``); an OIDC principal's come from its token's
``zoneinfo`` and ``locale`` claims (OpenID Connect Core §5.1) and the claim ``CASELEDGER_OIDC_TEAM_CLAIM``
names (default ``team``). Each is checked the same way; a token's unusable claim is ignored, logged by
its name (never the token).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from caseledger.ledger.domain.permissions import (
    ACTOR_KIND,
    Authentication,
    Operation,
    Role,
    parse_role,
    require,
)
from caseledger.ledger.domain.values import Actor
from caseledger.ledger.errors import AuthenticationError, CaseLedgerError, ConfigurationError, ValidationError
from caseledger.ledger.settings import OidcSection
from caseledger.ledger.store_ports import PROFILE, PrincipalRow, PrincipalStore

if TYPE_CHECKING:
    from caseledger.ledger.access.jwks import JwksKeys

__all__ = [
    "Authenticator",
    "IssuedToken",
    "OidcSettings",
    "Principal",
    "PrincipalRegistry",
    "check_profile",
    "token_hash",
]

log = logging.getLogger(__name__)
_TEAM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,99}$")
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*$")

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
    team: str | None = None  # an organisation unit: the queue's "my team"
    zone: str | None = None  # IANA, e.g. Europe/Paris: the agent's pages show times in it
    locale: str | None = None  # BCP 47, e.g. fr-FR: … and in this language

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


def matching(pattern: re.Pattern[str], value: str, what: str, rule: str,
             refusal: type[CaseLedgerError] = ValidationError) -> str:
    """``value`` when ``pattern`` matches it, else ``refusal``: "``what`` 'value' must be ``rule``"."""
    if not pattern.match(value or ""):
        raise refusal(f"{what} {value!r} must be {rule}")
    return value


def check_name(name: str) -> str:
    return matching(_NAME, name, "principal name", "1-100 letters, digits, dots, dashes, underscores or @, "
                    "starting with a letter or digit, e.g. alice or crm-sync")


def check_team(team: str) -> str:
    return matching(_TEAM, team, "team", "1-100 letters, digits, spaces, dots, dashes, underscores or @, starting "
                    "with a letter or digit, e.g. billing or Support FR")


def check_zone(zone: str) -> str:
    """An IANA time zone this machine knows, e.g. Europe/Paris."""
    found = None
    if 0 < len(zone) <= 64 and ".." not in zone and not zone.startswith("/"):
        try:
            found = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            found = None
    if found is None:
        raise ValidationError(
            f"time zone {zone[:64]!r} is not an IANA zone name this machine knows: give one such as Europe/Paris, "
            "America/New_York or UTC (the list: python3 -c 'import zoneinfo; print(zoneinfo.available_timezones())')"
        )
    return zone


def check_locale(locale: str) -> str:
    """A BCP 47 tag Babel knows, written with dashes: ``fr_fr`` and ``fr-FR`` both give ``fr-FR``."""
    from babel import Locale, UnknownLocaleError  # only when a locale is given: the CLI starts without Babel

    tag = locale.replace("_", "-")
    try:
        found = Locale.parse(tag, sep="-") if _LANGUAGE_TAG.match(tag) and len(tag) <= 35 else None
    except (UnknownLocaleError, ValueError, TypeError):
        found = None
    if found is None:
        raise ValidationError(
            f"locale {locale[:35]!r} is not a language tag Babel knows: give a BCP 47 tag such as fr-FR, en-GB or de"
        )
    return "-".join(p for p in (found.language, found.script, found.territory, found.variant) if p)


_CHECKS = {"team": check_team, "zone": check_zone, "locale": check_locale}


def check_profile(profile: dict[str, str | None]) -> dict[str, str | None]:
    """Team, zone and locale checked (ValidationError saying how to fix the first wrong one); "" or None clears."""
    unknown = set(profile) - set(PROFILE)
    if unknown:
        raise ValidationError(f"unknown principal field(s) {sorted(unknown)}: a principal has {', '.join(PROFILE)}")
    return {k: _CHECKS[k](v.strip()) if v and v.strip() else None for k, v in profile.items()}


class PrincipalRegistry:
    """Adds, revokes and lists principals (``caseledger principals …`` and the admin API)."""

    def __init__(self, store: PrincipalStore) -> None:
        self.store = store

    def add(self, name: str, role: str | Role, *, now: datetime | None = None, team: str | None = None,
            zone: str | None = None, locale: str | None = None) -> IssuedToken:
        """A new principal with a fresh token; a name ever used before is refused. Nothing is written unless
        every field is valid."""
        check_name(name)
        chosen = role if isinstance(role, Role) else parse_role(role)
        profile = check_profile({"team": team, "zone": zone, "locale": locale})
        token = TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        if not self.store.insert_principal(name, chosen.value, token_hash(token), now or datetime.now(UTC),
                                           profile=profile):
            raise ValidationError(
                f"principal {name!r} exists already (or existed: names are never reused, so that an actor "
                "id names one principal); choose another name"
            )
        return IssuedToken(name, chosen, token)

    def update(self, name: str, **profile: str | None) -> PrincipalRow:
        """Change an active principal's team, zone or locale (those given; "" clears one); its row after."""
        from caseledger.ledger.errors import NotFound

        checked = check_profile(profile)
        if not checked:
            raise ValidationError("nothing to change: give --team, --zone or --locale (an empty value clears it)")
        if not self.store.update_principal(name, checked):
            raise NotFound(f"no active principal {name!r}; `caseledger principals list` shows them")
        row = self.store.select_principal(name)
        assert row is not None
        return row

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
    team_claim: str = "team"  # zoneinfo and locale are OpenID Connect's standard claims
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
            team_claim=given.get("team_claim") or env.team_claim or "team",
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
    return matching(_LABEL, label, "OIDC label", "1-64 letters, digits, dots, dashes or underscores, e.g. "
                    "idp.example.com: set CASELEDGER_OIDC_LABEL", ConfigurationError)


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
        return Principal(name=row.name, role=Role(row.role), authentication=Authentication.TOKEN, team=row.team,
                         zone=row.zone, locale=row.locale)

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
        profile = claimed_profile(claims, {"team": oidc.team_claim, "zone": "zoneinfo", "locale": "locale"})
        return Principal(name=name, role=roles.pop(), authentication=Authentication.OIDC, **profile)


def claimed_profile(claims: dict[str, Any], names: dict[str, str]) -> dict[str, str | None]:
    """A token's team, zone and locale (field → claim name); an unusable claim is ignored and logged by its name."""
    found: dict[str, str | None] = {}
    for field, claim in names.items():
        value = claims.get(claim)
        if value is None:
            continue
        try:
            found[field] = check_profile({field: value})[field] if isinstance(value, str) else _refuse(field)
        except ValidationError:
            log.warning("OIDC claim %r ignored: not a usable %s (the token is otherwise accepted)", claim, field)
    return found


def _refuse(field: str) -> str:
    raise ValidationError(f"not a text {field}")
