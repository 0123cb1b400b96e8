"""Avro encoders and decoders compiled from a parsed schema to Python code: fastavro's bytes, faster.

fastavro's Cython reader and writer walk the schema for every datum; for the ledger's small,
fixed records that walk costs more than the bytes themselves (about 15 µs an event either way).
:func:`compile_writer` and :func:`compile_reader` turn one parsed schema into straight-line
Python source once, so writing an event is a run of appends and reading it a run of slices.

They cover what the ledger's schemas use: null, boolean, int, long, float, double, bytes, string,
records, enums, fixed, arrays, maps, unions with at most one non-null branch, and the logical
types ``uuid``, ``timestamp-micros`` and ``timestamp-millis``, without recursion (straight-line
code cannot unroll a type that contains itself). Anything else raises
:class:`Unsupported` at compile time, and the caller keeps fastavro for that schema.

They are a fast path, never the authority: a datum the compiled writer cannot write, or bytes
the compiled reader cannot read, raises an exception and the caller hands the same input to
fastavro, which writes it or explains precisely what is wrong with it. The tests check both
directions byte for byte against fastavro for every schema the ledger ships.

Nothing from a schema becomes code except through ``repr`` (field names, as string literals) or
``int`` (fixed sizes); enum symbols are passed in as constants, so no schema can inject code.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

__all__ = ["Unsupported", "compile_reader", "compile_writer"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# One byte covers zigzag values below 128: longs from -64 to 63. Lengths of short strings, small
# counts and versions all land here.
_ONE_BYTE = {n: bytes([(n << 1) ^ (n >> 63)]) for n in range(-64, 64)}
_LENGTHS = tuple(_ONE_BYTE[n] for n in range(64))
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


class Unsupported(Exception):
    """The schema uses something the compiler does not cover; use fastavro for it."""


def _long_bytes(n: int) -> bytes:
    """Zigzag varint of a long (what Avro writes for int and long)."""
    found = _ONE_BYTE.get(n)
    if found is not None and n.__class__ is int:
        return found
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise OverflowError(f"{n} does not fit an Avro long")
    z = (n << 1) ^ (n >> 63)
    if 0x2000000000000 <= z < 0x100000000000000:
        # Exactly eight bytes, as every timestamp in microseconds of this century: spread the
        # 7-bit groups with masks instead of a Python loop (the reverse of _read_long).
        z = (z & 0x000000000FFFFFFF) | ((z & 0x00FFFFFFF0000000) << 4)
        z = (z & 0x00003FFF00003FFF) | ((z & 0x0FFFC0000FFFC000) << 2)
        z = (z & 0x007F007F007F007F) | ((z & 0x3F803F803F803F80) << 1)
        return (z | 0x0080808080808080).to_bytes(8, "little")
    out = bytearray()
    while z > 127:
        out.append((z & 127) | 128)
        z >>= 7
    out.append(z)
    return bytes(out)


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    """The long whose varint starts at ``pos`` (two bytes or more) and the position after it."""
    b = data[pos + 1]
    if b < 128:  # two bytes: a string's length from 64 to 8191
        z = (data[pos] & 127) | (b << 7)
        return (z >> 1) ^ -(z & 1), pos + 2
    x = int.from_bytes(data[pos : pos + 8], "little")
    if x & 0x8080808080808080 == 0x0080808080808080:
        # Exactly eight bytes, as every timestamp in microseconds of this century: gather the
        # 7-bit groups with masks instead of a Python loop over the bytes (3x faster).
        x = (x & 0x007F007F007F007F) | ((x & 0x7F007F007F007F00) >> 1)
        x = (x & 0x00003FFF00003FFF) | ((x & 0x3FFF00003FFF0000) >> 2)
        x = (x & 0x000000000FFFFFFF) | ((x & 0x0FFFFFFF00000000) >> 4)
        return (x >> 1) ^ -(x & 1), pos + 8
    b = data[pos]
    z = b & 127
    shift = 7
    pos += 1
    while b > 127:
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")
        b = data[pos]
        pos += 1
        z |= (b & 127) << shift
        shift += 7
    return (z >> 1) ^ -(z & 1), pos


def _micros(value: Any) -> int:
    if value.__class__ is int:
        return value  # type: ignore[no-any-return]
    # An aware datetime only: a naive one raises here and fastavro decides what it means.
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds  # type: ignore[no-any-return]


def _millis(value: Any) -> int:
    if value.__class__ is int:
        return value  # type: ignore[no-any-return]
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000 + delta.microseconds // 1_000  # type: ignore[no-any-return]


def _uuid_text(value: Any) -> str:
    return str(value) if value.__class__ is UUID else value  # type: ignore[no-any-return]


class _Refuse(Exception):
    """Raised by compiled code for a datum it will not write; the caller falls back."""


def _refuse(what: str) -> Any:
    raise _Refuse(what)


def _float_bytes(value: Any) -> bytes:
    if value.__class__ not in (int, float):
        raise _Refuse("not a number")
    return struct.pack("<f", value)


def _double_bytes(value: Any) -> bytes:
    if value.__class__ not in (int, float):
        raise _Refuse("not a number")
    return struct.pack("<d", value)


def _fixed_bytes(value: Any, size: int) -> bytes:
    if value.__class__ is not bytes or len(value) != size:
        raise _Refuse("not bytes of the fixed size")
    return value  # type: ignore[no-any-return]


_HELPERS: dict[str, Any] = {
    "_long": _long_bytes, "_read_long": _read_long, "_micros": _micros, "_millis": _millis,
    "_uuid_text": _uuid_text, "_refuse": _refuse, "_float": _float_bytes, "_double": _double_bytes,
    "_fixed": _fixed_bytes, "_ONE_BYTE": _ONE_BYTE, "_EPOCH": _EPOCH, "_timedelta": timedelta,
    "_UUID": UUID, "_unpack_f": struct.Struct("<f").unpack_from, "_unpack_d": struct.Struct("<d").unpack_from,
    "_INT_MIN": _INT_MIN, "_LENGTHS": _LENGTHS, "_INT_MAX": _INT_MAX,
}


class _Source:
    """Lines of generated Python with fresh local names."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def constant(self, value: Any) -> str:
        name = self.name("_k")
        self.constants[name] = value
        return name

    def add(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


def _resolve(schema: Any, named: dict[str, Any]) -> Any:
    """The schema itself, with a named reference replaced by its definition."""
    if isinstance(schema, str):
        if schema in named:
            return named[schema]
        return schema
    if isinstance(schema, dict) and schema.get("type") in ("record", "error", "enum", "fixed"):
        name = schema.get("name")
        if name:
            named.setdefault(name, schema)
    return schema


# Logical types covered: (type, logicalType) → (expression from the value to the plain type it is
# written as, expression from the plain value read to the value fastavro returns).
_LOGICAL_CONVERSIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("string", "uuid"): ("_uuid_text({v})", "_UUID({v})"),
    ("long", "timestamp-micros"): ("_micros({v})", "_EPOCH + _timedelta(0, 0, {v})"),
    ("long", "timestamp-millis"): ("_millis({v})", "_EPOCH + _timedelta(0, 0, 0, {v})"),
}


