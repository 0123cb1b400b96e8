"""Which fields of which events are a customer's personal data, and why the others are kept in clear.

Every field named here is stored encrypted with a data key of the customer the event belongs to
(see :mod:`caseledger.ledger.privacy`); destroying the customer's keys erases it everywhere the
stored bytes went (the store, the events topic, the views, the exports), while the hashes, chains
and seals over those bytes stay valid. A path is a tuple of field names; ``"*"`` stands for every
element of an array or every value of a map.

Kept in clear, because audit, deadlines and metrics need them and they say nothing of the customer
by themselves: the envelope (ids, versions, times, the actor, the channel, correlation and
causation, the previous hash), statuses, kinds and categories, segments, deadlines, handles
(Q1, P1, contact ids, references), content digests (keyed: an erasure deletes their key),
sizes and media types, rule and action names, assignees and teams (staff, not customers), and the
template ids, versions and the locale a text was written in, and the reasons of an erasure or a legal hold (what the ledger must keep proving after the data is gone:
write no personal data there). ``docs/privacy.md`` lists the same with the threat model.
"""

from __future__ import annotations

from typing import Any, Final, TypeGuard, TypeVar

Path = tuple[str, ...]
_T = TypeVar("_T")


class Erased(str):
    """The marker a reader gets where a customer's personal data was, once their keys are destroyed.

    It prints as ``[erased]`` (history, exports, views), but it is a type, not a text: every
    validator refuses it as a value (a text, an identity, a locale), the texts treat an erased
    locale or time zone as absent (the policy's default), and the sealer never seals it as the
    customer's data — an event that copies it (a handoff's brief) stores the marker, in clear.
    Text a customer wrote, even ``"[erased]"``, is a plain ``str``: only opening makes a marker.
    """

    __slots__ = ()
    _instance: Erased | None = None

    def __new__(cls) -> Erased:
        if cls._instance is None:
            cls._instance = super().__new__(cls, "[erased]")
        return cls._instance

    def __reduce__(self) -> tuple[type[Erased], tuple[()]]:
        return (Erased, ())

    def __setstate__(self, state: object) -> None:
        """Never called on the marker (it is rebuilt by :meth:`__reduce__`, with no state); defined so that a pickle
        that would set the class's own attributes (BUILD on the class object) fails instead."""
        raise TypeError("the erased marker has no state")


ERASED: Final = Erased()
"""What a reader sees where a customer's personal data was, once their keys are destroyed."""


def is_erased(value: Any) -> TypeGuard[Erased]:
    """Whether ``value`` is the marker of erased data (never true of text a customer wrote)."""
    return isinstance(value, Erased)


def unless_erased(value: _T | Erased) -> _T | None:
    """``value``, or None where it was erased: for what the domain treats as absent once erased (a zone, a locale)."""
    return None if isinstance(value, Erased) else value

# A text as the customer got it, and the time zone it was written for (where they live); its locale and
# template stay in clear: they say which words of the company's were used.
_TEXT: Final[tuple[Path, ...]] = (("text",), ("time_zone",))
_NOTICE: Final[tuple[Path, ...]] = (("reason",), ("notice",), *_TEXT)

PERSONAL_FIELDS: Final[dict[str, tuple[Path, ...]]] = {
    # what the customer wrote, and how they are reached
    "ContactReceived": (
        ("identity", "value"), ("subject",), ("body",), ("items", "*", "text"), ("attachments", "*", "filename"),
        # where the customer's files are and their digests: a Message-ID or a file path names the sender's
        # host or account, and a file's SHA-256 confirms a guess of the file
        ("channel_message_id",), ("attachments", "*", "ref"), ("attachments", "*", "sha256"),
        # the salt of the contact's receipt: with it, the receipt's digest can be tried against guesses
        ("receipt_salt",),
    ),
    "CaseOpened": (("subject",),),
    "CustomerRegistered": (("identity", "value"),),
    "CustomerLocaleSet": (("time_zone",),),  # where they live
    "IdentityLinked": (("identity", "value"),),
    "IdentityClaimed": (("identity", "value"),),
    # what the ledger and the agents told the customer
    "AcknowledgementIssued": (("request_copy",), *_TEXT),
    "ResponseSent": (("body",),),
    "WrittenConfirmationIssued": _TEXT,
    "PromiseMade": (("terms",),),
    "PromiseWithdrawn": _NOTICE,
    "StatusChanged": _NOTICE,
    "CaseClosed": _NOTICE,
    "CaseCancelled": _NOTICE,
    "CaseReopened": _NOTICE,
    # what agents and automation wrote about the customer
    "PromiseKept": (("evidence",),),
    "PromiseBroken": (("reason",),),
    "PromiseWaived": (("reason",),),
    "ItemWaived": (("reason",),),
    "HandedOff": (
        ("note",), ("brief", "open_items", "*", "text"), ("brief", "open_promises", "*", "terms"),
        ("brief", "last_contacts", "*", "subject"),
    ),
    "ActionProposed": (("params", "*"), ("rationale",)),
    "ActionApproved": (("note",),),
    "ActionRejected": (("reason",),),
    "ActionExecuted": (("result",),),
    "EscalatedToHuman": (("reason",),),
    # requests kept as received: their bytes, and a reason that may quote them
    "IntakeRejected": (("raw",), ("reason",)),
    "MessageIdCollided": (("raw",), ("channel_message_id",)),
    # the signed intake record (its signature stays in clear) and the channel's id of the message
    "MessageRegistered": (("signed_record",), ("channel_message_id",)),
}
"""Event type → the paths of its fields that hold personal data."""

REJECTION_SUBJECT_PREFIX: Final = "intake-rejections:"
"""Rejected intake records belong to no known customer: they are keyed per month of rejection
(``intake-rejections:2026-12``), so the retention policy can erase them by month."""
