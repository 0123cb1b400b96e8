"""The CLI acting through the ledger service (``--api URL`` with a token), and the embedded CLI beside it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caseledger.ledger.domain.permissions import Role
from tests.support.environment import ledger_settings
from tests.support.service_server import Running, Service, running_service


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint signing key the service signs with (and the embedded CLI beside it)."""
    from caseledger.ledger.transparency.checkpoint_key import generate_key_file

    path = tmp_path_factory.mktemp("service-cli-key") / "signing.key"
    generate_key_file(path, "caseledger")
    return path


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, signing_key: Path) -> Iterator[Running]:
    yield from running_service(tmp_path_factory.mktemp("service-cli"),
                               env={"CASELEDGER_SIGNING_KEY_FILE": str(signing_key)})


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

    monkeypatch.delenv("CASELEDGER_KEK")  # as the CLI ran: the embedded default, the key file beside the database
    ledger = CaseLedger(ledger_settings(database=database))
    try:
        events = list(ledger.events.get(ledger.get_case(ref).id))
    finally:
        ledger.close()
    assert {e.actor_authentication for e in events} == {"none"}
    assert any(e.actor_id == "alice" for e in events)


# -- every command works through --api, or says why not ------------------------------------------------------


def _leaves() -> dict[str, object]:
    """Every command of the CLI by its path (``case show``) → its callback."""
    import typer

    from caseledger.cli.app import app

    found: dict[str, object] = {}

    def walk(command: object, path: list[str]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, [*path, name])
        else:
            found[" ".join(path)] = command.callback  # type: ignore[attr-defined]

    walk(typer.main.get_command(app), [])
    return found


#: The time a read says it was made ("as of 2026-12-07 14:40 UTC"), its own clock's.
AS_OF = re.compile(r"as of \d{4}-\d{2}-\d{2} \d{2}:\d{2}")

# Read through the service by the test below, which compares each with the embedded CLI's output.
BRANCHED_WRITES = {"tick", "principals add", "principals revoke"}
#: Adapters run against the service itself: --api (or their own --service) is the service they deliver for
#: (tests/system/test_mail_adapter.py runs it against a real server).
SERVICE_ADAPTERS = {"adapters run-mail"}
READS = {"case show", "case find", "cases", "history", "overdue", "metrics", "audit verify", "intake collisions",
         "intake rejections", "customer keys", "principals list"}
#: The auditor's commands, compared through a real server by test_the_auditors_whole_job_through_the_service.
AUDIT_READS = {"audit key", "audit checkpoint", "audit prove", "audit consistency"}


def test_every_command_works_through_the_api_or_its_help_says_why_not(running: Running) -> None:
    """Finding: reads through --api exited 4 "not available through --api" although the README says every command
    works that way. Each command either calls only what the service client has (and every read is compared
    through a real server below), or is marked local-only: its --help says why and --api is refused (exit 2)."""
    import inspect

    from typer.testing import CliRunner

    from caseledger.cli.app import app
    from caseledger.cli.common import LOCAL_ONLY
    from caseledger.ledger.service.client import LedgerClient

    runner = CliRunner()
    leaves = _leaves()
    assert leaves.keys() >= READS
    for path, callback in sorted(leaves.items()):
        why = getattr(callback, LOCAL_ONLY, None)
        if why is not None:
            shown = runner.invoke(app, ["--api", running.service.url, *path.split(), "--help"], terminal_width=200)
            assert shown.exit_code == 0 and f"Not through --api: {why}" in " ".join(shown.output.split()), path
            continue
        source = inspect.getsource(inspect.unwrap(callback))  # type: ignore[arg-type]
        if "s.api" in source:  # a branch of its own through the service: run through a real server below
            assert path in READS | AUDIT_READS | BRANCHED_WRITES | SERVICE_ADAPTERS, path
            continue
        called = set(re.findall(r"s\.ledger\.(\w+)", source))
        # Class attributes only: the client's __getattr__ (the generic refusal) does not count.
        assert all(name in vars(LedgerClient) for name in called), (path, called)
        assert "s.views(" not in source and "open_ledger" not in source, (path, "reads a local database")


def test_local_only_commands_refuse_the_api_with_their_reason(running: Running, tmp_path: Path) -> None:
    url = running.service.url
    for args in (["projections", "list"], ["adapters", "list"], ["topics", "create"], ["demo"], ["keys", "init"],
                 ["serve"]):
        done = caseledger("--api", url, *args, code=2, env={"CASELEDGER_TOKEN": running.service.tokens[Role.ADMIN]})
        assert f"`caseledger {' '.join(args)}` does not work through --api:" in " ".join(done.stderr.split()), args
    assert not (tmp_path / "caseledger.sqlite").exists()


