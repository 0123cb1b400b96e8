"""Sealing personal fields into the stored bytes, opening them for the ledger, revealing them in views.

A sealed text is a *token* that still fits the field's Avro ``string`` type::

    enc:1:<key id, 16 hex>:<base64url(nonce ‖ AES-256-GCM ciphertext ‖ tag)>

and a sealed byte string (``raw``) is ``CLENC1 ‖ key id (8 bytes) ‖ nonce ‖ ciphertext ‖ tag``.
The associated data binds the ciphertext to its key id. It does not bind it to one event: the
views keep tokens exactly as the events carry them and reveal them without the event at hand, and
where a token sits is already fixed by the hash chains and seals over the stored bytes.

Three readers, three behaviours: the store codec leaves tokens as they are (projections and the
audit work on them: no view ever holds a customer's data in clear); the application's mapper
*opens* them (the aggregates and exports see the text, or :data:`ERASED`); a query *reveals* the
tokens found in view rows, shortened as the view asked (``…~40``: at most 40 characters).

:data:`ERASED` is a typed marker, not text: an event that copies one (a handoff's brief of an
erased customer's case) keeps it as written, ``[erased]`` in clear, which opens to the marker again.
It is never sealed under the customer's new key as if it were their data.
"""

from __future__ import annotations

import binascii
import os
import re
from binascii import a2b_base64, b2a_base64
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag

from caseledger.ledger.domain.personal import (
    ERASED,
    PERSONAL_FIELDS,
    REJECTION_SUBJECT_PREFIX,
    Path,
    is_erased,
)
from caseledger.ledger.privacy.data_keys import DataKeys

TOKEN_PREFIX = "enc:1:"
BYTES_PREFIX = b"CLENC1"
UNREADABLE = "[unreadable]"
TOKEN = re.compile(r"enc:1:([0-9a-f]{16}):([A-Za-z0-9_-]{24,})(?:~(\d{1,4}))?")
_KEY_IDS = re.compile(r"enc:1:([0-9a-f]{16}):")  # the key ids of the tokens in a text (and of token-like texts)
_NONCE = 12


@lru_cache(maxsize=4096)
def _aad(key_id: str) -> bytes:
    return b"caseledger sealed field\n" + key_id.encode()


def subject_of(event_type: str, customer_id: str, recorded_at: datetime) -> str:
    """Whose key seals an event: its customer's, or its month's for a rejection (no customer)."""
    if customer_id:
        return customer_id
    return f"{REJECTION_SUBJECT_PREFIX}{recorded_at:%Y-%m}"


def is_sealed(value: object) -> bool:
    if isinstance(value, str):
        return value.startswith(TOKEN_PREFIX)
    return isinstance(value, bytes) and value.startswith(BYTES_PREFIX)


def excerpt(text: str, limit: int) -> str:
    """A sealed text as a view shows it shortened: revealed, then cut to ``limit`` characters."""
    return f"{text}~{limit}" if text.startswith(TOKEN_PREFIX) and TOKEN.fullmatch(text) else text


