"""Accessibility and self-containment checks for pages open in Playwright: axe-core, the keyboard, CSP, origins.

``assert_accessible(page)`` runs axe-core (Deque's engine, the copy the ``axe-playwright-python`` wheel
ships; only its ``axe.min.js`` is used) inside the page with the WCAG 2.0/2.1/2.2 A and AA rules and
fails with every violation listed: rule, impact, what to fix, and each element. The script goes in
through the DevTools protocol (``page.evaluate``), which the page's CSP does not govern, so the page
keeps its real policy while it is checked.

``watch_page(page)`` must be called before the first ``goto``: it records every request the page
makes and every CSP violation it raises, for ``assert_self_contained``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FOCUSABLE", "PageWatch", "assert_accessible", "axe_violations", "focus_ring", "tab_through",
           "watch_page"]

WCAG_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa")
# axe's best practices that make a page navigable by landmark and heading (screen readers jump by them);
# not WCAG success criteria by themselves, checked as if they were
LANDMARK_RULES = ("landmark-one-main", "region", "page-has-heading-one", "landmark-unique", "heading-order",
                  "landmark-no-duplicate-main", "skip-link")
FOCUSABLE = ("a[href], button:not([disabled]), input:not([type=hidden]):not([disabled]), select:not([disabled]), "
             "textarea:not([disabled]), summary, [tabindex]:not([tabindex='-1'])")
_AXE: str | None = None


def _axe_source() -> str:
    global _AXE
    if _AXE is None:
        import axe_playwright_python

        _AXE = (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text(encoding="utf-8")
    return _AXE


def axe_violations(page: Any, *, exclude: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.2 AA violations on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(_axe_source())
    options = {"runOnly": {"type": "tag", "values": [*WCAG_TAGS, "best-practice"]}, "resultTypes": ["violations"]}
    context: Any = {"exclude": [[s] for s in exclude]} if exclude else "document"
    found = page.evaluate("([context, options]) => axe.run(context === 'document' ? document : context, options)",
                          [context, options])
    wanted = set(LANDMARK_RULES)
    return [v for v in found["violations"] if v["id"] in wanted or set(v["tags"]) & set(WCAG_TAGS)]


def _report(violations: list[dict[str, Any]]) -> str:
    lines = []
    for v in violations:
        lines.append(f"- {v['id']} ({v.get('impact')}): {v['help']} <{v.get('helpUrl', '')}>")
        for node in v["nodes"][:10]:
            lines.append(f"    at {' '.join(map(str, node['target']))}: {node['html'][:200]}")
            summary = (node.get("failureSummary") or "").replace("\n", " / ")
            if summary:
                lines.append(f"      {summary[:400]}")
    return "\n".join(lines)


def assert_accessible(page: Any, *, exclude: tuple[str, ...] = ()) -> None:
    """Fail with axe-core's findings unless the page meets WCAG 2.2 AA as far as a machine can check."""
    violations = axe_violations(page, exclude=exclude)
    assert not violations, f"{page.url} breaks WCAG 2.2 AA ({len(violations)} rules):\n{_report(violations)}"


_DESCRIBE = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const s = getComputedStyle(el);
  return {tag: el.tagName.toLowerCase(), id: el.id, name: el.getAttribute('name') || '',
          text: (el.innerText || el.value || el.getAttribute('aria-label') || '').trim().slice(0, 60),
          outline: s.outlineStyle === 'none' ? 0 : parseFloat(s.outlineWidth),
          shadow: s.boxShadow !== 'none', index: Array.from(document.querySelectorAll(%s)).indexOf(el)};
}"""


def tab_through(page: Any, *, most: int = 200) -> list[dict[str, Any]]:
    """What the Tab key focuses, from the top of the page until focus leaves the page or comes back round."""
    page.evaluate("() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); }")
    describe = _DESCRIBE % json.dumps(FOCUSABLE)
    seen: list[dict[str, Any]] = []
    for _ in range(most):
        page.keyboard.press("Tab")
        now = page.evaluate(describe)
        if now is None or (seen and now["index"] == seen[0]["index"]):
            break
        seen.append(now)
    return seen


def focus_ring(stop: dict[str, Any]) -> bool:
    """Whether a focused element shows a focus indicator of at least 2 CSS pixels (WCAG 2.4.7, 2.4.13)."""
    return bool(stop["outline"] >= 2 or stop["shadow"])


@dataclass
class PageWatch:
    """What a page asked for and what its CSP refused, since ``watch_page``."""

    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def violations(self, page: Any) -> list[str]:
        """CSP violations: those the page's event reported and those Chromium logged."""
        reported = page.evaluate("() => window.__cspViolations || []")
        logged = [m for m in self.console if "Content Security Policy" in m or "Refused to" in m]
        return [*reported, *logged]

    def foreign(self, origin: str) -> list[str]:
        """Requests that went anywhere but ``origin`` (scheme://host:port)."""
        return [u for u in self.requests if _origin(u) != origin and not u.startswith(("data:", "about:"))]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


_LISTEN = """document.addEventListener('securitypolicyviolation', (e) => {
  (window.__cspViolations = window.__cspViolations || []).push(e.violatedDirective + ' ' + e.blockedURI);
});"""


def watch_page(page: Any) -> PageWatch:
    """Start recording the page's requests, console and CSP violations (before its first ``goto``)."""
    watch = PageWatch()
    page.on("request", lambda request: watch.requests.append(request.url))
    page.on("console", lambda message: watch.console.append(f"{message.type}: {message.text}"))
    page.add_init_script(_LISTEN)
    return watch
