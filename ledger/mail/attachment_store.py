"""Where the adapter keeps the files customers attach: sealed, each under a key that only the ledger's record holds.

The ledger keeps an attachment's ref, SHA-256, size and media type, never its bytes (``Attachment`` in
``ledger/domain/values.py``), and it seals the ref under the customer's data key (docs/privacy.md). The
reference adapter writes each file encrypted (AES-256-GCM) under a key drawn for that file, which travels
only in the ref: ``sha256:<hex>;key=<base64url>``. The file's name is an HMAC of its digest under that key,
so the directory holds neither a text nor a digest anyone could test a guess against; once the customer
is erased the ledger can no longer open the ref, and the file is noise (nothing to delete, nothing to
forget). Reading a file back (:meth:`DigestDirectory.read`) checks its SHA-256. Any other store implements
:class:`AttachmentStore`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from caseledger.ledger.errors import NotFound, ValidationError

__all__ = ["AttachmentStore", "DigestDirectory"]

_REF = re.compile(r"^sha256:([0-9a-f]{64});key=([A-Za-z0-9_-]{43})$")


class AttachmentStore(Protocol):
    """Keeps a file's bytes; answers the ref the ledger records for it (``sha256:<hex>…``)."""

    def put(self, data: bytes) -> str:
        """Store ``data``; the ref that finds (and, here, opens) it."""
        ...


class DigestDirectory:
    """A directory of sealed files (see the module docstring): ``ROOT/ab/cd/<name>``, written atomically, mode 0600."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def put(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(12)
        path = self._path(key, sha256)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")  # mode 0600
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(nonce + AESGCM(key).encrypt(nonce, data, sha256.encode()))
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)  # the name appears only once the file is whole
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return f"sha256:{sha256};key={base64.urlsafe_b64encode(key).decode().rstrip('=')}"

    def read(self, ref: str) -> bytes:
        """The bytes ``ref`` names, checked against its SHA-256."""
        found = _REF.match(ref)
        if found is None:
            raise ValidationError("not a ref of this attachment directory (sha256:<hex>;key=<base64url>)")
        sha256, key = found.group(1), base64.urlsafe_b64decode(found.group(2) + "=")
        try:
            sealed = self._path(key, sha256).read_bytes()
            data = AESGCM(key).decrypt(sealed[:12], sealed[12:], sha256.encode())
        except FileNotFoundError:
            raise NotFound("no attachment under this ref in the attachment directory") from None
        except InvalidTag:
            raise ValidationError("the attachment's file does not open with its ref's key: it was altered") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValidationError("the attachment's file does not match its ref's SHA-256: it was altered")
        return data

    def _path(self, key: bytes, sha256: str) -> Path:
        name = hmac.new(key, sha256.encode(), hashlib.sha256).hexdigest()
        return self.root / name[:2] / name[2:4] / name