class Sealer:
    """Seals and opens the personal fields of events with the data keys of their subjects."""

    def __init__(self, keys: DataKeys) -> None:
        self.keys = keys

    # -- writing ------------------------------------------------------------------------------------

    def seal_record(self, event_type: str, subject: str, record: dict[str, Any]) -> None:
        """Replace, in ``record`` (an event's Avro record), every personal field by its sealed form.

        The marker of erased data is not the customer's data: it is written as the marker, never
        sealed, and an event with nothing else to seal makes its subject no key.
        """
        plan = _PLANS.get(event_type)
        if plan is None:
            return
        key: tuple[Any, bytes, str, str] | None = None

        def seal(value: Any) -> Any:
            nonlocal key
            if not value:
                return value
            if is_erased(value):
                return str(value)
            if key is None:
                key_id, cipher = self.keys.key_for(subject)
                key = (cipher, _aad(key_id), f"{TOKEN_PREFIX}{key_id}:", key_id)
            return _seal(value, *key)

        top, nested = plan
        for name in top:  # most personal fields are top-level texts: no walk
            value = record.get(name)
            if value:
                record[name] = seal(value)
        for path in nested:
            head = path[0]
            if isinstance(record.get(head), (dict, list)):
                record[head] = _copy(record[head])  # the event keeps its own (clear) values
            apply_at_path(record, path, seal)

    # -- reading ------------------------------------------------------------------------------------

    def open_state(self, event_type: str, state: dict[str, Any]) -> None:
        """Replace, in a decoded event's attributes, every sealed field by its text (or ERASED)."""
        paths = PERSONAL_FIELDS.get(event_type)
        if paths:
            for path in paths:
                apply_at_path(state, path, self.open_value)

    def open_value(self, value: Any) -> Any:
        if isinstance(value, str):
            if not value.startswith(TOKEN_PREFIX):
                return ERASED if value == ERASED else value  # a marker an event copied stays one
            match = TOKEN.fullmatch(value)
            return self._open_text(match) if match else UNREADABLE
        if isinstance(value, bytes) and value.startswith(BYTES_PREFIX):
            key_id = value[6:14].hex()
            cipher = self.keys.cipher(key_id)
            if cipher is None:
                return b""
            try:
                return cipher.decrypt(value[14 : 14 + _NONCE], value[14 + _NONCE :], _aad(key_id))
            except InvalidTag:
                return b""
        return value

    def _open_text(self, match: re.Match[str]) -> str:
        return self._open(*match.group(1, 2, 3))

    def _open(self, key_id: str, body: str, limit: str | None) -> str:
        cipher = self.keys.cipher(key_id)
        if cipher is None:
            return ERASED
        return _opened(cipher.decrypt, _aad(key_id), body, limit)

    def reveal(self, value: Any) -> Any:
        """``value`` (a view row, a list, a text) with every token in it opened; the rest as it was.

        One walk finds the texts that hold a token (and the containers on their way); the keys of all of them
        are loaded in one query (a page of rows of many customers); then only those containers are copied
        with their texts opened — a row without a token, or a column without one, is not rebuilt.
        """
        marks: dict[int, list[Any]] = {}
        texts: list[str] = []
        if not _mark(value, marks, texts):
            return value
        self.keys.load({m.group(1) for text in texts for m in TOKEN.finditer(text)})
        return self._rebuilt(value, marks)

    def reveal_texts(self, texts: list[Any]) -> list[Any]:
        """A column of texts (None allowed) with every token opened as :meth:`reveal` opens them, in a new list.

        For a column known to be the only one of its rows that may hold tokens (the timeline's ``line``): no walk
        of the rows and no copy of them, the keys of all the tokens in one query, a text without a token as it is.
        Each token is opened where it stands: a seal draws a fresh nonce, so no two tokens are alike to share.
        """
        sealed = [t for t in texts if t and TOKEN_PREFIX in t]
        if not sealed:
            return list(texts)
        self.keys.load(set(_KEY_IDS.findall("\n".join(sealed))))
        split, a2b, urlsafe, pads, failed = TOKEN.split, a2b_base64, _FROM_URLSAFE, _PADS, _OPEN_FAILURES
        keys: dict[str, tuple[Any, bytes] | None] = {}  # key id → (its decrypt, its associated data), for this call
        opened: list[Any] = []
        append = opened.append
        for text in texts:
            if not text or TOKEN_PREFIX not in text:
                append(text)
                continue
            # [clear, key id, body, limit, clear, …, clear]: the tokens' groups between the texts around them.
            # What _opened does, inline: a history opens a thousand tokens a read, and the call was a fifth of it.
            parts = split(text)
            for i in range(1, len(parts), 4):
                key_id = parts[i]
                if key_id in keys:
                    key = keys[key_id]
                else:
                    cipher = self.keys.cipher(key_id)
                    key = keys[key_id] = (cipher.decrypt, _aad(key_id)) if cipher is not None else None
                if key is None:
                    parts[i] = ERASED
                else:
                    body, limit = parts[i + 1], parts[i + 2]
                    try:
                        data = a2b(body.encode().translate(urlsafe) + pads[len(body) & 3])
                        clear: str = key[0](data[:_NONCE], data[_NONCE:], key[1]).decode()
                    except failed:
                        clear = UNREADABLE
                    else:
                        if limit is not None:
                            clear = _shortened(clear, int(limit))
                    parts[i] = clear
                parts[i + 1] = parts[i + 2] = ""
            append("".join(parts))
        return opened

    def _rebuilt(self, value: Any, marks: dict[int, list[Any]]) -> Any:
        if isinstance(value, str):
            return TOKEN.sub(self._open_text, value)
        copy: Any = dict(value) if isinstance(value, dict) else list(value)
        for key in marks[id(value)]:
            copy[key] = self._rebuilt(copy[key], marks)
        return tuple(copy) if isinstance(value, tuple) else copy


