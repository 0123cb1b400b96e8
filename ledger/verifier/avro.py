"""A small Avro object container file reader (standard library only), for the history export's Avro form.

Enough of the Avro 1.11 specification to read any file written with the ``null`` or ``deflate``
codec: the header (magic, metadata, sync marker), blocks, and values of every schema type
(logical types are read as their underlying type). The verifier reads the export's
``HistoryEntry`` records with it, so it needs neither fastavro nor caseledger's codec.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from caseledger.verify.failures import MalformedInput

__all__ = ["decode_datum", "named_types", "read_container"]

MAGIC = b"Obj\x01"


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.p = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.p + n > len(self.data):
            raise MalformedInput("the Avro file ends inside a value")
        out = self.data[self.p : self.p + n]
        self.p += n
        return out

    def long(self) -> int:
        shift = result = 0
        while True:
            c = self.take(1)[0]
            result |= (c & 0x7F) << shift
            if c < 0x80:
                return (result >> 1) ^ -(result & 1)
            shift += 7
            if shift > 70:
                raise MalformedInput("an Avro long is too long")

    def bytes_(self) -> bytes:
        return self.take(self.long())

    def blocks(self) -> Iterator[None]:
        """Array and map blocks: yields once per item."""
        while True:
            count = self.long()
            if count == 0:
                return
            if count < 0:
                count = -count
                self.long()  # the block's size in bytes
            for _ in range(count):
                yield None


def _named(schema: Any, names: dict[str, Any], namespace: str = "") -> None:
    """Register every named type of ``schema`` by full name (and short name)."""
    if isinstance(schema, list):
        for s in schema:
            _named(s, names, namespace)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            name = schema["name"]
            full = name if "." in name else f"{schema.get('namespace', namespace)}.{name}".lstrip(".")
            names[full] = schema
            names.setdefault(full.rpartition(".")[2], schema)
            if kind in ("record", "error"):
                inner = full.rpartition(".")[0]
                for f in schema["fields"]:
                    _named(f["type"], names, inner)
        elif kind == "array":
            _named(schema["items"], names, namespace)
        elif kind == "map":
            _named(schema["values"], names, namespace)
        elif isinstance(kind, dict | list):
            _named(kind, names, namespace)


def _read(r: _Reader, schema: Any, names: dict[str, Any]) -> Any:
    if isinstance(schema, str):
        primitive = {
            "null": lambda: None, "boolean": lambda: r.take(1) != b"\x00", "int": r.long, "long": r.long,
            "float": lambda: struct.unpack("<f", r.take(4))[0], "double": lambda: struct.unpack("<d", r.take(8))[0],
            "bytes": r.bytes_, "string": lambda: r.bytes_().decode("utf-8"),
        }.get(schema)
        if primitive is not None:
            return primitive()
        if schema not in names:
            raise MalformedInput(f"the Avro schema names an unknown type {schema!r}")
        return _read(r, names[schema], names)
    if isinstance(schema, list):
        branch = r.long()
        if not 0 <= branch < len(schema):
            raise MalformedInput("an Avro union branch is out of range")
        return _read(r, schema[branch], names)
    kind = schema["type"]
    if kind in ("record", "error"):
        return {f["name"]: _read(r, f["type"], names) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][r.long()]
    if kind == "fixed":
        return r.take(int(schema["size"]))
    if kind == "array":
        return [_read(r, schema["items"], names) for _ in r.blocks()]
    if kind == "map":
        return {r.bytes_().decode(): _read(r, schema["values"], names) for _ in r.blocks()}
    return _read(r, kind, names)


def named_types(schema: Any) -> dict[str, Any]:
    """Every named type of ``schema`` by full (and short) name, for :func:`decode_datum`."""
    names: dict[str, Any] = {}
    _named(schema, names)
    return names


def decode_datum(data: bytes, schema: Any, names: dict[str, Any]) -> Any:
    """One value in Avro's binary encoding, all of ``data`` (MalformedInput if it ends early or goes on)."""
    r = _Reader(data)
    try:
        value = _read(r, schema, names)
    except (KeyError, TypeError, IndexError, UnicodeDecodeError, struct.error) as error:
        raise MalformedInput(f"not a value of its schema ({type(error).__name__})") from None
    if r.p != len(data):
        raise MalformedInput(f"{len(data) - r.p} bytes left after the value")
    return value


def read_container(path: str | Path) -> tuple[dict[str, bytes], list[Any]]:
    """The metadata and every record of an Avro object container file."""
    try:
        r = _Reader(Path(path).read_bytes())
    except OSError as error:
        raise MalformedInput(f"{path}: {error}") from None
    if r.take(4) != MAGIC:
        raise MalformedInput(f"{path}: not an Avro object container file")
    metadata = {r.bytes_().decode(): r.bytes_() for _ in r.blocks()}
    sync = r.take(16)
    try:
        schema = json.loads(metadata["avro.schema"])
    except (KeyError, ValueError):
        raise MalformedInput(f"{path}: the Avro file has no readable schema") from None
    codec = metadata.get("avro.codec", b"null").decode()
    if codec not in ("null", "deflate"):
        raise MalformedInput(f"{path}: Avro codec {codec!r} is not supported (null, deflate)")
    names: dict[str, Any] = {}
    _named(schema, names)
    records: list[Any] = []
    while r.p < len(r.data):
        count, size = r.long(), r.long()
        block = r.take(size)
        if codec == "deflate":
            try:
                block = zlib.decompress(block, -15)
            except zlib.error as error:
                raise MalformedInput(f"{path}: a deflate block is damaged ({error})") from None
        inner = _Reader(block)
        records.extend(_read(inner, schema, names) for _ in range(count))
        if r.take(16) != sync:
            raise MalformedInput(f"{path}: a block's sync marker differs: the file is damaged")
    return metadata, records
