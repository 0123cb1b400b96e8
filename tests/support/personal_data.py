"""A customer's personal data through a case's life, and where to look for it byte for byte after an erasure."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import Actor, ContactDraft, Identity
from caseledger.projections import load_projections
from caseledger.projections.runner import ProjectionRunner
from caseledger.projections.sources import StoreEventSource
from caseledger.projections.views import ViewStore

AGENT = Actor.parse("agent:alice")
JANE = Identity.parse("email:jane.secret-7f3@example.com")
JANE_PHONE = Identity.parse("phone:+33611223344")
SUBJECT = "Blocked card after the Lisbon trip"
BODY = "My card number ending 4471 was blocked while I was in Lisbon; my PIN is not the problem."
ITEM = "Why was my card blocked without any warning?"
ANSWER = "We unblocked the card; the fraud rule misfired on the Lisbon terminal."
TERMS = "Refund the 35 EUR replacement fee by Friday to the account ending 9912"
NOTICE = "Your complaint about the Lisbon blocking is closed; the fee was refunded."
# Phrases no base64 or hex run of a token could spell by chance (spaces, punctuation, long words).
SECRETS = [JANE.value, JANE_PHONE.value, "Lisbon", "ending 4471", "ending 9912", "PIN is not", "replacement fee"]


def jane_contact(msg: str, *, identity: Identity = JANE, **kw: Any) -> ContactDraft:
    return ContactDraft(channel=kw.pop("channel", "email"), channel_message_id=msg, identity=identity,
                        subject=SUBJECT, body=BODY, items=(ITEM,), **kw)


def work_the_case(ledger: CaseLedger, reference: str) -> None:
    """An agent answers, promises on the phone (a written confirmation follows), keeps it, closes."""
    case = ledger.get_case(reference)
    ledger.respond(reference, actor=AGENT, body=ANSWER, answers=case.open_item_ids())
    ledger.make_promise(reference, actor=AGENT, channel="phone", kind="refund", terms=TERMS,
                        due_at=ledger.clock() + timedelta(days=3))
    (promise,) = ledger.get_case(reference).open_promise_ids()
    ledger.keep_promise(reference, actor=AGENT, promise_id=promise, evidence="Refund of the replacement fee sent")
    ledger.close_case(reference, actor=AGENT, reason="answered, fee refunded", notice=NOTICE)


# -- where bytes live -----------------------------------------------------------------------------------------


def store_bytes(ledger: CaseLedger, database: str) -> bytes:
    """Every byte the ledger's database holds: its files (SQLite), or every row of every table (PostgreSQL)."""
    if not database.startswith("postgresql"):
        return b"".join(p.read_bytes() for p in Path(database).parent.glob(Path(database).name + "*")
                        if not p.name.endswith(".kek"))
    import psycopg

    with psycopg.connect(database) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")]
        out = []
        for table in tables:
            for (row,) in conn.execute(f"SELECT t::text FROM {table} t"):  # bytea as \x hex, text as is
                out.append(row.encode())
                if "\\x" in row:  # and bytea columns decoded, so a clear string inside them shows
                    out += [bytes.fromhex(h) for h in _hex_runs(row)]
    return b"\n".join(out)


def _hex_runs(text: str) -> list[str]:
    import re

    return [m for m in re.findall(r"\\\\?x([0-9a-f]+)", text) if len(m) % 2 == 0]


def views_bytes(views: ViewStore, path: Path | None) -> bytes:
    if path is not None:
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    rows = [views.snapshot(p.tables) for p in load_projections(None)]
    return json.dumps(rows, default=str, ensure_ascii=False).encode()


def assert_nowhere(blob: bytes, where: str, secrets: list[str] = SECRETS) -> None:
    found = [s for s in secrets if s.encode() in blob]
    assert found == [], f"found in clear in {where}: {found}"


def all_views(views: ViewStore, ledger: CaseLedger) -> dict[str, Any]:
    ProjectionRunner(load_projections(None), views, StoreEventSource(ledger), batch_size=50).run(until_caught_up=True)
    return {p.name: views.snapshot(p.tables) for p in load_projections(None)}
