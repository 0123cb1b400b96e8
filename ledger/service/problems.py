"""RFC 9457 problem details: the ledger's errors as HTTP answers, and back (the CLI's ``--api`` client).

Each error class carries its status, problem type and exit code (``ledger/errors.py``); the CLI's
exit codes are the same attributes, so a script reading ``exit_code`` in a problem and one reading
``$?`` of the CLI decide alike:

====================  ======  ==========  =========================================================
error                 status  exit code   type (``urn:caseledger:problem:…``)
====================  ======  ==========  =========================================================
ValidationError       400     2           invalid: fix the request
AuthenticationError   401     2           unauthenticated: send a valid bearer token
PermissionDenied      403     2           forbidden: the principal's role may not (docs/api.md)
NotFound              404     2           not-found
RuleViolation         422     2           refused: the case's rules forbid it now
ConflictError         409     3           conflict: another command changed the case first; retry
MessageIdCollision    409     6           collision: recorded, not applied; send a new message id
BackendError, Config  503     4           unavailable: the database or broker failed; retry later
====================  ======  ==========  =========================================================
"""

from __future__ import annotations

from typing import Any

from caseledger.ledger.errors import (
    AuthenticationError,
    BackendError,
    CaseLedgerError,
    ConfigurationError,
    ConflictError,
    MessageIdCollision,
    NotFound,
    PermissionDenied,
    RuleViolation,
    ValidationError,
)

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:caseledger:problem:"


# Every class of the tree a problem can name, so that a problem's type maps back to its error (the first
# of two that share a type wins: "unavailable" is a BackendError, retried like one).
_ERRORS: tuple[type[CaseLedgerError], ...] = (
    AuthenticationError, PermissionDenied, NotFound, ValidationError, RuleViolation, MessageIdCollision,
    ConflictError, BackendError, ConfigurationError,
)


def problem(status: int, slug: str, title: str, detail: str, *, exit_code: int, **extra: Any) -> dict[str, Any]:
    """A problem details object (RFC 9457), with the CLI's exit code as an extension member."""
    return {"type": TYPE_PREFIX + slug, "title": title, "status": status, "detail": detail,
            "exit_code": exit_code, **extra}


def problem_for(error: CaseLedgerError) -> dict[str, Any]:
    """The problem of ``error``; the field at fault, the refusal's code and its fix as members when it names them
    (they never quote a value: a client reads them as an adapter reads a verdict's public reason)."""
    extra: dict[str, Any] = {"collision_id": error.collision_id} if isinstance(error, MessageIdCollision) else {}
    extra.update((name, value) for name in ("field", "code", "fix") if (value := getattr(error, name)))
    return problem(error.http_status, error.slug, error.title, str(error), exit_code=error.exit_code, **extra)


def error_from_problem(body: dict[str, Any]) -> CaseLedgerError:
    """The ledger error a problem stands for (the CLI acting through ``--api`` raises it, so exit codes agree)."""
    slug = str(body.get("type", "")).removeprefix(TYPE_PREFIX)
    detail = str(body.get("detail") or body.get("title") or "the ledger service refused the request")
    if slug == "collision":
        return MessageIdCollision(detail, collision_id=str(body.get("collision_id", "")))
    named = {name: str(body[name]) for name in ("field", "code", "fix") if isinstance(body.get(name), str)}
    for cls in _ERRORS:
        if cls.slug == slug:
            return cls(detail, **named)
    if slug.startswith("idempotency-"):
        return (ConflictError if body.get("status") == 409 else ValidationError)(detail)
    if slug == "too-large":
        return ValidationError(detail)
    if slug in ("timeout", "too-many-streams"):
        return BackendError(detail)
    return CaseLedgerError(detail)
