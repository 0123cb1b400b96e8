"""Principals, adapter keys and idempotency keys on both stores (SQLite and a real PostgreSQL)."""

from __future__ import annotations

import hashlib
import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caseledger.ledger.access.principals import Authenticator, PrincipalRegistry, token_hash
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.permissions import PERMISSIONS, Authentication, Operation, Role, allowed
from caseledger.ledger.errors import AuthenticationError, NotFound, ValidationError
from caseledger.ledger.intake.signatures import AdapterKeys
from caseledger.ledger.service.idempotency import Idempotency, IdempotencyRefused


def test_tokens_are_issued_once_kept_as_hashes_and_revoked(make_ledger: Callable[..., CaseLedger]) -> None:
    ledger = make_ledger()
    registry = PrincipalRegistry(ledger.principal_store)
    issued = registry.add("alice", "agent")
    auth = Authenticator(ledger.principal_store)
    who = auth.authenticate(f"Bearer {issued.token}")
    assert (who.name, who.role, who.authentication) == ("alice", Role.AGENT, Authentication.TOKEN)
    assert str(who.actor()) == "agent:alice" and who.actor().authentication == "token"
    (row,) = registry.list()
    assert row.token_sha256 == token_hash(issued.token) and issued.token.encode() not in repr(row).encode()
    with pytest.raises(ValidationError, match="exists already"):
        registry.add("alice", "admin")
    with pytest.raises(ValidationError, match="unknown role"):
        registry.add("bob", "root")
    registry.revoke("alice")
    with pytest.raises(AuthenticationError, match="unknown or revoked") as refused:
        auth.authenticate(f"Bearer {issued.token}")
    assert issued.token not in str(refused.value)
    with pytest.raises(NotFound):
        registry.revoke("alice")
    with pytest.raises(ValidationError, match="exists already"):  # a name is never reused
        registry.add("alice", "agent")


def test_adapter_keys_on_both_stores(make_ledger: Callable[..., CaseLedger], tmp_path: object) -> None:
    from pathlib import Path

    ledger = make_ledger()
    keys = AdapterKeys(ledger.storage.adapter_keys())
    row = keys.add("mail-1", ["email", "SMS"], private_key_out=Path(str(tmp_path)) / "k.pem")
    assert row.channels == ("email", "sms") and len(row.public_key) == 32
    keys.revoke("mail-1")
    assert keys.list()[0].revoked_at is not None
    with pytest.raises(ValidationError, match="never overwrites"):
        keys.add("mail-2", ["email"], private_key_out=Path(str(tmp_path)) / "k.pem")


def test_a_reused_key_with_another_request_is_refused(make_ledger: Callable[..., CaseLedger]) -> None:
    ledger = make_ledger()
    idem = Idempotency(ledger.storage.idempotency(), wait_s=0.1)
    calls = []

    def execute() -> tuple[int, object]:
        calls.append(1)
        return 201, {"n": len(calls)}

    first = idem.run(ledger, principal="p", key="k", digest=b"a" * 32, execute=execute, problem=lambda e: {})
    again = idem.run(ledger, principal="p", key="k", digest=b"a" * 32, execute=execute, problem=lambda e: {})
    assert first == (201, {"n": 1}, False) and again == (201, {"n": 1}, True) and len(calls) == 1
    # Keys are per principal: another principal's same key is another key.
    other = idem.run(ledger, principal="q", key="k", digest=b"a" * 32, execute=execute, problem=lambda e: {})
    assert other == (201, {"n": 2}, False)
    with pytest.raises(IdempotencyRefused, match="different request"):
        idem.run(ledger, principal="p", key="k", digest=b"b" * 32, execute=execute, problem=lambda e: {})
    # The tracking record committed with the write makes a second commit under the key impossible.
    assert ledger.recorder.has_tracking_id(f"idempotency/{Idempotency.key_id('p', 'k')}", 1)


# -- properties -------------------------------------------------------------------------------------------


def test_the_matrix_keeps_its_promises() -> None:
    decisions = {Operation.ACTION_APPROVE, Operation.ACTION_REJECT}
    assert not PERMISSIONS[Role.AUTOMATION] & decisions
    assert Operation.ACTION_PROPOSE in PERMISSIONS[Role.AUTOMATION]
    reads = {o for o in Operation if o.value.endswith((".read", ".export", ".verify"))}
    assert PERMISSIONS[Role.AUDITOR] <= reads
    assert all(allowed(Role.ADMIN, o) for o in (Operation.PRINCIPALS_MANAGE,))
    assert not any(allowed(r, Operation.PRINCIPALS_MANAGE) for r in Role if r is not Role.ADMIN)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.printable, max_size=120))
