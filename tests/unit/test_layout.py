"""The house rules a reader relies on: no import cycle, modules of one concern, SQL only in the stores.

These read the checkout's sources as text (what a reviewer reads); the installed package is the same
files (tests/system/test_installed.py checks the wheel).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support import house_measures as house

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"ledger": "caseledger.ledger", "projections": "caseledger.projections", "cli": "caseledger.cli",
           "schemas": "caseledger.schemas"}
MAX_LINES = 700


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


def import_cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module, every import an edge (top, lazy, TYPE_CHECKING)."""
    return house.import_cycles(house.import_graph(ROOT))


def test_the_package_has_no_import_cycle() -> None:
    assert import_cycles() == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    """A checkout of ``files`` (path → text) under ``root``, with the product's folders."""
    for folder in house.FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_cycle_finder_counts_every_import(tmp_path: Path) -> None:
    """The checks could fail: a cycle closed by an import inside a function, or under TYPE_CHECKING, is found."""
    root = _tree(tmp_path, {
        "ledger/a.py": "from caseledger.ledger.b import x\n",
        "ledger/b.py": "def f():\n    import caseledger.ledger.a\n",
        "ledger/c.py": "from caseledger.ledger.a import y\n",
        "ledger/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from caseledger.ledger.c import z\n",
        "ledger/e.py": "from caseledger.ledger.d import w\n",
    })
    graph = house.import_graph(root)
    assert graph["ledger.b"] == {"ledger.a": "lazy"} and graph["ledger.d"] == {"ledger.c": "typing"}
    assert house.import_cycles(graph) == [["ledger.a", "ledger.b"]]
    (root / "ledger/c.py").write_text("from caseledger.ledger.a import y\nfrom caseledger.ledger.e import v\n")
    assert house.import_cycles(house.import_graph(root)) == [["ledger.a", "ledger.b"], ["ledger.c", "ledger.d",
                                                                                         "ledger.e"]]


# -- layers: domain ← application ← adapters ← roots (tests/support/house_measures.py: LAYERS) ---------------

def upward(root: Path) -> dict[tuple[str, str], str]:
    """(module, target) → how, for every import of ``root``'s product that points up the layers."""
    return {(name, target): how for name, edges in house.import_graph(root).items() for target, how in edges.items()
            if house.layer_of(target) > house.layer_of(name)}


def test_no_import_points_up_the_layers() -> None:
    """domain ← application ← adapters ← roots, every import counted (lazy and TYPE_CHECKING ones too)."""
    found = upward(ROOT)
    assert [f"{n} → {t} ({how})" for (n, t), how in sorted(found.items())] == []


def test_the_layer_check_counts_every_import(tmp_path: Path) -> None:
    """The check could fail: the domain reaching a root lazily, the application an adapter for typing only."""
    root = _tree(tmp_path, {
        "ledger/domain/rules.py": "def f():\n    from caseledger.cli.app import app\n",
        "ledger/audit/check.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                 "    from caseledger.ledger.kafka.clients import KafkaClient\n",
        "ledger/kafka/clients.py": "from caseledger.ledger.domain import rules\n",
        "cli/app.py": "from caseledger.ledger.kafka.clients import KafkaClient\n",
    })
    assert upward(root) == {("ledger.domain.rules", "cli.app"): "lazy",
                            ("ledger.audit.check", "ledger.kafka.clients"): "typing"}


def test_nothing_in_the_product_imports_the_benchmarks(tmp_path: Path) -> None:
    assert house.benchmark_imports(ROOT) == []
    root = _tree(tmp_path, {
        "cli/bench/intake_bench.py": "", "cli/bench_commands.py": "from caseledger.cli.bench import intake_bench\n",
        "projections/runner.py": "def f():\n    from caseledger.cli.bench.intake_bench import bench\n",
    })
    assert house.benchmark_imports(root) == ["projections.runner → cli.bench.intake_bench"]


# -- settings: the environment is read by the composition roots only ------------------------------------------

