"""An export's readable view of each event (``event``) against its stored bytes: an edited view is named.

The stored bytes are the evidence (their hash is the leaf the signed checkpoint commits to); the
``event`` beside them is the ledger's decoding, for people. So that a view edited after the export
is not read as the ledger's word, the export carries the schema that wrote each event (``schemas``:
the Parsing Canonical Form by its fingerprint, the 8 bytes after ``C3 01``), and every event is
decoded here from its stored bytes and compared with its view, field by field:

* a field sealed in the stored bytes (a token ``enc:1:…``, or ``CLENC1…`` bytes: personal data under
  the customer's key) is shown opened, or ``[erased]``: it is not compared (only the key opens it);
* a field of the view that the writer schema has not (added by a later schema) is not compared:
  it shows the later schema's default;
* every other value must be equal (``view-mismatch`` names the field).

A schema is bound to its event by the fingerprint the stored bytes name, a CRC-64 — an identifier,
not a cryptographic hash: the check catches a view edited by hand, not a forger who also crafts a
schema with a colliding fingerprint. Events written before the standard fingerprint (or an export
without schemas) cannot be checked: the verifier says so (``views_unchecked``).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from caseledger.verify.avro import decode_datum, named_types
from caseledger.verify.failures import MalformedInput

__all__ = ["ViewCheck", "crc64_avro", "view_differences"]

_EMPTY = 0xC15D213AA4D7A795
_TABLE: list[int] = []
for _i in range(256):
    _fp = _i
    for _ in range(8):
        _fp = (_fp >> 1) ^ (_EMPTY & -(_fp & 1))
    _TABLE.append(_fp)
SEALED_TEXT = "enc:1:"
SEALED_BYTES = b"CLENC1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def crc64_avro(data: bytes) -> bytes:
    """The Avro CRC-64 fingerprint (Rabin) of ``data``, little-endian, as single-object encoding writes it."""
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


class ViewCheck:
    """The schemas an export carries, checked against their fingerprints once, then each event against its view."""

    def __init__(self, schemas: Any, *, json_view: bool) -> None:
        self.json_view = json_view
        self.schemas: dict[bytes, tuple[Any, dict[str, Any]]] = {}
        self.refused: dict[bytes, str] = {}
        for fp_hex, text in (schemas or {}).items() if isinstance(schemas, dict) else ():
            try:
                fp = bytes.fromhex(str(fp_hex))
            except ValueError:
                continue
            if not isinstance(text, str) or crc64_avro(text.encode()) != fp:
                self.refused[fp] = "the schema the export gives for it is not the one its fingerprint names"
                continue
            try:
                schema = json.loads(text)
                self.schemas[fp] = (schema, named_types(schema))
            except (ValueError, KeyError, TypeError):
                self.refused[fp] = "the schema the export gives for it is not an Avro schema"

    def differences(self, data: bytes, view: Any) -> list[str] | None:
        """What differs between the event decoded from ``data`` and ``view`` (empty: nothing); None when the event
        cannot be checked (no schema for its fingerprint)."""
        fp = data[2:10]
        if fp in self.refused:
            return [self.refused[fp]]
        found = self.schemas.get(fp)
        if found is None:
            return None
        schema, names = found
        try:
            stored = decode_datum(data[10:], schema, names)
        except MalformedInput as error:
            return [f"its stored bytes do not decode with the schema the export gives ({error})"]
        return view_differences(stored, view, schema, names, json_view=self.json_view)


def view_differences(stored: Any, view: Any, schema: Any, names: dict[str, Any], *, json_view: bool,
                     where: str = "event") -> list[str]:
    """Every path where ``view`` is not ``stored`` (decoded with ``schema``), sealed fields aside."""
    if isinstance(schema, str) and schema in names:
        schema = names[schema]
    if isinstance(schema, list):  # a union: the branch the stored value is of
        if stored is None:
            return [] if view is None else [f"{where}: null in the stored bytes"]
        branches = [b for b in schema if b != "null"]
        tried = [view_differences(stored, view, b, names, json_view=json_view, where=where) for b in branches]
        return min(tried, key=len) if tried else [f"{where}: not in the stored bytes"]
    kind = schema.get("type") if isinstance(schema, dict) else schema
    if kind in ("record", "error"):
        if not isinstance(view, dict):
            return [f"{where}: not a record"]
        found: list[str] = []
        for f in schema["fields"]:
            name = f["name"]
            if name not in view:
                found.append(f"{where}.{name}: missing from the view")
                continue
            found += view_differences(stored.get(name), view[name], f["type"], names, json_view=json_view,
                                      where=f"{where}.{name}")
        return found
    if kind == "array":
        if not isinstance(view, list) or len(view) != len(stored):
            return [f"{where}: not the {len(stored)} items stored"]
        return [d for n, (s, v) in enumerate(zip(stored, view, strict=True))
                for d in view_differences(s, v, schema["items"], names, json_view=json_view, where=f"{where}[{n}]")]
    if kind == "map":
        if not isinstance(view, dict) or set(view) != set(stored):
            return [f"{where}: not the keys stored"]
        return [d for k in stored for d in view_differences(stored[k], view[k], schema["values"], names,
                                                            json_view=json_view, where=f"{where}.{k}")]
    if _sealed(stored):
        return []  # personal data under the customer's key: shown opened (or [erased]), never compared
    expected = _as_viewed(stored, schema) if json_view else stored
    return [] if _equal(expected, view) else [f"{where}: not the value stored"]


def _sealed(value: Any) -> bool:
    return (isinstance(value, str) and value.startswith(SEALED_TEXT)) or (
        isinstance(value, bytes) and value.startswith(SEALED_BYTES))


def _as_viewed(value: Any, _schema: Any) -> Any:
    """A stored value as the JSON view shows it (caseledger's ``plain``): bytes as hex."""
    return value.hex() if isinstance(value, bytes) else value


def _equal(expected: Any, view: Any) -> bool:
    if isinstance(expected, bool) or isinstance(view, bool):
        return type(expected) is type(view) and expected == view
    if isinstance(expected, int) and isinstance(view, str):
        # A time: the Parsing Canonical Form keeps no logical type, so a stored long shown as ISO 8601 is read
        # back as the microseconds (a date: the days) since 1970 it must be.
        try:
            if len(view) == 10:
                return (date.fromisoformat(view) - date(1970, 1, 1)).days == expected
            moment = datetime.fromisoformat(view)
        except ValueError:
            return False
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return (moment - _EPOCH) // timedelta(microseconds=1) == expected
    return bool(expected == view)