def test_no_made_up_credential_authenticates(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    from caseledger.ledger.settings import LedgerSettings

    ledger = _shared_ledger(tmp_path_factory, LedgerSettings)
    auth = Authenticator(ledger.principal_store)
    for header in (text, f"Bearer {text}", f"Bearer clt_{text}"):
        with pytest.raises(AuthenticationError) as refused:
            auth.authenticate(header)
        if len(text) >= 8:
            assert text not in str(refused.value)


_LEDGERS: dict[str, CaseLedger] = {}


def _shared_ledger(factory: pytest.TempPathFactory, settings_cls: type) -> CaseLedger:
    if "one" not in _LEDGERS:
        path = factory.mktemp("made-up") / "l.sqlite"
        ledger = CaseLedger(settings_cls.resolve(database=str(path)))
        PrincipalRegistry(ledger.principal_store).add("someone", "agent")
        _LEDGERS["one"] = ledger
    return _LEDGERS["one"]


def test_browser_sessions_are_kept_hashed_expire_and_end_with_their_principal(
        make_ledger: Callable[..., CaseLedger]) -> None:
    from caseledger.ledger.service.sessions import SESSION_TTL, Sessions

    ledger = make_ledger()
    registry = PrincipalRegistry(ledger.principal_store)
    issued = registry.add("erin", "agent")
    who = Authenticator(ledger.principal_store).authenticate(f"Bearer {issued.token}")
    sessions = Sessions(ledger.principal_store)
    now = datetime.now(UTC)
    session, lifetime = sessions.open(who, token=issued.token, now=now)
    assert session.startswith("cls_") and issued.token not in session and lifetime == SESSION_TTL.total_seconds()
    assert sessions.principal(session, now=now).name == "erin"
    assert session.encode() not in repr(ledger.principal_store.select_session(hashlib.sha256(session.encode()).digest()
                                                                               )).encode()
    with pytest.raises(AuthenticationError, match="ended"):
        sessions.principal(session, now=now + SESSION_TTL + timedelta(seconds=1))
    with pytest.raises(AuthenticationError):
        sessions.principal("cls_" + "A" * 43, now=now)
    other, _ = sessions.open(who, token=issued.token, now=now)
    registry.revoke("erin")
    for gone in (session, other):
        with pytest.raises(AuthenticationError):
            sessions.principal(gone, now=now)


# -- a principal's team, zone and locale (issue 28) ---------------------------------------------------------


def test_a_principal_carries_its_team_zone_and_locale_into_tokens_and_sessions(
        make_ledger: Callable[..., CaseLedger]) -> None:
    """Finding: principals had no team, zone or locale, so "my team" and the agent's own zone could not exist."""
    from caseledger.ledger.service.sessions import Sessions

    ledger = make_ledger()
    registry = PrincipalRegistry(ledger.principal_store)
    issued = registry.add("fanny", "agent", team="billing", zone="Europe/Paris", locale="fr_fr")
    auth = Authenticator(ledger.principal_store)
    who = auth.authenticate(f"Bearer {issued.token}")
    assert (who.team, who.zone, who.locale) == ("billing", "Europe/Paris", "fr-FR")
    sessions = Sessions(ledger.principal_store)
    session, _ = sessions.open(who, token=issued.token)
    assert (sessions.principal(session).team, sessions.principal(session).locale) == ("billing", "fr-FR")
    # A change holds at the next request and the next page of an open session; "" clears, None leaves as is.
    row = registry.update("fanny", team="loans", zone="")
    assert (row.team, row.zone, row.locale) == ("loans", None, "fr-FR")
    assert auth.authenticate(f"Bearer {issued.token}").team == "loans"
    assert (sessions.principal(session).team, sessions.principal(session).zone) == ("loans", None)
    registry.revoke("fanny")
    with pytest.raises(NotFound):
        registry.update("fanny", team="billing")


@pytest.mark.parametrize(("field", "value", "says"), [
    ("zone", "Europe/Pariss", "IANA zone"), ("zone", "../../etc/passwd", "IANA zone"), ("locale", "xx-QQ", "BCP 47"),
    ("locale", "fr; DROP", "BCP 47"), ("team", "-lead", "team"), ("team", "x" * 101, "team"),
])
def test_a_bad_team_zone_or_locale_is_refused_and_nothing_is_written(
        make_ledger: Callable[..., CaseLedger], field: str, value: str, says: str) -> None:
    ledger = make_ledger()
    registry = PrincipalRegistry(ledger.principal_store)
    with pytest.raises(ValidationError, match=says):
        registry.add("gus", "agent", **{field: value})
    assert registry.list() == []
    registry.add("gus", "agent", team="billing", zone="UTC", locale="en")
    with pytest.raises(ValidationError, match=says):
        registry.update("gus", **{field: value})
    (row,) = registry.list()
    assert (row.team, row.zone, row.locale) == ("billing", "UTC", "en")


def test_a_principal_table_of_an_earlier_release_gets_the_new_columns_and_keeps_its_principals(
        make_ledger: Callable[..., CaseLedger]) -> None:
    """A ledger made before principals had a team, zone and locale keeps working: its tables get the columns
    when it is next opened, its principals and sessions read with none, and can be given them."""
    from caseledger.ledger.service.sessions import Sessions

    old = make_ledger()
    issued = PrincipalRegistry(old.principal_store).add("hugo", "agent")
    session, _ = Sessions(old.principal_store).open(
        Authenticator(old.principal_store).authenticate(f"Bearer {issued.token}"), token=issued.token)
    tables = old.principal_store
    for table in ("caseledger_principals", "caseledger_sessions"):  # back to the earlier release's shape
        for column in ("team", "zone", "locale"):
            tables.dialect.run(f"ALTER TABLE {tables.dialect.table(table)} DROP COLUMN {column}")
    old.close()
    ledger = make_ledger()
    auth = Authenticator(ledger.principal_store)
    who = auth.authenticate(f"Bearer {issued.token}")
    assert (who.name, who.team, who.zone, who.locale) == ("hugo", None, None, None)
    assert Sessions(ledger.principal_store).principal(session).name == "hugo"
    PrincipalRegistry(ledger.principal_store).update("hugo", team="billing")
    assert auth.authenticate(f"Bearer {issued.token}").team == "billing"
    make_ledger()  # opening it again adds nothing twice