def test_every_read_prints_the_same_through_the_service_as_on_its_database(running: Running, tmp_path: Path) -> None:
    service = running.service
    done = through(service, Role.AGENT, "contact", "record", "-c", "email", "-m", "read-1", "--from",
                   "email:reader@example.com", "--item", "Where is my card?", "--item", "And my PIN?", tmp=tmp_path)
    ref = reference_in(done.stdout)
    through(service, Role.AGENT, "respond", ref, "--body", "Posted.", "--answers", "Q1", tmp=tmp_path)
    through(service, Role.AGENT, "promise", "make", ref, "--channel", "phone", "--kind", "callback", "--terms",
            "call back about the PIN", "--due", "2099-01-01T10:00Z", tmp=tmp_path)
    through(service, Role.AUTOMATION, "action", "propose", ref, "--rule", "limits", "--action", "lower_card_limit",
            "--param", "limit=500", "--rationale", "declines", tmp=tmp_path)
    # A collision, kept for the intake reads.
    through(service, Role.AGENT, "contact", "record", "-c", "email", "-m", "read-1", "--from", "email:o@example.com",
            "--item", "Other", code=6, tmp=tmp_path)
    customer = "email:reader@example.com"
    local = {"CASELEDGER_KEK": os.environ["CASELEDGER_KEK"], "TZ": "UTC"}
    reads = {
        "case show": (Role.AGENT, ["case", "show", ref]),
        "case find": (Role.AGENT, ["case", "find", "-c", "email", "-m", "read-1"]),
        "cases": (Role.AGENT, ["cases", customer]),
        "history": (Role.AUDITOR, ["history", customer]),
        "overdue": (Role.AUDITOR, ["overdue"]),
        "metrics": (Role.AUDITOR, ["metrics", "--by", "both"]),
        "audit verify": (Role.AUDITOR, ["audit", "verify", "--customer", customer]),
        "intake collisions": (Role.AUDITOR, ["intake", "collisions"]),
        "intake rejections": (Role.AUDITOR, ["intake", "rejections"]),
        "customer keys": (Role.AUDITOR, ["customer", "keys", customer]),
        "principals list": (Role.ADMIN, ["principals", "list"]),
    }
    assert reads.keys() == READS
    for name, (role, args) in reads.items():
        token = tmp_path / f"{role.value}.token"
        token.write_text(service.tokens[role])
        for form in (["--json"], []):
            if name == "history" and not form:
                continue  # the table's width follows the terminal; --json is compared
            remote = caseledger("--api", service.url, "--token-file", str(token), *args, *form, env={"TZ": "UTC"})
            embedded = caseledger("--database", service.database, *args, *form, env=local)
            if form:
                theirs, ours = json.loads(remote.stdout), json.loads(embedded.stdout)
                if name == "audit verify":  # timed, and the service's audit runs with its own scope
                    for report in (theirs, ours):
                        report.pop("seconds")
                assert theirs == ours, name
            elif name != "audit verify":
                # "as of" is each one's own clock, read a moment apart: it may be a minute later in the second.
                assert AS_OF.sub("as of …", remote.stdout) == AS_OF.sub("as of …", embedded.stdout), name
    # Metrics per month in a zone (issue 27): the service's /v1/metrics answers as the database does; a zone that
    # does not exist is a 400 that says how to name one, never a 500.
    auditor = tmp_path / f"{Role.AUDITOR.value}.token"
    monthly = ["metrics", "--by", "both", "--month", "--zone", "Europe/Paris", "--json"]
    remote = caseledger("--api", service.url, "--token-file", str(auditor), *monthly, env={"TZ": "UTC"})
    embedded = caseledger("--database", service.database, *monthly, env=local)
    assert json.loads(remote.stdout) == json.loads(embedded.stdout) != []
    assert {r["zone"] for r in json.loads(remote.stdout)} == {"Europe/Paris"}
    refused = caseledger("--api", service.url, "--token-file", str(auditor), "metrics", "--month", "--zone", "Mars/Olympus",
                         env={"TZ": "UTC"}, code=2)
    assert "unknown time zone 'Mars/Olympus'" in refused.stderr
    # The writes with a branch of their own: tick on the service's clock, principals by an admin.
    ticked = json.loads(through(service, Role.SUPERVISOR, "tick", "--json", tmp=tmp_path).stdout)
    assert ticked.keys() >= {"now", "cases_checked", "missed", "erased"}
    added = through(service, Role.ADMIN, "principals", "add", "read-check", "--role", "auditor", tmp=tmp_path)
    assert re.search(r"clt_[A-Za-z0-9_-]{43}", added.stdout)
    changed = json.loads(through(service, Role.ADMIN, "principals", "set", "read-check", "--team", "audit",
                                 "--zone", "Europe/Paris", "--json", tmp=tmp_path).stdout)
    assert (changed["team"], changed["zone"], changed["locale"]) == ("audit", "Europe/Paris", None)
    through(service, Role.ADMIN, "principals", "set", "read-check", "--locale", "xx-QQ", code=2, tmp=tmp_path)
    through(service, Role.ADMIN, "principals", "revoke", "read-check", tmp=tmp_path)
    listed = json.loads(through(service, Role.ADMIN, "principals", "list", "--json", tmp=tmp_path).stdout)
    assert next(p for p in listed if p["name"] == "read-check")["revoked_at"]


