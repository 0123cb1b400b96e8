"""The writer of the customer texts in generated benchmark ledgers: the built-in French templates."""

from __future__ import annotations

from functools import lru_cache

from caseledger.ledger.domain.texts import Audience, Writer
from caseledger.ledger.texts import TemplateTexts


@lru_cache(maxsize=1)
def bench_writer() -> Writer:
    return Writer(texts=TemplateTexts.for_settings(company="Le service clients", folder=None),
                  audience=Audience(locale="fr_FR", time_zone="Europe/Paris"))
