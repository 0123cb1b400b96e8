"""``caseledger cases`` and ``history``: a customer's cases, and every event of theirs."""

from __future__ import annotations

import os
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from caseledger.cli import render
from caseledger.cli.common import Session, case_from_record, session
from caseledger.cli.options import Customer, Json, Zone, parse_instant
from caseledger.ledger.private_files import open_private

if TYPE_CHECKING:
    from caseledger.ledger.reports.export import OccurredRange


def cases(ctx: typer.Context, customer: Customer, as_json: Json = False) -> None:
    """List a customer's cases, oldest first.

    Examples:

    ```
    $ caseledger cases email:jane@example.com
    $ caseledger cases cust-0042 --json
    ```
    """
    s = session(ctx)
    found = [case_from_record(r) for r in s.ledger.case_records_of(customer)] if s.api else s.local_ledger.cases_of(customer)
    if as_json:
        s.echo_json([render.case_record(c) for c in found])
    else:
        render.render_cases(s.out, found, customer=customer, tz=s.tz)


def history(
    ctx: typer.Context, customer: Customer, as_json: Json = False, zone: Zone = None,
    export: Annotated[
        tuple[str, Path] | None,
        typer.Option("--export", metavar="FORMAT FILE", help="Write it, audited, as json, avro or html to FILE."),
    ] = None,
    occurred_from: Annotated[
        datetime | None,
        typer.Option("--occurred-from", parser=parse_instant, metavar="ISO-8601",
                     help="With --export: show the events that occurred (on their channel: the envelope's "
                          "occurred_at, not when the ledger recorded them) from then on; the others are in the "
                          "file by hash and stored bytes only, so it still proves the history complete."),
    ] = None,
    occurred_until: Annotated[
        datetime | None,
        typer.Option("--occurred-until", parser=parse_instant, metavar="ISO-8601",
                     help="With --export: … and before then (exclusive)."),
    ] = None,
    kept: Annotated[
        Path | None,
        typer.Option("--kept", metavar="CHECKPOINT", help="With --export: a signed checkpoint you kept; the export "
                     "carries the consistency proof from it (python -m caseledger.verify FILE --key K --kept it)."),
    ] = None,
) -> None:
    """Every event of a customer, across cases and channels, in the store's order (as the exports).

    Examples:

    ```
    $ caseledger history email:jane@example.com --tz Europe/Paris
    $ caseledger history cust-0042 --json > cust-0042.json
    $ caseledger history cust-0042 --export html cust-0042.html
    $ caseledger history cust-0042 --export json cust-0042.json --kept 2026-11-01.checkpoint
    $ caseledger history cust-0042 --export json 2026.json --occurred-from 2026-01-01T00:00Z --occurred-until 2027-01-01T00:00Z
    ```
    """
    s = session(ctx)
    if occurred_from is not None or occurred_until is not None:
        if not export:
            raise typer.BadParameter("an occurred range applies to an export: add --export FORMAT FILE",
                                     param_hint="'--occurred-from' / '--occurred-until'")
        from caseledger.ledger.reports.export import OccurredRange

        if occurred_from is not None and occurred_until is not None and occurred_until <= occurred_from:
            raise typer.BadParameter(f"{occurred_until.isoformat()} is not after {occurred_from.isoformat()}",
                                     param_hint="'--occurred-until'")
        occurred = OccurredRange(occurred_from, occurred_until)
    else:
        occurred = None
    if export:
        return export_history(s, customer, export[0], export[1], zone, kept=_kept_size(kept), occurred=occurred)
    if kept is not None:
        raise typer.BadParameter("--kept goes with --export (the export carries the proof)", param_hint="'--kept'")
    from caseledger.projections.queries import customer_timeline

    if s.api:
        rows = s.service.history_rows(customer)
    else:
        customer_id = s.local_ledger.data_subject(customer)  # a sender known only from kept requests too
        with s.views() as views:
            rows = customer_timeline(views, customer_id, ledger=s.open_ledger)
    if as_json:
        s.echo_json([history_record(row) for row in rows])
    else:
        render_timeline(s, rows, customer=customer, tz=zone or s.tz)


