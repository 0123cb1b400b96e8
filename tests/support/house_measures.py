"""How big the house is and how its rooms depend on each other: the figures the README's map is checked by.

``python -m tests.support.house_measures [ROOT]`` prints, for the product's folders of a checkout (this
one by default): modules and lines per package, the largest module, module names that stand in more than
one place, imports made inside functions (lazy) and under ``TYPE_CHECKING``, and the imports that point
up the layers (domain ← application ← adapters ← roots), the import cycles and the imports of the benchmarks,
every import counted. ``--json`` prints the same as JSON. ``tests/unit/test_layout.py`` enforces the rules
with these same definitions (LAYERS, :func:`import_graph`).
"""

from __future__ import annotations

import ast
import functools
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

FOLDERS = ("ledger", "projections", "cli")
#: Folders inside another package's folder that install as a package of their own (pyproject's package-dir).
SUBFOLDERS = {"ledger/verifier": "verify"}

#: The layer of each package, lowest first; a module may import its own layer and the ones below, never one
#: above — at the top of a module, inside a function or under TYPE_CHECKING alike. The longest prefix decides.
LAYERS = (
    # caseledger.verify installs on its own and imports nothing of the ledger (tests/unit/test_layout.py):
    # whoever verifies may use it.
    ("standalone", ("verify",)),
    ("domain", ("ledger.domain", "ledger.errors")),
    # The application, with what it asks of Kafka: the clients' port and the events topic's record format
    # (plain Python; the clients that implement them are adapters).
    ("application", ("ledger", "ledger.kafka.ports", "ledger.kafka.events_record")),
    ("adapters", ("ledger.store", "ledger.kafka", "ledger.service", "ledger.runtime", "ledger.intake.worker",
                  "ledger.intake.adapter_sdk", "ledger.intake.outbound_client", "ledger.mail", "projections")),
    ("roots", ("cli",)),
)
#: Modules whose layer is not their package's: ``caseledger.ledger`` itself is the adapter SDK's surface
#: (it names the Kafka intake client), while the modules under it are the application.
EXACT_LAYERS = {"ledger": "adapters"}
#: The benchmarks: only they and the command that runs them import them.
BENCHMARKS = "cli.bench"
BENCHMARK_USERS = ("cli.bench", "cli.bench_commands")


def layer_of(module: str) -> int:
    """The rank of ``module``'s layer in LAYERS (0 the lowest)."""
    names = [name for name, _ in LAYERS]
    if module in EXACT_LAYERS:
        return names.index(EXACT_LAYERS[module])
    best, rank = -1, 0
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    return rank


def modules(root: Path) -> dict[str, Path]:
    """Every module of the product by its installed name without ``caseledger.`` (``ledger.settings``, ``verify.note``)."""
    found = {}
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            parts = list(path.relative_to(root).with_suffix("").parts)
            for sub, package in SUBFOLDERS.items():
                if relative.startswith(sub + "/"):
                    parts = [package, *parts[len(sub.split("/")):]]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def parsed(path: Path) -> ast.Module:
    """The syntax tree of the module at ``path`` as it reads now (parsed once per text: every check reads it)."""
    return _parse(path.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1024)
def _parse(text: str) -> ast.Module:
    return ast.parse(text)


