"""Finding projections by name: the built-ins, installed plugins, or an analyst's ``module:Class``.

A plugin is a distribution that declares its projections in the entry-point group
``caseledger.projections`` (name = the projection's name, value = ``module:Class``); once it is
installed beside caseledger, every command that takes a projection's name knows it, and
``caseledger projections list`` shows it with its tables. Entry points are read only by the
commands that need projections (``caseledger --help`` never scans them), and a broken plugin
(import error, not a projection, a built-in's name) is reported, never takes the built-ins down.

``CASELEDGER_PROJECTIONS`` (``Settings.projections``) says which projections ``caseledger run``
and ``caseledger projections run`` keep up to date: ``all`` (the default: the built-ins and every
installed plugin) or names separated by commas.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from caseledger.ledger.errors import ConfigurationError
from caseledger.projections.base import Projection

BUILT_INS = {
    "case_state": "caseledger.projections.case_state:CaseState",
    "timeline": "caseledger.projections.timeline:CustomerTimeline",
    "deadlines": "caseledger.projections.deadlines:Deadlines",
    "channel_metrics": "caseledger.projections.channel_metrics:ChannelMetrics",
}

PLUGIN_GROUP = "caseledger.projections"
"""The entry-point group a plugin distribution declares its projections in."""

ALL = "all"
"""The selection of every installed projection: the built-ins and every plugin that loads."""


@dataclass(frozen=True)
class Installed:
    """An installed projection: a built-in or a plugin's, loaded, or the reason it could not be."""

    name: str
    target: str  # module:Class
    origin: str  # "built-in", or the plugin's distribution and version
    projection: Projection | None = None
    problem: str | None = None


def _plugin_entry_points() -> list[EntryPoint]:
    return sorted(entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name)


def _origin(entry: EntryPoint) -> str:
    dist = entry.dist
    return f"{dist.name} {dist.version}" if dist is not None else "plugin"


def _load_plugin(entry: EntryPoint) -> Installed:
    origin, target = _origin(entry), entry.value
    where = f"plugin {entry.name} ({target}, from {origin})"
    if entry.name in BUILT_INS:
        return Installed(entry.name, target, origin, problem=(
            f"{where} takes the name of a built-in projection; rename its entry point in the "
            f"[project.entry-points.\"{PLUGIN_GROUP}\"] table of its pyproject.toml and reinstall it"))
    try:
        cls = entry.load()
    except Exception as error:  # a plugin's import may fail any way: report it, keep the others
        return Installed(entry.name, target, origin, problem=(
            f"{where} cannot be imported: {type(error).__name__}: {error}; reinstall it or fix its module"))
    problem = _not_a_projection(cls, entry.name)
    if problem:
        return Installed(entry.name, target, origin, problem=f"{where} {problem}")
    try:
        return Installed(entry.name, target, origin, projection=cls())
    except Exception as error:
        return Installed(entry.name, target, origin, problem=(
            f"{where} cannot be created: {type(error).__name__}: {error}; fix its class"))


def _not_a_projection(cls: object, name: str) -> str | None:
    """Why ``cls`` cannot be the projection called ``name``, or None."""
    if not (isinstance(cls, type) and issubclass(cls, Projection)):
        return "is not a Projection subclass (its entry point must name the class: module:Class)"
    try:
        cls.check()
    except ConfigurationError as error:
        return f"is not runnable: {error}"
    if cls.name != name:
        return f"is named {cls.name!r} in its class: its entry point must carry the same name"
    return None


def installed_plugins() -> list[Installed]:
    """Every plugin installed in this environment, each loaded or with the reason it could not be."""
    return [_load_plugin(entry) for entry in _plugin_entry_points()]


def installed_projections() -> list[Installed]:
    """The built-ins, then every installed plugin (loaded, or with its problem)."""
    built_ins = [Installed(name, target, "built-in", projection=_load_target(target, name))
                 for name, target in BUILT_INS.items()]
    taken = {t.name for b in built_ins if b.projection for t in b.projection.tables}
    plugins = []
    for plugin in installed_plugins():
        tables = {t.name for t in plugin.projection.tables} if plugin.projection else set()
        if taken & tables:
            plugin = Installed(plugin.name, plugin.target, plugin.origin, problem=(
                f"plugin {plugin.name} ({plugin.target}, from {plugin.origin}) declares tables of another "
                f"projection ({', '.join(sorted(taken & tables))}); rename its tables"))
        taken |= tables
        plugins.append(plugin)
    return [*built_ins, *plugins]


def _load_target(target: str, spec: str) -> Projection:
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(
            f"cannot import {module_name!r} for projection {spec!r}: {error}; run from the directory that holds "
            "the module, add it to PYTHONPATH, or install it as a plugin (docs/projections.md)"
        ) from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Projection)):
        raise ConfigurationError(f"{target} is not a Projection subclass")
    cls.check()
    return cls()


def load_projection(spec: str) -> Projection:
    """A built-in by name (``case_state``), an installed plugin by name, or a projection as ``module:Class``."""
    if spec in BUILT_INS:
        return _load_target(BUILT_INS[spec], spec)
    module_name, sep, class_name = spec.partition(":")
    if sep:
        if not module_name or not class_name:
            raise ConfigurationError(f"projection {spec!r}: write module:Class, e.g. fcr:FirstContactResolution")
        return _load_target(spec, spec)
    for entry in _plugin_entry_points():
        if entry.name == spec:
            plugin = _load_plugin(entry)
            if plugin.problem:
                raise ConfigurationError(plugin.problem)
            assert plugin.projection is not None
            return plugin.projection
    plugins = [entry.name for entry in _plugin_entry_points()]
    raise ConfigurationError(
        f"unknown projection {spec!r}: use a built-in ({', '.join(BUILT_INS)}), "
        + (f"an installed plugin ({', '.join(plugins)}), " if plugins else "")
        + "or module:Class, e.g. my_projections:FirstContactResolution; `caseledger projections list` "
        "shows what is installed"
    )


def load_projections(specs: list[str] | None) -> list[Projection]:
    """The named projections, or every built-in when none is named."""
    return [load_projection(s) for s in (specs or list(BUILT_INS))]


def selected_projections(selection: str | None) -> tuple[list[Projection], list[str]]:
    """The projections a selection names (``all``, the default, or names separated by commas) and the
    problems of the installed plugins ``all`` had to leave out; a name that does not load is an error."""
    text = (selection or ALL).strip()
    if text.lower() == ALL:
        chosen = installed_projections()
        return ([p.projection for p in chosen if p.projection is not None],
                [p.problem for p in chosen if p.problem])
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigurationError(
            f"CASELEDGER_PROJECTIONS={selection!r}: give `all` or projection names separated by commas, "
            "e.g. case_state,timeline,fcr"
        )
    return load_projections(names), []


def command_name(projection: Projection) -> str:
    """How a command names ``projection`` so that it loads this very class: its name when it is a
    built-in or an installed plugin, else ``module:Class`` (for hints that must name a command that works)."""
    cls = type(projection)
    target = f"{cls.__module__}:{cls.__qualname__}"
    if BUILT_INS.get(projection.name) == target:
        return projection.name
    for entry in _plugin_entry_points():
        if entry.name == projection.name:
            try:
                if entry.load() is cls:
                    return projection.name
            except Exception:  # a broken plugin of that name: the hint names the class itself
                pass
    return target
