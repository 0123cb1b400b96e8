"""Issue 23, "composed, not mixed": one command Protocol that the façade, the service client and the HTTP routes implement.

Each command of :class:`LedgerCommands` is declared once (name, arguments, route, permission); these
tests read the declarations with ``inspect`` (mypy is not run in CI) and fail when an implementation
drifts: a missing method, another signature, a route the service does not serve, a mixin again.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.commands import ROUTES, LedgerCommands, ServiceCommands
from caseledger.ledger.core import LedgerCore
from caseledger.ledger.service.client import LedgerClient
from tests.support.environment import ledger_settings

ROOT = Path(__file__).resolve().parents[2]


def declared(protocol: type) -> dict[str, Callable[..., Any]]:
    return {name: member for name, member in vars(protocol).items()
            if callable(member) and not name.startswith("_")}


def test_every_command_of_the_protocols_has_a_route_and_only_they_do() -> None:
    commands = declared(LedgerCommands) | declared(ServiceCommands)
    assert set(commands) == set(ROUTES)
    assert not set(declared(LedgerCommands)) & set(declared(ServiceCommands))


@pytest.mark.parametrize("name", sorted(declared(LedgerCommands) | declared(ServiceCommands)))
def test_the_client_implements_each_command_with_the_protocols_signature(name: str) -> None:
    protocol = declared(LedgerCommands) | declared(ServiceCommands)
    method = vars(LedgerClient).get(name)
    assert method is not None, f"LedgerClient has no {name}"
    assert inspect.signature(method) == inspect.signature(protocol[name]), name


def test_the_client_answers_no_name_it_does_not_declare() -> None:
    """Finding: a ``__getattr__`` fallback and ``**_: Any`` on every command hid any drift from the façade."""
    assert "__getattr__" not in vars(LedgerClient)
    for name, method in vars(LedgerClient).items():
        if callable(method) and not name.startswith("_"):
            kinds = {p.kind for p in inspect.signature(method).parameters.values()}
            assert inspect.Parameter.VAR_KEYWORD not in kinds, name


def _accepts(implementation: inspect.Signature, protocol: inspect.Signature) -> list[str]:
    """Why ``implementation`` cannot stand for ``protocol`` (empty: it can), as mypy reads a Protocol.

    Every parameter of the Protocol is there with its kind, annotation and default; the parameters the
    implementation adds (e.g. the intake worker's ``source``) are keyword-only with a default.
    """
    wrong = []
    if implementation.return_annotation != protocol.return_annotation:
        wrong.append(f"returns {implementation.return_annotation}, not {protocol.return_annotation}")
    mine = list(implementation.parameters.values())[1:]  # without self
    theirs = list(protocol.parameters.values())[1:]
    positional = [p.name for p in mine if p.kind is not p.KEYWORD_ONLY]
    if positional != [p.name for p in theirs if p.kind is not p.KEYWORD_ONLY]:
        wrong.append(f"positional parameters {positional}")
    by_name = {p.name: p for p in mine}
    for p in theirs:
        q = by_name.pop(p.name, None)
        if q is None:
            wrong.append(f"no {p.name}")
        elif (q.kind, q.annotation) != (p.kind, p.annotation):
            wrong.append(f"{p.name}: {q.kind.name} {q.annotation}, not {p.kind.name} {p.annotation}")
        elif p.default is not p.empty and q.default != p.default:
            wrong.append(f"{p.name} defaults to {q.default!r}, not {p.default!r}")
    wrong += [f"extra {q.name} without a default" for q in by_name.values()
              if q.kind is not q.KEYWORD_ONLY or q.default is q.empty]
    return wrong


@pytest.mark.parametrize("name", sorted(declared(LedgerCommands)))
def test_the_facade_implements_each_command_of_the_protocol(name: str) -> None:
    method = getattr(CaseLedger, name, None)
    assert method is not None, f"CaseLedger has no {name}"
    assert _accepts(inspect.signature(method), inspect.signature(declared(LedgerCommands)[name])) == [], name


def test_the_service_serves_each_declared_route_with_its_permission(tmp_path: Path) -> None:
    """Every command of both Protocols, write or read, is a route of the service with the declared operation."""
    from caseledger.ledger.service.api import ServiceState
    from caseledger.ledger.service.asgi import create_app

    app = create_app(ServiceState(ledger_settings(database=str(tmp_path / "l.sqlite"))))
    served = {(method, r.path): (r.openapi_extra or {}).get("x-operation")
              for r in app.routes if isinstance(r, APIRoute) for method in r.methods}
    for name, route in ROUTES.items():
        assert (route.method, route.path) in served, f"{name}: the service has no {route.method} {route.path}"
        assert served[route.method, route.path] == route.x_operation, name


def test_every_write_command_is_served_by_the_write_routes() -> None:
    """The write routes (``ledger/service/write_routes.py``) name each write command of the Protocol they serve."""
    source = (ROOT / "ledger/service/write_routes.py").read_text(encoding="utf-8")
    named = {node.value for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Constant)}
    writes = {name for name in declared(LedgerCommands) if ROUTES[name].writes}
    assert writes - named == set()


def _class_defs(path: Path) -> list[ast.ClassDef]:
    return [n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.ClassDef)]


def test_the_ledger_is_composed_not_mixed() -> None:
    """Finding: ``CaseLedger(CustomerPrivacy, ContactIntake, Application)`` split one class across files, and the
    mixins re-declared their host's private methods under ``TYPE_CHECKING``. Now the façade extends only its
    core, and every service is a class of its own that is given the core."""
    assert CaseLedger.__bases__ == (LedgerCore,)
    services = {name: type(service) for name, service in vars(CaseLedger).items() if hasattr(service, "service")}
    assert services, "the façade's commands name their service"
    for path in [*(ROOT / "ledger").rglob("*.py")]:
        for cls in _class_defs(path):
            for node in cls.body:
                if (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                        and any(isinstance(n, ast.FunctionDef) for n in node.body)):
                    raise AssertionError(f"{path.relative_to(ROOT)}: {cls.name} declares its host's methods")
    for name in ("ContactIntake", "Casework", "Lookups", "Pseudonyms", "Erasure", "LegalHolds", "RetentionSweep"):
        service = next(v for v in vars(CaseLedger).values()
                       if getattr(v, "method", None) is not None and v.method.__qualname__.startswith(name + "."))
        module = inspect.getmodule(service.method)
        owner = vars(module)[name]
        assert owner.__bases__ == (object,), name
        assert next(iter(inspect.signature(owner).parameters)) == "core", name
        # What a service uses of the core or of another service is public: ``self.core._load`` would be a mixin again.
        reached = [ast.unparse(n) for n in ast.walk(ast.parse(inspect.getsource(owner)))
                   if isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__")
                   and isinstance(n.value, ast.Attribute) and isinstance(n.value.value, ast.Name)
                   and n.value.value.id == "self"]
        assert reached == [], (name, reached)


def test_the_cli_reaches_a_local_ledger_only_where_api_cannot_reach() -> None:
    """A command that is not ``local_only`` reads the local ledger only in its branch without ``--api``."""
    import typer

    from caseledger.cli.app import app
    from caseledger.cli.common import LOCAL_ONLY

    def leaves(command: Any, path: list[str]) -> dict[str, Any]:
        found = {}
        for name, sub in getattr(command, "commands", {}).items():
            found |= leaves(sub, [*path, name])
        if not getattr(command, "commands", None):
            found[" ".join(path)] = command.callback
        return found

    for path, callback in leaves(typer.main.get_command(app), []).items():
        if callback is None or getattr(callback, LOCAL_ONLY, None) is not None:
            continue
        source = inspect.getsource(inspect.unwrap(callback))
        if "local_ledger" in source or "open_ledger" in source:
            assert "s.api" in source, f"{path} opens the local ledger without a branch for --api"
