"""What language a rendered agent page speaks: the msgids of the workspace, and the English ones left on a page."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from caseledger.ledger.service.agent_language import words

__all__ = ["english_left", "msgids"]

ROOT = Path(__file__).resolve().parents[2]
FRENCH = "fr_FR"


def msgids() -> set[str]:
    """Every msgid the code and templates use, extracted as a translator would (locales/babel.cfg, pybabel's keywords)."""
    from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
    from babel.messages.frontend import parse_mapping_cfg

    with (ROOT / "ledger" / "service" / "locales" / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    keywords = {**DEFAULT_KEYWORDS, "N_": None, "n_": (1, 2)}
    found: set[str] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(ROOT), method_map, options_map, keywords=keywords):
        found.update([message] if isinstance(message, str) else [m for m in message if m])
    return found


class _Visible(HTMLParser):
    """A page's text as a person (or a screen reader) gets it, without what is marked as another language."""

    def __init__(self, page_lang: str) -> None:
        super().__init__()
        self.page_lang, self.stack, self.text = page_lang, [], []  # type: ignore[var-annotated]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        other = tag in ("script", "style") or ("lang" in found and tag != "html" and found["lang"] != self.page_lang)
        if tag not in ("input", "meta", "link", "br"):
            self.stack.append(other or bool(self.stack and self.stack[-1]))
        if not (self.stack and self.stack[-1]):
            self.text += [v or "" for k, v in attrs if k in ("aria-label", "data-live", "data-reconnecting")]

    def handle_endtag(self, tag: str) -> None:
        if tag not in ("input", "meta", "link", "br") and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if not (self.stack and self.stack[-1]):
            self.text.append(data)


def english_left(page: str, lang: str) -> list[str]:
    """The English msgids (those French says otherwise) still read on ``page``."""
    assert f'<html lang="{lang}"' in page
    reader = _Visible(lang)
    reader.feed(page)
    text = " ".join(" ".join(reader.text).split())
    french = words(FRENCH)
    left = []
    for msgid in msgids():
        for part in re.split(r"%\(\w+\)s|\{\w+\}", msgid):
            part = part.strip(" :,.()…")
            if len(part) > 2 and french._(msgid) != msgid and part not in french._(msgid) \
                    and re.search(rf"(?<![\w-]){re.escape(part)}(?![\w-])", text):
                left.append(part)
    return sorted(set(left))
