"""The key-encryption key: where it comes from, and how it wraps a data key.

=============================  ===============================================================
``CASELEDGER_KEK``             the key itself: 32 bytes, base64 (``caseledger keys new-kek``)
``CASELEDGER_KEK_FILE``        a file holding it (base64, one line; mode 0600)
=============================  ===============================================================

With neither, an embedded (SQLite) ledger uses ``<database>.kek`` beside its file, made on first
use with mode 0600: erasure works out of the box, but whoever has the folder has both the keys
and their wrapping — give production ledgers a key from elsewhere. A PostgreSQL ledger has no
folder: it refuses to start without one of the two settings.

Never printed, logged or put in an exception: errors name the key by its id (the first 8 bytes of
a SHA-256 of it, in hex), which tells two keys apart without revealing either.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.private_files import refuse_shared_key
from caseledger.ledger.settings import KEK_ENV, KEK_FILE_ENV, PrivacySettings

__all__ = ["KEK_ENV", "KEK_FILE_ENV", "KeyEncryptionKey", "write_new_kek"]

NONCE = 12


@dataclass(frozen=True, repr=False)
class KeyEncryptionKey:
    """A 32-byte AES-256-GCM key that wraps data keys; its repr never shows the key."""

    key: bytes = field(repr=False)
    origin: str = "given"  # where it came from, for messages ("CASELEDGER_KEK", a file path)

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise ConfigurationError(
                f"the key-encryption key from {self.origin} is {len(self.key)} bytes; it must be 32 bytes, "
                "base64-encoded (make one with `caseledger keys new-kek`)"
            )

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(id={self.key_id}, origin={self.origin!r})"

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"caseledger key-encryption key id\n" + self.key).digest()[:8].hex()

    def wrap(self, data_key: bytes, *, key_id: str, subject: str) -> bytes:
        nonce = secrets.token_bytes(NONCE)
        return nonce + AESGCM(self.key).encrypt(nonce, data_key, _aad(key_id, subject))

    def unwrap(self, wrapped: bytes, *, key_id: str, subject: str) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            return AESGCM(self.key).decrypt(wrapped[:NONCE], wrapped[NONCE:], _aad(key_id, subject))
        except InvalidTag:
            raise ConfigurationError(
                f"data key {key_id} does not unwrap with key-encryption key {self.key_id}: the key store row was "
                "altered or belongs to another ledger"
            ) from None

    @staticmethod
    def generate() -> bytes:
        return AESGCM.generate_key(bit_length=256)

    @classmethod
    def parse(cls, text: str, *, origin: str) -> KeyEncryptionKey:
        try:
            key = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(
                f"the key-encryption key from {origin} is not base64; it must be 32 random bytes, base64-encoded "
                "(make one with `caseledger keys new-kek`)"
            ) from None
        return cls(key, origin=origin)

    @classmethod
    def from_file(cls, path: Path) -> KeyEncryptionKey:
        refuse_shared_key(path, "key-encryption key file")
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            raise ConfigurationError(
                f"key-encryption key file {path} does not exist; make one with `caseledger keys new-kek --out {path}`"
            ) from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigurationError(f"cannot read key-encryption key file {path}: {type(error).__name__}") from None
        return cls.parse(text, origin=str(path))

    @classmethod
    def resolve(cls, settings: PrivacySettings, *, database_file: Path | None) -> KeyEncryptionKey:
        """From ``settings`` (CASELEDGER_KEK, else CASELEDGER_KEK_FILE), else (embedded ledgers only) the file
        beside the database."""
        given = settings.kek
        if given:
            return cls.parse(given, origin=KEK_ENV)
        path = settings.kek_file
        if path:
            return cls.from_file(Path(path).expanduser())
        if database_file is None:
            raise ConfigurationError(
                f"a PostgreSQL ledger needs a key-encryption key for its customers' data keys: set {KEK_FILE_ENV} to "
                f"a file made by `caseledger keys new-kek --out FILE` (or {KEK_ENV} to its content); see docs/privacy.md"
            )
        beside = database_file.with_name(database_file.name + ".kek")
        if not beside.exists():
            write_new_kek(beside)
        return cls.from_file(beside)


def write_new_kek(path: Path) -> KeyEncryptionKey:
    """Write a new random key-encryption key to ``path`` (mode 0600, never over an existing file)."""
    key = KeyEncryptionKey.generate()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(f"{path} exists; a key-encryption key is never overwritten — choose another path") from None
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(base64.b64encode(key).decode() + "\n")
    return KeyEncryptionKey(key, origin=str(path))


def _aad(key_id: str, subject: str) -> bytes:
    return f"caseledger data key\n{key_id}\n{subject}".encode()
