"""Where the adapter keeps the files customers attach: by SHA-256, so the ledger's record names a file no one can swap.

The ledger keeps an attachment's ref, digest, size and media type, never its bytes (``Attachment`` in
``ledger/domain/values.py``). The reference adapter writes each file once under its digest in a directory
of the operator's (``ROOT/ab/cd/abcd…``, mode 0600) and refers to it as ``sha256:<hex>``; any other store
implements :class:`AttachmentStore`. The files are the customer's personal data, outside the ledger: an
erasure reaches them only through the operator (docs/adapters.md, "The reference e-mail adapter").
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

__all__ = ["AttachmentStore", "DigestDirectory", "digest_ref"]

_HEX = re.compile(r"^[0-9a-f]{64}$")


def digest_ref(sha256: str) -> str:
    """The ref an attachment stored under ``sha256`` is named by."""
    return f"sha256:{sha256}"


class AttachmentStore(Protocol):
    """Keeps a file's bytes under their SHA-256 (hex), once."""

    def put(self, data: bytes) -> str:
        """Store ``data`` (if not already there); its SHA-256 in hex."""
        ...


class DigestDirectory:
    """A content-addressed directory: each file at ``ROOT/ab/cd/<sha256>``, written atomically, readable by its owner."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_of(self, sha256: str) -> Path:
        if not _HEX.match(sha256):
            raise ValueError("an attachment's digest is 64 lowercase hex digits")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.path_of(sha256)
        if path.exists():
            return sha256
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)  # the name appears only once the file is whole
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return sha256

    def read(self, ref_or_sha256: str) -> bytes:
        return self.path_of(ref_or_sha256.removeprefix("sha256:")).read_bytes()