def _logical_conversion(schema: dict[str, Any]) -> tuple[str, str] | None:
    """The conversions of a logical type (None for a plain type); Unsupported for one not covered."""
    logical = schema.get("logicalType")
    if logical is None:
        return None
    conversion = _LOGICAL_CONVERSIONS.get((schema["type"], logical))
    if conversion is None:
        raise Unsupported(f"logical type {logical!r} on {schema['type']!r}")
    return conversion


def _union_branches(schema: list[Any], named: dict[str, Any]) -> tuple[int | None, Any, int | None]:
    """(index of null, the one non-null branch, its index) of a union the compiler covers."""
    nulls = [i for i, s in enumerate(schema) if s == "null"]
    others = [(i, s) for i, s in enumerate(schema) if s != "null"]
    if len(nulls) > 1 or len(others) > 1:
        raise Unsupported("unions with more than one non-null branch")
    null_index = nulls[0] if nulls else None
    if others:
        return null_index, _resolve(others[0][1], named), others[0][0]
    return null_index, None, None


# -- writer -----------------------------------------------------------------------------------------

# Appends the length of bytes ``s`` then ``s``: one table lookup for lengths below 64.
_LENGTH_AND = "a(_LENGTHS[len({s})] if len({s}) < 64 else _long(len({s}))); a({s})"
# The lines writing a primitive ``v`` (``s`` is a fresh local name); a refusal raises _Refuse.
_PRIMITIVE_WRITES: dict[str, tuple[str, ...]] = {
    "null": ("if {v} is not None: _refuse('not null')",),
    "boolean": ("a(b'\\x01' if {v} is True else b'\\x00' if {v} is False else _refuse('not a bool'))",),
    "int": ("if not _INT_MIN <= {v} <= _INT_MAX: _refuse('int out of range')", "a(_long({v}))"),
    "long": ("a(_long({v}))",),
    "float": ("a(_float({v}))",),
    "double": ("a(_double({v}))",),
    "bytes": ("if {v}.__class__ is not bytes: _refuse('not bytes')", "{s} = {v}", _LENGTH_AND),
    "string": ("{s} = {v}.encode()", _LENGTH_AND),
}


