"""RFC 9457 problem details: the one place where the ledger's errors become HTTP statuses.

The classes are the CLI's exit codes (``cli.common``), so a script reading ``exit_code`` in a
problem and one reading ``$?`` of the CLI decide alike:

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

from dataclasses import dataclass
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


@dataclass(frozen=True)
class ProblemClass:
    status: int
    slug: str
    title: str
    exit_code: int


_CLASSES: list[tuple[type[CaseLedgerError], ProblemClass]] = [
    (AuthenticationError, ProblemClass(401, "unauthenticated", "Not authenticated", 2)),
    (PermissionDenied, ProblemClass(403, "forbidden", "Not allowed for this role", 2)),
    (NotFound, ProblemClass(404, "not-found", "Not found", 2)),
    (ValidationError, ProblemClass(400, "invalid", "Invalid request", 2)),
    (RuleViolation, ProblemClass(422, "refused", "Refused by the case's rules", 2)),
    (MessageIdCollision, ProblemClass(409, "collision", "Channel message id collision (recorded, not applied)", 6)),
    (ConflictError, ProblemClass(409, "conflict", "Conflict: retry", 3)),
    (BackendError, ProblemClass(503, "unavailable", "Database or broker unavailable", 4)),
    (ConfigurationError, ProblemClass(503, "unavailable", "Service misconfigured", 4)),
]
_OTHER = ProblemClass(500, "internal", "Unexpected ledger error", 1)


def problem_class(error: CaseLedgerError) -> ProblemClass:
    for cls, problem in _CLASSES:
        if isinstance(error, cls):
            return problem
    return _OTHER


def problem(status: int, slug: str, title: str, detail: str, *, exit_code: int, **extra: Any) -> dict[str, Any]:
    """A problem details object (RFC 9457), with the CLI's exit code as an extension member."""
    return {"type": TYPE_PREFIX + slug, "title": title, "status": status, "detail": detail,
            "exit_code": exit_code, **extra}


def problem_for(error: CaseLedgerError) -> dict[str, Any]:
    status, slug = getattr(error, "status", None), getattr(error, "slug", None)
    if isinstance(status, int) and isinstance(slug, str):  # a refusal that names its own (idempotency keys)
        return problem(status, slug, "Idempotency-Key refused", str(error), exit_code=3 if status == 409 else 2)
    cls = problem_class(error)
    extra: dict[str, Any] = {}
    if isinstance(error, MessageIdCollision):
        extra["collision_id"] = error.collision_id
    return problem(cls.status, cls.slug, cls.title, str(error), exit_code=cls.exit_code, **extra)


def error_from_problem(body: dict[str, Any]) -> CaseLedgerError:
    """The ledger error a problem stands for (the CLI acting through ``--api`` raises it, so exit codes agree)."""
    slug = str(body.get("type", "")).removeprefix(TYPE_PREFIX)
    detail = str(body.get("detail") or body.get("title") or "the ledger service refused the request")
    if slug == "collision":
        return MessageIdCollision(detail, collision_id=str(body.get("collision_id", "")))
    for cls, problem_cls in _CLASSES:
        if problem_cls.slug == slug:
            return cls(detail)
    if slug.startswith("idempotency-"):
        return (ConflictError if body.get("status") == 409 else ValidationError)(detail)
    if slug == "too-large":
        return ValidationError(detail)
    if slug == "timeout":
        return BackendError(detail)
    return CaseLedgerError(detail)
