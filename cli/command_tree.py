"""The root command group, whose commands are imported only when one of them is run or asked for.

``caseledger --help`` lists every command with its panel and one line of help: those come from
:data:`COMMANDS`'s entries, so listing them imports no command module (and none of what the ledger
imports: the store, eventsourcing, Avro, the service). Running ``caseledger case show …`` imports
``cli.case_commands`` and what it needs, nothing of the other groups. A test holds each entry's
line and panel to the command it stands for (tests/unit/test_cli_startup.py).

This module is imported by ``caseledger --help``: it imports the standard library and typer only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

try:  # typer ≥ 0.2x coerces every value through a pydantic TypeAdapter (see plain_values)
    from typer._coercion import RuntimeParam, build_runtime_param
except ImportError:  # pragma: no cover - an older typer coerces with click's types, pydantic-free
    RuntimeParam = None


@dataclass(frozen=True)
class Entry:
    """A command of the root: where its implementation is, its panel, and its line in ``caseledger --help``.

    ``target`` is ``"module:attribute"`` under ``caseledger.cli`` — a ``typer.Typer`` (a group) or a
    function (a command) — or a function returning one, for groups composed of several modules.
    """

    name: str
    panel: str
    summary: str
    target: str | Callable[[], Any]

    def load(self) -> Any:
        """The Typer or the command function, imported now."""
        if callable(self.target):
            return self.target()
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(f"caseledger.cli.{module}"), attribute)

    def build(self) -> Any:
        """The click command typer makes of it, exactly as ``add_typer``/``command`` on the root would."""
        loaded = self.load()
        holder = typer.Typer()
        if isinstance(loaded, typer.Typer):
            holder.add_typer(loaded, name=self.name, rich_help_panel=self.panel)
        else:
            holder.command(self.name, rich_help_panel=self.panel)(loaded)
        command = typer.main.get_group(holder).commands[self.name]
        plain_values(command)
        return command

    def stub(self) -> TyperCommand:
        """What ``caseledger --help`` lists for it without importing it: name, line and panel."""
        return TyperCommand(name=self.name, help=self.summary, rich_help_panel=self.panel)


class LazyCommands(Mapping[str, Any]):
    """The root's commands by name: each built on first access, then kept (``commands`` of a click group)."""

    def __init__(self, entries: tuple[Entry, ...], built: Mapping[str, Any] | None = None) -> None:
        self.entries = {entry.name: entry for entry in entries}
        self.built: dict[str, Any] = dict(built or {})

    def __getitem__(self, name: str) -> Any:
        if name not in self.built:
            self.built[name] = self.entries[name].build()  # KeyError: no such command
        return self.built[name]

    def __setitem__(self, name: str, command: Any) -> None:  # click's add_command
        self.built[name] = command

    def __iter__(self) -> Iterator[str]:
        yield from self.entries
        yield from (name for name in self.built if name not in self.entries)

    def __len__(self) -> int:
        return len(self.entries.keys() | self.built.keys())

    def __contains__(self, name: object) -> bool:
        return name in self.entries or name in self.built

    def listed(self, name: str) -> Any:
        """The command if it is built, else its stub (for the root's help)."""
        if name in self.built or name not in self.entries:
            return self.built.get(name)
        return self.entries[name].stub()


class LedgerGroup(TyperGroup):
    """The root command group: commands imported on demand, listed in ``order``, and the one place where
    ledger errors become messages and exit codes (:mod:`cli.common`)."""

    entries: tuple[Entry, ...] = ()
    order: tuple[str, ...] = ()

    def __init__(self, *, commands: Any = None, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands(self.entries, self.commands if commands is None else dict(commands))
        self._listing = False

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        if RuntimeParam is not None:
            plain_params(params)  # the help and completion options too, which typer adds after __init__
        return params

    def list_commands(self, ctx: Any) -> list[str]:
        rank = {name: i for i, name in enumerate(self.order)}
        return sorted(self.commands, key=lambda name: rank.get(name, len(rank)))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if self._listing:
            return self.commands.listed(cmd_name)
        return self.commands.get(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        # Listing the commands asks for each: their stubs answer, so --help imports none of them.
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def invoke(self, ctx: Any) -> Any:
        from caseledger.ledger.errors import CaseLedgerError

        try:
            return super().invoke(ctx)
        except CaseLedgerError as error:
            from rich.text import Text

            from caseledger.cli.common import exit_code_for, plain_console

            plain_console(stderr=True).print(Text(f"error: {error}", style="red"), soft_wrap=True)
            raise typer.Exit(exit_code_for(error)) from None


def ledger_group(entries: tuple[Entry, ...], order: tuple[str, ...]) -> type[LedgerGroup]:
    """The root group class for these commands (typer takes a class: ``typer.Typer(cls=…)``)."""
    return type("LedgerGroup", (LedgerGroup,), {"entries": entries, "order": order})


if RuntimeParam is not None:

    @dataclass(frozen=True)
    class _TextOrParsed(RuntimeParam):  # type: ignore[misc,valid-type]
        """A text as given, a flag's bool, or what its ``parser`` makes of it: what typer's TypeAdapter would give."""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            parser = self.parameter_info.parser
            try:
                if parser is not None:
                    return parser(value)
                if isinstance(value, str if self.annotation is str else bool):
                    return value
            except ValueError:
                pass  # typer's own words for it, below
            return build_runtime_param(param.type_descriptor)._coerce_value(value, param, ctx)


def plain_values(command: Any) -> None:
    """Coerce ``command``'s text, flag and parsed parameters (and its subcommands') without pydantic.

    typer builds a pydantic TypeAdapter for each parameter of the command that runs, importing pydantic
    (~80 ms, a fifth of ``case show``'s start) to return a ``str`` or a flag unchanged, or to call our
    ``parser``. Those parameters get a coercion doing exactly that, and fall back to typer's for any other
    value; the rest (numbers with bounds, lists, paths, choices) keep typer's.
    """
    if RuntimeParam is None:
        return
    if getattr(command, "_help_option", False) is None:  # made on first use by click: made now, to be plain too
        command.get_help_option(typer.Context(command))
    plain_params([*getattr(command, "params", ()), getattr(command, "_help_option", None)])
    commands = getattr(command, "commands", None)
    if isinstance(commands, dict):
        for sub in commands.values():
            plain_values(sub)


def plain_params(params: list[Any]) -> None:
    """Give each text, flag or parsed parameter of ``params`` the pydantic-free coercion."""
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or getattr(param, "_runtime_param", False) is not None or descriptor.is_file:
            continue
        if descriptor.parameter_info.parser is not None or descriptor.annotation in (str, bool):
            param._runtime_param = _TextOrParsed(parameter_info=descriptor.parameter_info,
                                                 annotation=descriptor.annotation)
