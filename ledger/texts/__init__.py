"""Customer texts: the templates every customer-facing text comes from, rendered for the customer's locale and zone.

The domain decides that a text goes out and with which facts (see
:mod:`caseledger.ledger.domain.texts`); :class:`TemplateTexts` writes it.
"""

from __future__ import annotations

from caseledger.ledger.texts.engine import TemplateRefused, TemplateTexts

__all__ = ["TemplateRefused", "TemplateTexts"]
