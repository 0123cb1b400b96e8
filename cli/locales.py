"""``caseledger customer set-locale``: the language and time zone of a customer's texts."""

from __future__ import annotations

from typing import Annotated

import typer

from caseledger.cli.common import session
from caseledger.cli.options import Customer, Json

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