def _write(src: _Source, schema: Any, value: str, indent: int, named: dict[str, Any]) -> None:
    """Append code that appends the encoding of the datum in local ``value`` to list ``o``."""
    schema = _resolve(schema, named)
    add = src.add
    if isinstance(schema, list):
        null_index, branch, index = _union_branches(schema, named)
        if branch is None:
            add(indent, f"if {value} is not None: _refuse('not null')")
            add(indent, f"a({_ONE_BYTE[null_index or 0]!r})")
            return
        if null_index is None:
            add(indent, f"a({_ONE_BYTE[index or 0]!r})")
            _write(src, branch, value, indent, named)
            return
        add(indent, f"if {value} is None:")
        add(indent + 1, f"a({_ONE_BYTE[null_index]!r})")
        add(indent, "else:")
        add(indent + 1, f"a({_ONE_BYTE[index or 0]!r})")
        _write(src, branch, value, indent + 1, named)
        return
    if isinstance(schema, dict):
        kind = schema["type"]
        conversion = _logical_conversion(schema)
        if conversion is not None:
            plain = src.name("p")
            add(indent, f"{plain} = {conversion[0].format(v=value)}")
            _write(src, kind, plain, indent, named)
            return
        if kind in ("record", "error"):
            for field in schema["fields"]:
                item = src.name("f")
                add(indent, f"{item} = {value}[{field['name']!r}]")
                _write(src, field["type"], item, indent, named)
            return
        if kind == "enum":
            table = src.constant({symbol: _long_bytes(i) for i, symbol in enumerate(schema["symbols"])})
            add(indent, f"a({table}[{value}])")
            return
        if kind == "fixed":
            add(indent, f"a(_fixed({value}, {int(schema['size'])}))")
            return
        if kind == "array":
            item = src.name("i")
            add(indent, f"if {value}.__class__ is not list and {value}.__class__ is not tuple: _refuse('not a list')")
            add(indent, f"if {value}:")
            add(indent + 1, f"a(_long(len({value})))")
            add(indent + 1, f"for {item} in {value}:")
            _write(src, schema["items"], item, indent + 2, named)
            add(indent, "a(b'\\x00')")
            return
        if kind == "map":
            key, item = src.name("k"), src.name("v")
            add(indent, f"if {value}.__class__ is not dict: _refuse('not a dict')")
            add(indent, f"if {value}:")
            add(indent + 1, f"a(_long(len({value})))")
            add(indent + 1, f"for {key}, {item} in {value}.items():")
            add(indent + 2, f"{key} = {key}.encode()")
            add(indent + 2, _LENGTH_AND.format(s=key))
            _write(src, schema["values"], item, indent + 2, named)
            add(indent, "a(b'\\x00')")
            return
        return _write(src, kind, value, indent, named)
    lines = _PRIMITIVE_WRITES.get(schema) if isinstance(schema, str) else None
    if lines is None:
        raise Unsupported(f"type {schema!r}")
    text = src.name("s")
    for line in lines:
        add(indent, line.format(v=value, s=text))


def compile_writer(schema: Any, named_schemas: dict[str, Any] | None = None) -> Callable[[Any], bytes]:
    """A function from a datum to its schemaless Avro bytes, equal to fastavro's.

    ``schema`` is parsed by fastavro; ``named_schemas`` holds the named types it refers to.
    The function raises (any exception) for a datum it will not write; give that one to fastavro.
    """
    return _function(  # type: ignore[no-any-return]
        "write", _write, schema, named_schemas,
        head="def write(datum):\n    o = []\n    a = o.append\n",
        tail="    return b''.join(o)\n",
    )


def _function(
    name: str, generate: Callable[..., None], schema: Any, named_schemas: dict[str, Any] | None, *, head: str,
    tail: str,
) -> Any:
    """The function ``name`` whose body ``generate`` writes for ``schema`` (the datum in ``datum``)."""
    src = _Source()
    try:
        generate(src, schema, "datum", 1, dict(named_schemas or {}))
    except RecursionError:
        raise Unsupported("recursive schemas") from None
    code = head + "\n".join(src.lines) + "\n" + tail
    namespace: dict[str, Any] = {**_HELPERS, **src.constants}
    exec(compile(code, f"<avro {name}r>", "exec"), namespace)  # source generated above
    function = namespace[name]
    function.__doc__ = code
    return function


# -- reader -----------------------------------------------------------------------------------------


