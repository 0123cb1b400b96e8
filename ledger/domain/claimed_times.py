"""Which times a client may claim, and within which bounds; every other time is the ledger's clock.

A client may say when something happened on its channel: a contact's, a response's or a promise's
``occurred_at``, a delivery's ``delivered_at`` (or its failure's ``failed_at``), a read's ``read_at``, the start of a chatbot wait
``waiting_since``. The ledger keeps the claim beside its own time of recording (the envelope's
``recorded_at``, always the ledger's clock) and bounds it:

- not after the ledger's now plus :data:`CLOCK_SKEW` (clocks differ a little, never by hours);
- not before the ledger's now less :data:`HORIZON` (an adapter may relay late; nobody rewrites history);
- not before what it refers to (its case, the contact it answers, the message it reports on), less
  the same skew, since the two times may come from two clocks.

Deadlines, SLA figures and retention read recorded times only, so a claim within these bounds
changes what is shown, never what is measured (docs/api.md, "Times").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from caseledger.ledger.domain.values import require_utc
from caseledger.ledger.errors import ValidationError

__all__ = ["CLAIMED_TIMES", "CLOCK_SKEW", "HORIZON", "After", "check_claim"]

CLOCK_SKEW = timedelta(minutes=5)
"""How far a client's clock may differ from the ledger's, either way."""

HORIZON = timedelta(days=30)
"""How long ago a claimed time may be: longer than the intake topic keeps records (7 days by default)."""

CLAIMED_TIMES: dict[str, str] = {
    "contact occurred_at": "a follow-up: its case's opening",
    "response occurred_at": "its case's opening and each contact whose items it answers",
    "promise occurred_at": "its case's opening",
    "delivered_at": "the message's issue (its recording)",
    "read_at": "the message's issue (its recording)",
    "failed_at": "the message's issue (its recording)",
    "waiting_since": "the case's first chatbot contact, else its opening",
}
"""Every time a client may claim, and what it may not precede (docs/api.md shows this table)."""


@dataclass(frozen=True)
class After:
    """What a claimed time refers to: it cannot have happened before ``at`` (less the skew)."""

    at: datetime | None  # None: nothing to compare with
    what: str  # "its case was opened", "ACK1 was issued": never personal data


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def check_claim(name: str, value: datetime, *, now: datetime, after: Iterable[After] = (),
                clock: str = "the ledger's clock") -> datetime:
    """``value`` in UTC when a client may claim it at the ledger's ``now``; a ValidationError names the bound.

    The adapter SDK applies the same bounds at its own ``now`` before publishing (``clock`` then names the
    adapter's, ``ledger/intake/validation.py``), so the ledger refuses only what their clocks disagree on.
    """
    value = require_utc(value, name)
    field = name.rsplit(" ", 1)[-1]  # "contact occurred_at" → the record's field
    if value > now + CLOCK_SKEW:
        raise ValidationError(
            f"{name} {_iso(value)} is in the future: after {clock} ({_iso(now)}) plus the "
            f"{_minutes(CLOCK_SKEW)} of clock skew allowed; send the time your channel saw, or leave {name} "
            "out to use the ledger's time", field=field, code="time-in-future",
            fix=f"send the time your channel saw, at most {_minutes(CLOCK_SKEW)} ahead of the ledger's clock, "
                f"or leave {field} out to use the ledger's time",
        )
    if value < now - HORIZON:
        raise ValidationError(
            f"{name} {_iso(value)} is more than {HORIZON.days} days before {clock} ({_iso(now)}), "
            "the horizon of claimed times; record what happened recently (there is no backfill of history)",
            field=field, code="time-too-old",
            fix=f"send a time within the last {HORIZON.days} days: there is no backfill of history",
        )
    for bound in after:
        if bound.at is not None and value < bound.at - CLOCK_SKEW:
            raise ValidationError(
                f"{name} {_iso(value)} is before {bound.what} ({_iso(bound.at)}), by more than the "
                f"{_minutes(CLOCK_SKEW)} of clock skew allowed; it cannot have happened earlier: send when it did",
                field=field, code="time-before-reference",
                fix=f"send when it happened: {field} cannot be before {bound.what}",
            )
    return value


def _minutes(delta: timedelta) -> str:
    return f"{int(delta.total_seconds() // 60)} minutes"
