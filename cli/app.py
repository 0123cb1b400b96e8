"""The ``caseledger`` command line: parses options, calls the CaseLedger service, prints the result.

Every command is one call to one :class:`ledger.application.CaseLedger` method, so a command
either happened completely or not at all. Errors of the ledger are turned into a red
``error: …`` line and an exit code in one place, :class:`LedgerGroup`:

==  =======================================================================
0   done (a duplicate contact is "already recorded", which is done too)
1   unexpected ledger error
2   refused: invalid input, a rule of the case forbids it, or not found (also usage errors)
3   conflict: another command changed the case first; retry
4   the database, broker or configuration cannot be used
6   collision: the channel message id is already another request's; this request was recorded as
    a collision (``caseledger intake collisions``), not applied — send it with a new message id
==  =======================================================================
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfoNotFoundError

import typer
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from caseledger.cli import render
from caseledger.ledger.domain.case import Status
from caseledger.ledger.domain.values import Actor, Attachment, Channel, ContactDraft, Identity
from caseledger.ledger.errors import (
    BackendError,
    CaseLedgerError,
    ConfigurationError,
    ConflictError,
    MessageIdCollision,
    NotFound,
    RuleViolation,
    ValidationError,
)

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger

CHANNELS = ", ".join(c.value for c in Channel)
STATUSES = ", ".join(Status.ACTIVE)
ISO_ADVICE = "use ISO-8601 with a zone, e.g. 2026-11-24T10:00+01:00 (or 2026-11-24T09:00Z for UTC)"
DEFAULT_ACTOR = "agent:cli"

EXIT_REFUSED = 2
EXIT_CONFLICT = 3
EXIT_BACKEND = 4
EXIT_COLLISION = 6


def exit_code_for(error: CaseLedgerError) -> int:
    """The process exit code for a ledger error (see the module docstring)."""
    if isinstance(error, ValidationError | RuleViolation | NotFound):
        return EXIT_REFUSED
    if isinstance(error, ConflictError):
        return EXIT_CONFLICT
    if isinstance(error, BackendError | ConfigurationError):
        return EXIT_BACKEND
    if isinstance(error, MessageIdCollision):
        return EXIT_COLLISION
    return 1


def plain_console(*, stderr: bool = False) -> Console:
    """A console that prints customer text as given: no markup, emoji codes or highlighting."""
    # Without this, "customer:email:jane@…" would print an envelope emoji and "[Q1]" would vanish.
    return Console(stderr=stderr, markup=False, emoji=False, highlight=False)


# The order in which ``caseledger --help`` lists commands (and so their panels): the life of a case.
COMMAND_ORDER = (
    "contact", "case", "cases", "history", "respond", "item", "promise", "message", "action", "tick",
    "topics", "publish", "intake", "publisher", "run", "schemas", "version", "demo",
)


class LedgerGroup(TyperGroup):
    """The root command group: the one place where ledger errors become messages and exit codes."""

    def list_commands(self, ctx: Any) -> list[str]:
        rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
        return sorted(super().list_commands(ctx), key=lambda name: rank.get(name, len(rank)))

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CaseLedgerError as error:
            plain_console(stderr=True).print(Text(f"error: {error}", style="red"), soft_wrap=True)
            raise typer.Exit(exit_code_for(error)) from None


# -- option parsers (bad values are usage errors, exit 2, naming the option) ---------------------------


def parse_instant(text: str) -> datetime:
    """An ISO-8601 date-time with a zone (a trailing Z means UTC), as UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date-time; {ISO_ADVICE}") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise typer.BadParameter(f"{text!r} has no time zone, so its instant is a guess; {ISO_ADVICE}")
    return value.astimezone(UTC)


def parse_actor(text: str) -> Actor:
    try:
        return Actor.parse(text)
    except ValidationError as error:
        raise typer.BadParameter(str(error)) from None


