"""``caseledger principals …``: who may call the ledger service, with which role (issued bearer tokens).

These commands work on the ledger's database directly (whoever can open it administers it); the
token of a new principal is printed once and only its SHA-256 is kept.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from caseledger.cli import render
from caseledger.cli.common import session
from caseledger.cli.options import Json
from caseledger.ledger.domain.permissions import Role

principals_app = typer.Typer(
    no_args_is_help=True, help="Principals of the ledger service: add (prints a token once), revoke, list."
)

ROLES = ", ".join(r.value for r in Role)
Name = Annotated[str, typer.Argument(metavar="NAME", help="The principal's name: the actor id of its events.")]


@principals_app.command("add")
def principals_add(
    ctx: typer.Context,
    name: Name,
    role: Annotated[str, typer.Option("--role", metavar="ROLE", help=f"One of: {ROLES} (see docs/api.md).")],
) -> None:
    """Add a principal and print its bearer token — once: the ledger keeps only its hash.

    Example:

    ```
    $ caseledger principals add alice --role agent
    ```
    """
    s = session(ctx)
    issued = s.ledger.add_principal(name, role)
    s.say(f"Principal {issued.name} ({issued.role.value}) added. Its token, shown only now:", "green")
    typer.echo(issued.token)


@principals_app.command("revoke")
def principals_revoke(ctx: typer.Context, name: Name) -> None:
    """Revoke a principal's token at once; its name is never reused."""
    s = session(ctx)
    s.ledger.revoke_principal(name)
    s.say(f"Principal {name} revoked.", "green")


@principals_app.command("list")
def principals_list(ctx: typer.Context, as_json: Json = False) -> None:
    """List principals: name, role, created, revoked (never a token)."""
    s = session(ctx)
    rows = s.ledger.principals()
    if as_json:
        s.echo_json([{"name": r.name, "role": r.role, "created_at": r.created_at, "revoked_at": r.revoked_at}
                     for r in rows])
        return
    table = Table("name", "role", "created", "revoked")
    for r in rows:
        table.add_row(r.name, r.role, render.fmt_time(r.created_at, s.tz),
                      render.fmt_time(r.revoked_at, s.tz) if r.revoked_at else "")
    s.out.print(table)
