"""What a running process holds of a customer: every text reachable from an object, searched for their data.

A process that kept a customer's case or claim opened before an erasure holds their words in memory,
whatever its store says. ``held_texts(worker)`` walks everything reachable from an object (its
attributes, containers, aggregates kept between batches, keys in memory) — not code, classes or
modules — and gives each text and byte string found, so a test can look for what was erased.
"""

from __future__ import annotations

import types
from collections.abc import Iterable
from typing import Any

_OPAQUE = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.CodeType,
           types.FrameType, types.GeneratorType, int, float, complex, bool, type(None))


def held_texts(root: Any, *, limit: int = 3_000_000) -> list[str | bytes]:
    """Every ``str`` and ``bytes`` reachable from ``root`` (at most ``limit`` objects visited)."""
    seen: set[int] = set()
    found: list[str | bytes] = []
    todo: list[Any] = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, _OPAQUE):
            continue
        seen.add(id(obj))
        if len(seen) > limit:
            raise AssertionError(f"more than {limit} objects reachable; walk a smaller root")
        if isinstance(obj, (str, bytes)):
            found.append(obj)
            continue
        if isinstance(obj, (bytearray, memoryview)):
            found.append(bytes(obj))
            continue
        if isinstance(obj, dict):
            todo.extend(obj.keys())
            todo.extend(obj.values())
            continue
        if isinstance(obj, (list, tuple, set, frozenset)):
            todo.extend(obj)
            continue
        todo.extend(_attributes(obj))
    return found


def _attributes(obj: Any) -> Iterable[Any]:
    state = getattr(obj, "__dict__", None)
    if isinstance(state, dict):
        yield from state.values()
    for klass in type(obj).__mro__:
        for name in getattr(klass, "__slots__", ()):
            if isinstance(name, str) and hasattr(obj, name):
                yield getattr(obj, name)
    if hasattr(obj, "items") and callable(obj.items) and not isinstance(obj, dict):
        try:  # mappings that are not dicts (OrderedDict subclasses are dicts; MappingProxyType, caches)
            yield from (v for kv in obj.items() for v in kv)
        except Exception:
            return


def holding(root: Any, secrets: Iterable[str]) -> list[str]:
    """The ``secrets`` found in some text reachable from ``root``."""
    texts = held_texts(root)
    wanted = list(secrets)
    hits = []
    for secret in wanted:
        encoded = secret.encode()
        if any((secret in t) if isinstance(t, str) else (encoded in t) for t in texts):
            hits.append(secret)
    return hits