def parse_zone(text: str) -> tzinfo:
    try:
        return render.local_zone(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise typer.BadParameter(f"unknown time zone {text!r}; use an IANA name such as Europe/Paris or UTC") from None


def parse_attachment(text: str) -> Attachment:
    """``REF:SHA256:SIZE:MEDIA[:FILENAME]``; REF may itself contain colons (s3://…)."""
    # Find the sha256 field from the right, so that a ref like s3://bucket/key keeps its colons.
    parts = text.split(":")
    for i in range(len(parts) - 3, 0, -1):
        sha, size, media = parts[i], parts[i + 1], parts[i + 2]
        if len(sha) == 64 and size.isdigit() and "/" in media:
            filename = ":".join(parts[i + 3 :]) or None
            try:
                return Attachment(
                    ref=":".join(parts[:i]), sha256=sha, size=int(size), media_type=media, filename=filename
                )
            except ValidationError as error:
                raise typer.BadParameter(str(error), param_hint="'--attach'") from None
    raise typer.BadParameter(
        f"{text!r} is not REF:SHA256:SIZE:MEDIA[:FILENAME], e.g. "
        "s3://inbox/42.pdf:<64 hex digits>:20480:application/pdf:invoice.pdf",
        param_hint="'--attach'",
    )


def parse_pairs(values: Sequence[str] | None, *, option: str, upper_keys: bool = False) -> dict[str, str]:
    """``KEY=VALUE`` options into a dict; a key given twice is refused."""
    pairs: dict[str, str] = {}
    for value in values or ():
        key, sep, rest = value.partition("=")
        key = key.strip().upper() if upper_keys else key.strip()
        if not sep or not key:
            raise typer.BadParameter(f"{value!r} is not KEY=VALUE", param_hint=f"'{option}'")
        if key in pairs:
            raise typer.BadParameter(f"{key} is given twice", param_hint=f"'{option}'")
        pairs[key] = rest
    return pairs


def parse_ids(text: str) -> list[str]:
    """``Q1,q2, Q3`` → ``["Q1", "Q2", "Q3"]``."""
    return [part.strip().upper() for part in text.split(",") if part.strip()]


# -- the session of one invocation ----------------------------------------------------------------------


@dataclass
class Session:
    """What the root options chose; the ledger is built only by commands that need it."""

    database: str | None
    policy: str | None
    actor_given: Actor | None
    now: datetime | None
    zone: tzinfo | None
    out: Console = field(default_factory=plain_console)
    _ledger: CaseLedger | None = None

    @property
    def ledger(self) -> CaseLedger:
        """The ledger, opened on first use (``--help``, ``version`` and ``schemas`` never open it)."""
        if self._ledger is None:
            from caseledger.ledger.application import CaseLedger
            from caseledger.ledger.settings import LedgerSettings

            settings = LedgerSettings.resolve(database=self.database, policy=self.policy)
            now = self.now
            self._ledger = CaseLedger(settings, clock=(lambda: now) if now is not None else None)
        return self._ledger

    @property
    def actor(self) -> Actor:
        """Who acts: ``--as``, else CASELEDGER_ACTOR, else agent:cli."""
        return self.actor_given or Actor.parse(DEFAULT_ACTOR)

    @property
    def tz(self) -> tzinfo:
        return self.zone or render.local_zone()

    def instant(self) -> datetime:
        """``--now`` if given, else the current time."""
        return self.now or datetime.now(UTC)

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def echo_json(self, value: Any) -> None:
        typer.echo(render.to_json(value))

    def say(self, text: str, style: str | None = None) -> None:
        self.out.print(Text(text, style=style or ""))


def session(ctx: typer.Context) -> Session:
    obj = ctx.find_root().obj
    assert isinstance(obj, Session)
    return obj


# -- the command tree --------------------------------------------------------------------------------

app = typer.Typer(
    cls=LedgerGroup,
    rich_markup_mode="markdown",
    name="caseledger",
    no_args_is_help=True,
    epilog="Exit codes: 0 done, 2 refused (invalid, against the case's rules, not found), "
    "3 conflict (retry), 4 database or configuration unusable, 6 channel message id collision (kept, not "
    "applied: resend with a new message id).",
)
contact_app = typer.Typer(no_args_is_help=True, help="Record what customers send on any channel.")
case_app = typer.Typer(no_args_is_help=True, help="Look at a case and change its status, owner or team.")
item_app = typer.Typer(no_args_is_help=True, help="Items: the questions a customer asked.")
promise_app = typer.Typer(no_args_is_help=True, help="Promises made to a customer: make, keep, withdraw, break.")
action_app = typer.Typer(
    no_args_is_help=True, help="Actions automation proposes; only a human approval lets them execute."
)
message_app = typer.Typer(no_args_is_help=True, help="Delivery and read receipts of messages.")
schemas_app = typer.Typer(no_args_is_help=True, help="The Avro schemas of the events.")
INTAKE, CASES, WORK, AUTOMATION, TOOLS = (
    "Intake", "Cases and customers", "Working a case", "Automation and deadlines", "Tooling",
)
app.add_typer(contact_app, name="contact", rich_help_panel=INTAKE)
app.add_typer(case_app, name="case", rich_help_panel=CASES)
app.add_typer(item_app, name="item", rich_help_panel=WORK)
app.add_typer(promise_app, name="promise", rich_help_panel=WORK)
app.add_typer(message_app, name="message", rich_help_panel=WORK)
app.add_typer(action_app, name="action", rich_help_panel=AUTOMATION)
app.add_typer(schemas_app, name="schemas", rich_help_panel=TOOLS)

# Options and arguments used by several commands.
Ref = Annotated[str, typer.Argument(metavar="REF", help="Case reference, e.g. CL-7K2QD-M3XPA (the CL- is optional).")]
Reason = Annotated[str, typer.Option("--reason", "-r", metavar="TEXT", help="Why, for the auditor and the customer.")]
Notice = Annotated[
    str, typer.Option("--notice", "-n", metavar="TEXT", help="The customer-facing text telling them what changed.")
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
Zone = Annotated[
    tzinfo | None,
    typer.Option("--tz", parser=parse_zone, metavar="ZONE", help="Show times in this IANA zone, e.g. Europe/Paris."),
]
ChannelOpt = Annotated[str, typer.Option("--channel", "-c", metavar="CHANNEL", help=f"One of: {CHANNELS}.")]
Customer = Annotated[
    str,
    typer.Argument(metavar="CUSTOMER", help="A customer id or an identity such as email:jane@example.com."),
]


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
            "--policy", envvar="CASELEDGER_POLICY", metavar="FILE",
            help="Response policy TOML file (respond-by and acknowledge-by delays); default built in.",
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
            help="Pretend it is this time (tests, backfills): when things happened and the tick time.",
        ),
    ] = None,
    zone: Zone = None,
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
    state = Session(database=database, policy=policy, actor_given=actor, now=now, zone=zone)
    ctx.obj = state
    ctx.call_on_close(state.close)


