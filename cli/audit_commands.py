"""``caseledger audit verify``: parse, call, print.

Exit codes of ``audit verify``: 0 when everything holds (warnings allowed), 5 when the audit found
discrepancies (each is named in the report), and the ledger's usual codes (4 when the database or
Kafka cannot be used).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from caseledger.cli.common import environment, session
from caseledger.cli.options import KafkaOpt, parse_instant
from caseledger.cli.transparency_commands import NeededOpt, PolicyFileOpt, WitnessOpt

if TYPE_CHECKING:
    from caseledger.ledger.audit import AuditReport

EXIT_DISCREPANCIES = 5
PROGRESS_FROM = 50_000
"""Ledgers with at least this many positions get a progress bar."""

audit_app = typer.Typer(
    no_args_is_help=True,
    help="Prove that nothing was lost, altered or reordered: hash chains, events topic, intake accounting.",
)


class _Bar:
    """A rich progress bar on stderr, shown only for large ledgers."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.progress: Progress | None = None
        self.task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.progress is None:
            if total < PROGRESS_FROM:
                return
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn(), console=Console(stderr=True), transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.label, total=total)
        self.progress.update(self.task, completed=done)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    customer: Annotated[
        str | None,
        typer.Option("--customer", "-c", metavar="CUSTOMER", help="Only this customer's events (id or identity)."),
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option("--since", parser=parse_instant, metavar="ISO-8601", help="Only events recorded from then on."),
    ] = None,
    until: Annotated[
        datetime | None,
        typer.Option("--until", parser=parse_instant, metavar="ISO-8601", help="Only events recorded before then."),
    ] = None,
    kafka: KafkaOpt = None,
    seal: Annotated[
        str | None,
        typer.Option(
            "--seal", metavar="POSITION:DIGEST",
            help="A seal printed by an earlier audit: prove the log up to its position is unchanged since.",
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", metavar="FILE",
                     help="A signed checkpoint you kept: prove the log's first events are exactly those it "
                          "committed to; later events are reported as not yet committed."),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option("--key", metavar="PUBKEY|FILE",
                     help="The verifier key the checkpoint must be signed by (default: the configured signing key's)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    unauthenticated: Annotated[bool, typer.Option(
        "--unauthenticated", help="List the events whose actor was not authenticated (embedded CLI, or recorded "
        "before principals); --json always counts them.")] = False,
    simulated_clock: Annotated[bool, typer.Option(
        "--simulated-clock", help="List the events recorded on a simulated clock (the embedded CLI's --now, the "
        "demo): their recorded time is the operator's choice; --json always counts them.")] = False,
    witness: WitnessOpt = None,
    witnesses_needed: NeededOpt = None,
    witness_policy: PolicyFileOpt = None,
) -> None:
    """Verify the ledger: every hash chain, gapless versions and positions, the events topic, intake accounting.

    Exit 0 when everything holds (warnings, e.g. a publisher that is behind, are listed); exit 5
    with a report naming each discrepancy (which position, event, partition and offset, what differs).
    With --kafka (or CASELEDGER_KAFKA_BOOTSTRAP) the events topic is compared byte for byte, the
    intake topic's offsets are accounted for, and the outcomes topic holds each intake verdict once,
    with its event (ledger-wide audits). Through --api the service audits its own store, with every
    option but --kafka.

    Examples:

    ```
    $ caseledger audit verify
    $ caseledger audit verify --kafka localhost:29092 --json > audit.json
    $ caseledger audit verify --customer email:jane@example.com --since 2026-11-01T00:00Z
    $ caseledger audit verify --seal 182734:4be1…
    $ caseledger audit verify --checkpoint 2026-12-01.checkpoint --key ledger.pub
    ```
    """
    from caseledger.cli.transparency_commands import _read_note, _verifier_key, _witness_policy
    from caseledger.ledger.audit import Seal, verify
    from caseledger.ledger.audit.actors import UnauthenticatedEvents
    from caseledger.ledger.audit.kept_checkpoint import HeldCheckpoint

    s = session(ctx)
    if s.api:
        if kafka:
            from caseledger.ledger.errors import ValidationError

            raise ValidationError("--kafka cannot be used with --api: the service audits its own store; compare the "
                                  "topics where the broker is, without --api")
        note = _read_note(checkpoint) if checkpoint is not None else None
        trusted = str(_verifier_key(key, s)) if checkpoint is not None else None
        answer = s.service.audit_report(customer, since=since, until=until, seal=seal, checkpoint=note, key=trusted,
                                        listed=unauthenticated or simulated_clock)
        policy = _witness_policy(witness, witnesses_needed, witness_policy)
        if note is not None and policy is not None:  # the kept file is the auditor's: held to his policy here
            _hold_to_policy(answer, note, _verifier_key(key, s), policy)
        return _print_service_report(s, answer, as_json=as_json, unauthenticated=unauthenticated,
                                     simulated_clock=simulated_clock)
    held = HeldCheckpoint(_read_note(checkpoint), _verifier_key(key), witnesses=_witness_policy(
        witness, witnesses_needed, witness_policy)) if checkpoint is not None else None
    settings = _kafka_settings(kafka)
    bar = _Bar("verifying")
    try:
        unauth = UnauthenticatedEvents(s.local_ledger.codec)
        report = verify(
            s.local_ledger, customer=customer, since=since, until=until, kafka=settings, readers=_readers(settings),
            seal=Seal.parse(seal) if seal else None, checkpoint=held, progress=bar, collect=unauth,
        )
    finally:
        bar.close()
    if as_json:
        extra: dict[str, Any] = {"unauthenticated_events": unauth.count, "simulated_clock_events": unauth.simulated}
        if unauthenticated:
            extra["unauthenticated"] = [e.as_dict() for e in unauth.listed]
        if simulated_clock:
            extra["simulated_clock"] = [e.as_dict() for e in unauth.simulated_listed]
        s.echo_json({**report.as_dict(), **extra})
    else:
        print_report(s.out, report)
        s.say(f"events recorded without authentication: {unauth.count:,}")
        if unauthenticated:
            _list_events(s, unauth.listed, unauth.count)
        s.say(f"events recorded on a simulated clock: {unauth.simulated:,}")
        if simulated_clock:
            _list_events(s, unauth.simulated_listed, unauth.simulated)
    if not report.ok:
        raise typer.Exit(EXIT_DISCREPANCIES)


