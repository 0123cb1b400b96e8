"""``caseledger action …``: automation proposes customer-impacting actions, a human decides."""

from __future__ import annotations

from typing import Annotated

import typer

from caseledger.cli.common import session
from caseledger.cli.options import Reason, Ref, parse_pairs
from caseledger.ledger.domain.values import Actor

action_app = typer.Typer(
    no_args_is_help=True, help="Actions automation proposes; only a human approval lets them execute."
)

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
