"""Issue 22, "it is slow": the service's structure in-process on SQLite (one write transaction per contact,
one thread hop per request at most, revocation in force through the callers cache).

The group commit and the case cache on both stores: tests/integration/test_service_speed.py; the
benchmark's bare ceiling: tests/system/test_service_load.py.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from caseledger.ledger.access.principals import Principal, PrincipalRegistry
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.permissions import Authentication, Operation, Role
from caseledger.ledger.errors import AuthenticationError
from caseledger.ledger.service.api import ServiceState, principal_for
from caseledger.ledger.service.asgi import create_app
from caseledger.ledger.service.callers import Callers
from tests.support.environment import ledger_settings

# -- one write transaction per contact --------------------------------------------------------------------------


def test_a_contact_with_an_idempotency_key_is_one_write_transaction(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the key's claim, the unit of work, and the key's answer were three write transactions.

    The new channel message's lookup secret is stored in that one transaction too (issue 24)."""
    from eventsourcing.sqlite import SQLiteDatastore

    settings_ = ledger_settings(database=str(tmp_path / "l.sqlite"))
    setup = CaseLedger(settings_)
    token = PrincipalRegistry(setup.principal_store).add("agent-1", "agent").token
    setup.close()
    writes: list[int] = []
    original = SQLiteDatastore.transaction

    def counting(self: Any, *, commit: bool) -> Any:
        if commit:
            writes.append(1)
        return original(self, commit=commit)

    with TestClient(create_app(ServiceState(settings_))) as client:
        headers = {"Authorization": f"Bearer {token}"}
        body = {"channel": "email", "channel_message_id": "m-1", "from": "email:jane@example.com", "items": ["?"]}
        assert client.post("/v1/contacts", json=body, headers=headers).status_code == 201  # warm: keys, tables
        monkeypatch.setattr(SQLiteDatastore, "transaction", counting)
        answer = client.post("/v1/contacts", json={**body, "channel_message_id": "m-2"},
                             headers={**headers, "Idempotency-Key": str(uuid.uuid4())})
        monkeypatch.undo()
        assert answer.status_code == 201, answer.text
    assert len(writes) == 1


# -- one thread hop ----------------------------------------------------------------------------------------------------


def test_authentication_and_the_busiest_routes_take_no_thread_hop_of_their_own(tmp_path: Path) -> None:
    """Before: the sync dependency and the sync route each took a threadpool hop (two per request)."""
    dependency = principal_for(Operation.CASE_READ).dependency
    assert asyncio.iscoroutinefunction(dependency)
    app = create_app(ServiceState(ledger_settings(database=str(tmp_path / "l.sqlite"))))
    routes = {(r.path, m): r.endpoint for r in app.routes if isinstance(r, APIRoute) for m in r.methods}
    for key in (("/v1/cases/{reference}", "GET"), ("/v1/contacts", "POST"), ("/v1/cases/{reference}/promises", "POST")):
        assert asyncio.iscoroutinefunction(routes[key]), key


def test_the_callers_cache_keeps_revocation_in_force() -> None:
    now = [100.0]
    looked_up: list[str] = []
    revoked: set[str] = set()

    def authenticate(header: str | None) -> Principal:
        assert header is not None
        looked_up.append(header)
        name = "alice" if header.endswith("A" * 43) else "bob"
        if name in revoked:
            raise AuthenticationError("revoked token")
        return Principal(name=name, role=Role.AGENT, authentication=Authentication.TOKEN)

    callers = Callers(authenticate, ttl_s=1.0, clock=lambda: now[0])
    alice, bob = "Bearer clt_" + "A" * 43, "Bearer clt_" + "B" * 43
    assert callers.cached(alice) is None
    assert callers.authenticate(alice).name == "alice"
    assert callers.cached(alice) is not None and callers.cached(alice).name == "alice"  # type: ignore[union-attr]
    assert callers.cached("Bearer not-a-ledger-token") is None  # JWTs and others: never kept
    # Revoked in this process: at once.
    callers.authenticate(bob)
    callers.forget("bob")
    assert callers.cached(bob) is None
    # Revoked elsewhere: the entry lives at most the TTL, then the store is asked again.
    revoked.add("alice")
    now[0] += 0.99
    assert callers.cached(alice) is not None
    now[0] += 0.02
    assert callers.cached(alice) is None
    with pytest.raises(AuthenticationError):
        callers.authenticate(alice)
    # A lookup under way while the principal is revoked here: answered, but not kept.
    racing: list[Callers] = []

    def revoked_meanwhile(header: str | None) -> Principal:
        found = authenticate(header)
        racing[0].forget(found.name)
        return found

    racing.append(Callers(revoked_meanwhile, clock=lambda: now[0]))
    assert racing[0].authenticate(bob).name == "bob" and racing[0].cached(bob) is None