def _refuse_future_now(now: datetime) -> None:
    """--now replaces the ledger's clock, so the ledger's own "in the future" check cannot see it."""
    from caseledger.ledger.application import FUTURE_TOLERANCE

    if now > datetime.now(UTC) + FUTURE_TOLERANCE:
        raise typer.BadParameter(
            f"{now.isoformat()} is in the future; events record when things happened (only tick may look ahead)",
            param_hint="'--now'",
        )


# -- contacts -----------------------------------------------------------------------------------------


@contact_app.command("record")
def contact_record(
    ctx: typer.Context,
    channel: ChannelOpt,
    message_id: Annotated[
        str, typer.Option("--message-id", "-m", metavar="ID", help="The channel's own id of the message (dedup key).")
    ],
    sender: Annotated[
        str,
        typer.Option("--from", "-f", metavar="IDENTITY", help="Who sent it: email:…, phone:…, handle:… or account:…."),
    ],
    items: Annotated[
        list[str],
        typer.Option("--item", "-i", metavar="TEXT", help="A question or request in the contact; repeat for each."),
    ],
    subject: Annotated[str, typer.Option("--subject", "-s", metavar="TEXT", help="Subject line.")] = "",
    body: Annotated[str | None, typer.Option("--body", "-b", metavar="TEXT", help="The message text.")] = None,
    body_file: Annotated[
        Path | None,
        typer.Option("--body-file", metavar="FILE", help="Read the message text from FILE ('-' for stdin)."),
    ] = None,
    attach: Annotated[
        list[str] | None,
        typer.Option(
            "--attach", "-a", metavar="ATTACHMENT",
            help="REF:SHA256:SIZE:MEDIA_TYPE or REF:SHA256:SIZE:MEDIA_TYPE:FILENAME of a file kept elsewhere; repeatable.",
        ),
    ] = None,
    case: Annotated[
        str | None, typer.Option("--case", metavar="REF", help="Add to this existing case instead of opening one.")
    ] = None,
    follow_up: Annotated[
        bool, typer.Option("--follow-up", help="The customer is chasing an earlier request (counted).")
    ] = False,
    category: Annotated[
        str | None, typer.Option("--category", metavar="WORD", help="Category, e.g. complaint (may change the delay).")
    ] = None,
    customer_id: Annotated[
        str | None, typer.Option("--customer-id", metavar="ID", help="The customer's id, when the channel knows it.")
    ] = None,
    segment: Annotated[
        str | None, typer.Option("--segment", metavar="NAME", help="Customer segment, e.g. premium (for reporting).")
    ] = None,
    as_json: Json = False,
) -> None:
    """Record an inbound contact and issue its acknowledgement (reference, copy, respond-by).

    Recording the same request again (same channel message id, same sender, same content) records
    nothing and answers with the same reference ("already recorded"). The same channel message id
    with another sender or other content is refused with exit code 6 and kept as a collision for an
    operator (`caseledger intake collisions`): resend it with a new message id. The contact's actor
    is the customer unless --as is given.

    Examples:

    ```
    $ caseledger contact record -c web_form -m form-8812 --from email:jane@example.com --subject "Card blocked" --item "Why is my card blocked?" --item "When can I use it again?"
    $ caseledger contact record -c phone -m call-551 --from phone:+33612345678 --case CL-7K2QD-M3XPA --follow-up --item "Still waiting for the refund"
    ```
    """
    s = session(ctx)
    if body is not None and body_file is not None:
        raise typer.BadParameter("give --body or --body-file, not both", param_hint="'--body-file'")
    if body_file is not None:
        body = _read_text(body_file)
    draft = ContactDraft(
        channel=Channel.parse(channel),
        channel_message_id=message_id,
        identity=Identity.parse(sender),
        items=tuple(items),
        subject=subject,
        body=body or "",
        attachments=tuple(parse_attachment(a) for a in attach or ()),
        case_reference=case,
        follow_up=follow_up,
        category=category,
        customer_id=customer_id,
        segment=segment,
    )
    outcome = s.ledger.record_contact(draft, actor=s.actor_given)
    if as_json:
        s.echo_json(outcome)
        return
    if outcome.duplicate:
        s.say(
            f"Already recorded: {draft.channel.value} message {message_id!r} is contact {outcome.contact_id} "
            f"of case {outcome.reference}; nothing new was recorded.",
            "yellow",
        )
    else:
        opened = "new case" if outcome.opened_case else "existing case"
        s.say(f"Recorded contact {outcome.contact_id} on {opened} {outcome.reference}.", "green")
    s.say(f"Reference:   {outcome.reference}")
    s.say(f"Customer:    {outcome.customer_id}")
    s.say(f"Respond by:  {render.fmt_time(outcome.respond_by, s.tz)}")
    s.say(f"Acknowledgement {outcome.acknowledgement_id}:")
    s.out.print(Padding(Text(outcome.acknowledgement), (0, 0, 0, 2)))


