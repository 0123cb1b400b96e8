"""``caseledger principals …``: who may call the ledger service, with which role (issued bearer tokens).

These commands work on the ledger's database directly (whoever can open it administers it); the
token of a new principal is printed once and only its SHA-256 is kept.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from caseledger.cli import render
from caseledger.cli.common import session
from caseledger.cli.options import Json
from caseledger.ledger.domain.permissions import Role
from caseledger.ledger.store_ports import PrincipalRow

principals_app = typer.Typer(
    no_args_is_help=True,
    help="Principals of the ledger service: add (prints a token once), set (team, zone, locale), revoke, list.",
)

ROLES = ", ".join(r.value for r in Role)
Name = Annotated[str, typer.Argument(metavar="NAME", help="The principal's name: the actor id of its events.")]
Team = Annotated[str | None, typer.Option(
    "--team", metavar="TEAM", help="Its team (an organisation unit), e.g. billing: the queue's \"my team\".")]
Zone = Annotated[str | None, typer.Option(
    "--zone", metavar="ZONE", help="Its IANA time zone, e.g. Europe/Paris: the agent's pages show times in it.")]
Locale = Annotated[str | None, typer.Option(
    "--locale", metavar="TAG", help="Its language, a BCP 47 tag such as fr-FR: the agent's pages are in it.")]


@principals_app.command("add")
def principals_add(
    ctx: typer.Context,
    name: Name,
    role: Annotated[str, typer.Option("--role", metavar="ROLE", help=f"One of: {ROLES} (see docs/api.md).")],
    team: Team = None,
    zone: Zone = None,
    locale: Locale = None,
) -> None:
    """Add a principal and print its bearer token — once: the ledger keeps only its hash.

    Example:

    ```
    $ caseledger principals add alice --role agent --team billing --zone Europe/Paris --locale fr-FR
    ```
    """
    s = session(ctx)
    issued = s.ledger.add_principal(name, role, team=team, zone=zone, locale=locale)
    s.say(f"Principal {issued.name} ({issued.role.value}) added. Its token, shown only now:", "green")
    typer.echo(issued.token)


@principals_app.command("set")
def principals_set(ctx: typer.Context, name: Name, team: Team = None, zone: Zone = None, locale: Locale = None,
                   as_json: Json = False) -> None:
    """Change a principal's team, time zone or locale; an option left out is unchanged, an empty one clears it.

    Example:

    ```
    $ caseledger principals set alice --team billing --zone America/Montreal --locale fr-CA
    $ caseledger principals set alice --team ''
    ```
    """
    s = session(ctx)
    row = s.ledger.update_principal(name, team=team, zone=zone, locale=locale)
    if as_json:
        s.echo_json(_shown(row))
        return
    s.say(f"Principal {row.name}: team {row.team or '-'}, zone {row.zone or '-'}, locale {row.locale or '-'}.",
          "green")


@principals_app.command("revoke")
def principals_revoke(ctx: typer.Context, name: Name) -> None:
    """Revoke a principal's token at once; its name is never reused."""
    s = session(ctx)
    s.ledger.revoke_principal(name)
    s.say(f"Principal {name} revoked.", "green")


@principals_app.command("list")
def principals_list(ctx: typer.Context, as_json: Json = False) -> None:
    """List principals: name, role, team, zone, locale, created, revoked (never a token)."""
    s = session(ctx)
    rows = s.ledger.principals()
    if as_json:
        s.echo_json([_shown(r) for r in rows])
        return
    table = Table("name", "role", "team", "zone", "locale", "created", "revoked")
    for r in rows:
        table.add_row(r.name, r.role, r.team or "", r.zone or "", r.locale or "", render.fmt_time(r.created_at, s.tz),
                      render.fmt_time(r.revoked_at, s.tz) if r.revoked_at else "")
    s.out.print(table)


def _shown(r: PrincipalRow) -> dict[str, Any]:
    return {"name": r.name, "role": r.role, "team": r.team, "zone": r.zone, "locale": r.locale,
            "created_at": r.created_at, "revoked_at": r.revoked_at}
