"""The CLI acting through the ledger service (``--api URL`` with a token), and the embedded CLI beside it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from caseledger.ledger.domain.permissions import Role
from tests.service_server import Running, Service, running_service


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    yield from running_service(tmp_path_factory.mktemp("service-cli"))


def reference_in(text: str) -> str:
    found = re.search(r"CL-[0-9A-Z]{5}-[0-9A-Z]{5}", text)
    assert found, text
    return found.group(0)


def caseledger(*args: str, env: dict[str, str] | None = None, code: int = 0) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CASELEDGER_")}
    done = subprocess.run([sys.executable, "-m", "caseledger.cli.app", *args], capture_output=True, text=True,
                          env={**clean, **(env or {})}, timeout=120)
    assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
    return done


def through(service: Service, role: Role, *args: str, code: int = 0, tmp: Path) -> subprocess.CompletedProcess[str]:
    token_file = tmp / f"{role.value}.token"
    token_file.write_text(service.tokens[role] + "\n")
    return caseledger("--api", service.url, "--token-file", str(token_file), *args, code=code)


def test_the_cli_acts_through_the_service_as_the_tokens_principal(running: Running, tmp_path: Path) -> None:
    service = running.service
    done = through(service, Role.AGENT, "contact", "record", "-c", "phone", "-m", "call-1", "--from",
                   "phone:+33612345678", "--item", "Why was I charged twice?", tmp=tmp_path)
    ref = reference_in(done.stdout)
    through(service, Role.AGENT, "respond", ref, "--body", "Refunded.", "--answers", "Q1", tmp=tmp_path)
    # The token comes from the environment just as well.
    caseledger("--api", service.url, "item", "waive", ref, "Q1", "--reason", "x", code=2,
               env={"CASELEDGER_TOKEN": service.tokens[Role.AGENT]})
    ledger = service.ledger()
    try:
        events = list(ledger.events.get(ledger.get_case(ref).id))
    finally:
        ledger.close()
    response = next(e for e in events if type(e).__name__ == "ResponseSent")
    assert (response.actor_kind, response.actor_id, response.actor_authentication) == ("agent", "agent-1", "token")


def test_automation_cannot_approve_its_own_proposal_through_the_cli(running: Running, tmp_path: Path) -> None:
    service = running.service
    done = through(service, Role.ADAPTER, "contact", "record", "-c", "email", "-m", "mail-9", "--from",
                   "email:jo@example.com", "--item", "Lower my limit?", tmp=tmp_path)
    ref = reference_in(done.stdout)
    through(service, Role.AUTOMATION, "action", "propose", ref, "--rule", "limits", "--action", "lower_card_limit",
            "--param", "limit=500", "--rationale", "3 declines", tmp=tmp_path)
    # Passing itself off as an agent: --as is refused with --api, CASELEDGER_ACTOR too …
    refused = through(service, Role.AUTOMATION, "--as", "agent:alice", "action", "approve", ref, "X1", code=2,
                      tmp=tmp_path)
    assert "--api" in refused.stderr
    token_file = tmp_path / "automation.token"
    caseledger("--api", service.url, "--token-file", str(token_file), "action", "approve", ref, "X1", code=2,
               env={"CASELEDGER_ACTOR": "agent:alice"})
    # … and its own token may not approve: the role decides (403 → exit 2, the problem's detail shown).
    denied = through(service, Role.AUTOMATION, "action", "approve", ref, "X1", code=2, tmp=tmp_path)
    assert "may not action.approve" in denied.stderr
    assert service.tokens[Role.AUTOMATION] not in denied.stderr + denied.stdout
    through(service, Role.AGENT, "action", "approve", ref, "X1", tmp=tmp_path)


def test_a_bad_token_through_the_cli_is_refused_without_echoing_it(running: Running, tmp_path: Path) -> None:
    service = running.service
    bad = "clt_" + "B" * 43
    done = caseledger("--api", service.url, "--token", bad, "respond", "CL-AAAAA-AAAAA", "--body", "x", code=2)
    assert "unknown or revoked token" in done.stderr and bad not in done.stderr + done.stdout
    missing = caseledger("--api", service.url, "respond", "CL-AAAAA-AAAAA", "--body", "x", code=4)
    assert "CASELEDGER_TOKEN" in missing.stderr


def test_the_embedded_cli_records_its_actor_as_not_authenticated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    database = str(tmp_path / "local.sqlite")
    done = caseledger("--database", database, "--as", "agent:alice", "contact", "record", "-c", "email", "-m", "m-1",
                      "--from", "email:jane@example.com", "--item", "Why?")
    ref = reference_in(done.stdout)
    caseledger("--database", database, "--as", "agent:alice", "respond", ref, "--body", "Because.", "--answers", "Q1")
    report = json.loads(caseledger("--database", database, "audit", "verify", "--json").stdout)
    assert report["unauthenticated_events"] == report["events"] > 0
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.settings import LedgerSettings

    monkeypatch.delenv("CASELEDGER_KEK")  # as the CLI ran: the embedded default, the key file beside the database
    ledger = CaseLedger(LedgerSettings.resolve(database=database))
    try:
        events = list(ledger.events.get(ledger.get_case(ref).id))
    finally:
        ledger.close()
    assert {e.actor_authentication for e in events} == {"none"}
    assert any(e.actor_id == "alice" for e in events)