def _read_text(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise typer.BadParameter(f"cannot read {path}: {error}", param_hint="'--body-file'") from None


# -- looking at cases ---------------------------------------------------------------------------------


@case_app.command("show")
def case_show(ctx: typer.Context, reference: Ref, as_json: Json = False, zone: Zone = None) -> None:
    """Everything about a case: status, items, promises, contacts, messages, proposals, missed deadlines.

    Examples:

    ```
    $ caseledger case show CL-7K2QD-M3XPA
    $ caseledger case show 7K2QD-M3XPA --json
    ```
    """
    from caseledger.cli.projections_cli import read_case

    s = session(ctx)
    case = read_case(s, reference)  # the case state projection, caught up from the store first
    if as_json:
        s.echo_json(render.case_record(case))
    else:
        render.render_case(s.out, case, tz=zone or s.tz)


@case_app.command("find")
def case_find(
    ctx: typer.Context,
    channel: ChannelOpt,
    message_id: Annotated[str, typer.Option("--message-id", "-m", metavar="ID", help="The channel's message id.")],
    as_json: Json = False,
) -> None:
    """Find the case a channel message was recorded on.

    Example:

    ```
    $ caseledger case find --channel email --message-id "<CA+x1@mail.example.com>"
    ```
    """
    s = session(ctx)
    case = s.ledger.find_by_message(channel, message_id)
    contact = next(
        (c for c in case.contacts.values() if c.channel == Channel.parse(channel).value
         and c.channel_message_id == message_id),
        None,
    )
    contact_id = contact.contact_id if contact else None
    if as_json:
        s.echo_json({"reference": case.reference, "contact_id": contact_id, "status": case.status,
                     "customer_id": case.customer_id})
    else:
        s.say(f"{case.reference}  contact {contact_id or '?'}  ({case.status}, customer {case.customer_id})")


@app.command("cases", rich_help_panel=CASES)
def cases(ctx: typer.Context, customer: Customer, as_json: Json = False) -> None:
    """List a customer's cases, oldest first.

    Examples:

    ```
    $ caseledger cases email:jane@example.com
    $ caseledger cases cust-0042 --json
    ```
    """
    s = session(ctx)
    found = s.ledger.cases_of(customer)
    if as_json:
        s.echo_json([render.case_record(c) for c in found])
    else:
        render.render_cases(s.out, found, customer=customer, tz=s.tz)


@app.command("history", rich_help_panel=CASES)
def history(
    ctx: typer.Context, customer: Customer, as_json: Json = False, zone: Zone = None,
    export: Annotated[
        tuple[str, Path] | None,
        typer.Option("--export", metavar="FORMAT FILE", help="Write it, audited, as json, avro or html to FILE."),
    ] = None,
) -> None:
    """Every event of a customer, across cases and channels, in the store's order (as the exports).

    Examples:

    ```
    $ caseledger history email:jane@example.com --tz Europe/Paris
    $ caseledger history cust-0042 --json > cust-0042.json
    $ caseledger history cust-0042 --export html cust-0042.html
    ```
    """
    from caseledger.cli.projections_cli import history_record, read_history, render_timeline

    s = session(ctx)
    if export:
        from caseledger.cli.audit_cli import export_history_command

        return export_history_command(s, customer, export[0], export[1], zone)
    rows = read_history(s, customer)  # the customer timeline projection
    if as_json:
        s.echo_json([history_record(row) for row in rows])
    else:
        render_timeline(s, rows, customer=customer, tz=zone or s.tz)


# -- answering ----------------------------------------------------------------------------------------


@app.command("respond", rich_help_panel=WORK)
def respond(
    ctx: typer.Context,
    reference: Ref,
    body: Annotated[str, typer.Option("--body", "-b", metavar="TEXT", help="The text the customer receives.")],
    answers: Annotated[
        str,
        typer.Option("--answers", metavar="Q1,Q2", help="Items this response answers; none for a holding reply."),
    ] = "",
    channel: Annotated[
        str | None, typer.Option("--channel", "-c", metavar="CHANNEL", help=f"Sent on: {CHANNELS}.")
    ] = None,
) -> None:
    """Send a response to the customer, answering some of the case's items.

    Examples:

    ```
    $ caseledger respond CL-7K2QD-M3XPA --body "Your card is unblocked." --answers Q1,Q2 --channel email
    $ caseledger respond CL-7K2QD-M3XPA --body "We are checking with the bank, news by Friday."
    ```
    """
    s = session(ctx)
    answered = parse_ids(answers)
    response_id = s.ledger.respond(reference, actor=s.actor, body=body, answers=answered, channel=channel)
    what = f"answering {', '.join(answered)}" if answered else "answering no item (holding reply)"
    s.say(f"Response {response_id} recorded, {what}.", "green")


@item_app.command("waive")
def item_waive(
    ctx: typer.Context,
    reference: Ref,
    item: Annotated[str, typer.Argument(metavar="ITEM", help="The item id, e.g. Q2.")],
    reason: Reason,
) -> None:
    """Mark an item as not to be answered, with the reason.

    Example:

    ```
    $ caseledger item waive CL-7K2QD-M3XPA Q2 --reason "customer withdrew the question on the phone"
    ```
    """
    s = session(ctx)
    s.ledger.waive_item(reference, actor=s.actor, item_id=item.strip().upper(), reason=reason)
    s.say(f"Item {item.strip().upper()} waived.", "green")


# -- promises -----------------------------------------------------------------------------------------

PromiseId = Annotated[str, typer.Argument(metavar="PROMISE", help="The promise id, e.g. P1.")]


@promise_app.command("make")
def promise_make(
    ctx: typer.Context,
    reference: Ref,
    channel: Annotated[str, typer.Option("--channel", "-c", metavar="CHANNEL", help=f"Made on: {CHANNELS}.")],
    kind: Annotated[str, typer.Option("--kind", "-k", metavar="KIND", help="callback, refund, credit, repair …")],
    terms: Annotated[str, typer.Option("--terms", "-t", metavar="TEXT", help="What exactly was promised.")],
    due: Annotated[
        datetime, typer.Option("--due", parser=parse_instant, metavar="ISO-8601", help="When it is due, with zone.")
    ],
    confirm_on: Annotated[
        str | None,
        typer.Option(
            "--confirm-on", metavar="CHANNEL",
            help="Written channel for the confirmation of a spoken promise (default: the customer's last written one).",
        ),
    ] = None,
) -> None:
    """Record a promise; one made on the phone or in a branch also gets a written confirmation.

    Example:

    ```
    $ caseledger promise make CL-7K2QD-M3XPA --channel phone --kind callback --terms "call back with the refund date" --due 2026-11-24T10:00+01:00
    ```
    """
    s = session(ctx)
    promise_id, confirmation_id = s.ledger.make_promise(
        reference, actor=s.actor, channel=channel, kind=kind, terms=terms, due_at=due,
        confirmation_channel=confirm_on,
    )
    s.say(f"Promise {promise_id} recorded, due {render.fmt_time(due, s.tz)}.", "green")
    if confirmation_id:
        s.say(f"Written confirmation {confirmation_id} issued to the customer.")


@promise_app.command("keep")
def promise_keep(
    ctx: typer.Context,
    reference: Ref,
    promise: PromiseId,
    evidence: Annotated[
        str, typer.Option("--evidence", "-e", metavar="TEXT", help="What shows it was kept (transfer id, call log …).")
    ],
) -> None:
    """Record that a promise was kept.

    Example:

    ```
    $ caseledger promise keep CL-7K2QD-M3XPA P1 --evidence "refund transfer TRX-99102"
    ```
    """
    s = session(ctx)
    s.ledger.keep_promise(reference, actor=s.actor, promise_id=promise.strip().upper(), evidence=evidence)
    s.say(f"Promise {promise.strip().upper()} kept.", "green")


@promise_app.command("withdraw")
def promise_withdraw(ctx: typer.Context, reference: Ref, promise: PromiseId, reason: Reason, notice: Notice) -> None:
    """Withdraw a promise; the customer is told why.

    Example:

    ```
    $ caseledger promise withdraw CL-7K2QD-M3XPA P1 --reason "offer ended" --notice "We cannot offer the credit after all, because …"
    ```
    """
    s = session(ctx)
    pid = promise.strip().upper()
    s.ledger.withdraw_promise(reference, actor=s.actor, promise_id=pid, reason=reason, notice=notice)
    s.say(f"Promise {pid} withdrawn; the customer is notified.", "green")


@promise_app.command("break")
def promise_break(ctx: typer.Context, reference: Ref, promise: PromiseId, reason: Reason) -> None:
    """Record that a promise was not kept.

    Example:

    ```
    $ caseledger promise break CL-7K2QD-M3XPA P1 --reason "nobody called back"
    ```
    """
    s = session(ctx)
    pid = promise.strip().upper()
    s.ledger.break_promise(reference, actor=s.actor, promise_id=pid, reason=reason)
    s.say(f"Promise {pid} recorded as broken.", "yellow")


# -- status -------------------------------------------------------------------------------------------


@case_app.command("status")
def case_status(
    ctx: typer.Context,
    reference: Ref,
    status: Annotated[str, typer.Argument(metavar="STATUS", help=f"One of: {STATUSES}.")],
    reason: Reason,
    notice: Notice,
) -> None:
    """Move an active case to another active status.

    Example:

    ```
    $ caseledger case status CL-7K2QD-M3XPA waiting_on_customer --reason "need the invoice" --notice "Please send us the invoice."
    ```
    """
    s = session(ctx)
    s.ledger.change_status(reference, actor=s.actor, to_status=status, reason=reason, notice=notice)
    s.say(f"Case is now {status.strip().lower()}; the customer is notified.", "green")


@case_app.command("close")
def case_close(
    ctx: typer.Context,
    reference: Ref,
    reason: Reason,
    notice: Notice,
    waive: Annotated[
        list[str] | None,
        typer.Option(
            "--waive", "-w", metavar="ID=REASON",
            help="Waive an open item (Q2) or promise (P1) while closing; repeatable.",
        ),
    ] = None,
) -> None:
    """Close a case: every item answered or waived, every promise settled or waived.

    Examples:

    ```
    $ caseledger case close CL-7K2QD-M3XPA --reason "all answered" --notice "Your request is closed."
    $ caseledger case close CL-7K2QD-M3XPA -r "resolved" -n "Closed." --waive Q2="customer no longer needs it"
    ```
    """
    s = session(ctx)
    waived = parse_pairs(waive, option="--waive", upper_keys=True)
    s.ledger.close_case(reference, actor=s.actor, reason=reason, notice=notice, waive=waived)
    extra = f" (waived {', '.join(waived)})" if waived else ""
    s.say(f"Case closed{extra}; the customer is notified.", "green")


@case_app.command("cancel")
def case_cancel(ctx: typer.Context, reference: Ref, reason: Reason, notice: Notice) -> None:
    """Cancel a case (withdraw its open promises first).

    Example:

    ```
    $ caseledger case cancel CL-7K2QD-M3XPA --reason "duplicate of CL-4G1HX-Q9ZRT" --notice "We handle this in CL-4G1HX-Q9ZRT."
    ```
    """
    s = session(ctx)
    s.ledger.cancel_case(reference, actor=s.actor, reason=reason, notice=notice)
    s.say("Case cancelled; the customer is notified.", "green")


@case_app.command("reopen")
def case_reopen(ctx: typer.Context, reference: Ref, reason: Reason, notice: Notice) -> None:
    """Reopen a closed or cancelled case.

    Example:

    ```
    $ caseledger case reopen CL-7K2QD-M3XPA --reason "refund never arrived" --notice "We reopened your case."
    ```
    """
    s = session(ctx)
    s.ledger.reopen_case(reference, actor=s.actor, reason=reason, notice=notice)
    s.say("Case reopened; the customer is notified.", "green")


# -- people -------------------------------------------------------------------------------------------

ToAgent = Annotated[str | None, typer.Option("--to", metavar="AGENT", help="The agent who takes the case.")]
ToTeam = Annotated[str | None, typer.Option("--team", metavar="TEAM", help="The team that takes the case.")]


@case_app.command("assign")
def case_assign(ctx: typer.Context, reference: Ref, to: ToAgent = None, team: ToTeam = None) -> None:
    """Give a case to an agent and/or a team.

    Example:

    ```
    $ caseledger case assign CL-7K2QD-M3XPA --to alice --team cards
    ```
    """
    s = session(ctx)
    s.ledger.assign(reference, actor=s.actor, assignee=to, team=team)
    s.say("Assigned to " + " / ".join(x for x in (to, team and f"team {team}") if x) + ".", "green")


@case_app.command("handoff")
def case_handoff(
    ctx: typer.Context,
    reference: Ref,
    to: ToAgent = None,
    team: ToTeam = None,
    note: Annotated[str, typer.Option("--note", metavar="TEXT", help="What the next agent should know.")] = "",
    as_json: Json = False,
) -> None:
    """Hand a case over with a brief (open items, promises, last contacts), and print the brief.

    Example:

    ```
    $ caseledger --as agent:alice case handoff CL-7K2QD-M3XPA --to bob --note "customer prefers email"
    ```
    """
    s = session(ctx)
    brief = s.ledger.hand_off(reference, actor=s.actor, to_assignee=to, to_team=team, note=note)
    if as_json:
        s.echo_json(brief)
        return
    s.say("Handed off to " + " / ".join(x for x in (to, team and f"team {team}") if x) + ".", "green")
    render.render_brief(s.out, brief, tz=s.tz)


@case_app.command("escalate")
def case_escalate(
    ctx: typer.Context,
    reference: Ref,
    bot: Annotated[str, typer.Option("--bot", metavar="BOT", help="The chatbot handing over.")],
    waiting_since: Annotated[
        datetime,
        typer.Option(
            "--waiting-since", parser=parse_instant, metavar="ISO-8601",
            help="Since when the customer waits for a human.",
        ),
    ],
    reason: Reason,
    team: ToTeam = None,
) -> None:
    """Record a chatbot passing the customer to a human, and how long they waited.

    Example:

    ```
    $ caseledger --as automation:helpbot case escalate CL-7K2QD-M3XPA --bot helpbot --waiting-since 2026-11-23T09:12Z --team cards --reason "asked for a human"
    ```
    """
    s = session(ctx)
    wait = s.ledger.escalate_to_human(
        reference, actor=s.actor, bot_id=bot, waiting_since=waiting_since, to_team=team, reason=reason
    )
    s.say(f"Escalated to a human after {render.duration(wait)} of waiting.", "green")


# -- automation ----------------------------------------------------------------------------------------

ProposalId = Annotated[str, typer.Argument(metavar="PROPOSAL", help="The proposed action's id, e.g. X1.")]


@action_app.command("propose")
def action_propose(
    ctx: typer.Context,
    reference: Ref,
    rule: Annotated[str, typer.Option("--rule", metavar="RULE", help="The rule that proposes the action.")],
    action: Annotated[
        str,
        typer.Option(
            "--action", metavar="KIND",
            help="change_status, close, cancel, respond (the ledger executes them) or any outside action.",
        ),
    ],
    rationale: Annotated[str, typer.Option("--rationale", metavar="TEXT", help="Why the rule fired.")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", "-p", metavar="KEY=VALUE",
            help="A parameter of the action; repeatable. change_status: to, reason, notice; close and cancel: "
            "reason, notice; respond: body, answers=Q1,Q2.",
        ),
    ] = None,
) -> None:
    """Propose a customer-impacting action; nothing happens until a human approves it.

    Without --as, the actor is automation:RULE.

    Examples:

    ```
    $ caseledger action propose CL-7K2QD-M3XPA --rule limits-rule --action lower_card_limit --param limit=500 --rationale "3 declined payments"
    $ caseledger action propose CL-7K2QD-M3XPA --rule idle-rule --action change_status --param to=on_hold --param reason="no reply" --param notice="We put your case on hold." --rationale "idle 30 days"
    ```
    """
    s = session(ctx)
    actor = s.actor_given or Actor.parse(f"automation:{rule}")
    params = parse_pairs(param, option="--param")
    proposal_id = s.ledger.propose_action(
        reference, actor=actor, rule_id=rule, action=action, params=params, rationale=rationale
    )
    s.say(f"Action {proposal_id} proposed by {actor}; it waits for a human approval.", "green")


