"""How big the house is and how its rooms depend on each other: the figures the README's map is checked by.

``python -m tests.support.house_measures [ROOT]`` prints, for the product's folders of a checkout (this
one by default): modules and lines per package, the largest module, module names that stand in more than
one place, imports made inside functions (lazy) and under ``TYPE_CHECKING``, and the imports that point
up the layers (domain ← application ← adapters ← roots). ``--json`` prints the same as JSON.
"""

from __future__ import annotations

import ast
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

FOLDERS = ("ledger", "projections", "cli")

#: The layer of each package, lowest first; a module may import its own layer and the ones below.
LAYERS = (
    ("domain", ("ledger.domain", "ledger.errors")),
    ("application", ("ledger",)),
    ("adapters", ("projections", "ledger.service", "ledger.kafka", "ledger.store", "ledger.verifier")),
    ("roots", ("cli", "ledger.bench")),
)


def layer_of(module: str) -> int:
    best, rank = -1, 0
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    return rank


def _modules(root: Path) -> dict[str, Path]:
    found = {}
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path) -> list[tuple[str, str]]:
    """(target, how) for every import of the product: how is 'top', 'lazy' or 'typing'."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[str, str]] = []

    def visit(node: ast.AST, how: str) -> None:
        for child in ast.iter_child_nodes(node):
            kind = how
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.body:
                    visit_one(sub, "typing")
                for sub in child.orelse:
                    visit_one(sub, how)
                continue
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) and how == "top":
                kind = "lazy"
            visit_one(child, kind)

    def visit_one(child: ast.AST, how: str) -> None:
        if isinstance(child, ast.Import):
            out.extend((a.name.removeprefix("caseledger."), how) for a in child.names
                       if a.name.startswith("caseledger."))
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            else:
                if not base.startswith("caseledger."):
                    return
                base = base.removeprefix("caseledger.")
            out.append((base, how))
        else:
            visit(child, how)

    visit(ast.parse(path.read_text(encoding="utf-8")), "top")
    return out


def measure(root: Path) -> dict:
    mods = _modules(root)
    lines = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in mods.items()}
    per_package: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, n in lines.items():
        package = mods[name].parent.relative_to(root).as_posix()
        per_package[package][0] += 1
        per_package[package][1] += n
    largest = max(lines, key=lines.__getitem__)
    names = Counter(p.stem for p in mods.values() if p.stem != "__init__")
    shared = sorted(stem for stem, n in names.items() if n > 1)
    how = Counter()
    upward = []
    for name, path in mods.items():
        for target, kind in _imports(name, path):
            how[kind] += 1
            if layer_of(target) > layer_of(name):
                upward.append(f"{name} → {target} ({kind})")
    return {
        "modules": len(mods), "lines": sum(lines.values()),
        "packages": {k: {"modules": v[0], "lines": v[1]} for k, v in sorted(per_package.items())},
        "largest": {"module": mods[largest].relative_to(root).as_posix(), "lines": lines[largest]},
        "shared_names": shared,
        "imports": {"top": how["top"], "lazy": how["lazy"], "typing": how["typing"]},
        "upward_imports": sorted(set(upward)),
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


if __name__ == "__main__":
    main(sys.argv[1:])
