"""Customer texts from templates: Jinja2 in a sandbox, refused at load time when they cannot render.

:class:`TemplateTexts` is the adapter of the domain's :class:`~caseledger.ledger.domain.texts.CustomerTexts`
port. Built-in templates (``ledger/texts/templates/<language>/<kind>.txt``) exist in French and
English; a company's folder (``[texts] templates`` in the policy) holds files of the same names
that replace them, and may add languages. Every template is compiled once, in a
:class:`~jinja2.sandbox.SandboxedEnvironment` (no attribute of Python internals, no file access)
with :class:`~jinja2.StrictUndefined`, checked for variables its kind does not have, and rendered
against the sample cases of :mod:`caseledger.ledger.texts.facts`; any failure refuses the whole
set with the file and line, so a customer never meets a broken template.

Filters a template may use: ``datetime`` (mercredi 4 mars 2026 à 09:00), ``date``, ``time`` —
in the customer's time zone and locale — and ``channel`` (formulaire de contact), ``channel_by``
(via notre formulaire de contact), ``status`` (en cours de traitement).
"""

from __future__ import annotations

import hashlib
import logging
import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta, nodes, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from caseledger.ledger.domain.texts import TEXT_KINDS, Audience, RenderedText, TextKind
from caseledger.ledger.errors import ConfigurationError, ValidationError
from caseledger.ledger.texts.facts import SAMPLES, VARIABLES
from caseledger.ledger.texts.formats import Formats, formats_for, parse_locale

__all__ = ["TemplateRefused", "TemplateTexts"]

log = logging.getLogger(__name__)

_SUFFIX = ".txt"
_FORMATS = "_formats"  # the context variable the filters read (not a template variable)
_BLANK_LINES = re.compile(r"\n{3,}")
_KINDS: dict[str, TextKind] = {kind + _SUFFIX: kind for kind in TEXT_KINDS}


class TemplateRefused(ConfigurationError):
    """A customer-text template cannot be used: it names the file and line and says what is wrong."""

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"template {where}: {problem}")
        self.path = path
        self.line = line


@dataclass(frozen=True)
class _Compiled:
    template: Template
    template_id: str
    version: str
    path: str


def _formats(context: Context) -> Formats:
    value = context.get(_FORMATS)
    if not isinstance(value, Formats):
        raise ValidationError("customer-text filters need the audience's formats")
    return value


def _filter(name: str) -> Any:
    @pass_context
    def apply(context: Context, value: Any) -> str:
        return getattr(_formats(context), name)(value)  # type: ignore[no-any-return]

    apply.__name__ = name
    return apply


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True, auto_reload=False,
    )
    for name in ("datetime", "date", "time", "channel", "channel_by", "status"):
        env.filters[name] = _filter(name)
    return env