@action_app.command("approve")
def action_approve(
    ctx: typer.Context,
    reference: Ref,
    proposal: ProposalId,
    note: Annotated[str, typer.Option("--note", metavar="TEXT", help="A note with the approval.")] = "",
) -> None:
    """A human approves a proposed action; ledger actions execute at once.

    Example:

    ```
    $ caseledger --as agent:alice action approve CL-7K2QD-M3XPA X1 --note "checked the payments"
    ```
    """
    s = session(ctx)
    pid = proposal.strip().upper()
    outcome = s.ledger.approve_action(reference, actor=s.actor, proposal_id=pid, note=note)
    if outcome == "executed":
        s.say(f"Action {pid} approved and executed by the ledger.", "green")
    else:
        s.say(
            f"Action {pid} approved; the system that owns it must execute it and report with "
            f"`caseledger action executed {reference} {pid} --result …`.",
            "green",
        )


@action_app.command("reject")
def action_reject(ctx: typer.Context, reference: Ref, proposal: ProposalId, reason: Reason) -> None:
    """A human rejects a proposed action.

    Example:

    ```
    $ caseledger --as agent:alice action reject CL-7K2QD-M3XPA X1 --reason "payments were fraud, card already replaced"
    ```
    """
    s = session(ctx)
    pid = proposal.strip().upper()
    s.ledger.reject_action(reference, actor=s.actor, proposal_id=pid, reason=reason)
    s.say(f"Action {pid} rejected.", "green")