def test_the_auditors_whole_job_through_the_service(running: Running, signing_key: Path, tmp_path: Path) -> None:
    """Finding (issue 26): `audit verify --checkpoint`, `consistency`, `prove` (and `key`, `checkpoint`) failed with
    "does not work through --api" for an auditor token, and the service had no route for the key, checkpoints or
    proofs. Now each prints through the service what it prints on the database (every proof verified on the
    auditor's side with the key he keeps), and an export asked for against a kept checkpoint proves, offline, that
    it extends it."""
    service = running.service
    done = through(service, Role.AGENT, "contact", "record", "-c", "email", "-m", "audit-1", "--from",
                   "email:audited@example.com", "--item", "Is my complaint logged?", tmp=tmp_path)
    ref = reference_in(done.stdout)
    pub = tmp_path / "ledger.pub"
    pub.write_text(through(service, Role.AUDITOR, "audit", "key", tmp=tmp_path).stdout.splitlines()[0] + "\n")
    kept = tmp_path / "kept.checkpoint"
    through(service, Role.AUDITOR, "audit", "checkpoint", "--out", str(kept), tmp=tmp_path)
    through(service, Role.AGENT, "respond", ref, "--body", "Yes.", "--answers", "Q1", tmp=tmp_path)
    customer = "email:audited@example.com"
    local = {"CASELEDGER_KEK": os.environ["CASELEDGER_KEK"], "TZ": "UTC",
             "CASELEDGER_SIGNING_KEY_FILE": str(signing_key)}
    token = tmp_path / "auditor.token"
    token.write_text(service.tokens[Role.AUDITOR])
    reads = {
        "audit key": ["audit", "key", "--json"],
        "audit checkpoint": ["audit", "checkpoint"],
        "audit prove": ["audit", "prove", customer, "--key", str(pub), "--json"],
        "audit consistency": ["audit", "consistency", str(kept), "--key", str(pub), "--json"],
        "audit verify": ["audit", "verify", "--checkpoint", str(kept), "--key", str(pub), "--json"],
    }
    assert reads.keys() == AUDIT_READS | {"audit verify"}
    answers: dict[str, Any] = {}
    for name, args in reads.items():
        remote = caseledger("--api", service.url, "--token-file", str(token), *args, env={"TZ": "UTC"})
        embedded = caseledger("--database", service.database, *args, env=local)
        if name == "audit checkpoint":
            assert remote.stdout == embedded.stdout and remote.stdout.startswith("caseledger\n"), name
            continue
        theirs, ours = json.loads(remote.stdout), json.loads(embedded.stdout)
        answers[name] = theirs
        if name == "audit verify":
            for report in (theirs, ours):
                report.pop("seconds")
            assert theirs["ok"] and any("checkpoint of caseledger holds" in n for n in theirs["notes"])
        assert theirs == ours, name
    proved: dict[str, Any] = answers["audit prove"]
    assert {e["status"] for e in proved["events"]} == {"included"} and not proved["problems"]
    # The export against the kept checkpoint, through the service: verified offline, --kept included.
    export = tmp_path / "audited.json"
    caseledger("--api", service.url, "--token-file", str(token), "history", customer, "--export", "json", str(export),
               "--kept", str(kept))
    checked = subprocess.run([sys.executable, "-m", "caseledger.verify", str(export), "--key", str(pub), "--kept",
                              str(kept)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "extends the one you kept" in checked.stdout, checked.stdout + checked.stderr
    # "2026" asked for through the service too: the events that occurred in it shown, completeness proved for it.
    year = tmp_path / "2026.json"
    caseledger("--api", service.url, "--token-file", str(token), "history", customer, "--export", "json", str(year),
               "--occurred-from", "2026-01-01T00:00Z", "--occurred-until", "2027-01-01T00:00Z")
    assert json.loads(year.read_text())["transparency"]["occurred_range"]["occurred_from"].startswith("2026-01-01")
    checked = subprocess.run([sys.executable, "-m", "caseledger.verify", str(year), "--key", str(pub)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Proofs are for the roles that audit; an agent reads the key and checkpoints, which are public commitments.
    denied = through(service, Role.AGENT, "audit", "prove", customer, "--key", str(pub), code=2, tmp=tmp_path)
    assert "may not audit.proof.read" in denied.stderr
    through(service, Role.AGENT, "audit", "checkpoint", tmp=tmp_path)
