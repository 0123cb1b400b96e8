"""``caseledger export events``: every event of the log as Parquet, for analysts (docs/analysts.md)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from caseledger.cli.common import Session, local_only, session
from caseledger.cli.options import ConsumerOpt, Json, KafkaOpt
from caseledger.ledger.errors import ConfigurationError, ValidationError

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.reports.event_table import Personal

export_app = typer.Typer(no_args_is_help=True, help="Every event out, for analysts: Parquet files and a manifest.")

NOT_THROUGH_API = "it reads the store (or the events topic) and writes files where it runs"


@export_app.command("events")
@local_only(NOT_THROUGH_API)
def export_events(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Folder of the export (made if missing); "
                                      "run again to add what was recorded since.")],
    source: Annotated[str, typer.Option("--source", metavar="store|kafka",
                                        help="The store's log (default) or the Kafka events topic.")] = "store",
    from_position: Annotated[int | None, typer.Option("--from-position", min=1, metavar="N",
                                                      help="Start a new export at store position N.")] = None,
    personal: Annotated[bool, typer.Option(
        "--personal", help="Open sealed personal fields (text, or [erased]); needs a token (CASELEDGER_TOKEN or "
        "--token-file) of a principal whose role may export histories (supervisor, auditor, admin). Without it "
        "they are null, [erased] where the customer is erased.")] = False,
    batch: Annotated[int, typer.Option("--batch", min=1, max=100_000, help="Events read at a time.")] = 5_000,
    kafka: KafkaOpt = None,
    consumer: ConsumerOpt = "confluent",
    as_json: Json = False,
) -> None:
    """Write every event (of every customer, and of none) as Parquet: one folder per event type, a manifest.

    Typed envelope columns (position, type, aggregate, version, recorded and occurred time, actor, channel,
    case, customer pseudonym, hashes), then each type's own fields, typed. Read it with DuckDB, polars or
    pandas (docs/analysts.md). Progress goes to stderr; --json prints the summary.

    Examples:

    ```
    $ caseledger export events --out events/
    $ caseledger export events --out events/                  # later: adds what was recorded since
    $ caseledger export events --out recent/ --from-position 120000
    $ caseledger export events --out events-topic/ --source kafka --kafka localhost:29092
    $ CASELEDGER_TOKEN_FILE=dpo.token caseledger export events --out full/ --personal
    ```
    """
    from caseledger.ledger.reports.parquet_events import export_events as run_export
    from caseledger.projections.catchup import KAFKA, SOURCE_KINDS, open_source

    s = session(ctx)
    kind = source.strip().lower()
    if kind not in SOURCE_KINDS:
        raise typer.BadParameter(f"{source!r}: use store or kafka", param_hint="'--source'")
    ledger = s.open_ledger()
    fields = _personal(s, ledger, opened=personal)
    feed = open_source(kind, ledger=lambda: ledger, kafka=s.kafka(kafka) if kind == KAFKA else None,
                       consumer=consumer)
    try:
        summary = run_export(feed, out, codec=ledger.codec, personal=fields, from_position=from_position,
                             batch=batch, progress=_Progress(), preload=ledger.preload_keys)
    finally:
        feed.close()
        ledger.data_keys.forget()
    if as_json:
        s.echo_json(summary.as_json())
        return
    s.say(f"Exported {summary.events:,} events ({len(summary.counts)} types, {summary.events_per_s:,} events/s) "
          f"to {summary.out}; the export holds {summary.total_events:,} events, up to positions "
          f"{summary.positions}. Personal fields: {summary.personal}.", "green")


def _personal(s: Session, ledger: CaseLedger, *, opened: bool) -> Personal:
    """What the export does with sealed fields: opened for a principal who may export histories, else withheld."""
    from caseledger.ledger.reports.event_table import personal_of

    if not opened:
        return personal_of(ledger.data_keys)
    from caseledger.ledger.access.principals import Authenticator
    from caseledger.ledger.domain.permissions import Operation
    from caseledger.ledger.service.client import resolve_token

    try:
        token = resolve_token(s.settings.client, token=s.token, token_file=s.token_file)
    except ConfigurationError:
        raise ValidationError("--personal opens customers' personal data: give the token of a principal whose role "
                              "may export histories (CASELEDGER_TOKEN or --token-file; `caseledger principals add "
                              "NAME --role supervisor|auditor|admin`)") from None
    principal = Authenticator(ledger.storage.principals()).authenticate(f"Bearer {token}")
    principal.require(Operation.HISTORY_EXPORT)
    return personal_of(ledger.data_keys, open_value=ledger.sealer.open_value)


class _Progress:
    """Progress on stderr, every two seconds, once a run has lasted that long."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def __call__(self, done: int, expected: int, seconds: float) -> None:
        now = time.monotonic()
        if now - self.last >= 2.0:
            self.last = now
            rate = done / seconds if seconds > 0 else 0.0
            print(f"export: {done:,} of ~{expected:,} events ({rate:,.0f} events/s)", file=sys.stderr, flush=True)
