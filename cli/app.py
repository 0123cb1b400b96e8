"""The ``caseledger`` command line: the root command, its options, and where every command sits.

Each command lives in the module of its group (``cli.case``, ``cli.backbone`` …) and only parses,
calls the ledger or a projection query, and prints; this module builds the tree and the help
panels, and nothing imports it back. Exit codes: see :mod:`cli.common`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Annotated

import typer

from caseledger.cli.command_tree import Entry, ledger_group
from caseledger.cli.options import Zone, parse_actor, parse_instant
from caseledger.ledger.domain.values import Actor

__all__ = ["app", "main"]

# -- the command tree: panels of ``caseledger --help`` and where each command is -------------------------------

INTAKE, CASES, WORK, AUTOMATION, STREAMING, TOOLS, PROJECTIONS = (
    "Intake", "Cases and customers", "Working a case", "Automation and deadlines", "Kafka backbone", "Tooling",
    "Projections",
)
SERVICE = "Ledger service"


@cache
def customer_app() -> typer.Typer:
    """One ``customer`` group: their personal data (erase, hold, release, keys) and their language (set-locale)."""
    from caseledger.cli import customer_texts_commands, privacy_commands

    privacy_commands.customer_app.registered_commands.extend(customer_texts_commands.customer_app.registered_commands)
    return privacy_commands.customer_app


@cache
def intake_app() -> typer.Typer:
    """The intake worker, and the records it kept aside: collisions and rejections."""
    from caseledger.cli import backbone_commands, intake_commands

    backbone_commands.intake_app.command("collisions")(intake_commands.intake_collisions)
    backbone_commands.intake_app.command("rejections")(intake_commands.intake_rejections)
    return backbone_commands.intake_app


@cache
def audit_app() -> typer.Typer:
    """The audit, and the transparency log's proofs for the auditor."""
    from caseledger.cli import audit_commands, transparency_commands

    audit_commands.audit_app.command("key")(transparency_commands.audit_key)
    audit_commands.audit_app.command("checkpoint")(transparency_commands.audit_checkpoint)
    audit_commands.audit_app.command("prove")(transparency_commands.audit_prove)
    audit_commands.audit_app.command("consistency")(transparency_commands.audit_consistency)
    return audit_commands.audit_app


@cache
def keys_app() -> typer.Typer:
    """One ``keys`` group: the key-encryption key of customers' data keys (privacy) and the checkpoint signing
    key (transparency)."""
    from caseledger.cli import privacy_commands, transparency_commands

    privacy_commands.keys_app.registered_commands.extend(transparency_commands.keys_app.registered_commands)
    privacy_commands.keys_app.info.help = KEYS_HELP
    return privacy_commands.keys_app


KEYS_HELP = ("The ledger's keys: the checkpoint signing key (Ed25519) and the key-encryption key that wraps customers' "
             "data keys.")