def _opened(decrypt: Callable[..., bytes], aad: bytes, body: str, limit: str | None) -> str:
    """The text of a token's body, shortened to ``limit`` characters (on one line) if the view asked so."""
    try:  # the token's alphabet is checked by TOKEN: urlsafe_b64decode's own checks and copies are waste
        sealed = a2b_base64(body.encode().translate(_FROM_URLSAFE) + _PADS[len(body) & 3])
        text: str = decrypt(sealed[:_NONCE], sealed[_NONCE:], aad).decode()
    except _OPEN_FAILURES:
        return UNREADABLE
    return text if limit is None else _shortened(text, int(limit))


def _shortened(text: str, n: int) -> str:
    """``text`` on one line, cut to ``n`` characters (its last an ellipsis) if longer: a view's ``~n``."""
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= n else one_line[: n - 1] + "…"


_LEAVES = frozenset({int, float, bool, type(None), bytes, datetime})


def _mark(value: Any, marks: dict[int, list[Any]], texts: list[str]) -> bool:
    """Whether ``value`` holds a sealed token; appends each text that does to ``texts`` and notes, for each
    container on the way (by ``id``), the keys (or indexes) that lead to one."""
    if isinstance(value, str):
        if TOKEN_PREFIX in value:
            texts.append(value)
            return True
        return False
    items: Any
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return False
    found: list[Any] = []
    for key, v in items:
        kind = type(v)
        if kind is str:
            if TOKEN_PREFIX in v:
                texts.append(v)
                found.append(key)
        elif kind not in _LEAVES and _mark(v, marks, texts):
            found.append(key)
    if found:
        marks[id(value)] = found
        return True
    return False


def _seal(value: Any, cipher: Any, aad: bytes, prefix: str, key_id: str) -> Any:
    nonce = os.urandom(_NONCE)
    if isinstance(value, str):
        sealed = nonce + cipher.encrypt(nonce, value.encode(), aad)
        return prefix + b2a_base64(sealed, newline=False).translate(_URLSAFE).rstrip(b"=").decode()
    if isinstance(value, bytes):
        return BYTES_PREFIX + bytes.fromhex(key_id) + nonce + cipher.encrypt(nonce, value, aad)
    return value


_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_PADS = (b"", b"===", b"==", b"=")  # by a base64 body's length modulo 4: what completes its last quantum
_OPEN_FAILURES = (InvalidTag, binascii.Error, ValueError)
_PLANS: dict[str, tuple[tuple[str, ...], tuple[Path, ...]]] = {
    name: (tuple(p[0] for p in paths if len(p) == 1), tuple(p for p in paths if len(p) > 1))
    for name, paths in PERSONAL_FIELDS.items()
}


def _copy(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy(v) for v in node]
    return node


def apply_at_path(node: Any, path: Path, fn: Callable[[Any], Any]) -> None:
    """Replace the value(s) at ``path`` under ``node`` (dicts and lists; ``*`` is every item) by ``fn`` of them:
    how a personal field's path reaches its values, to seal them or to write them out (``reports.event_table``)."""
    head, rest = path[0], path[1:]
    if head == "*":
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in list(items):
            if rest:
                apply_at_path(child, rest, fn)
            else:
                node[key] = fn(child)
        return
    if not isinstance(node, dict) or head not in node:
        return
    if rest:
        child = node[head]
        if child is not None:
            apply_at_path(child, rest, fn)
    else:
        node[head] = fn(node[head])