def product_imports(name: str, path: Path) -> list[tuple[tuple[str, ...], str]]:
    """(targets, how) for every import statement of the product a module makes; how is 'top', 'lazy' or 'typing'.

    The targets are what the statement may name, without ``caseledger.``: ``from caseledger.ledger.store import
    codec`` gives ``ledger.store`` and ``ledger.store.codec`` (:func:`import_graph` keeps those that are modules).
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[tuple[str, ...], str]] = []

    def visit(node: ast.AST, how: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr | ast.arguments):  # an import is a statement: none is in an expression
                continue
            kind = how
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.body:
                    visit_one(sub, "typing")
                for sub in child.orelse:
                    visit_one(sub, how)
                continue
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) and how == "top":
                kind = "lazy"
            visit_one(child, kind)

    def visit_one(child: ast.AST, how: str) -> None:
        if isinstance(child, ast.Import):
            for alias in child.names:
                if alias.name.startswith("caseledger."):
                    out.append(((alias.name.removeprefix("caseledger."),), how))
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            else:
                if not base.startswith("caseledger."):
                    return
                base = base.removeprefix("caseledger.")
            out.append(((base, *(f"{base}.{a.name}" for a in child.names)), how))
        else:
            visit(child, how)

    visit(parsed(path), "top")
    return out


def import_graph(root: Path) -> dict[str, dict[str, str]]:
    """Module → {imported module of the product: how}, every import counted (top, lazy, typing).

    ``how`` is the most binding way it is imported: at the top, else lazily, else for typing only.
    """
    mods = modules(root)
    graph: dict[str, dict[str, str]] = {}
    order = {"top": 0, "lazy": 1, "typing": 2}
    for name, path in mods.items():
        edges: dict[str, str] = {}
        for targets, how in product_imports(name, path):
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if not target or target == name:
                    continue
                if target not in edges or order[how] < order[edges[target]]:
                    edges[target] = how
        graph[name] = edges
    return graph


def upward_imports(root: Path) -> list[str]:
    """``module → target (how)`` for every import that points up the layers."""
    return sorted(f"{name} → {target} ({how})" for name, edges in import_graph(root).items()
                  for target, how in edges.items() if layer_of(target) > layer_of(name))


def benchmark_imports(root: Path) -> list[str]:
    """``module → target`` for every import of the benchmarks from outside them and their command."""
    return sorted(f"{name} → {target}" for name, edges in import_graph(root).items() for target in edges
                  if (target == BENCHMARKS or target.startswith(BENCHMARKS + "."))
                  and not any(name == user or name.startswith(user + ".") for user in BENCHMARK_USERS))


def import_cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), every import an edge."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
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

    for v in list(graph):
        if v not in index:
            strong(v)
    return sorted(cycles)


def measure(root: Path) -> dict:
    mods = modules(root)
    lines = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in mods.items()}
    per_package: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, n in lines.items():
        package = mods[name].parent.relative_to(root).as_posix()
        per_package[package][0] += 1
        per_package[package][1] += n
    largest = max(lines, key=lines.__getitem__)
    names = Counter(p.stem for p in mods.values() if p.stem != "__init__")
    shared = sorted(stem for stem, n in names.items() if n > 1)
    how = Counter(kind for name, path in mods.items() for _, kind in product_imports(name, path))
    return {
        "modules": len(mods), "lines": sum(lines.values()),
        "packages": {k: {"modules": v[0], "lines": v[1]} for k, v in sorted(per_package.items())},
        "largest": {"module": mods[largest].relative_to(root).as_posix(), "lines": lines[largest]},
        "shared_names": shared,
        "imports": {"top": how["top"], "lazy": how["lazy"], "typing": how["typing"]},
        "upward_imports": upward_imports(root),
        "cycles": [" ↔ ".join(group) for group in import_cycles(import_graph(root))],
        "benchmark_imports": benchmark_imports(root),
    }


def main(argv: list[str]) -> None:
    args = [a for a in argv if a != "--json"]
    root = Path(args[0]) if args else Path(__file__).resolve().parents[2]
    result = measure(root)
    if "--json" in argv:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    print(f"{result['modules']} modules, {result['lines']} lines; largest {result['largest']['module']} "
          f"({result['largest']['lines']})")
    for package, v in result["packages"].items():
        print(f"  {package:28} {v['modules']:3} modules {v['lines']:6} lines")
    print(f"names in more than one place ({len(result['shared_names'])}): {', '.join(result['shared_names'])}")
    i = result["imports"]
    print(f"imports of the product: {i['top']} at the top, {i['lazy']} inside functions, {i['typing']} for typing")
    print(f"imports up the layers ({len(result['upward_imports'])}):")
    for line in result["upward_imports"]:
        print(f"  {line}")
    print(f"import cycles, every import counted ({len(result['cycles'])}):")
    for line in result["cycles"]:
        print(f"  {line}")
    print(f"imports of the benchmarks from outside them ({len(result['benchmark_imports'])}):")
    for line in result["benchmark_imports"]:
        print(f"  {line}")


if __name__ == "__main__":
    main(sys.argv[1:])