#: Every command of the root: its panel, its line in ``caseledger --help`` (the first paragraph of its own
#: help, held to it by tests/unit/test_cli_startup.py) and where it is, imported only when it runs.
COMMANDS = (
    Entry("contact", INTAKE, "Record what customers send on any channel.", "contact_commands:contact_app"),
    Entry("case", CASES, "Look at a case and change its status, owner or team.", "case_commands:case_app"),
    Entry("cases", CASES, "List a customer's cases, oldest first.", "customers_commands:cases"),
    Entry("history", CASES, "Every event of a customer, across cases and channels, in the store's order (as the "
          "exports).", "customers_commands:history"),
    Entry("customer", CASES, "A customer's personal data: erase it (GDPR art. 17), or keep it under a legal hold "
          "(art. 17(3)).", customer_app),
    Entry("texts", TOOLS, "The templates of customer texts: check a company's folder, preview.",
          "customer_texts_commands:texts_app"),
    Entry("respond", WORK, "Send a response to the customer, answering some of the case's items.",
          "items_commands:respond"),
    Entry("item", WORK, "Items: the questions a customer asked.", "items_commands:item_app"),
    Entry("promise", WORK, "Promises made to a customer: make, keep, withdraw, break.", "promises_commands:promise_app"),
    Entry("message", WORK, "Delivery and read receipts of messages.", "messages_commands:message_app"),
    Entry("action", AUTOMATION, "Actions automation proposes; only a human approval lets them execute.",
          "actions_commands:action_app"),
    Entry("tick", AUTOMATION, "Record every acknowledgement, response and promise deadline now past due, once; apply "
          "the retention policy.", "deadlines_commands:tick"),
    Entry("topics", STREAMING, "The intake and events topics on Kafka.", "backbone_commands:topics_app"),
    Entry("publish", STREAMING, "Publish intake records (JSON) on the intake topic, for shell-script channel "
          "adapters.", "backbone_commands:publish"),
    Entry("intake", STREAMING, "The intake worker: intake topic → ledger.", intake_app),
    Entry("publisher", STREAMING, "The publisher: ledger → events topic.", "backbone_commands:publisher_app"),
    Entry("run", STREAMING, "Run the intake worker, the publisher and the projections (--processes: one process each).",
          "backbone_commands:run_all"),
    Entry("schemas", TOOLS, "The Avro schemas of the events.", "tooling_commands:schemas_app"),
    Entry("version", TOOLS, "Print the installed caseledger version.", "tooling_commands:version"),
    Entry("demo", TOOLS, "Play a short story through the ledger: contacts on several channels, a promise, a handoff, "
          "a close.", "tooling_commands:demo"),
    Entry("bench", TOOLS, "Benchmarks, each against a baseline measured in the same run.", "bench_commands:bench_app"),
    Entry("audit", TOOLS, "Prove that nothing was lost, altered or reordered: hash chains, events topic, intake "
          "accounting.", audit_app),
    Entry("keys", TOOLS, KEYS_HELP, keys_app),
    Entry("overdue", PROJECTIONS, "Deadlines past due and still pending: acknowledgements, responses and promises.",
          "deadlines_commands:overdue"),
    Entry("metrics", PROJECTIONS, "Service per channel and segment: time to acknowledge, to first response and to "
          "resolution\n(mean, p50, p90, p99), promises kept, chatbot-to-human wait, follow-ups per case.",
          "metrics_commands:metrics"),
    Entry("projections", PROJECTIONS, "Read models built from the events (case state, timeline, deadlines, metrics): "
          "list, status, run, rebuild.", "projections_commands:projections_app"),
    Entry("export", PROJECTIONS, "Every event out, for analysts: Parquet files and a manifest.",
          "export_commands:export_app"),
    Entry("serve", SERVICE, "Serve the HTTP API: every command and read, behind bearer tokens and the role matrix "
          "(docs/api.md).", "serve_commands:serve"),
    Entry("principals", SERVICE, "Principals of the ledger service: add (prints a token once), set (team, zone, locale), revoke, list.",
          "principals_commands:principals_app"),
    Entry("adapters", SERVICE, "Channel adapters' Ed25519 keys and the channels each may publish for.",
          "adapters_commands:adapters_app"),
)

# The order in which ``caseledger --help`` lists commands (and so their panels): the life of a case,
# then the Kafka backbone, the tooling and the projections.
COMMAND_ORDER = (
    "contact", "case", "cases", "history", "customer", "respond", "item", "promise", "message", "action", "tick",
    "topics", "publish", "intake", "publisher", "run", "schemas", "version", "demo", "overdue", "metrics",
    "bench", "audit", "keys", "projections", "export", "serve", "principals", "adapters",
)

app = typer.Typer(
    cls=ledger_group(COMMANDS, COMMAND_ORDER),
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
    from caseledger.cli.common import Session

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


def main() -> None:
    """Console-script entry point."""
    app(prog_name="caseledger")


if __name__ == "__main__":
    main()