#: The composition roots: the CLI (typer options, ``Session``), the benchmarks (under cli/) and the service's worker
#: factory (uvicorn imports it in each worker process). They call ``Settings.from_environ(os.environ)``.
ENVIRONMENT_ROOTS = ("cli", "ledger.service.server")
_ENVIRONMENT = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def environment_reads(path: Path) -> list[str]:
    """Where a module touches the process's environment: ``os.environ``, ``os.getenv``, ``from os import environ``."""
    found = []
    for node in ast.walk(house.parsed(path)):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"
                and node.attr in _ENVIRONMENT):
            found.append(f"line {node.lineno}: os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and {a.name for a in node.names} & _ENVIRONMENT:
            found.append(f"line {node.lineno}: from os import {', '.join(a.name for a in node.names)}")
    return found


def library_environment_reads(root: Path) -> dict[str, list[str]]:
    return {name: reads for name, path in house.modules(root).items()
            if not any(name == r or name.startswith(r + ".") for r in ENVIRONMENT_ROOTS)
            and (reads := environment_reads(path))}


def test_only_the_composition_roots_read_the_environment(tmp_path: Path) -> None:
    """Library code takes settings objects (ledger/settings.py); only the roots read ``os.environ``."""
    assert library_environment_reads(ROOT) == {}
    root = _tree(tmp_path, {
        "ledger/privacy/kek.py": "import os\ndef kek():\n    return os.environ.get('CASELEDGER_KEK')\n",
        "projections/catchup.py": "from os import getenv\n",
        "cli/common.py": "import os\nSETTINGS = os.environ\n",
    })
    assert library_environment_reads(root) == {"ledger.privacy.kek": ["line 3: os.environ"],
                                               "projections.catchup": ["line 1: from os import getenv"]}


# -- errors: every exception class of the product is in the one tree of ledger/errors.py ------------------------

#: Exception classes that never leave the module pair that raises and catches them (control flow, not errors).
INTERNAL_SIGNALS = {
    "ledger.avro.avrocompiled.Unsupported": "caught by the codec, which keeps fastavro for that schema",
    "ledger.avro.avrocompiled._Refuse": "raised by compiled code and caught by the codec, which falls back",
}


def exceptions_outside_the_tree(root: Path) -> list[str]:
    """``module.Class`` for every exception class that does not derive from ``ledger/errors.py``'s tree.

    Read from the sources: a class is in the tree when one of its bases is a class of ``errors.py`` or a class
    already found in the tree; an exception outside it is one whose base is a built-in exception or is named
    like one (``…Error``, ``…Exception``). The standalone verifier has a tree of its own (caseledger.verify).
    """
    import builtins

    classes: dict[str, list[str]] = {}
    for name, path in house.modules(root).items():
        if name.startswith("verify"):
            continue
        for node in ast.walk(house.parsed(path)):
            if isinstance(node, ast.ClassDef):
                bases = [b.id if isinstance(b, ast.Name) else b.attr for b in node.bases
                         if isinstance(b, ast.Name | ast.Attribute)]
                classes[f"{name}.{node.name}"] = bases
    tree = {q.rpartition(".")[2] for q in classes if q.startswith("ledger.errors.")}
    grew = True
    while grew:
        grown = {q.rpartition(".")[2] for q, bases in classes.items() if set(bases) & tree}
        grew = not grown <= tree
        tree |= grown
    builtin = {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}
    return sorted(q for q, bases in classes.items()
                  if q.rpartition(".")[2] not in tree and q not in INTERNAL_SIGNALS
                  and any(b in builtin or b.endswith(("Error", "Exception")) for b in bases))


def test_every_exception_of_the_product_is_in_the_one_tree(tmp_path: Path) -> None:
    assert exceptions_outside_the_tree(ROOT) == []
    root = _tree(tmp_path, {
        "ledger/errors.py": "class CaseLedgerError(Exception): ...\nclass ValidationError(CaseLedgerError): ...\n",
        "ledger/intake/signatures.py": "from caseledger.ledger.errors import ValidationError\n"
                                       "class SignatureRefused(ValidationError): ...\n"
                                       "class BadKey(SignatureRefused): ...\n",
        "projections/runner.py": "class Stalled(RuntimeError): ...\n",
        "cli/common.py": "import httpx\nclass Unreachable(httpx.HTTPError): ...\n",
    })
    assert exceptions_outside_the_tree(root) == ["cli.common.Unreachable", "projections.runner.Stalled"]


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in modules().values()))
def test_a_module_holds_one_concern(path: str) -> None:
    lines = len((ROOT / path).read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path} has {lines} lines (limit {MAX_LINES}): split it by concern"


def test_the_domain_imports_no_driver_client_or_codec() -> None:
    mods = modules()
    allowed = re.compile(r"^(caseledger\.ledger\.(domain|errors)\b|eventsourcing\.domain$)")
    for name, path in mods.items():
        if not name.startswith("caseledger.ledger.domain"):
            continue
        tree = house.parsed(path)
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
        for node in ast.walk(house.parsed(path)):
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
    def in_store(module: str) -> bool:
        return module == "ledger.store" or module.startswith("ledger.store.")

    offenders = [f"{name} → {target} ({how})" for name, edges in house.import_graph(ROOT).items()
                 if not in_store(name) for target, how in edges.items() if in_store(target)]
    assert offenders == []


BACKEND_CHOICE = re.compile(r"\bis_postgres\b|isinstance\([^)]*\b(SQLite|Postgres)\w*\)|\bpostgres\s*=")


def test_the_backend_is_chosen_in_one_place() -> None:
    """``StoreSettings.eventsourcing_env`` names the storage provider; nothing else in the library asks which
    backend it runs on (no ``is_postgres``, ``isinstance`` of a backend's class, or ``postgres=`` flag)."""
    offenders = [f"{path.relative_to(ROOT)}: {match.group(0)}" for name, path in modules().items()
                 if name.startswith("caseledger.ledger.") and name != "caseledger.ledger.settings"
                 for match in BACKEND_CHOICE.finditer(path.read_text(encoding="utf-8"))]
    assert offenders == []
