"""``caseledger adapters …``: the channel adapters whose signed intake records the ledger accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from caseledger.cli import render
from caseledger.cli.common import local_only, session
from caseledger.cli.options import CHANNELS, Json

NOT_THROUGH_API = "adapter keys are registered on the ledger's own database by its operator; no route carries them"

adapters_app = typer.Typer(
    no_args_is_help=True, help="Channel adapters' Ed25519 keys and the channels each may publish for."
)

Name = Annotated[str, typer.Argument(metavar="NAME", help="The adapter's name, as it signs (its --adapter).")]


@adapters_app.command("add")
@local_only(NOT_THROUGH_API)
def adapters_add(
    ctx: typer.Context,
    name: Name,
    channels: Annotated[str, typer.Option("--channels", metavar="LIST", help=f"Comma-separated, from: {CHANNELS}.")],
    private_key_out: Annotated[Path | None, typer.Option(
        "--private-key-out", metavar="FILE", help="Generate a key pair: write the private key here (mode 0600, "
        "never printed) and register its public half.")] = None,
    public_key: Annotated[Path | None, typer.Option(
        "--public-key", metavar="FILE", exists=True, dir_okay=False,
        help="Register an existing Ed25519 public key (PEM) instead.")] = None,
) -> None:
    """Register a channel adapter's key and the channels it may publish for.

    From then on the intake worker rejects unsigned records (unless run with --allow-unsigned).

    Examples:

    ```
    $ caseledger adapters add mail-gateway-1 --channels email --private-key-out /etc/caseledger/mail-gateway-1.pem
    $ caseledger adapters add chat-bridge --channels chat,chatbot --public-key chat-bridge.pub.pem
    ```
    """
    from caseledger.ledger.intake.signatures import AdapterKeys, key_fingerprint

    s = session(ctx)
    row = AdapterKeys(s.local_ledger.storage.adapter_keys()).add(
        name, channels.split(","), public_key=public_key.read_bytes() if public_key else None,
        private_key_out=private_key_out,
    )
    where = f"; its private key is in {private_key_out}" if private_key_out else ""
    s.say(f"Adapter {row.name} ({key_fingerprint(row.public_key)}) may publish for {', '.join(row.channels)}{where}.",
          "green")


@adapters_app.command("revoke")
@local_only(NOT_THROUGH_API)
def adapters_revoke(ctx: typer.Context, name: Name) -> None:
    """Revoke an adapter's key: its records are rejected from now on (within seconds for a running worker)."""
    from caseledger.ledger.intake.signatures import AdapterKeys

    s = session(ctx)
    AdapterKeys(s.local_ledger.storage.adapter_keys()).revoke(name)
    s.say(f"Adapter {name} revoked.", "green")


@adapters_app.command("list")
@local_only(NOT_THROUGH_API)
def adapters_list(ctx: typer.Context, as_json: Json = False) -> None:
    """List adapters: name, channels, key fingerprint, created, revoked (never a private key)."""
    from caseledger.ledger.intake.signatures import AdapterKeys, key_fingerprint

    s = session(ctx)
    rows = AdapterKeys(s.local_ledger.storage.adapter_keys()).list()
    if as_json:
        s.echo_json([{"name": r.name, "channels": list(r.channels), "key": key_fingerprint(r.public_key),
                      "created_at": r.created_at, "revoked_at": r.revoked_at} for r in rows])
        return
    table = Table("name", "channels", "key", "created", "revoked")
    for r in rows:
        table.add_row(r.name, ", ".join(r.channels), key_fingerprint(r.public_key), render.fmt_time(r.created_at, s.tz),
                      render.fmt_time(r.revoked_at, s.tz) if r.revoked_at else "")
    s.out.print(table)
