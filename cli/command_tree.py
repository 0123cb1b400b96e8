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
        return typer.main.get_group(holder).commands[self.name]

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
