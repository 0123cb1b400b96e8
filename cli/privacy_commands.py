"""``caseledger customer …`` and ``caseledger keys …``: erasing a customer, legal holds, the key-encryption key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caseledger.cli.common import local_only, session
from caseledger.cli.options import Customer, Json

customer_app = typer.Typer(
    no_args_is_help=True,
    help="A customer's personal data: erase it (GDPR art. 17), or keep it under a legal hold (art. 17(3)).",
)

NOT_THROUGH_API = "key-encryption keys are files and rows of the ledger's own database"
keys_app = typer.Typer(no_args_is_help=True, help="The key-encryption key that wraps customers' data keys.")

WhyErase = Annotated[
    str,
    typer.Option("--reason", "-r", metavar="TEXT",
                 help="Why, kept in clear for the auditor: the request and its date, a ticket — no personal data."),
]


@customer_app.command("erase")
def customer_erase(ctx: typer.Context, customer: Customer, reason: WhyErase, as_json: Json = False) -> None:
    """Erase a customer's personal data everywhere: destroy their data keys, record CustomerErased.

    Every event stays, with its hashes, chains and seals: `audit verify` still passes. What was
    personal (identities, subjects, bodies, items, promise terms, notices …) reads `[erased]` in
    `history`, `case show`, exports and every view. Refused while a legal hold is in force.
    Erasing again is a no-op. "erased" is true only once no copy of the keys' bytes is left in the
    database's files; while a reader holds an older snapshot it says what is pending, and
    `caseledger tick` finishes it.

    Example:

    ```
    $ caseledger customer erase email:jane@example.com --reason "art. 17 request of 2026-12-01, ticket 4711"
    ```
    """
    s = session(ctx)
    report = s.ledger.erase_customer(customer, reason=reason, actor=s.actor)
    if as_json:
        s.echo_json({"customer_id": report.customer_id, "erased": report.erased, "already_erased": report.already_erased,
                     "key_ids": report.key_ids, "erased_at": report.erased_at.isoformat(), "pending": report.pending})
    elif report.pending:
        s.say(f"Destroyed the data keys of customer {report.customer_id}, but not yet erased: {report.pending}.",
              "yellow")
    elif report.already_erased:
        s.say(f"Customer {report.customer_id} was already erased: nothing left to erase.", "green")
    elif report.key_ids:
        s.say(f"Erased customer {report.customer_id}: {len(report.key_ids)} data key(s) destroyed "
              f"({', '.join(report.key_ids)}); their personal data now reads [erased].", "green")
    else:
        s.say(f"Recorded the erasure of customer {report.customer_id}; they had no data key (their history was "
              "written before encryption and stays as it is — see docs/privacy.md).", "yellow")


@customer_app.command("hold")
def customer_hold(ctx: typer.Context, customer: Customer, reason: WhyErase) -> None:
    """Place a legal hold: the customer's data is kept, no erasure (by request or retention) until released.

    Example: caseledger customer hold cust-0042 --reason "litigation 2026/118, counsel's request"
    """
    s = session(ctx)
    s.ledger.place_legal_hold(customer, reason=reason, actor=s.actor)
    s.say(f"Legal hold placed on {customer}: it will not be erased until released.", "green")


@customer_app.command("release")
def customer_release(ctx: typer.Context, customer: Customer, reason: WhyErase) -> None:
    """Release a legal hold; erasure requests and the retention policy apply again.

    Example: caseledger customer release cust-0042 --reason "litigation 2026/118 closed"
    """
    s = session(ctx)
    s.ledger.release_legal_hold(customer, reason=reason, actor=s.actor)
    s.say(f"Legal hold on {customer} released.", "green")


@customer_app.command("keys")
def customer_keys(ctx: typer.Context, customer: Customer, as_json: Json = False) -> None:
    """A customer's data keys (ids and dates, never key material) and legal hold.

    Example: caseledger customer keys cust-0042 --json
    """
    s = session(ctx)
    info = s.ledger.customer_privacy(customer)
    if as_json:
        s.echo_json(info)
        return
    hold = info["legal_hold"]
    s.say(f"Customer {info['customer_id']}: " + (f"under legal hold ({hold})" if hold else "no legal hold"))
    for key in info["keys"]:
        state = f"destroyed {key['destroyed_at']}" if key["destroyed_at"] else "live"
        s.say(f"  key {key['key_id']}  made {key['created_at']}  {state}")


@keys_app.command("new-kek")
@local_only(NOT_THROUGH_API)
def keys_new_kek(
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help="Where to write it (mode 0600; never overwritten).")],
    if_missing: Annotated[bool, typer.Option("--if-missing", help="Do nothing (exit 0) when FILE exists: for one-shot set-ups.")] = False,
) -> None:
    """Make a new key-encryption key in FILE (32 random bytes, base64); prints only its id.

    Point the ledger at it with CASELEDGER_KEK_FILE=FILE. Keep a copy somewhere safe: without it
    no customer's data can be read. Example: caseledger keys new-kek --out /etc/caseledger/kek
    """
    from caseledger.ledger.privacy.kek import KeyEncryptionKey, write_new_kek

    if if_missing and out.exists():
        typer.echo(f"Key-encryption key {KeyEncryptionKey.from_file(out).key_id} already in {out}; left as it is")
        return
    kek = write_new_kek(out)
    typer.echo(f"Wrote key-encryption key {kek.key_id} to {out}")


@keys_app.command("rotate-kek")
@local_only(NOT_THROUGH_API)
def keys_rotate_kek(
    ctx: typer.Context,
    new: Annotated[Path, typer.Option("--new", metavar="FILE", help="The new key-encryption key (from keys new-kek).")],
) -> None:
    """Rewrap every data key with a new key-encryption key, in one transaction.

    The ledger's current key comes from CASELEDGER_KEK / CASELEDGER_KEK_FILE as usual; afterwards
    point CASELEDGER_KEK_FILE at the new file and destroy the old one. Running it again after a
    crash finishes what is left. Example: caseledger keys rotate-kek --new /etc/caseledger/kek.2027
    """
    from caseledger.ledger.privacy.kek import KeyEncryptionKey

    s = session(ctx)
    old = s.local_ledger.data_keys.kek.key_id
    kek = KeyEncryptionKey.from_file(new)
    count = s.local_ledger.rotate_kek(kek)
    s.say(f"Rewrapped {count} data key(s) from key-encryption key {old} to {kek.key_id}; now set "
          f"CASELEDGER_KEK_FILE={new} for every ledger process.", "green")