def _read_long_into(src: _Source, target: str, indent: int) -> None:
    add = src.add
    add(indent, "b = d[p]")
    add(indent, "if b < 128:")
    add(indent + 1, f"{target} = (b >> 1) ^ -(b & 1); p += 1")
    add(indent, "else:")
    add(indent + 1, f"{target}, p = _read_long(d, p)")


def _read(src: _Source, schema: Any, target: str, indent: int, named: dict[str, Any]) -> None:
    """Append code that reads one datum from ``d`` at ``p`` into local ``target``."""
    schema = _resolve(schema, named)
    add = src.add
    if isinstance(schema, list):
        null_index, branch, index = _union_branches(schema, named)
        which = src.name("w")
        _read_long_into(src, which, indent)
        if null_index is not None:
            add(indent, f"if {which} == {null_index}:")
            add(indent + 1, f"{target} = None")
            if branch is not None:
                add(indent, f"elif {which} == {index}:")
                _read(src, branch, target, indent + 1, named)
        else:
            add(indent, f"if {which} == {index}:")
            _read(src, branch, target, indent + 1, named)
        add(indent, "else:")
        add(indent + 1, f"raise ValueError('union branch ' + str({which}) + ' out of range')")
        return
    if isinstance(schema, dict):
        kind = schema["type"]
        conversion = _logical_conversion(schema)
        if conversion is not None:
            _read(src, kind, target, indent, named)
            add(indent, f"{target} = {conversion[1].format(v=target)}")
            return
        if kind in ("record", "error"):
            items = []
            for field in schema["fields"]:
                local = src.name("f")
                _read(src, field["type"], local, indent, named)
                items.append(f"{field['name']!r}: {local}")
            add(indent, f"{target} = {{{', '.join(items)}}}")
            return
        if kind == "enum":
            symbols = src.constant(tuple(schema["symbols"]))
            position = src.name("e")
            _read_long_into(src, position, indent)
            add(indent, f"if {position} < 0: raise ValueError('negative enum index')")
            add(indent, f"{target} = {symbols}[{position}]")
            return
        if kind == "fixed":
            size = int(schema["size"])
            add(indent, f"{target} = d[p:p + {size}]; p += {size}")
            add(indent, f"if len({target}) != {size}: raise EOFError('fixed cut short')")
            return
        if kind in ("array", "map"):
            count, item, key = src.name("n"), src.name("i"), src.name("k")
            add(indent, f"{target} = {'[]' if kind == 'array' else '{}'}")
            add(indent, "while True:")
            _read_long_into(src, count, indent + 1)
            add(indent + 1, f"if {count} == 0: break")
            add(indent + 1, f"if {count} < 0:")
            add(indent + 2, f"{count} = -{count}")
            _read_long_into(src, "_", indent + 2)  # the block's size in bytes, not needed here
            add(indent + 1, f"for _ in range({count}):")
            if kind == "map":
                _read(src, "string", key, indent + 2, named)
                _read(src, schema["values"], item, indent + 2, named)
                add(indent + 2, f"{target}[{key}] = {item}")
            else:
                _read(src, schema["items"], item, indent + 2, named)
                add(indent + 2, f"{target}.append({item})")
            return
        return _read(src, kind, target, indent, named)
    if schema == "null":
        add(indent, f"{target} = None")
    elif schema == "boolean":
        add(indent, f"{target} = d[p]; p += 1")
        add(indent, f"if {target} > 1: raise ValueError('boolean byte out of range')")
        add(indent, f"{target} = {target} == 1")
    elif schema in ("int", "long"):
        _read_long_into(src, target, indent)
    elif schema == "float":
        add(indent, f"{target}, = _unpack_f(d, p); p += 4")
    elif schema == "double":
        add(indent, f"{target}, = _unpack_d(d, p); p += 8")
    elif schema in ("bytes", "string"):
        length = src.name("n")
        _read_long_into(src, length, indent)
        add(indent, f"if {length} < 0: raise ValueError('negative length')")
        decode = ".decode()" if schema == "string" else ""
        add(indent, f"{target} = d[p:p + {length}]{decode}; p += {length}")
    else:
        raise Unsupported(f"type {schema!r}")


def compile_reader(schema: Any, named_schemas: dict[str, Any] | None = None) -> Callable[[bytes, int], Any]:
    """A function reading one datum written with ``schema`` from ``data`` at ``pos``, as fastavro would.

    It reads with the writer's own schema (no resolution) and raises (any exception) for bytes
    it cannot read; give those to fastavro, which explains what is wrong with them.
    """
    return _function(  # type: ignore[no-any-return]
        "read", _read, schema, named_schemas,
        head="def read(d, p=0):\n",
        tail="    if p > len(d): raise EOFError('datum cut short')\n    return datum\n",
    )
