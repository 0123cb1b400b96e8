"""``caseledger contact record``: an inbound contact and its acknowledgement; ``contact receipt``: its signed receipt."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.padding import Padding
from rich.text import Text

from caseledger.cli import render
from caseledger.cli.common import session
from caseledger.cli.options import ChannelOpt, Json, parse_attachment
from caseledger.ledger.domain.values import Channel, ContactDraft, Identity

contact_app = typer.Typer(no_args_is_help=True, help="Record what customers send on any channel.")


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
    locale: Annotated[
        str | None,
        typer.Option("--locale", metavar="LOCALE", help="The customer's language for our texts, e.g. fr_FR (kept for them)."),
    ] = None,
    zone: Annotated[
        str | None,
        typer.Option("--zone", metavar="ZONE", help="The customer's IANA time zone, e.g. Europe/Paris (kept for them)."),
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

    What the customer reads comes from the policy's templates, in their language and time zone
    (`--locale`, `--zone`, or `caseledger customer set-locale`; else the policy's default):

    ```
    $ caseledger --policy acpr-2022-r-01 contact record -c web_form -m form-8813 --from email:jane@example.com --subject "Frais de carte" --item "Pourquoi deux frais de carte en février ?"
    Acknowledgement ACK1:
      Madame, Monsieur,

      Nous avons bien reçu votre demande du lundi 2 mars 2026 à 09:00, envoyée via notre formulaire de contact.

      Votre référence : CL-7K2QD-M3XPA. Rappelez-la dans chacun de vos échanges avec nous.

      Nous nous engageons à vous apporter une réponse au plus tard le samedi 2 mai 2026 à 09:00.
      …
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
        locale=locale,
        time_zone=zone,
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


@contact_app.command("receipt")
def contact_receipt(
    ctx: typer.Context,
    reference: Annotated[str, typer.Argument(metavar="REF", help="The case reference.")],
    contact_id: Annotated[str, typer.Option("--contact", metavar="C", help="The contact (C1, C2 …).")] = "C1",
    proof: Annotated[bool, typer.Option("--proof", help="Print the contact's inclusion proof instead (JSON): its "
                                        "leaf index and audit path in the latest signed checkpoint (the publisher "
                                        "signs them; `caseledger audit checkpoint` on demand), with it.")] = False,
    tree_size: Annotated[int | None, typer.Option("--tree-size", metavar="N", min=0, help="With --proof: against "
                                                  "the checkpoint of N events (one you keep) instead.")] = None,
    as_json: Json = False,
) -> None:
    """Print a contact's signed receipt (CLR1.…), the one its acknowledgement carried, for the customer to keep.

    The ledger signs it again from the stored contact, byte for byte. Anyone checks it offline with the
    ledger's public key (`caseledger audit key`), and with any later history export, or the contact's
    inclusion proof against a signed checkpoint (`--proof`), proves the contact in the log — or missing
    from it, against the operator (docs/audit.md):

    ```
    $ caseledger contact receipt CL-7K2QD-M3XPA > receipt.txt
    $ caseledger contact receipt CL-7K2QD-M3XPA --proof > proof.json
    $ python -m caseledger.verify receipt receipt.txt --key KEY [--proof proof.json | --export history.json]
    ```

    The receipt is refused when the ledger has no signing key, and once the customer is erased: the
    receipt's salt went with their data, and only the customer's own copy remains (its proof is not).
    """
    from caseledger.verify.receipts import Receipt

    s = session(ctx)
    if tree_size is not None and not proof:
        raise typer.BadParameter("--tree-size goes with --proof")
    if proof:
        s.echo_json(s.ledger.contact_receipt_proof(reference, contact_id, tree_size))
        return
    receipt = s.ledger.contact_receipt(reference, contact_id)
    if as_json:
        s.echo_json({"reference": reference, "contact_id": contact_id, "receipt": receipt,
                     "says": Receipt.parse(receipt).lines()})
        return
    typer.echo(receipt)


def _read_text(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise typer.BadParameter(f"cannot read {path}: {error}", param_hint="'--body-file'") from None
