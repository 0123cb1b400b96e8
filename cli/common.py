"""What every command module shares: the session of one invocation and where errors become exit codes.

Every command is one call to one method of :class:`caseledger.ledger.commands.LedgerCommands` —
the ledger's own or the ledger service's (``--api``) — or one query of the projections, so a
command either happened completely or not at all. Errors of the ledger
are turned into a red ``error: …`` line and an exit code in one place, the root group
(:class:`cli.command_tree.LedgerGroup`), with :func:`exit_code_for`:

==  =======================================================================
0   done (a duplicate contact is "already recorded", which is done too)
1   unexpected ledger error
2   refused: invalid input, a rule of the case forbids it, or not found (also usage errors)
3   conflict: another command changed the case first; retry
4   the database, broker or configuration cannot be used
5   ``audit verify`` found discrepancies (see :mod:`cli.audit`)
6   collision: the channel message id is already another request's; this request was recorded as
    a collision (``caseledger intake collisions``), not applied — send it with a new message id
==  =======================================================================
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from caseledger.cli import render
from caseledger.ledger.domain.values import Actor
from caseledger.ledger.errors import (
    BackendError,
    CaseLedgerError,
    ConfigurationError,
    ConflictError,
    MessageIdCollision,
    ValidationError,
)
from caseledger.ledger.settings import Settings

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger
    from caseledger.ledger.commands import LedgerCommands
    from caseledger.ledger.service.client import LedgerClient
    from caseledger.ledger.settings import KafkaSettings, LedgerSettings
    from caseledger.projections.views import ViewStore

DEFAULT_ACTOR = "agent:cli"
LOCAL_ONLY = "__caseledger_local_only__"
F = TypeVar("F", bound=Callable[..., Any])

EXIT_REFUSED = ValidationError.exit_code  # 2
EXIT_CONFLICT = ConflictError.exit_code  # 3
EXIT_BACKEND = BackendError.exit_code  # 4
EXIT_COLLISION = MessageIdCollision.exit_code  # 6


def exit_code_for(error: CaseLedgerError) -> int:
    """The process exit code for a ledger error: carried by its class (``ledger/errors.py``)."""
    return error.exit_code


def plain_console(*, stderr: bool = False) -> Console:
    """A console that prints customer text as given: no markup, emoji codes or highlighting."""
    # Without this, "customer:email:jane@…" would print an envelope emoji and "[Q1]" would vanish.
    return Console(stderr=stderr, markup=False, emoji=False, highlight=False)


# -- the session of one invocation ----------------------------------------------------------------------


def environment() -> Settings:
    """The settings this process's environment gives: the CLI is a composition root, the one that reads it."""
    return Settings.from_environ(os.environ)


