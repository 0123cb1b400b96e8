"""The ``caseledger`` command line: the root command, its options, and where every command sits.

Each command lives in the module of its group (``cli.case``, ``cli.backbone`` …) and only parses,
calls the ledger or a projection query, and prints; this module builds the tree and the help
panels, and nothing imports it back. Exit codes: see :mod:`cli.common`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from caseledger.cli import (
    actions_commands,
    adapters_commands,
    audit_commands,
    backbone_commands,
    bench_commands,
    case_commands,
    contact_commands,
    customer_texts_commands,
    customers_commands,
    deadlines_commands,
    export_commands,
    intake_commands,
    items_commands,
    messages_commands,
    metrics_commands,
    principals_commands,
    privacy_commands,
    projections_commands,
    promises_commands,
    serve_commands,
    tooling_commands,
    transparency_commands,
)
from caseledger.cli.common import LedgerGroup, Session
from caseledger.cli.options import Zone, parse_actor, parse_instant
from caseledger.ledger.domain.values import Actor

__all__ = ["app", "main"]

app = typer.Typer(
    cls=LedgerGroup,
    rich_markup_mode="markdown",
    name="caseledger",
    no_args_is_help=True,
    epilog="Exit codes: 0 done, 2 refused (invalid, against the case's rules, not found), "
    "3 conflict (retry), 4 database or configuration unusable, 6 channel message id collision (kept, not "
    "applied: resend with a new message id).",
)


@app.callback()
def root(
    ctx: typer.Context,
    database: Annotated[
        str | None,
        typer.Option(
            "--database", "-d", envvar="CASELEDGER_DATABASE", metavar="PATH|URL",
            help="SQLite file (default caseledger.sqlite) or postgresql://user:pass@host/db URL.",
        ),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy", envvar="CASELEDGER_POLICY", metavar="FILE|NAME",
            help="Response policy TOML file, or a shipped one by name (acpr-2022-r-01: French banking "
            "complaints); delays, calendar, customer texts. Default built in.",
        ),
    ] = None,
    actor: Annotated[
        Actor | None,
        typer.Option(
            "--as", envvar="CASELEDGER_ACTOR", parser=parse_actor, metavar="KIND:ID",
            help="Who acts, e.g. agent:alice or automation:limits-rule; default agent:cli.",
        ),
    ] = None,
    now: Annotated[
        datetime | None,
        typer.Option(
            "--now", parser=parse_instant, metavar="ISO-8601",
            help="Simulate the ledger's clock on a local SQLite file (demo, tests): what is recorded is "
            "recorded at this time and marked simulated-clock, so `audit verify --simulated-clock` lists it. "
            "Not with --api or PostgreSQL.",
        ),
    ] = None,
    zone: Zone = None,
    api: Annotated[
        str | None,
        typer.Option(
            "--api", envvar="CASELEDGER_API", metavar="URL",
            help="Act through the ledger service at URL (caseledger serve) with a bearer token, instead of a "
            "local file; the server records the token's principal as the actor.",
        ),
    ] = None,
    token_file: Annotated[
        str | None,
        typer.Option("--token-file", envvar="CASELEDGER_TOKEN_FILE", metavar="FILE",
                     help="File holding the bearer token for --api (or set CASELEDGER_TOKEN)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", metavar="TOKEN", help="Bearer token for --api; prefer CASELEDGER_TOKEN or "
                     "--token-file (an option shows in the process list)."),
    ] = None,
) -> None:
    """Caseledger: every contact, promise and status change of a customer case, as immutable events.

    Examples:

    ```
    $ caseledger contact record --channel email --message-id m-1 --from email:jane@example.com --item "Why was I charged twice?"
    $ caseledger case show CL-7K2QD-M3XPA
    $ caseledger --as agent:alice respond CL-7K2QD-M3XPA --body "Refunded." --answers Q1
    ```
    """
    if now is not None and ctx.invoked_subcommand != "tick":
        _refuse_future_now(now)
    if api and (actor is not None or now is not None):
        # Through the service the authenticated principal acts, now: no caller chooses who or when.
        raise typer.BadParameter(
            "--as, CASELEDGER_ACTOR and --now cannot be used with --api: the ledger service records the token's "
            "principal as the actor, at the time it records; unset them",
            param_hint="'--as'" if actor is not None else "'--now'",
        )
    state = Session(database=database, policy=policy, actor_given=actor, now=now, zone=zone, api=api, token=token,
                    token_file=token_file)
    ctx.obj = state
    ctx.call_on_close(state.close)


def _refuse_future_now(now: datetime) -> None:
    """--now replaces the ledger's clock, so the ledger's own "in the future" check cannot see it."""
    from caseledger.ledger.domain.claimed_times import CLOCK_SKEW

    if now > datetime.now(UTC) + CLOCK_SKEW:
        raise typer.BadParameter(
            f"{now.isoformat()} is in the future; events record when things happened (only tick may look ahead)",
            param_hint="'--now'",
        )


# -- the command tree: panels of ``caseledger --help`` (the order is common.COMMAND_ORDER) -----------------

INTAKE, CASES, WORK, AUTOMATION, STREAMING, TOOLS, PROJECTIONS = (
    "Intake", "Cases and customers", "Working a case", "Automation and deadlines", "Kafka backbone", "Tooling",
    "Projections",
)
SERVICE = "Ledger service"

app.add_typer(contact_commands.contact_app, name="contact", rich_help_panel=INTAKE)

app.add_typer(case_commands.case_app, name="case", rich_help_panel=CASES)
app.command("cases", rich_help_panel=CASES)(customers_commands.cases)
app.command("history", rich_help_panel=CASES)(customers_commands.history)
# One `customer` group: their personal data (erase, hold, release, keys) and their language (set-locale).
privacy_commands.customer_app.registered_commands.extend(customer_texts_commands.customer_app.registered_commands)
app.add_typer(privacy_commands.customer_app, name="customer", rich_help_panel=CASES)
app.add_typer(customer_texts_commands.texts_app, name="texts", rich_help_panel=TOOLS)

app.command("respond", rich_help_panel=WORK)(items_commands.respond)
app.add_typer(items_commands.item_app, name="item", rich_help_panel=WORK)
app.add_typer(promises_commands.promise_app, name="promise", rich_help_panel=WORK)
app.add_typer(messages_commands.message_app, name="message", rich_help_panel=WORK)

app.add_typer(actions_commands.action_app, name="action", rich_help_panel=AUTOMATION)
app.command("tick", rich_help_panel=AUTOMATION)(deadlines_commands.tick)

app.add_typer(backbone_commands.topics_app, name="topics", rich_help_panel=STREAMING)
app.command("publish", rich_help_panel=STREAMING)(backbone_commands.publish)
backbone_commands.intake_app.command("collisions")(intake_commands.intake_collisions)
backbone_commands.intake_app.command("rejections")(intake_commands.intake_rejections)
app.add_typer(backbone_commands.intake_app, name="intake", rich_help_panel=STREAMING)
app.add_typer(backbone_commands.publisher_app, name="publisher", rich_help_panel=STREAMING)
app.command("run", rich_help_panel=STREAMING)(backbone_commands.run_all)

app.add_typer(tooling_commands.schemas_app, name="schemas", rich_help_panel=TOOLS)
app.command("version", rich_help_panel=TOOLS)(tooling_commands.version)
app.command("demo", rich_help_panel=TOOLS)(tooling_commands.demo)
app.add_typer(bench_commands.bench_app, name="bench", rich_help_panel=TOOLS)
audit_commands.audit_app.command("key")(transparency_commands.audit_key)
audit_commands.audit_app.command("checkpoint")(transparency_commands.audit_checkpoint)
audit_commands.audit_app.command("prove")(transparency_commands.audit_prove)
audit_commands.audit_app.command("consistency")(transparency_commands.audit_consistency)
app.add_typer(audit_commands.audit_app, name="audit", rich_help_panel=TOOLS)
# One `keys` group: the key-encryption key of customers' data keys (privacy) and the checkpoint
# signing key (transparency).
privacy_commands.keys_app.registered_commands.extend(transparency_commands.keys_app.registered_commands)
privacy_commands.keys_app.info.help = ("The ledger's keys: the checkpoint signing key (Ed25519) and the key-encryption key that "
                              "wraps customers' data keys.")
app.add_typer(privacy_commands.keys_app, name="keys", rich_help_panel=TOOLS)

app.command("overdue", rich_help_panel=PROJECTIONS)(deadlines_commands.overdue)
app.command("metrics", rich_help_panel=PROJECTIONS)(metrics_commands.metrics)
app.add_typer(projections_commands.projections_app, name="projections", rich_help_panel=PROJECTIONS)
app.add_typer(export_commands.export_app, name="export", rich_help_panel=PROJECTIONS)

app.command("serve", rich_help_panel=SERVICE)(serve_commands.serve)
app.add_typer(principals_commands.principals_app, name="principals", rich_help_panel=SERVICE)
app.add_typer(adapters_commands.adapters_app, name="adapters", rich_help_panel=SERVICE)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="caseledger")


if __name__ == "__main__":
    main()