def _hold_to_policy(answer: dict[str, Any], note: str, key: Any, policy: Any) -> None:
    """The service's report, with the kept checkpoint's witness policy checked on the auditor's side."""
    from caseledger.verify.cosignatures import PolicyError, check_cosignatures

    try:
        check_cosignatures(note, key, policy)
    except PolicyError as error:
        answer["discrepancies"].append({"code": error.code, "message": f"the checkpoint cannot be trusted: {error}",
                                        "severity": "error"})
        answer["counts"][error.code] = answer["counts"].get(error.code, 0) + 1
        answer["ok"] = False


def _print_service_report(s: Any, answer: dict[str, Any], *, as_json: bool, unauthenticated: bool,
                          simulated_clock: bool) -> None:
    """``audit verify`` as the service answered it (GET /v1/audit/verify), printed as on the database."""
    from caseledger.ledger.audit.actors import UnauthenticatedEvent
    from caseledger.ledger.audit.report import AuditReport, Discrepancy, Seal

    listed = {name: [UnauthenticatedEvent(e["position"], e["type"], e["actor"]) for e in answer.pop(name, [])]
              for name in ("unauthenticated", "simulated_clock")}
    if as_json:
        extra: dict[str, Any] = {}
        if unauthenticated:
            extra["unauthenticated"] = [e.as_dict() for e in listed["unauthenticated"]]
        if simulated_clock:
            extra["simulated_clock"] = [e.as_dict() for e in listed["simulated_clock"]]
        s.echo_json({**answer, **extra})
    else:
        fields = {k: answer[k] for k in ("backend", "scope", "head_position", "first_position", "last_position",
                                         "events", "aggregates", "cases", "topic_records", "intake_offsets",
                                         "intake_outcomes", "seconds", "checks", "notes")}
        report = AuditReport(**fields, seal=Seal.parse(answer["seal"]) if answer["seal"] else None,
                             discrepancies=[Discrepancy(**d) for d in answer["discrepancies"]],
                             counts=Counter(answer["counts"]))
        print_report(s.out, report)
        s.say(f"events recorded without authentication: {answer['unauthenticated_events']:,}")
        if unauthenticated:
            _list_events(s, listed["unauthenticated"], answer["unauthenticated_events"])
        s.say(f"events recorded on a simulated clock: {answer['simulated_clock_events']:,}")
        if simulated_clock:
            _list_events(s, listed["simulated_clock"], answer["simulated_clock_events"])
    if not answer["ok"]:
        raise typer.Exit(EXIT_DISCREPANCIES)


