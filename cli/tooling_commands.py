"""``caseledger schemas list``, ``version`` and ``demo``."""

from __future__ import annotations

from importlib import metadata
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from caseledger.cli.common import local_only, session
from caseledger.cli.options import Json

NOT_THROUGH_API = 'it plays the stories on a temporary ledger of its own'

schemas_app = typer.Typer(no_args_is_help=True, help="The Avro schemas of the events.")


@schemas_app.command("list")
def schemas_list(ctx: typer.Context, as_json: Json = False) -> None:
    """List the event types and the fingerprint of their current Avro schema.

    Example:

    ```
    $ caseledger schemas list
    ```
    """
    from caseledger.ledger.avro.codec import AvroEventCodec

    s = session(ctx)
    codec = AvroEventCodec()
    rows = []
    for name in codec.names:
        spec = codec.schema(name)
        rows.append({"event_type": name, "fingerprint": spec.header[2:].hex(), "fields": list(spec.fields)})
    if as_json:
        s.echo_json(rows)
        return
    table = Table("event type", "fingerprint (CRC-64-AVRO)", "fields", title=f"{len(rows)} event types",
                  title_justify="left")
    for row in rows:
        table.add_row(str(row["event_type"]), str(row["fingerprint"]), Text(", ".join(row["fields"])))
    s.out.print(table)


def version() -> None:
    """Print the installed caseledger version."""
    try:
        typer.echo(f"caseledger {metadata.version('caseledger')}")
    except metadata.PackageNotFoundError:
        typer.echo("caseledger (not installed as a package)")


@local_only(NOT_THROUGH_API)
def demo(
    database: Annotated[
        str | None,
        typer.Option(
            "--database", metavar="PATH",
            help="Ledger file for the demo (default: a temporary one; the global --database is not used).",
        ),
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the demo's ledger file afterwards.")] = False,
) -> None:
    """Play a short story through the ledger: contacts on several channels, a promise, a handoff, a close.

    Example:

    ```
    $ caseledger demo --database demo.sqlite --keep
    ```
    """
    from caseledger.cli.demo import run_demo

    # The demo styles its own output with rich markup, so it gets a console that reads markup.
    run_demo(Console(), database=database, keep=keep)
