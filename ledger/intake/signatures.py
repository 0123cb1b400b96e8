"""Signed intake: each channel adapter signs what it publishes, and the intake worker checks it.

An adapter has an Ed25519 key pair; the ledger keeps its *public* key and the channels it may
publish for (``caseledger adapters add``). The adapter SDK and ``caseledger publish`` sign the
exact bytes of each intake record and send two Kafka headers with it:

- ``caseledger-adapter``: the adapter's registered name (UTF-8);
- ``caseledger-signature``: the 64-byte Ed25519 signature over the record's value bytes.

The intake worker (:class:`SignatureCheck`) turns an unsigned record (when signatures are
required), an unknown or revoked adapter, a bad signature, a record whose ``adapter`` field is not
its signer, or a contact on a channel the adapter may not use into an ``IntakeRejected`` with that
reason — nothing is dropped. The contact's events name the adapter as the principal that relayed
them, authenticated by ``adapter-signature``; the signed bytes and their signature stay on the
intake topic (kept forever), at the offset the events' causation id names.

A private key never leaves the adapter's file; no log, error or output shows one.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from caseledger.ledger.domain.values import Channel
from caseledger.ledger.errors import ConfigurationError, NotFound, ValidationError
from caseledger.ledger.store_ports import AdapterKeyRow, AdapterKeyStore

__all__ = [
    "ADAPTER_HEADER",
    "SIGNATURE_HEADER",
    "AdapterKeys",
    "AdapterSigner",
    "SignatureCheck",
    "SignatureRefused",
    "key_fingerprint",
]

ADAPTER_HEADER = "caseledger-adapter"
SIGNATURE_HEADER = "caseledger-signature"
KEY_CACHE_S = 10.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class SignatureRefused(ValidationError):
    """An intake record whose signature does not prove who sent it (recorded as a rejection)."""


def key_fingerprint(public_key: bytes) -> str:
    """A short, printable name of a public key: ``ed25519:`` + the first 16 hex digits of its SHA-256."""
    return "ed25519:" + hashlib.sha256(public_key).hexdigest()[:16]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class AdapterSigner:
    """An adapter's private key, signing the records it publishes."""

    adapter: str
    key: Ed25519PrivateKey

    @classmethod
    def from_file(cls, adapter: str, path: str | Path) -> AdapterSigner:
        """The key in a PEM file (PKCS#8, as ``caseledger adapters add --private-key-out`` writes it)."""
        try:
            key = serialization.load_pem_private_key(Path(path).expanduser().read_bytes(), password=None)
        except OSError as error:
            raise ConfigurationError(f"cannot read the adapter key {path}: {error.strerror}") from None
        except (ValueError, TypeError):
            raise ConfigurationError(f"{path} is not an unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError(f"{path} is not an Ed25519 key; generate one with `caseledger adapters add`")
        return cls(adapter, key)

    def headers(self, value: bytes) -> list[tuple[str, bytes]]:
        """The Kafka headers that sign ``value``."""
        return [(ADAPTER_HEADER, self.adapter.encode()), (SIGNATURE_HEADER, self.key.sign(value))]

    def __repr__(self) -> str:  # never the key
        return f"AdapterSigner({self.adapter!r})"


class AdapterKeys:
    """Registers adapters' public keys and the channels each may publish for."""

    def __init__(self, store: AdapterKeyStore) -> None:
        self.store = store

    def add(self, name: str, channels: Sequence[str], *, public_key: bytes | None = None,
            private_key_out: Path | None = None, now: datetime | None = None) -> AdapterKeyRow:
        """Register ``name`` with a public key (raw 32 bytes or PEM), or a new key pair whose private half is
        written to ``private_key_out`` (mode 0600, never printed)."""
        if not _NAME.match(name or ""):
            raise ValidationError(f"adapter name {name!r}: 1-100 letters, digits, dots, dashes or underscores")
        allowed = tuple(sorted({Channel.parse(c.strip()).value for c in channels if c.strip()}))
        if not allowed:
            raise ValidationError("name the channels the adapter may publish for, e.g. --channels email,chat")
        if (public_key is None) == (private_key_out is None):
            raise ValidationError("give either the adapter's public key or a file to write a new private key to")
        private: Ed25519PrivateKey | None = None
        if public_key is None:
            assert private_key_out is not None
            if private_key_out.exists():
                raise ValidationError(f"{private_key_out} exists; the ledger never overwrites a key file")
            private = Ed25519PrivateKey.generate()
            raw = _raw_public(private.public_key())
        else:
            raw = self._parse_public(public_key)
        if not self.store.insert_adapter(name, raw, allowed, now or datetime.now(UTC)):
            raise ValidationError(f"adapter {name!r} exists already (names are never reused); choose another name")
        if private is not None and private_key_out is not None:
            pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
            fd = os.open(private_key_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
        row = self.store.select_adapter(name)
        assert row is not None
        return row

    @staticmethod
    def _parse_public(data: bytes) -> bytes:
        if len(data) == 32:
            return data
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            raise ValidationError("the public key is neither 32 raw bytes nor a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValidationError("the adapter's key must be Ed25519")
        return _raw_public(key)

    def revoke(self, name: str, *, now: datetime | None = None) -> None:
        if not self.store.revoke_adapter(name, now or datetime.now(UTC)):
            raise NotFound(f"no active adapter {name!r}; `caseledger adapters list` shows them")

    def list(self) -> list[AdapterKeyRow]:
        return self.store.select_adapters()


def header(headers: object, name: str) -> bytes | None:
    """A header's value from a Kafka record's headers (kafka-python's or confluent-kafka's list of pairs)."""
    for key, value in headers or ():  # type: ignore[attr-defined]
        if key == name:
            return bytes(value) if value is not None else None
    return None


class SignatureCheck:
    """Who signed an intake record, or the reason it is refused (see the module docstring)."""

    def __init__(self, store: AdapterKeyStore, *, required: bool | None = None) -> None:
        self.store = store
        # None: required as soon as one adapter is registered (a ledger without adapters keeps
        # accepting unsigned records, as before signed intake existed).
        self.required = bool(store.select_adapters()) if required is None else required
        self._keys: dict[str, tuple[AdapterKeyRow | None, float]] = {}

    def signer(self, value: bytes, headers: object, *, adapter_field: str, channel: str | None) -> str | None:
        """The adapter that signed ``value`` (None: unsigned, and unsigned records are allowed)."""
        name_bytes, signature = header(headers, ADAPTER_HEADER), header(headers, SIGNATURE_HEADER)
        if signature is None:
            if self.required:
                raise SignatureRefused(
                    f"unsigned intake record (adapter field {adapter_field!r}): this ledger requires each record "
                    f"to be signed with a registered adapter key ({SIGNATURE_HEADER} header)"
                )
            return None
        name = (name_bytes or b"").decode("utf-8", "replace")
        row = self._key(name)
        if row is None:
            raise SignatureRefused(f"unknown adapter {name!r}: no key registered under that name")
        if row.revoked_at is not None:
            raise SignatureRefused(f"revoked adapter {name!r}: its key was revoked {row.revoked_at.isoformat()}")
        try:
            Ed25519PublicKey.from_public_bytes(row.public_key).verify(signature, value)
        except (InvalidSignature, ValueError):
            raise SignatureRefused(f"bad signature: the record is not signed by adapter {name!r}'s key") from None
        if adapter_field != name:
            raise SignatureRefused(f"the record names adapter {adapter_field!r} but was signed by {name!r}")
        if channel is not None and channel not in row.channels:
            raise SignatureRefused(
                f"forbidden channel: adapter {name!r} may publish for {', '.join(row.channels)}, not {channel}")
        return name

    def channels(self, name: str) -> tuple[str, ...]:
        """The channels a signing adapter may publish and report for (none once it is unknown)."""
        row = self._key(name)
        return row.channels if row is not None else ()

    def _key(self, name: str) -> AdapterKeyRow | None:
        """The adapter's key row, read again after KEY_CACHE_S (a revocation applies within that)."""
        cached = self._keys.get(name)
        now = time.monotonic()
        if cached is None or now - cached[1] > KEY_CACHE_S:
            cached = self._keys[name] = (self.store.select_adapter(name), now)
        return cached[0]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