def history_record(row: dict[str, Any]) -> dict[str, Any]:
    """A timeline row as ``history --json`` prints it."""
    return render.plain({
        "type": row["event_type"], "case_reference": row["case_reference"], "actor": row["actor"],
        "recorded_at": row["recorded_at"], "occurred_at": row["occurred_at"], "channel": row["channel"],
        "customer_id": row["customer_id"], "what": row["line"], "event_id": row["event_id"],
        "aggregate_id": row["aggregate_id"], "aggregate_version": row["aggregate_version"],
        "previous_hash": row["previous_hash"], "position": row["position"],
    })


def render_timeline(s: Session, rows: list[dict[str, Any]], *, customer: str, tz: tzinfo) -> None:
    """A customer's timeline as a table, oldest first (times inside lines are UTC); an event that happened (as
    claimed) more than a minute away from its recording shows both times, labelled."""
    from caseledger.ledger.reports.describe import occurred_apart

    table = Table(title=f"History of {customer} ({len(rows)} events)", title_justify="left")
    table.add_column("recorded at", no_wrap=True)
    table.add_column("case", no_wrap=True)
    table.add_column("event")
    table.add_column("channel")
    table.add_column("actor")
    table.add_column("what happened", ratio=1)
    for row in rows:
        when = Text(render.fmt_time(row["recorded_at"], tz, seconds=True))
        if occurred_apart(row["recorded_at"], row["occurred_at"]):
            when.append(f"\noccurred {render.fmt_time(row['occurred_at'], tz, seconds=True)}", style="yellow")
        table.add_row(when, row["case_reference"] or "",
                      row["event_type"], row["channel"] or "", row["actor"], Text(row["line"]))
    s.out.print(table)


def _kept_size(path: Path | None) -> int | None:
    """The tree size a kept checkpoint names (read, not verified: the verifier checks its signature)."""
    if path is None:
        return None
    from caseledger.verify.failures import VerificationError
    from caseledger.verify.note import Checkpoint, split_note

    try:
        return Checkpoint.parse_text(split_note(path.read_text(encoding="utf-8"))[0]).size
    except (OSError, UnicodeDecodeError, VerificationError) as error:
        raise typer.BadParameter(f"{path}: not a readable signed checkpoint ({error})", param_hint="'--kept'") from None


def export_history(s: Session, customer: str, fmt: str, path: Path, zone: tzinfo | None, *,
                   kept: int | None = None, occurred: OccurredRange | None = None) -> None:
    """``history CUSTOMER --export FORMAT FILE``: write the export, say where and whether it verified."""
    from caseledger.ledger.reports.export import FORMATS, export_history

    fmt = fmt.strip().lower()
    if fmt not in FORMATS:
        raise typer.BadParameter(f"{fmt!r} is not an export format; use one of {', '.join(FORMATS)}",
                                 param_hint="'--export'")
    if s.api:  # the service exports and audits; the file is its answer
        span = (occurred.start, occurred.end) if occurred is not None else (None, None)
        data, verified = s.service.export(customer, fmt, kept=kept, occurred=span)
        with os.fdopen(open_private(path), "wb") as out:
            out.write(data)
        s.say(f"Exported the history of {customer} as {fmt} to {path} ({len(data):,} bytes); audit: "
              f"{'verified' if verified else 'NOT verified'}.", "green" if verified else "yellow")
        return
    result = export_history(
        s.local_ledger, customer, fmt, path, tz=zone or s.tz, describe=lambda e: render.describe_event(e, tz=zone or s.tz),
        kept=kept,
        occurred=occurred,
    )
    verdict = "verified" if result.verified else f"NOT verified ({result.discrepancies} discrepancies)"
    shown = f" ({result.shown} occurred in the range, the others by hash and stored bytes)" if occurred is not None else ""
    s.say(f"Exported {result.events} events{shown} of {result.customer_id} as {fmt} to {result.path} "
          f"({result.size:,} bytes); audit: {verdict}.", "green" if result.verified else "yellow")
