"""The words of the agent's workspace in the agent's language: gettext catalogs read at start, Jinja2's i18n.

Every label, heading, button, flash, error and live-state text of the agent pages (sign-in, queue, case
page, refusals) is an English msgid, translated through the catalog of the page's language:
``ledger/service/locales/<language>/LC_MESSAGES/workspace.po`` (GNU gettext ``.po``, read with Babel's
``pofile`` when first asked, no compile step; the wheel ships them as package data). English is the
msgids themselves; ``locales/workspace.pot`` is the template a translator updates with
``pybabel extract -F ledger/service/locales/babel.cfg -o ledger/service/locales/workspace.pot .`` then
``pybabel update -i ledger/service/locales/workspace.pot -d ledger/service/locales -D workspace``.

The page's language is the first of the agent's languages (:meth:`AgentClock.choose`) that has a catalog,
English when none has: ``lang`` on the page is then true of its words and of its times. What stays in
another language is marked so: a ledger's error detail (``lang="en"``) and what a customer wrote
(``lang=""``, unknown).
"""

from __future__ import annotations

from functools import lru_cache
from gettext import NullTranslations
from io import BytesIO
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from jinja2 import Environment, FileSystemLoader

__all__ = ["DOMAIN", "LANGUAGES", "N_", "STATUS_WORDS", "Words", "environment", "translations", "words"]

DOMAIN = "workspace"
LOCALES = Path(__file__).with_name("locales")
TEMPLATES = Path(__file__).with_name("templates")
LANGUAGES = ("en", *sorted(p.parent.parent.name for p in LOCALES.glob(f"*/LC_MESSAGES/{DOMAIN}.po")))


def N_(message: str) -> str:
    """``message`` unchanged: marks an English msgid kept in a table, translated when a page shows it."""
    return message


# What a status or a channel (a code of the ledger) is called on a page (the code stays in the data).
STATUS_WORDS = {
    "open": N_("open"), "in_progress": N_("in progress"), "waiting_on_customer": N_("waiting on the customer"),
    "on_hold": N_("on hold"), "closed": N_("closed"), "cancelled": N_("cancelled"), "answered": N_("answered"),
    "waived": N_("waived"), "kept": N_("kept"), "withdrawn": N_("withdrawn"), "broken": N_("broken"),
    "proposed": N_("proposed"), "approved": N_("approved"), "rejected": N_("rejected"), "executed": N_("executed"),
    "active": N_("active"), "all": N_("all"),
    "web_form": N_("web_form"), "email": N_("email"), "phone": N_("phone"), "chat": N_("chat"),
    "chatbot": N_("chatbot"), "social": N_("social"), "sms": N_("sms"), "letter": N_("letter"),
    "branch": N_("branch"), "app": N_("app"),
}


@lru_cache(maxsize=8)
def translations(language: str) -> NullTranslations:
    """The catalog of ``language`` (``fr``, ``fr_FR``, ``fr-FR``), the msgids themselves (English) when there is none."""
    name = language.replace("-", "_").split("_")[0].lower()
    path = LOCALES / name / "LC_MESSAGES" / f"{DOMAIN}.po"
    if name == "en" or not path.is_file():
        return NullTranslations()
    with path.open("rb") as po:
        catalog = read_po(po, locale=name, domain=DOMAIN)
    compiled = BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


class Words:
    """The words of one page in one language: ``_("Queue")``, ``n_("%(n)s case", "%(n)s cases", n)``, ``code(code)``."""

    def __init__(self, language: str) -> None:
        self.catalog = translations(language)

    def _(self, message: str, **values: object) -> str:
        found = self.catalog.gettext(message)
        return found % values if values else found

    def n_(self, singular: str, plural: str, n: int, **values: object) -> str:
        return self.catalog.ngettext(singular, plural, n) % {"n": n, **values}

    def code(self, code: str | None) -> str:
        """A status code as the page says it (``in_progress`` → "in progress" / "en cours")."""
        word = STATUS_WORDS.get(code or "")
        return self.catalog.gettext(word) if word is not None else (code or "")


@lru_cache(maxsize=8)
def words(language: str) -> Words:
    """The words of ``language``, read once."""
    return Words(language)


@lru_cache(maxsize=8)
def environment(language: str) -> Environment:
    """The agent pages' Jinja2 environment for ``language``: autoescaped, ``_``/``ngettext``/``{% trans %}``
    translated by its catalog, the templates of ``ledger/service/templates``."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=False, extensions=["jinja2.ext.i18n"])
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    env.filters["code"] = words(language).code
    return env