class TemplateTexts:
    """Renders customer texts from built-in templates, overridden by a company's folder."""

    def __init__(self, *, company: str, folder: str | Path | None = None) -> None:
        self.company = company
        self.folder = Path(folder) if folder is not None else None
        self.env = _environment()
        self.builtin: dict[tuple[str, TextKind], _Compiled] = {}
        self.custom: dict[tuple[str, TextKind], _Compiled] = {}
        self._folders: dict[str, str | None] = {}  # locale -> template folder, remembered
        self._globals = dict(self.env.make_globals(None))
        root = resources.files("caseledger.ledger.texts").joinpath("templates")
        for language_dir in sorted(root.iterdir(), key=lambda p: p.name):
            if not language_dir.is_dir():
                continue
            for kind in TEXT_KINDS:
                source = language_dir.joinpath(kind + _SUFFIX).read_text(encoding="utf-8")
                path = f"ledger/texts/templates/{language_dir.name}/{kind}{_SUFFIX}"
                self.builtin[(language_dir.name, kind)] = self._compile(
                    source, kind=kind, path=path, template_id=f"builtin:{language_dir.name}/{kind}"
                )
        if self.folder is not None:
            self._load_folder(self.folder)
        for key, compiled in {**self.builtin, **self.custom}.items():
            self._try_samples(compiled, kind=key[1], locale=key[0])

    @classmethod
    def for_settings(cls, *, company: str, folder: str | None) -> TemplateTexts:
        """One compiled set per company and folder content, shared by every ledger in the process.

        A folder whose files changed (names, sizes, modification times) is loaded and checked again.
        """
        return _cached(company, folder, _signature(folder))

    # -- loading ----------------------------------------------------------------------------------------

    def _load_folder(self, folder: Path) -> None:
        if not folder.is_dir():
            raise TemplateRefused(str(folder), None, "is not a folder; set [texts] templates to a folder of templates")
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                raise TemplateRefused(str(entry), None, "templates live in one folder per locale, e.g. fr/acknowledgement.txt")
            try:
                parse_locale(entry.name)
            except ValidationError as error:
                raise TemplateRefused(str(entry), None, f"the folder name must be a locale: {error}") from None
            for file in sorted(entry.iterdir()):
                if file.name.startswith("."):
                    continue
                kind = _KINDS.get(file.name)
                if kind is None:
                    raise TemplateRefused(
                        str(file), None, f"unknown template; name it <kind>{_SUFFIX} with a kind among {', '.join(TEXT_KINDS)}"
                    )
                try:
                    source = file.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as error:
                    raise TemplateRefused(str(file), None, f"cannot be read ({error}); save it as UTF-8") from None
                self.custom[(entry.name, kind)] = self._compile(
                    source, kind=kind, path=str(file), template_id=f"company:{entry.name}/{kind}"
                )
        languages = {language for language, _ in self.custom}
        for language in sorted(languages - {language for language, _ in self.builtin}):
            missing = [k for k in TEXT_KINDS if (language, k) not in self.custom]
            if missing:
                raise TemplateRefused(
                    str(folder / language), None,
                    f"there are no built-in templates in {language}: give every kind ({', '.join(missing)} missing)",
                )

    def _compile(self, source: str, *, kind: TextKind, path: str, template_id: str) -> _Compiled:
        try:
            tree = self.env.parse(source, name=path, filename=path)
        except TemplateSyntaxError as error:
            raise TemplateRefused(path, error.lineno, f"syntax error: {error.message}") from None
        allowed = VARIABLES[kind]
        unknown = sorted(meta.find_undeclared_variables(tree) - allowed)
        if unknown:
            name = unknown[0]
            line = next((n.lineno for n in tree.find_all(nodes.Name) if n.name == name), None)
            raise TemplateRefused(
                path, line, f"unknown variable {name!r}; a {kind} template may use {', '.join(sorted(allowed))}"
            )
        code = self.env.compile(source, name=path, filename=path)
        # A plain dict of globals: Jinja's ChainMap is walked again on every render.
        template = self.env.template_class.from_code(self.env, code, dict(self.env.make_globals(None)))
        version = "sha256:" + hashlib.sha256(source.encode("utf-8")).hexdigest()
        return _Compiled(template=template, template_id=template_id, version=version, path=path)

    def _try_samples(self, compiled: _Compiled, *, kind: TextKind, locale: str) -> None:
        for facts in SAMPLES[kind]:
            for zone in ("Europe/Paris", "America/Montreal"):
                try:
                    text = self._run(compiled, Audience(locale=locale, time_zone=zone), facts)
                except Exception as error:  # any failure refuses the template: say where and what
                    raise TemplateRefused(compiled.path, _line_of(error, compiled.path), _problem(error)) from None
                if not text:
                    raise TemplateRefused(compiled.path, None, "renders an empty text for a sample case")

    # -- rendering --------------------------------------------------------------------------------------

    def locales(self) -> list[str]:
        """The languages (and locales) some template is written in."""
        return sorted({language for language, _ in (*self.builtin, *self.custom)})

    def template_locale(self, locale: str) -> str | None:
        """The template folder a locale's texts come from (``fr`` for ``fr_CA``), None when there is none."""
        found = self._folders.get(locale, "")
        if found == "":
            parsed = parse_locale(locale)
            known = {language for language, _ in (*self.builtin, *self.custom)}
            found = next((c for c in (str(parsed), parsed.language) if c in known), None)
            if len(self._folders) < 1024:
                self._folders[locale] = found
        return found

    def render(self, kind: TextKind, audience: Audience, facts: Mapping[str, Any]) -> RenderedText:
        folder = self.template_locale(audience.locale)
        if folder is None:
            raise ValidationError(
                f"no customer texts are written in {audience.locale}; use one of {', '.join(self.locales())} "
                "or add templates in that language to the policy's templates folder"
            )
        values = {"company": self.company, "locale": audience.locale, **facts}
        compiled = self.custom.get((folder, kind))
        if compiled is not None:
            try:
                return self._rendered(compiled, audience, values)
            except Exception:
                # Checked at load time on every sample; a case no sample foresaw must still get
                # its text: the built-in template says it, and the event records which one.
                log.exception("company template %s failed; the built-in %s text is used", compiled.path, kind)
        compiled = self.builtin.get((folder, kind)) or self.builtin[(parse_locale(folder).language, kind)]
        return self._rendered(compiled, audience, values)

    def _rendered(self, compiled: _Compiled, audience: Audience, values: Mapping[str, Any]) -> RenderedText:
        return RenderedText(
            text=self._run(compiled, audience, values), template_id=compiled.template_id,
            template_version=compiled.version, locale=audience.locale,
        )

    def _run(self, compiled: _Compiled, audience: Audience, values: Mapping[str, Any]) -> str:
        template = compiled.template
        # Template.render merges the globals into a new dict per call; one merge here is enough.
        context = template.new_context(
            {**self._globals, **values, _FORMATS: formats_for(audience.locale, audience.time_zone)}, shared=True
        )
        try:
            text = "".join(template.root_render_func(context)).strip()
        except Exception:
            self.env.handle_exception()  # re-raised with the template's file and line in the traceback
        if " \n" in text or "\t\n" in text:
            text = "\n".join(line.rstrip() for line in text.splitlines())
        return _BLANK_LINES.sub("\n\n", text) if "\n\n\n" in text else text


@lru_cache(maxsize=16)
def _cached(company: str, folder: str | None, signature: tuple[tuple[str, int, int], ...]) -> TemplateTexts:
    return TemplateTexts(company=company, folder=folder)


def _signature(folder: str | None) -> tuple[tuple[str, int, int], ...]:
    if folder is None or not Path(folder).is_dir():
        return ()
    found = []
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            stat = path.stat()
            found.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(found)


def _line_of(error: BaseException, path: str) -> int | None:
    """The template line an exception was raised at (Jinja maps its frames to template lines)."""
    lineno = getattr(error, "lineno", None)
    if isinstance(lineno, int):
        return lineno
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == path]
    return frames[-1].lineno if frames else None


def _problem(error: BaseException) -> str:
    name = type(error).__name__
    if name == "UndefinedError":
        return f"{error} (a sample case has no such value: check the variable and attribute names)"
    if name == "SecurityError":
        return f"refused by the sandbox: {error}"
    return f"fails to render a sample case: {name}: {error}"
