"""The ledger's checkpoint signing key: Ed25519, in the signed-note private key format.

The key is read from the file named by ``CASELEDGER_SIGNING_KEY_FILE`` or from the environment
variable ``CASELEDGER_SIGNING_KEY`` itself (a secret manager's usual way in), as a composition root
read them into :class:`~caseledger.ledger.settings.TransparencySettings`. It is written
``PRIVATE+KEY+<name>+<key id>+<base64(0x01 ‖ 32-byte seed)>`` — the format of Go's
``golang.org/x/mod/sumdb/note``, so other signed-note tools read it. ``caseledger keys init`` makes
one (mode 0600). The private key is never printed, logged or put in an error message: errors name
the file or the variable, never their content.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.private_files import refuse_shared_key
from caseledger.ledger.settings import SIGNING_KEY_ENV as KEY_ENV
from caseledger.ledger.settings import SIGNING_KEY_FILE_ENV as KEY_FILE_ENV
from caseledger.ledger.settings import TransparencySettings
from caseledger.verify.note import ALG_ED25519, Checkpoint, VerifierKey, key_id

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["KEY_ENV", "KEY_FILE_ENV", "CheckpointSigner", "generate_key_file", "load_signer"]

_PREFIX = "PRIVATE+KEY+"


@dataclass(frozen=True, repr=False)
class CheckpointSigner:
    """Signs checkpoints as ``name`` with an Ed25519 key (``repr`` shows the public key only)."""

    name: str
    _seed: bytes

    @cached_property  # derived once: a receipt per contact names it
    def verifier_key(self) -> VerifierKey:
        """The public key, as an auditor writes it: ``name+keyid+base64``."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        public = Ed25519PrivateKey.from_private_bytes(self._seed).public_key()
        return VerifierKey(self.name, public.public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign_text(self, text: str) -> str:
        """``text`` as a signed note: the text, a blank line, this key's signature line."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        signature = Ed25519PrivateKey.from_private_bytes(self._seed).sign(text.encode())
        key = self.verifier_key
        line = base64.b64encode(key.key_id + signature).decode()
        return f"{text}\n\u2014 {self.name} {line}\n"

    def sign_bytes(self, message: bytes) -> bytes:
        """The Ed25519 signature of ``message`` (a contact's receipt: :mod:`caseledger.verify.receipts`)."""
        return self._private_key.sign(message)

    @cached_property
    def _private_key(self) -> Ed25519PrivateKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return Ed25519PrivateKey.from_private_bytes(self._seed)

    def sign(self, checkpoint: Checkpoint) -> str:
        """The signed checkpoint note."""
        return self.sign_text(checkpoint.text())

    def __repr__(self) -> str:
        return f"CheckpointSigner({self.verifier_key})"

    def private_text(self) -> str:
        """The key in the signed-note private key format (for the key file only)."""
        public = self.verifier_key.public_key
        encoded = base64.b64encode(bytes([ALG_ED25519]) + self._seed).decode()
        return f"{_PREFIX}{self.name}+{key_id(self.name, public).hex()}+{encoded}"

    @classmethod
    def parse(cls, text: str, *, source: str) -> CheckpointSigner:
        """A signer from ``PRIVATE+KEY+name+keyid+base64``; errors name ``source``, never the text."""
        parts = text.strip().removeprefix(_PREFIX).split("+", 2)
        if not text.strip().startswith(_PREFIX) or len(parts) != 3:
            raise ConfigurationError(f"{source} is not a signing key (PRIVATE+KEY+NAME+KEYID+BASE64); "
                                     "make one with `caseledger keys init`")
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise ConfigurationError(f"{source}: the key is not an Ed25519 seed (0x01 and 32 bytes in base64)")
        signer = cls(parts[0], raw[1:])
        if signer.verifier_key.key_id.hex() != parts[1]:
            raise ConfigurationError(f"{source}: the key id does not match the key's name and bytes; "
                                     "the file was damaged or edited")
        return signer


def load_signer(settings: TransparencySettings, *, key_file: str | Path | None = None) -> CheckpointSigner | None:
    """The signing key from ``key_file``, else ``settings`` (CASELEDGER_SIGNING_KEY_FILE, CASELEDGER_SIGNING_KEY);
    None if unset."""
    path = key_file or settings.signing_key_file
    if path:
        file = Path(path).expanduser()
        refuse_shared_key(file, "signing key file")
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigurationError(f"signing key file {file}: {error.strerror or error}; "
                                     f"set {KEY_FILE_ENV} to a file made by `caseledger keys init`") from None
        return CheckpointSigner.parse(text, source=f"signing key file {file}")
    value = settings.signing_key
    if value:
        return CheckpointSigner.parse(value, source=f"environment variable {KEY_ENV}")
    return None


def generate_key_file(path: str | Path, name: str, *, overwrite: bool = False) -> CheckpointSigner:
    """A new Ed25519 key written to ``path`` with mode 0600 (refuses an existing file unless ``overwrite``)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    target = Path(path).expanduser()
    if not target.parent.is_dir():
        raise ConfigurationError(f"cannot write {target}: directory {target.parent} does not exist")
    if target.exists() and not overwrite:
        raise ConfigurationError(f"{target} exists: a signing key is never overwritten silently; "
                                 "choose another path (key rotation: docs/audit.md) or pass --force")
    seed = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    signer = CheckpointSigner(name, seed)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if overwrite else os.O_EXCL)
    fd = os.open(target, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(signer.private_text() + "\n")
    os.chmod(target, 0o600)
    return signer
