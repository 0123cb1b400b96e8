"""``caseledger customer set-locale`` and ``caseledger texts``: what the customer reads, in which language and zone."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from caseledger.cli.common import session
from caseledger.cli.options import Customer, Json
from caseledger.ledger.domain.policy import ResponsePolicy
from caseledger.ledger.domain.texts import TEXT_KINDS
from caseledger.ledger.texts import TemplateTexts

customer_app = typer.Typer(no_args_is_help=True, help="A customer's own settings: the language and zone of their texts.")


@customer_app.command("set-locale")
def set_locale(
    ctx: typer.Context,
    customer: Customer,
    locale: Annotated[
        str | None,
        typer.Option("--locale", "-l", metavar="LOCALE",
                     help='Language (and region) of their texts, e.g. fr_FR, fr_CA, en_GB; "" for the default.'),
    ] = None,
    time_zone: Annotated[
        str | None,
        typer.Option("--zone", "-z", metavar="ZONE",
                     help='IANA time zone their texts give times in, e.g. Europe/Paris; "" for the default.'),
    ] = None,
    as_json: Json = False,
) -> None:
    """Write a customer's acknowledgements, confirmations and notices in their language and time zone.

    Until they choose, texts follow the policy's [texts] defaults for the channel. Texts already
    sent stay as they were sent (the events keep them verbatim).

    Examples:

    ```
    $ caseledger customer set-locale email:jane@example.com --locale fr_FR --zone Europe/Paris
    $ caseledger customer set-locale cust-0042 --locale en_GB --zone America/Montreal
    ```
    """
    s = session(ctx)
    customer_id, audience, changed = s.ledger.set_customer_locale(
        customer, actor=s.actor, locale=locale, time_zone=time_zone
    )
    if as_json:
        s.echo_json({"customer_id": customer_id, "locale": audience.locale, "time_zone": audience.time_zone,
                     "changed": changed})
        return
    verb = "now" if changed else "already"
    s.say(f"Texts for {customer_id} are {verb} written in {audience.locale}, times in {audience.time_zone}.",
          "green" if changed else None)


texts_app = typer.Typer(no_args_is_help=True, help="The templates of customer texts: check a company's folder, preview.")


@texts_app.command("check")
def texts_check(ctx: typer.Context, as_json: Json = False) -> None:
    """Load and check the policy's templates as the ledger does at start; list where each text comes from.

    A template that does not compile, uses a variable its kind does not have, or fails on a
    sample case is refused with its file and line (exit code 4).

    Example:

    ```
    $ caseledger --policy bank.toml texts check
    ```
    """
    texts, policy = _texts(ctx)
    rows = [
        {"locale": language, "kind": kind, "template_id": compiled.template_id, "version": compiled.version}
        for (language, kind), compiled in sorted({**texts.builtin, **texts.custom}.items())
    ]
    if as_json:
        session(ctx).echo_json({"policy": policy.name or session(ctx).policy or "built in", "templates": rows})
        return
    table = Table(title=f"Customer texts of {policy.texts.company}: {len(rows)} templates, all checked",
                  title_justify="left")
    for column in ("locale", "kind", "template", "version"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["locale"], row["kind"], row["template_id"], row["version"][:19] + "…")
    session(ctx).out.print(table)


@texts_app.command("preview")
def texts_preview(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(metavar="KIND", help=f"One of: {', '.join(TEXT_KINDS)}.")],
    locale: Annotated[str | None, typer.Option("--locale", "-l", metavar="LOCALE", help="e.g. fr_FR, en_GB.")] = None,
    time_zone: Annotated[str | None, typer.Option("--zone", "-z", metavar="ZONE", help="e.g. Europe/Paris.")] = None,
) -> None:
    """Render one kind of text for a sample case, as a customer of that locale and zone would read it.

    Example:

    ```
    $ caseledger texts preview acknowledgement --locale fr_FR
    Madame, Monsieur,

    Nous avons bien reçu votre demande du mercredi 4 mars 2026 à 09:00, envoyée via notre formulaire de contact.
    …
    ```
    """
    from caseledger.ledger.texts.facts import SAMPLES

    texts, policy = _texts(ctx)
    if kind not in TEXT_KINDS:
        raise typer.BadParameter(f"{kind!r} is not a kind of text; use one of {', '.join(TEXT_KINDS)}")
    audience = policy.texts.audience(None, policy.calendar.timezone, locale=locale, time_zone=time_zone)
    facts = {**SAMPLES[kind][0], "company": policy.texts.company}  # type: ignore[index]
    rendered = texts.render(kind, audience, facts)  # type: ignore[arg-type]
    s = session(ctx)
    s.out.print(Text(rendered.text), soft_wrap=True)
    s.say(f"— {rendered.template_id} {rendered.template_version[:19]}…, {rendered.locale}, {audience.time_zone}")


def _texts(ctx: typer.Context) -> tuple[TemplateTexts, ResponsePolicy]:
    policy = ResponsePolicy.load(session(ctx).policy)
    return TemplateTexts.for_settings(company=policy.texts.company, folder=policy.texts.templates), policy
