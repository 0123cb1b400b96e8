"""``caseledger case …``: look at a case, change its status, give it to someone, escalate it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from caseledger.cli import render
from caseledger.cli.common import case_from_record, session
from caseledger.cli.options import (
    STATUSES,
    ChannelOpt,
    Json,
    Notice,
    Reason,
    Ref,
    ToAgent,
    ToTeam,
    Zone,
    parse_instant,
    parse_pairs,
)
from caseledger.ledger.domain.values import Channel

case_app = typer.Typer(no_args_is_help=True, help="Look at a case and change its status, owner or team.")


# -- looking at a case --------------------------------------------------------------------------------


@case_app.command("show")
def case_show(ctx: typer.Context, reference: Ref, as_json: Json = False, zone: Zone = None) -> None:
    """Everything about a case: status, items, promises, contacts, messages, proposals, missed deadlines.

    Examples:

    ```
    $ caseledger case show CL-7K2QD-M3XPA
    $ caseledger case show 7K2QD-M3XPA --json
    ```
    """
    from caseledger.ledger.application import normalise_reference
    from caseledger.projections.queries import case_view

    s = session(ctx)
    ref = normalise_reference(reference)  # before the views are opened: a bad reference opens nothing
    if s.api:
        case: Any = case_from_record(s.ledger.case_record(ref))
    else:
        with s.views() as views:
            # Caught up from the store first; a CaseView is shaped like the Case aggregate for display.
            case = case_view(views, ref, ledger=s.open_ledger)
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
    case = case_from_record(s.ledger.find_record(channel, message_id)) if s.api else s.local_ledger.find_by_message(
        channel, message_id)
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


# -- its status ---------------------------------------------------------------------------------------


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


# -- who works on it ----------------------------------------------------------------------------------


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
