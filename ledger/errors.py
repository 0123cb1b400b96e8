"""The exception tree of caseledger.

Every error says what was wrong and what to do about it::

    CaseLedgerError
    ├── ConfigurationError        bad settings, policy file, URL, missing extra
    ├── ValidationError           a command or intake record was refused before anything was recorded
    │   └── SchemaError           bytes or values that do not fit an Avro schema
    ├── RuleViolation             the command is valid but the case does not allow it now
    ├── NotFound                  unknown case reference, contact, promise, item …
    ├── ConflictError             another command changed the case first; retry
    ├── AuthenticationError       no, malformed, expired, revoked or wrongly signed credentials (HTTP 401)
    ├── PermissionDenied          the authenticated principal's role may not do this (HTTP 403)
    ├── MessageIdCollision        the channel message id is another request's; this one was recorded
    │                             as a collision, not applied; send it with a new message id
    └── BackendError              the database or Kafka failed; nothing was recorded
"""

from __future__ import annotations


class CaseLedgerError(Exception):
    """Base class of every error raised by caseledger."""


class ConfigurationError(CaseLedgerError):
    """Settings, a policy file or a URL cannot be used as given."""


class ValidationError(CaseLedgerError):
    """A command or an intake record was refused before anything was recorded."""


class SchemaError(ValidationError):
    """Values or bytes that do not fit an Avro schema."""


class RuleViolation(CaseLedgerError):
    """The command is well formed but the case's rules forbid it now."""


class NotFound(CaseLedgerError):
    """The case, contact, item or promise named does not exist."""


class ConflictError(CaseLedgerError):
    """Another command changed the same case first; reload and retry."""


class AuthenticationError(CaseLedgerError):
    """The caller's credentials are missing, malformed, expired, revoked or wrongly signed.

    The message never repeats the credential itself.
    """


class PermissionDenied(CaseLedgerError):
    """The authenticated principal's role may not perform this operation (see docs/api.md)."""


class MessageIdCollision(CaseLedgerError):
    """A request reused a (channel, channel message id) that another request has: recorded, not applied.

    Unlike every other refusal this one *is* recorded (a ``MessageIdCollided`` event), so an
    operator can find the request; unlike a conflict, retrying it as it is fails the same way.
    """

    def __init__(self, message: str, *, collision_id: str) -> None:
        super().__init__(message)
        self.collision_id = collision_id


class BackendError(CaseLedgerError):
    """The database or the broker failed; nothing was recorded by this command."""
