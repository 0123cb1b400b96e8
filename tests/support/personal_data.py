"""A customer's personal data through a case's life, and where to look for it byte for byte after an erasure."""

from __future__ import annotations

import base64
import json
import re
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
    """Every byte the ledger's database holds: its files (SQLite), or (PostgreSQL) every row of every table,
    each bytea decoded, and the raw files of every table, index and TOAST table, dead row versions included."""
    if not database.startswith("postgresql"):
        return b"".join(p.read_bytes() for p in Path(database).parent.glob(Path(database).name + "*")
                        if not p.name.endswith(".kek"))
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")]
        out = []
        for table in tables:
            for (row,) in conn.execute(f"SELECT t::text FROM {table} t"):  # bytea as \x hex, text as is
                out.append(row.encode())
                if "\\x" in row:  # and bytea columns decoded, so a clear string inside them shows
                    out += [bytes.fromhex(h) for h in _hex_runs(row)]
        files = [r[0] for r in conn.execute(
            "SELECT pg_relation_filepath(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 't', 'i', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')")]
        for path in files:  # as the server wrote them, dead tuples too: what a copy of the data directory holds
            (raw,) = conn.execute("SELECT pg_read_binary_file(%s, true)", (path,)).fetchone() or (None,)
            out.append(bytes(raw or b""))
    return b"\n".join(out)


def _hex_runs(text: str) -> list[str]:
    return [m for m in re.findall(r"\\\\?x([0-9a-f]+)", text) if len(m) % 2 == 0]


def views_bytes(views: ViewStore, path: Path | None) -> bytes:
    if path is not None:
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    rows = [views.snapshot(p.tables) for p in load_projections(None)]
    return json.dumps(rows, default=str, ensure_ascii=False).encode()


def encodings(secret: str) -> dict[str, bytes]:
    """A secret as it may sit in bytes: UTF-8, UTF-16 (both orders), hex (both cases), base64 and base64url at
    each of the three alignments a longer text puts it in (the characters that depend on neighbours left out)."""
    raw = secret.encode()
    found = {"utf-8": raw, "utf-16-le": secret.encode("utf-16-le"), "utf-16-be": secret.encode("utf-16-be"),
             "hex": raw.hex().encode(), "HEX": raw.hex().upper().encode()}
    for shift in range(3):
        text = base64.b64encode(b"\0" * shift + raw)[(shift * 4 + 2) // 3 + 1:]
        whole = (len(raw) + shift) // 3 * 4  # the characters made of the secret's bytes only
        text = text[:max(whole - ((shift * 4 + 2) // 3 + 1), 0)]
        if len(text) >= 6:
            found[f"base64+{shift}"] = text
            found[f"base64url+{shift}"] = text.replace(b"+", b"-").replace(b"/", b"_")
    return found


def assert_nowhere(blob: bytes, where: str, secrets: list[str] = SECRETS) -> None:
    """No secret in ``blob`` in any of its :func:`encodings`, nor in any base64 run of ``blob`` decoded."""
    decoded = b"\n".join(_base64_runs(blob))
    found = [f"{s} ({how})" for s in secrets for how, form in encodings(s).items() if form in blob or form in decoded]
    assert found == [], f"found in clear in {where}: {found}"


def _base64_runs(blob: bytes) -> list[bytes]:
    runs = []
    for run in re.findall(rb"[A-Za-z0-9+/_-]{16,}={0,2}", blob):
        text = run.replace(b"-", b"+").replace(b"_", b"/").rstrip(b"=")
        try:
            runs.append(base64.b64decode(text[: len(text) // 4 * 4]))
        except ValueError:
            continue
    return runs


def all_views(views: ViewStore, ledger: CaseLedger) -> dict[str, Any]:
    ProjectionRunner(load_projections(None), views, StoreEventSource(ledger), batch_size=50).run(until_caught_up=True)
    return {p.name: views.snapshot(p.tables) for p in load_projections(None)}
