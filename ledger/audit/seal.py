"""The seal: the auditor's global chain over the whole log, kept outside the ledger.

``seal`` = SHA-256 over ``position (8 bytes, big-endian) ‖ event hash`` of every event of the
log in position order, computed by ``verify`` on a whole-ledger audit (in its loop over the log:
one ``update`` per event) and printed as ``POSITION:DIGEST``. An auditor keeps it and passes it
back (``--seal``) to prove that nothing up to that position was altered, deleted or inserted
since: no stored chain can prove that, as whoever rewrites the events table rewrites a stored
chain too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from caseledger.ledger.errors import ConfigurationError

__all__ = ["Findings", "Seal", "check_seal", "seal_past_end"]


class Findings(Protocol):
    """Where the seal's checks write what they found: the audit's report (``report.py`` keeps a seal, so this
    module names only what it writes)."""

    notes: list[str]

    def flag(self, code: str, message: str, **where: Any) -> None:
        """Add a discrepancy: its code, what differs, and where."""
        ...


@dataclass(frozen=True)
class Seal:
    """The auditor's global digest of the log up to ``position`` (see the module docstring)."""

    position: int
    digest: str

    @classmethod
    def parse(cls, text: str) -> Seal:
        """``POSITION:DIGEST`` as printed in a report."""
        position, sep, digest = text.strip().partition(":")
        try:
            value = cls(int(position), digest.lower())
            bytes.fromhex(value.digest)
        except ValueError:
            value = None  # type: ignore[assignment]
        if not sep or value is None or len(value.digest) != 64 or value.position < 1:
            raise ConfigurationError(
                f"seal {text!r} is not POSITION:DIGEST (a position and 64 hex digits), as printed by audit verify"
            )
        return value

    def __str__(self) -> str:
        return f"{self.position}:{self.digest}"


def check_seal(report: Findings, expected: Seal, digest: str, position: int) -> None:
    """The log's digest up to ``position`` (the sealed one, or the last before it) against the seal."""
    if digest != expected.digest:
        report.flag("seal-mismatch", f"the log up to position {position} no longer matches the seal taken earlier "
                    f"({expected.digest[:16]}…, now {digest[:16]}…): an event at or before it was altered, "
                    "deleted or inserted since", position=position)
    else:
        report.notes.append(f"seal {expected.position}:{expected.digest[:16]}… holds")


def seal_past_end(report: Findings, sealed: int, last: int) -> None:
    """The store ends before the sealed position."""
    report.flag("seal-mismatch", f"the seal covers position {sealed} but the store ends at {last}: events "
                "at the end of the log were deleted", position=sealed)