def _list_events(s: Any, listed: list[Any], count: int) -> None:
    for e in listed:
        s.say(f"  position {e.position}: {e.event_type} by {e.actor}")
    if count > len(listed):
        s.say(f"  … and {count - len(listed):,} more")


def _readers(settings: Any) -> Any:
    """The client the audit reads the topics with (kafka-python), when it audits them."""
    if settings is None:
        return None
    from caseledger.ledger.kafka.clients import KAFKA_PYTHON, KafkaClient

    return KafkaClient(KAFKA_PYTHON, "consumer")


def _kafka_settings(bootstrap: str | None) -> Any:
    if not bootstrap:
        return None
    from caseledger.ledger.settings import KafkaSettings

    return KafkaSettings.resolve(bootstrap_servers=bootstrap, settings=environment().kafka)


def print_report(out: Console, report: AuditReport) -> None:
    """The audit report as a summary table and one line per discrepancy."""
    verdict = Text("verified: everything holds", style="green") if report.ok else Text(
        "NOT verified: discrepancies found", style="bold red"
    )
    table = Table("", "", show_header=False, title=Text.assemble("Audit — ", verdict), title_justify="left")
    scope = ", ".join(f"{k} {v}" for k, v in report.scope.items() if v not in (None, False)) or "whole ledger"
    rows = [
        ("store", report.backend),
        ("scope", scope),
        ("positions", f"{report.first_position}..{report.last_position} (head {report.head_position})"
         if report.first_position else f"none in scope (head {report.head_position})"),
        ("events checked", f"{report.events:,} in {report.aggregates:,} aggregates, {report.cases:,} cases"),
        ("checks", ", ".join(report.checks)),
    ]
    if report.topic_records:
        rows.append(("topic records read", f"{report.topic_records:,}"))
    if report.intake_offsets or report.intake_outcomes:
        rows.append(("intake", f"{report.intake_offsets:,} offsets, {report.intake_outcomes:,} outcomes"))
    rows.append(("time", f"{report.seconds:.2f} s"))
    for name, value in rows:
        table.add_row(name, Text(value))
    out.print(table)
    if report.seal:
        # On a line of its own, never cut: auditors keep it to prove later that nothing up to here changed.
        out.print(Text(f"seal: {report.seal}"), soft_wrap=True)
    for note in report.notes:
        out.print(Text(f"note: {note}", style="dim"))
    for discrepancy in report.discrepancies:
        style = "red" if discrepancy.severity == "error" else "yellow"
        out.print(Text(f"{discrepancy.severity}: {discrepancy.line()}", style=style))
    for code, n in report.omitted().items():
        out.print(Text(f"… and {n} more [{code}] not listed", style="red"))
