"""The identity provider's keys: they expire as documented, fetches are rate-limited (failures too), a hung
provider never holds the request threads, and a key of the wrong type is a 401, never a TypeError."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from caseledger.ledger.access.principals import Authenticator, OidcSettings
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.permissions import Role
from caseledger.ledger.errors import AuthenticationError
from tests.support.service_server import IdentityProvider, start_service, stop_service

CAROL = "idp.test.example/carol"  # an OIDC subject is named in its issuer's namespace


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider().start()
    yield provider
    provider.hang = None
    provider.stop()


@pytest.fixture
def authenticator(idp: IdentityProvider, sqlite_ledger: CaseLedger) -> Authenticator:
    return Authenticator(sqlite_ledger.principal_store, oidc=OidcSettings(
        jwks_url=idp.url, issuer=idp.issuer, audience=idp.audience))


class Later:
    """``time.monotonic`` pushed forward by the test (the clock JWKS caches read)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = 0.0
        real = time.monotonic
        monkeypatch.setattr(time, "monotonic", lambda: real() + self.offset)


def test_a_key_the_provider_removed_is_not_trusted_after_five_minutes(
        idp: IdentityProvider, authenticator: Authenticator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding: a JWKS key removed by the IdP was still trusted 335 s later (docs say 5 min)."""
    later = Later(monkeypatch)
    assert authenticator.authenticate(f"Bearer {idp.token('carol', ['agent'])}").name == CAROL
    idp.serves_own_key = False  # the provider rotates its key out
    later.offset = 60
    assert authenticator.authenticate(f"Bearer {idp.token('carol', ['agent'])}").name == CAROL  # within 5 min
    later.offset = 301
    with pytest.raises(AuthenticationError):
        for _ in range(20):  # a refresh may be under way for a moment: the key must be gone once it is done
            authenticator.authenticate(f"Bearer {idp.token('carol', ['agent'])}")
            time.sleep(0.05)


def test_an_oidc_principal_takes_its_zone_locale_and_team_from_its_claims(
        idp: IdentityProvider, sqlite_ledger: CaseLedger, caplog: pytest.LogCaptureFixture) -> None:
    """Finding: an OIDC principal had no team, zone or locale. OpenID Connect's ``zoneinfo`` and ``locale`` and the
    configured team claim give them, checked as ``principals add`` checks them; a bad one is ignored and logged by
    the claim's name, never with the token."""
    authenticator = Authenticator(sqlite_ledger.principal_store, oidc=OidcSettings.resolve(
        jwks_url=idp.url, issuer=idp.issuer, audience=idp.audience, team_claim="groups_team"))
    good = idp.token("carol", ["agent"], zoneinfo="America/Montreal", locale="fr-CA", groups_team="billing")
    who = authenticator.authenticate(f"Bearer {good}")
    assert (who.name, who.team, who.zone, who.locale) == (CAROL, "billing", "America/Montreal", "fr-CA")
    caplog.set_level("WARNING", logger="caseledger.ledger.access.principals")
    bad = idp.token("carol", ["agent"], zoneinfo="Mars/Olympus", locale=["fr"], groups_team="-", team="loans")
    who = authenticator.authenticate(f"Bearer {bad}")
    assert (who.name, who.role, who.team, who.zone, who.locale) == (CAROL, Role.AGENT, None, None, None)
    logged = caplog.text
    assert all(f"'{claim}' ignored" in logged for claim in ("zoneinfo", "locale", "groups_team"))
    assert bad not in logged and bad.split(".")[1] not in logged and "Mars/Olympus" not in logged


def test_a_failed_fetch_starts_a_cooldown(idp: IdentityProvider, authenticator: Authenticator) -> None:
    """Finding: a failed fetch started no cooldown: every token with an unknown kid fetched again."""
    idp.status = 500
    for n in range(10):
        with pytest.raises(AuthenticationError, match="try again later"):
            authenticator.authenticate(f"Bearer {idp.token('carol', ['agent'], kid=f'unknown-{n}')}")
    assert idp.fetches == 1


def test_unknown_key_ids_fetch_at_most_once_per_interval(idp: IdentityProvider, authenticator: Authenticator) -> None:
    assert authenticator.authenticate(f"Bearer {idp.token('carol', ['agent'])}").name == CAROL
    for n in range(10):
        with pytest.raises(AuthenticationError):
            authenticator.authenticate(f"Bearer {idp.token('carol', ['agent'], kid=f'unknown-{n}')}")
    assert idp.fetches <= 2  # the first key, then one look for the unknown ones


def test_a_key_id_naming_a_key_of_another_type_is_refused(idp: IdentityProvider, authenticator: Authenticator) -> None:
    """Finding: a JWT whose kid named a key of another type was a 500 (TypeError), without any valid token."""
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    idp.extra_keys = [{**ec_public, "kid": "ec-1", "use": "sig"}]
    forged = idp.token("carol", ["admin"], kid="ec-1")  # RS256, signed with some RSA key, naming the EC key
    with pytest.raises(AuthenticationError, match="JWT refused"):
        authenticator.authenticate(f"Bearer {forged}")
    confused = jwt.encode({"iss": idp.issuer, "aud": idp.audience, "sub": "carol", "exp": int(time.time()) + 60,
                           "roles": ["admin"]}, "x" * 32, algorithm="HS256", headers={"kid": idp.kid})
    for token in (confused, "e30.e30.", "x.y.z", "eyJhbGciOiJub25lIn0.e30."):
        with pytest.raises(AuthenticationError):
            authenticator.authenticate(f"Bearer {token}")


def test_a_hung_provider_never_holds_the_request_threads(tmp_path: Path) -> None:
    """Finding: a hung IdP plus JWTs with unknown kids held all 8 worker threads (an issued-token request took
    8.7 s). Now one request waits for the one fetch, at most a few seconds; the others are refused at once."""
    idp = IdentityProvider().start()
    service = start_service(tmp_path, env={"CASELEDGER_OIDC_JWKS_URL": idp.url, "CASELEDGER_OIDC_ISSUER": idp.issuer,
                                           "CASELEDGER_OIDC_AUDIENCE": idp.audience})
    try:
        with ThreadPoolExecutor(16) as pool, service.client(Role.AGENT) as agent:  # every worker thread started
            assert set(pool.map(lambda _: agent.get("/v1/whoami").status_code, range(32))) == {200}
        idp.hang = threading.Event()
        idp.hang.set()
        tokens = [idp.token("x", ["agent"], kid=f"k-{n}") for n in range(24)]

        def unknown(n: int) -> tuple[int, float]:
            started = time.monotonic()
            answer = httpx.get(f"{service.url}/v1/whoami", timeout=30, headers={"Authorization": f"Bearer {tokens[n]}"})
            return answer.status_code, time.monotonic() - started

        with ThreadPoolExecutor(24) as pool:
            attackers = [pool.submit(unknown, n) for n in range(24)]
            time.sleep(0.3)
            started = time.monotonic()
            with service.client(Role.AGENT) as agent:
                assert agent.get("/v1/whoami").status_code == 200
            issued_took = time.monotonic() - started
            results = [a.result() for a in attackers]
        # Generous bounds for a loaded 2-core machine: before, the threads were held 10 s (the fetch timeout) each.
        assert issued_took < 2.5, f"an issued-token request took {issued_took:.1f} s"
        assert all(status == 401 for status, _ in results)
        slow = [took for _, took in results if took > 2.5]
        assert len(slow) <= 1 and all(took < 7 for took in slow), sorted(t for _, t in results)
        assert idp.fetches <= 1
    finally:
        idp.hang.clear()
        stop_service(service)
        idp.stop()

