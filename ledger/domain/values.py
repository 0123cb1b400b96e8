"""Value objects of the case ledger: channels, actors, identities, items, attachments.

They are plain, immutable and validated on construction, so a command never carries a value the
ledger would refuse later. Events store them as plain dicts (see ``as_record``) because the bytes
kept for an event are its Avro encoding.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Any

from caseledger.ledger.domain.personal import is_erased
from caseledger.ledger.domain.texts import check_time_zone
from caseledger.ledger.errors import ValidationError, naming

_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_ATTACHMENT_BYTES = 2**63 - 1  # an Avro long


def check_text(value: str | None, what: str, field: str = "") -> str | None:
    """``value`` if it is text UTF-8 can carry; a ValidationError for a lone surrogate (``\\ud800``–``\\udfff``),
    which a JSON ``\\u`` escape or an undecodable command-line byte can produce but no stored event can hold.

    The marker of erased data is refused too: it is no text, and copying it would pass it off as the customer's.
    """
    if is_erased(value):
        raise ValidationError(
            f"{what} was erased with the customer's personal data ([erased] marks where it was, it is not a "
            "value); give it again as the customer states it now", field=field,
        )
    if value is not None and _SURROGATE.search(value):
        raise ValidationError(
            f"{what} holds a lone surrogate (U+D800–U+DFFF), which is not text; send valid Unicode (UTF-8)",
            field=field,
        )
    return value


class Channel(StrEnum):
    """Where a contact came from or a message went to."""

    WEB_FORM = "web_form"
    EMAIL = "email"
    PHONE = "phone"
    CHAT = "chat"
    CHATBOT = "chatbot"
    SOCIAL = "social"
    SMS = "sms"
    LETTER = "letter"
    BRANCH = "branch"
    APP = "app"

    @classmethod
    def parse(cls, value: str | Channel) -> Channel:
        """The channel named ``value``; a ValidationError listing the known ones otherwise."""
        if isinstance(value, Channel):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            known = ", ".join(c.value for c in cls)
            raise ValidationError(f"unknown channel {value!r}; use one of: {known}") from None

    @property
    def is_spoken(self) -> bool:
        """A promise made here leaves no written trace, so the ledger issues one."""
        return self in (Channel.PHONE, Channel.BRANCH)


class ActorKind(StrEnum):
    """Who acted: the customer, a human agent, an automated rule, or the ledger itself."""

    CUSTOMER = "customer"
    AGENT = "agent"
    AUTOMATION = "automation"
    SYSTEM = "system"


@dataclass(frozen=True, kw_only=True)
class Actor:
    """Someone or something that acted; ``id`` names the agent, customer, rule or service.

    ``authentication`` says how the ledger knew it (see :class:`~ledger.domain.permissions.Authentication`):
    ``none`` unless an authenticated principal acted; ``principal`` names that principal when it is
    not the actor itself (the adapter that relayed a customer's contact).
    """

    kind: ActorKind
    id: str
    authentication: str = "none"
    principal: str | None = None

    def __post_init__(self) -> None:
        with naming("kind"):
            object.__setattr__(self, "kind", _parse_enum(ActorKind, self.kind, "actor kind"))
        if not self.id or not self.id.strip():
            raise ValidationError("an actor needs an id (agent name, rule id, customer id …)", field="id")
        check_text(self.id, "the actor id", "id")

    @property
    def is_human(self) -> bool:
        """Agents are the only humans who may approve what automation proposes."""
        return self.kind is ActorKind.AGENT

    @classmethod
    def parse(cls, text: str) -> Actor:
        """``agent:alice``, ``automation:rule-42``, ``customer:c-1`` or ``system:tick``."""
        kind, sep, ident = text.partition(":")
        if not sep:
            raise ValidationError(
                "field actor must look like KIND:ID, e.g. agent:alice or automation:limits-rule"
            )
        return cls(kind=ActorKind(_parse_enum(ActorKind, kind, "actor kind")), id=ident.strip())

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.id}"


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ().-]{4,}$")
IDENTITY_KINDS = ("email", "phone", "handle", "account")


@dataclass(frozen=True, kw_only=True)
class Identity:
    """How a customer is known on a channel: an email address, a phone number, a handle, an account."""

    kind: str
    value: str

    def __post_init__(self) -> None:
        check_text(self.value, "the identity", "value")
        kind = self.kind.strip().lower()
        if kind not in IDENTITY_KINDS:
            raise ValidationError(
                f"unknown identity kind {self.kind!r}; use one of: {', '.join(IDENTITY_KINDS)}", field="kind"
            )
        value = self.value.strip()
        if kind == "email":
            value = value.lower()
            if not _EMAIL.match(value):
                raise ValidationError(
                    "the identity's value is not an email address; write it as name@domain, e.g. "
                    "email:jane@example.com", field="value"
                )
        elif kind == "phone":
            if not _PHONE.match(value):
                raise ValidationError(
                    "the identity's value is not a phone number; write digits with the country code and an optional "
                    "leading +, e.g. phone:+33612345678", field="value"
                )
            value = ("+" if value.startswith("+") else "") + re.sub(r"\D", "", value)
        elif not value:
            raise ValidationError(f"an identity of kind {kind} needs a value after the colon, e.g. {kind}:jane-42",
                                  field="value")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "value", value)

    @classmethod
    def parse(cls, text: str) -> Identity:
        """``email:jane@example.com``, ``phone:+33 6 12 34 56 78``, ``handle:@jane``."""
        kind, sep, value = text.partition(":")
        if not sep:
            if "@" in text and not text.startswith("@"):
                return cls(kind="email", value=text)
            raise ValidationError(
                "the identity must look like KIND:VALUE, e.g. email:jane@example.com"
            )
        return cls(kind=kind, value=value)

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"

    def as_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}


_SHA256 = re.compile(r"^[0-9a-f]{64}$")
ATTACHMENT_REF_SCHEMES = ("sha256:", "https://", "s3://", "gs://")
"""Where an attachment may be kept (docs/privacy.md): by content, or in an object store; never a bare path."""
_REF_FORMS = ("sha256:<64 hex digits> (by content; with ;key=<43 base64url characters> when the file is kept "
              "encrypted under its own key), https://host/path, s3://bucket/key or gs://bucket/key")
_FILE_KEY = re.compile(r"^[A-Za-z0-9_-]{43}$")  # a 256-bit key in unpadded base64url
_BUCKET_REF = re.compile(r"^(?:s3|gs)://[a-z0-9][a-z0-9._-]{1,254}/[^/].*$", re.DOTALL)
_HOST = re.compile(r"^[A-Za-z0-9.-]+(?::[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?$")
_KNOWN_SCHEMES = ("file", "ftp", "sftp", "smb", "data", "mailto", "javascript", "urn", "s3a", "az", "abfs")
_DOT_SEGMENT = re.compile(r"(?:^|/)(?:\.|%2e){1,2}(?:/|$)", re.IGNORECASE)


def check_attachment_ref(ref: str, sha256: str) -> None:
    """A ValidationError unless ``ref`` says where the file is kept in one of :data:`ATTACHMENT_REF_SCHEMES`.

    A bare or relative path, ``file:``, ``..`` segments and credentials are refused: the ledger keeps a ref
    for as long as the contact, and whoever follows it must reach the file the customer sent, and nothing
    else. The error never repeats the ref (its file name may be personal data).
    """
    def refuse(why: str) -> ValidationError:
        return ValidationError(f"field attachments.ref: {why}; write where the file is kept as {_REF_FORMS}",
                               field="ref")

    if ref != ref.strip() or any(c.isspace() or ord(c) < 32 or c == "\\" for c in ref):
        raise refuse("the ref holds white space, a control character or a backslash")
    scheme = next((s for s in ATTACHMENT_REF_SCHEMES if ref.lower().startswith(s)), None)
    if scheme is None:
        named, sep, _ = ref.partition(":")
        if not sep or "/" in named or not named.isascii() or not named.replace("+", "").replace("-", "").isalnum():
            raise refuse("the ref is a bare path, not a location")
        if named.lower() == "http":
            raise refuse("http: is not encrypted (use https://)")
        # Only a scheme everybody knows is named back: a ref's first word could be anything the sender typed.
        named = f"{named.lower()}:" if named.lower() in _KNOWN_SCHEMES else "its scheme"
        raise refuse(f"{named} is not a location the ledger accepts")
    if scheme == "sha256:":
        digest, sep, key = ref[len(scheme):].partition(";key=")
        if digest.lower() != sha256:
            raise refuse("a sha256: ref must be the attachment's own sha256 (64 hex digits)")
        if sep and not _FILE_KEY.match(key):
            raise refuse("a sha256: ref's ;key= is the file's own key, 43 base64url characters")
        return
    rest = ref[len(scheme):]
    if _DOT_SEGMENT.search(rest.split("?", 1)[0].split("#", 1)[0]):
        raise refuse("the ref holds a . or .. path segment")
    if scheme == "https://":
        host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        if "@" in host:
            raise refuse("the ref holds credentials (user@ or user:password@): keep them out of the ledger")
        if not _HOST.match(host):
            raise refuse("an https: ref needs a host name")
    elif not _BUCKET_REF.match(scheme + rest):
        raise refuse(f"{scheme} refs need a bucket and a key")


@dataclass(frozen=True, kw_only=True)
class Attachment:
    """A file the customer sent, kept by reference: the ledger stores where and what, not the bytes."""

    ref: str
    sha256: str
    size: int
    media_type: str
    filename: str | None = None

    def __post_init__(self) -> None:
        for text, what, name in ((self.ref, "an attachment's ref", "ref"),
                                 (self.media_type, "an attachment's media type", "media_type"),
                                 (self.filename, "an attachment's filename", "filename")):
            check_text(text, what, name)
        if not self.ref.strip():
            raise ValidationError("an attachment needs a ref (where the file is stored)", field="ref")
        if not _SHA256.match(self.sha256.lower()):
            raise ValidationError(
                f"an attachment's sha256 must be 64 hex digits, got {len(self.sha256)} characters", field="sha256"
            )
        object.__setattr__(self, "sha256", self.sha256.lower())
        check_attachment_ref(self.ref, self.sha256)
        if not 0 <= self.size <= MAX_ATTACHMENT_BYTES:
            raise ValidationError(
                f"an attachment's size must be 0 to 2^63-1 bytes (an Avro long), got {self.size}", field="size"
            )
        if "/" not in self.media_type:
            raise ValidationError(
                "an attachment's media type is not like type/subtype (e.g. application/pdf)", field="media_type"
            )

    def as_record(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "sha256": self.sha256,
            "size": self.size,
            "media_type": self.media_type,
            "filename": self.filename,
        }


MAX_BODY_CHARS = 100_000
MAX_ITEMS = 50


@dataclass(frozen=True, kw_only=True)
class ContactDraft:
    """An inbound contact as a channel adapter or an agent describes it, before the ledger records it."""

    channel: Channel
    channel_message_id: str
    identity: Identity
    items: tuple[str, ...]
    subject: str = ""
    body: str = ""
    attachments: tuple[Attachment, ...] = ()
    case_reference: str | None = None
    follow_up: bool = False
    category: str | None = None
    customer_id: str | None = None
    segment: str | None = None
    occurred_at: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    locale: str | None = None  # the customer's language for our texts, e.g. fr_FR
    time_zone: str | None = None  # the customer's IANA time zone, e.g. Europe/Paris

    def __post_init__(self) -> None:
        for text, what, name in ((self.channel_message_id, "the channel message id", "channel_message_id"),
                                 (self.subject, "the subject", "subject"), (self.body, "the body", "body"),
                                 (self.case_reference, "the case reference", "case_reference"),
                                 (self.category, "the category", "category"),
                                 (self.customer_id, "the customer id", "customer_id"),
                                 (self.segment, "the segment", "segment"), (self.locale, "the locale", "locale"),
                                 (self.time_zone, "the time zone", "time_zone"),
                                 *((i, "an item", "items") for i in self.items),
                                 *((t, "the metadata", "metadata") for kv in self.metadata.items() for t in kv)):
            check_text(text, what, name)
        with naming("channel"):
            object.__setattr__(self, "channel", Channel.parse(self.channel))
        if self.locale is not None:
            with naming("locale"):
                object.__setattr__(self, "locale", check_locale(self.locale))
        if self.time_zone is not None:
            with naming("time_zone"):
                object.__setattr__(self, "time_zone", check_time_zone(self.time_zone.strip()))
        if not self.channel_message_id or not self.channel_message_id.strip():
            raise ValidationError(
                "a contact needs its channel message id (the id the channel gave the message), "
                "so a resubmission can be recognised", field="channel_message_id"
            )
        items = tuple(i.strip() for i in self.items if i and i.strip())
        if not items:
            raise ValidationError(
                "a contact needs at least one item (a question or request the customer asked); for a message "
                "written as free text (an e-mail without a form, a letter) use ContactDraft.free_text(…), whose one "
                "item is its subject or first line", field="items"
            )
        if len(items) > MAX_ITEMS:
            raise ValidationError(f"a contact may carry at most {MAX_ITEMS} items, got {len(items)}", field="items")
        object.__setattr__(self, "items", items)
        if len(self.body) > MAX_BODY_CHARS:
            raise ValidationError(
                f"body is {len(self.body)} characters; the limit is {MAX_BODY_CHARS} — "
                "send long documents as attachments", field="body"
            )
        if self.occurred_at is not None:
            object.__setattr__(self, "occurred_at", require_utc(self.occurred_at, "occurred_at"))
        if self.category is not None:
            object.__setattr__(self, "category", self.category.strip().lower() or None)

    @classmethod
    def free_text(cls, *, subject: str = "", body: str = "", **fields: Any) -> ContactDraft:
        """A contact written as free text (an e-mail without a form, a letter, a chat message): one item.

        The item is the subject, else the body's first line, cut at a word within
        :data:`FREE_TEXT_ITEM_CHARS`; the whole text stays the body, which the acknowledgement quotes. The
        same message always makes the same item, so a resubmission is recognised. ``fields`` are the
        draft's others (``channel``, ``channel_message_id``, ``identity``, …), ``items`` aside.
        """
        return cls(subject=subject, body=body, items=(free_text_item(subject, body),), **fields)

    def content_digest(self, key: bytes | None = None) -> str:
        """The digest that tells a resubmission of this request from another request (see :func:`content_digest`)."""
        return content_digest(
            identity=str(self.identity), subject=self.subject, items=self.items, body=self.body,
            attachment_sha256s=(a.sha256 for a in self.attachments), key=key,
        )


FREE_TEXT_ITEM_CHARS = 200


def free_text_item(subject: str, body: str) -> str:
    """The one item of a free-text contact: its subject, else its body's first line, within FREE_TEXT_ITEM_CHARS."""
    text = subject.strip() or next((line.strip() for line in body.splitlines() if line.strip()), "")
    if not text:
        raise ValidationError("a free-text contact needs a subject or a body: the text the customer wrote")
    if len(text) <= FREE_TEXT_ITEM_CHARS:
        return text
    cut = text[: FREE_TEXT_ITEM_CHARS - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip() + "…"


CONTENT_DIGEST_VERSION = "v1"
KEYED_CONTENT_DIGEST_VERSION = "v2"


def content_digest(
    *, identity: str, subject: str, items: Iterable[str], body: str, attachment_sha256s: Iterable[str],
    key: bytes | None = None,
) -> str:
    """What makes two submissions of one channel message *the same request*: ``v2:`` + HMAC-SHA-256 under ``key``.

    Covered: who sent it (the identity), the subject, the items in order, the body (line endings
    and white space at line ends folded, as form plugins and mail gateways change them) and the
    SHA-256 of each attachment (order-free: a re-upload may list them differently). Not covered:
    when it was sent, the category, segment or metadata an adapter attaches — a resubmission after
    a session timeout changes those without being another request. Each part is hashed with its
    length, so no two different requests share an encoding.

    ``key`` is the sender identity's lookup secret, which an erasure deletes: a short request
    ("Call me back") from a phone number is a guessable text, and an unkeyed hash of it gives the
    number back to whoever tries every neighbour (docs/privacy.md). Without ``key``: ``v1:`` and
    plain SHA-256, as registrations of earlier releases were made and are compared.
    """
    if "\r" in body:
        body = body.replace("\r\n", "\n").replace("\r", "\n")
    body = _LINE_END_BLANKS.sub("\n", body.strip())
    texts = [i.strip() for i in items]
    attachments = sorted(a.lower() for a in attachment_sha256s)
    digest = hashlib.sha256(_DIGEST_PREFIX) if key is None else hmac.new(key, _DIGEST_PREFIX, hashlib.sha256)
    for part in (identity, subject.strip(), str(len(texts)), *texts, body, *attachments):
        data = part.encode()
        digest.update(len(data).to_bytes(4, "big"))
        digest.update(data)
    version = CONTENT_DIGEST_VERSION if key is None else KEYED_CONTENT_DIGEST_VERSION
    return f"{version}:{digest.hexdigest()}"


_DIGEST_PREFIX = b"caseledger contact content v1\n"
_LINE_END_BLANKS = re.compile(r"[ \t]+\n")


def category_key(value: str) -> str | None:
    """A category as rules compare it: a free word in lower case, as contacts carry it (None when blank)."""
    return value.strip().lower() or None


_LOCALE = re.compile(r"^[a-z]{2,3}(_[A-Za-z0-9]{2,4})?$")


def check_locale(text: str) -> str:
    """``fr_FR`` from ``fr-FR`` or ``fr_FR``; a ValidationError saying how to write a locale otherwise."""
    if is_erased(text):
        raise ValidationError(
            "the locale was erased with the customer's personal data; give their language again (e.g. fr_FR or en), "
            "or none for the policy's default"
        )
    value = text.strip().replace("-", "_") if isinstance(text, str) else ""
    language, sep, region = value.partition("_")
    value = language.lower() + (sep + region.upper() if len(region) == 2 else sep + region)
    if not _LOCALE.match(value):
        raise ValidationError(
            f"locale {text!r} is not a language with an optional region; write e.g. fr_FR, fr_CA or en"
        )
    return value


def require_utc(value: datetime, name: str) -> datetime:
    """``value`` converted to UTC; naive datetimes are refused because their zone is a guess."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(
            f"{name} must be timezone-aware (e.g. 2026-11-23T10:00:00+01:00), got {value.isoformat()}",
            field=name if name.isidentifier() else "",
        )
    return value.astimezone(UTC)


def _parse_enum(enum: type[Enum], value: object, what: str) -> Any:
    if isinstance(value, enum):
        return value
    try:
        return enum(str(value).strip().lower())
    except ValueError:
        known = ", ".join(str(e.value) for e in enum)
        raise ValidationError(f"unknown {what} {value!r}; use one of: {known}") from None


SYSTEM = Actor(kind=ActorKind.SYSTEM, id="caseledger")

class DeliveryFailure(StrEnum):
    """Why a channel could not deliver one of our messages: a code, never the channel's own words (they may quote
    the address or the text)."""

    BOUNCED = "bounced"  # the channel took it, then returned it (a mail bounce, an SMS delivery report)
    INVALID_ADDRESS = "invalid_address"  # the address cannot be delivered to (malformed, unknown, closed)
    REJECTED = "rejected"  # the recipient's server or platform refused it (spam filter, policy, size)
    OPTED_OUT = "opted_out"  # the customer blocks this channel (unsubscribed, blocked the sender)
    UNREACHABLE = "unreachable"  # the channel was down for all of the adapter's retries
    EXPIRED = "expired"  # the adapter gave up: the delivery deadline passed
    OTHER = "other"  # none of these; the adapter's own log says more

    @classmethod
    def parse(cls, text: str) -> DeliveryFailure:
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise ValidationError(
                f"field reason is not a delivery failure code; use one of: {', '.join(c.value for c in cls)}",
                field="reason",
            ) from None

"""The ledger itself, e.g. recording a missed deadline."""
