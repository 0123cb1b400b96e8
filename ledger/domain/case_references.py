"""Case references: how a reference customers can read out on the phone is made, and how a given one is read."""

from __future__ import annotations

import secrets

__all__ = ["new_reference", "normalise_reference"]

_REFERENCE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U


def new_reference() -> str:
    """A case reference customers can read out on the phone: CL-XXXXX-XXXXX (50 random bits)."""
    bits = secrets.randbits(50)  # one draw, cut into ten 5-bit symbols
    chars = "".join(_REFERENCE_ALPHABET[(bits >> shift) & 31] for shift in range(45, -1, -5))
    return f"CL-{chars[:5]}-{chars[5:]}"


def normalise_reference(reference: str) -> str:
    ref = reference.strip().upper()
    if not ref.startswith("CL-"):
        ref = "CL-" + ref
    return ref