@action_app.command("executed")
def action_executed(
    ctx: typer.Context,
    reference: Ref,
    proposal: ProposalId,
    result: Annotated[str, typer.Option("--result", metavar="TEXT", help="What was done.")],
) -> None:
    """Report that an outside system carried out an approved action.

    Example:

    ```
    $ caseledger --as automation:limits-rule action executed CL-7K2QD-M3XPA X1 --result "limit set to 500"
    ```
    """
    s = session(ctx)
    pid = proposal.strip().upper()
    s.ledger.record_action_executed(reference, actor=s.actor, proposal_id=pid, result=result)
    s.say(f"Action {pid} recorded as executed.", "green")


# -- messages ------------------------------------------------------------------------------------------

MessageId = Annotated[str, typer.Argument(metavar="MESSAGE", help="A message id: ACK1, R1, W1, N1 (C1 for read).")]
At = Annotated[
    datetime | None,
    typer.Option("--at", parser=parse_instant, metavar="ISO-8601", help="When it happened (default now)."),
]


@message_app.command("delivered")
def message_delivered(ctx: typer.Context, reference: Ref, message: MessageId, at: At = None) -> None:
    """Record that a channel delivered one of our messages to the customer.

    Example:

    ```
    $ caseledger --as system:mailer message delivered CL-7K2QD-M3XPA ACK1 --at 2026-11-23T10:01Z
    ```
    """
    s = session(ctx)
    s.ledger.record_delivery(reference, actor=s.actor, message_id=message, delivered_at=at or s.instant())
    s.say(f"Message {message.upper()} delivered.", "green")


