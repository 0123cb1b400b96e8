"""The house rules a reader relies on: no import cycle, modules of one concern, SQL only in the stores.

These read the checkout's sources as text (what a reviewer reads); the installed package is the same
files (tests/system/test_installed.py checks the wheel).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"ledger": "caseledger.ledger", "projections": "caseledger.projections", "cli": "caseledger.cli",
           "schemas": "caseledger.schemas"}
MAX_LINES = 700
LONGER = {
    "ledger/domain/case.py": "the Case aggregate: its 28 event classes must stay nested in it (eventsourcing "
    "creates the aggregate from its Created event's class, and the catalog finds events there), and every "
    "command checks the same state; its state, envelope and context live in case_state.py and events.py",
}


# Folders inside another package's folder that install as a package of their own (pyproject's package-dir).
SUBFOLDERS = {"ledger/verifier": "caseledger.verify"}


def modules() -> dict[str, Path]:
    """Every module of the package by its installed dotted name."""
    found = {}
    for folder, package in {**FOLDERS, **SUBFOLDERS}.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if folder in FOLDERS and any(path.is_relative_to(ROOT / sub) for sub in SUBFOLDERS):
                continue
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def imports_at_import_time(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports when it is imported (not under TYPE_CHECKING, not in functions)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                for child in ("body", "orelse", "finalbody"):
                    if isinstance(node, ast.If | ast.Try | ast.With):
                        visit(getattr(node, child, []))
                if isinstance(node, ast.Try):
                    for handler in node.handlers:
                        visit(handler.body)
                continue
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.add(target)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def import_cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    mods = modules()
    graph = {name: imports_at_import_time(name, path, set(mods)) for name, path in mods.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in graph:
        if v not in index:
            strong(v)
    return cycles


def test_the_package_has_no_import_cycle() -> None:
    assert import_cycles() == []


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    """The check above could fail: two modules importing each other are found."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from caseledger.ledger.b import x\n")
    b.write_text("import caseledger.ledger.a\nif TYPE_CHECKING:\n    import caseledger.ledger.c\n")
    known = {"caseledger.ledger.a", "caseledger.ledger.b", "caseledger.ledger.c"}
    assert imports_at_import_time("caseledger.ledger.a", a, known) == {"caseledger.ledger.b"}
    assert imports_at_import_time("caseledger.ledger.b", b, known) == {"caseledger.ledger.a"}


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in modules().values()))
def test_a_module_holds_one_concern(path: str) -> None:
    lines = len((ROOT / path).read_text(encoding="utf-8").splitlines())
    limit = MAX_LINES if path not in LONGER else 1100
    assert lines <= limit, f"{path} has {lines} lines (limit {limit}): split it by concern"


def test_the_domain_imports_no_driver_client_or_codec() -> None:
    mods = modules()
    allowed = re.compile(r"^(caseledger\.ledger\.(domain|errors)\b|eventsourcing\.domain$)")
    for name, path in mods.items():
        if not name.startswith("caseledger.ledger.domain"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                module = node.module
            elif isinstance(node, ast.Import):
                module = node.names[0].name
            else:
                continue
            top = module.split(".")[0]
            if top in {"caseledger", "eventsourcing"}:
                assert allowed.match(module), f"{name} imports {module}: the domain must stay plain Python"
            else:
                assert top not in {"kafka", "confluent_kafka", "psycopg", "fastavro", "sqlite3"}, f"{name}: {module}"


SQL = re.compile(r"\b(SELECT\s+[\w*(]|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX))", re.I)
DRIVER = re.compile(r"^\s*(import|from)\s+(psycopg|sqlite3)\b(?!_)", re.M)


def test_store_sql_lives_in_the_store_and_the_cli_runs_none() -> None:
    """The event store's SQL is in ledger/store; projections keep their read models' SQL; cli/ runs none.

    (cli/ may *show* SQL: ``projections query`` has examples in its help.)
    """
    offenders = []
    for name, path in modules().items():
        if name.startswith(("caseledger.ledger.store.", "caseledger.projections", "caseledger.cli.bench")):
            continue
        text = path.read_text(encoding="utf-8")
        in_cli = name.startswith("caseledger.cli")
        if DRIVER.search(text) or (".execute(" in text if in_cli else SQL.search(text)):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


STDLIB_AND_CRYPTOGRAPHY = re.compile(r"^(cryptography|caseledger\.verify)(\.|$)")


def test_the_standalone_verifier_imports_only_the_standard_library_and_cryptography() -> None:
    """caseledger.verify must not trust caseledger's code paths: no caseledger.ledger, no third-party but cryptography."""
    import sys

    for name, path in modules().items():
        if not name.startswith("caseledger.verify"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and not node.level:
                targets = [node.module or ""]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for module in targets:
                top = module.split(".")[0]
                assert top in sys.stdlib_module_names or STDLIB_AND_CRYPTOGRAPHY.match(module), f"{name} imports {module}"


def test_only_the_store_imports_the_store() -> None:
    """The SQL behind the ports is reached through ``ledger.storage`` (the provider eventsourcing builds from the
    store settings), never imported: no module outside ``ledger/store/`` imports it, at the top, inside a
    function or for typing. The ports are in ``ledger/store_ports.py``, the byte format in ``ledger/avro/``."""
    from tests.support.house_measures import _imports, _modules

    def in_store(module: str) -> bool:
        return module == "ledger.store" or module.startswith("ledger.store.")

    offenders = [f"{name} → {target} ({how})" for name, path in _modules(ROOT).items() if not in_store(name)
                 for target, how in _imports(name, path) if in_store(target)]
    assert offenders == []


BACKEND_CHOICE = re.compile(r"\bis_postgres\b|isinstance\([^)]*\b(SQLite|Postgres)\w*\)|\bpostgres\s*=")


def test_the_backend_is_chosen_in_one_place() -> None:
    """``StoreSettings.eventsourcing_env`` names the storage provider; nothing else in the library asks which
    backend it runs on (no ``is_postgres``, ``isinstance`` of a backend's class, or ``postgres=`` flag)."""
    offenders = [f"{path.relative_to(ROOT)}: {match.group(0)}" for name, path in modules().items()
                 if name.startswith("caseledger.ledger.") and name != "caseledger.ledger.settings"
                 for match in BACKEND_CHOICE.finditer(path.read_text(encoding="utf-8"))]
    assert offenders == []