@dataclass
class Session:
    """What the root options chose; the ledger is built only by commands that need it."""

    database: str | None
    policy: str | None
    actor_given: Actor | None
    now: datetime | None
    zone: tzinfo | None
    out: Console = field(default_factory=plain_console)
    api: str | None = None  # --api URL: act through the ledger service instead of a local file
    token: str | None = None
    token_file: str | None = None
    settings: Settings = field(default_factory=environment)  # the environment, read once by the root callback
    _ledger: CaseLedger | None = None
    _client: LedgerClient | None = None

    @property
    def ledger(self) -> LedgerCommands:
        """What a command asks: the ledger on its own database, or with ``--api`` the ledger service.

        Either way the same commands (:class:`~caseledger.ledger.commands.LedgerCommands`); through the
        service its authenticated principal is the actor. Opened on first use (``--help``, ``version``
        and ``schemas`` never open it).
        """
        return self.service if self.api else self.local_ledger

    @property
    def service(self) -> LedgerClient:
        """The ledger service of ``--api``: its commands, and the reads only it answers (its views, audit, clock)."""
        if self._client is None:
            if not self.api:
                raise RuntimeError("Session.service is for --api; read the local ledger's views instead")
            from caseledger.ledger.service.client import LedgerClient, resolve_token

            self._client = LedgerClient(self.api, resolve_token(self.settings.client, token=self.token,
                                                                       token_file=self.token_file))
        return self._client

    @property
    def local_ledger(self) -> CaseLedger:
        """The ledger on its own database (never with ``--api``: such commands are ``local_only`` or branch first)."""
        return self._open(load_policy=True)

    def open_ledger(self) -> CaseLedger:
        """The local ledger, for queries that open it only when they need it (``ledger=s.open_ledger``): its
        policy and customer texts are loaded only if used (a query shows what is recorded, by no policy)."""
        return self._open(load_policy=False)

    def _open(self, *, load_policy: bool) -> CaseLedger:
        if self.api:
            raise RuntimeError("Session.local_ledger was asked for under --api; mark the command local_only")
        if self._ledger is None:
            from caseledger.ledger.application import CaseLedger

            settings = self.ledger_settings()
            now = self.now
            if now is not None and settings.store.is_postgres:
                raise ConfigurationError(
                    "--now simulates the ledger's clock on a local SQLite file (demo, tests); a shared "
                    "PostgreSQL ledger records on its own clock: leave --now out"
                )
            # --now is the operator's simulation clock: every event it records is marked simulated-clock.
            self._ledger = CaseLedger(settings, clock=(lambda: now) if now is not None else None,
                                      simulated_clock=now is not None, load_policy=load_policy)
        return self._ledger

    def new_ledger(self) -> CaseLedger:
        """A ledger connection of its own, on the real clock (each long-running service gets one)."""
        from caseledger.ledger.application import CaseLedger

        return CaseLedger(self.ledger_settings())

    def ledger_settings(self) -> LedgerSettings:
        """``--database`` and ``--policy`` over the environment's settings."""
        from caseledger.ledger.settings import LedgerSettings

        return LedgerSettings.resolve(database=self.database, policy=self.policy, settings=self.settings)

    def views_url(self, chosen: str | None = None) -> str:
        """The views database: ``--views``, CASELEDGER_VIEWS, else the ledger's."""
        from caseledger.projections.catchup import views_url

        return views_url(database=self.database, views=chosen or self.settings.service.views)

    def views(self, chosen: str | None = None) -> ViewStore:
        """The views database (``--views``, CASELEDGER_VIEWS, else the ledger's), closed by ``with``."""
        from caseledger.projections.view_stores import open_views

        return open_views(self.views_url(chosen))

    def kafka(self, bootstrap: str | None) -> KafkaSettings:
        """``--kafka`` (or CASELEDGER_KAFKA_BOOTSTRAP) and the CASELEDGER_KAFKA_* settings."""
        from caseledger.ledger.settings import KafkaSettings

        return KafkaSettings.resolve(bootstrap_servers=bootstrap, settings=self.settings.kafka)

    def kafka_if_configured(self, bootstrap: str | None) -> KafkaSettings | None:
        """The Kafka settings when Kafka is configured (option or environment), else None (the embedded default)."""
        from caseledger.ledger.settings import KafkaSettings

        return KafkaSettings.configured(self.settings.kafka, bootstrap)

    @property
    def actor(self) -> Actor:
        """Who acts: ``--as``, else CASELEDGER_ACTOR, else agent:cli (with ``--api``: the server decides)."""
        return self.actor_given or Actor.parse(DEFAULT_ACTOR)

    @property
    def tz(self) -> tzinfo:
        return self.zone or render.local_zone()

    def instant(self) -> datetime:
        """``--now`` if given, else the current time."""
        return self.now or datetime.now(UTC)

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def echo_json(self, value: Any) -> None:
        typer.echo(render.to_json(value))

    def say(self, text: str, style: str | None = None) -> None:
        self.out.print(Text(text, style=style or ""))


def session(ctx: typer.Context) -> Session:
    """The session the root callback stored for this invocation."""
    obj = ctx.find_root().obj
    assert isinstance(obj, Session)
    return obj


def setup_logging() -> None:
    """Long-running services log to stderr; kafka-python's own chatter only from warnings on."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or Ctrl-C, so services finish their batch and stop cleanly."""
    # Signal handlers belong to the process, so they are installed here and not by the ledger's services.
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        logging.getLogger("caseledger").info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def local_only(why: str) -> Callable[[F], F]:
    """Mark a command that cannot act through the ledger service: its ``--help`` says ``why``, and with
    ``--api`` it refuses (exit 2) with that reason instead of acting on a local file or broker."""

    def mark(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        takes_ctx = any(p.annotation is typer.Context for p in signature.parameters.values())

        @functools.wraps(command)
        def refusing(*args: Any, **kwargs: Any) -> Any:
            given = kwargs.pop("_api_ctx", None)
            # typer hands the (click) context of the invocation, whatever class the parameter names
            ctx = given or next(v for v in (*args, *kwargs.values()) if hasattr(v, "find_root"))
            if session(ctx).api:
                raise ValidationError(
                    f"`caseledger {ctx.command_path.partition(' ')[2]}` does not work through --api: {why}. Run it "
                    "where the ledger's database (or broker) is, without --api and CASELEDGER_API"
                )
            return command(*args, **kwargs)

        if not takes_ctx:  # typer hands a Context to a parameter annotated so, and shows no option for it
            extra = inspect.Parameter("_api_ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
            refusing.__signature__ = signature.replace(  # type: ignore[attr-defined]
                parameters=[extra, *signature.parameters.values()])
            refusing.__annotations__ = {**command.__annotations__, "_api_ctx": typer.Context}
        refusing.__doc__ = f"{(command.__doc__ or '').rstrip()}\n\nNot through --api: {why}."
        setattr(refusing, LOCAL_ONLY, why)
        return refusing  # type: ignore[return-value]

    return mark


def case_from_record(record: dict[str, Any]) -> Any:
    """A case as the service answers it (``case_record`` JSON), shaped for display like the embedded CLI's."""
    from caseledger.projections.case_state import CaseView

    return CaseView({
        **record, "opened_at": datetime.fromisoformat(record["opened_at"]),
        "missed": [(m["kind"], m["target_id"]) for m in record["missed_deadlines"]],
        "open_promises": [{"promise_id": p} for p in record["open_promises"]],
        "brief": {"open_items": [], "open_promises": [], "last_contacts": []},
    })