@message_app.command("read")
def message_read(ctx: typer.Context, reference: Ref, message: MessageId, at: At = None) -> None:
    """Record that the customer read our message, or an agent read the customer's contact.

    Examples:

    ```
    $ caseledger --as customer:jane message read CL-7K2QD-M3XPA R1
    $ caseledger --as agent:alice message read CL-7K2QD-M3XPA C2
    ```
    """
    s = session(ctx)
    s.ledger.record_read(reference, actor=s.actor, message_id=message, read_at=at)
    s.say(f"Message {message.upper()} read by {s.actor}.", "green")


# -- deadlines -----------------------------------------------------------------------------------------


@app.command("tick", rich_help_panel=AUTOMATION)
def tick(
    ctx: typer.Context,
    now: Annotated[
        datetime | None,
        typer.Option("--now", parser=parse_instant, metavar="ISO-8601", help="Check deadlines as of this time."),
    ] = None,
    as_json: Json = False,
) -> None:
    """Record every acknowledgement, response and promise deadline now past due, once.

    Examples:

    ```
    $ caseledger tick
    $ caseledger tick --now 2026-12-01T00:00Z
    ```
    """
    from caseledger.cli.projections_cli import tick_from_deadlines

    s = session(ctx)
    report = tick_from_deadlines(s, now or s.instant())  # the deadlines projection says where to look
    if as_json:
        s.echo_json({"now": report.now, "cases_checked": report.cases_checked, "missed": report.missed,
                     "total": report.total})
        return
    s.say(f"Checked {report.cases_checked} case(s) as of {render.fmt_time(report.now, s.tz)}.")
    if not report.total:
        s.say("No new missed deadline.", "green")
        return
    table = Table("deadline", "missed", title=f"{report.total} missed deadline(s) recorded", title_justify="left")
    for kind, count in sorted(report.missed.items()):
        table.add_row(kind, str(count))
    s.out.print(table)


# -- schemas, version, demo ---------------------------------------------------------------------------


@schemas_app.command("list")
def schemas_list(ctx: typer.Context, as_json: Json = False) -> None:
    """List the event types and the fingerprint of their current Avro schema.

    Example:

    ```
    $ caseledger schemas list
    ```
    """
    from caseledger.ledger.store.codec import AvroEventCodec

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


@app.command("version", rich_help_panel=TOOLS)
def version() -> None:
    """Print the installed caseledger version."""
    try:
        typer.echo(f"caseledger {metadata.version('caseledger')}")
    except metadata.PackageNotFoundError:
        typer.echo("caseledger (not installed as a package)")


@app.command("demo", rich_help_panel=TOOLS)
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


# Command groups in their own modules register themselves on ``app``.
import caseledger.cli.audit_cli  # noqa: E402
import caseledger.cli.bench  # noqa: E402
import caseledger.cli.projections_cli  # noqa: E402
import caseledger.cli.streaming  # noqa: E402, F401


def main() -> None:
    """Console-script entry point."""
    app(prog_name="caseledger")


if __name__ == "__main__":
    main()
