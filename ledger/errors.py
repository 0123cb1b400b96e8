"""The exception tree of caseledger.

Every error says what was wrong and what to do about it, and carries, once, how it leaves the product: the
CLI's exit code and the HTTP problem (status, ``urn:caseledger:problem:<slug>``, title) — the CLI and the
service both read them from here, so a script reading ``$?`` and one reading a problem's ``exit_code``
decide alike::

    CaseLedgerError
    ├── ConfigurationError        bad settings, policy file, URL, missing extra
    ├── ValidationError           a command or intake record was refused before anything was recorded
    │   └── SchemaError           bytes or values that do not fit an Avro schema
    ├── RuleViolation             the command is valid but the case does not allow it now
    ├── NotFound                  unknown case reference, contact, promise, item …
    ├── ConflictError             another command changed the case first; retry
    │   └── TreeMoved             another appender moved the transparency log's Merkle tree first; reload, retry
    ├── AuthenticationError       no, malformed, expired, revoked or wrongly signed credentials (HTTP 401)
    ├── PermissionDenied          the authenticated principal's role may not do this (HTTP 403)
    ├── MessageIdCollision        the channel message id is another request's; this one was recorded
    │                             as a collision, not applied; send it with a new message id
    └── BackendError              the database or Kafka failed; nothing was recorded
        └── IntakeUnavailable     the adapter SDK could not publish, or not confirm it: resubmit the same draft

Errors of one module's own derive from these where they are raised, and carry their own way out the same way:
``SignatureRefused`` (a ValidationError, ``ledger/intake/signatures.py``), ``TemplateRefused`` (a
ConfigurationError, ``ledger/texts/engine.py``), ``IdempotencyRefused`` (a ValidationError whose status says
reused, in progress or lost, ``ledger/service/idempotency.py``) and ``StreamLimit`` (too many live pages,
``ledger/service/feeds.py``). No other exception class leaves the product (``tests/unit/test_layout.py``).
"""

from __future__ import annotations


class CaseLedgerError(Exception):
    """Base class of every error raised by caseledger.

    Where the fault is one field of the input, the error may name it: ``field`` (``occurred_at``), ``code``
    (``time-in-future``) and ``fix`` (how to fix it). Unlike the message, these three never quote a value, so
    they can be told to whoever sent the input (an intake verdict's public reason) when the message cannot.
    """

    exit_code = 1
    http_status = 500
    slug = "internal"
    title = "Unexpected ledger error"
    field = ""
    code = ""
    fix = ""

    def __init__(self, *args: object, field: str = "", code: str = "", fix: str = "") -> None:
        super().__init__(*args)
        if field:
            self.field = field
        if code:
            self.code = code
        if fix:
            self.fix = fix


class ConfigurationError(CaseLedgerError):
    """Settings, a policy file or a URL cannot be used as given."""

    exit_code, http_status, slug, title = 4, 503, "unavailable", "Service misconfigured"


class ValidationError(CaseLedgerError):
    """A command or an intake record was refused before anything was recorded."""

    exit_code, http_status, slug, title = 2, 400, "invalid", "Invalid request"


class SchemaError(ValidationError):
    """Values or bytes that do not fit an Avro schema."""


class RuleViolation(CaseLedgerError):
    """The command is well formed but the case's rules forbid it now."""

    exit_code, http_status, slug, title = 2, 422, "refused", "Refused by the case's rules"


class NotFound(CaseLedgerError):
    """The case, contact, item or promise named does not exist."""

    exit_code, http_status, slug, title = 2, 404, "not-found", "Not found"


class ConflictError(CaseLedgerError):
    """Another command changed the same case first; reload and retry."""

    exit_code, http_status, slug, title = 3, 409, "conflict", "Conflict: retry"


class TreeMoved(ConflictError):
    """Another appender moved the transparency log's Merkle tree since it was read: reload and retry."""


class AuthenticationError(CaseLedgerError):
    """The caller's credentials are missing, malformed, expired, revoked or wrongly signed.

    The message never repeats the credential itself.
    """

    exit_code, http_status, slug, title = 2, 401, "unauthenticated", "Not authenticated"


class PermissionDenied(CaseLedgerError):
    """The authenticated principal's role may not perform this operation (see docs/api.md)."""

    exit_code, http_status, slug, title = 2, 403, "forbidden", "Not allowed for this role"


class MessageIdCollision(CaseLedgerError):
    """A request reused a (channel, channel message id) that another request has: recorded, not applied.

    Unlike every other refusal this one *is* recorded (a ``MessageIdCollided`` event), so an
    operator can find the request; unlike a conflict, retrying it as it is fails the same way.
    """

    exit_code, http_status, slug, title = 6, 409, "collision", "Channel message id collision (recorded, not applied)"

    def __init__(self, message: str, *, collision_id: str) -> None:
        super().__init__(message)
        self.collision_id = collision_id


class BackendError(CaseLedgerError):
    """The database or the broker failed; nothing was recorded by this command."""

    exit_code, http_status, slug, title = 4, 503, "unavailable", "Database or broker unavailable"


class IntakeUnavailable(BackendError):
    """The intake topic did not acknowledge a record (unreachable, timed out, topic missing): resubmit the same draft.

    The record may or may not be stored. Submitting the same draft again (same channel, channel message
    id and content) is safe: the ledger records a request once and traces every resubmission. Every
    failure of a Kafka client under the adapter SDK is this error; no client's own exception leaves it.
    """


class naming:  # lower case: read as a function, ``with naming("identity"): …``
    """Errors raised inside are about ``field``: one naming no field names it, one naming its own part names it
    under it (``attachments`` + ``sha256`` → ``attachments.sha256``), so a verdict can tell the adapter which.
    (A class, not a generator: it wraps values built for every intake record.)"""

    __slots__ = ("field",)

    def __init__(self, field: str) -> None:
        self.field = field

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: object) -> bool:
        if isinstance(error, CaseLedgerError):
            own, field = error.field, self.field
            if not own:
                error.field = field
            elif own != field and not own.startswith(field + "."):
                error.field = f"{field}.{own}"
        return False
