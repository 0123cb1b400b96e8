"""One exception tree, and each error's way out written once: the CLI's exit code and the HTTP problem agree."""

from __future__ import annotations

import pytest

from caseledger.cli.common import exit_code_for
from caseledger.ledger import errors
from caseledger.ledger.errors import CaseLedgerError, MessageIdCollision
from caseledger.ledger.service.idempotency import IdempotencyRefused
from caseledger.ledger.service.problems import TYPE_PREFIX, error_from_problem, problem_for


def tree(cls: type[CaseLedgerError]) -> list[type[CaseLedgerError]]:
    return [cls, *(c for sub in cls.__subclasses__() for c in tree(sub))]


def example(cls: type[CaseLedgerError]) -> CaseLedgerError:
    if issubclass(cls, MessageIdCollision):
        return cls("taken", collision_id="c-1")
    if issubclass(cls, IdempotencyRefused):
        return cls("reused", status=422, slug="idempotency-key-reused")
    try:
        return cls("what went wrong, and how to fix it")
    except TypeError:  # an error that builds its own message (a template's file and line …)
        error = cls.__new__(cls)
        Exception.__init__(error, "what went wrong, and how to fix it")
        return error


ERRORS = [c for c in tree(CaseLedgerError) if c.__module__.startswith("caseledger.")]


def test_every_error_of_the_ledger_is_in_the_one_tree() -> None:
    named = {c.__name__ for c in ERRORS if c.__module__ == errors.__name__}
    assert named == {name for name, value in vars(errors).items()
                     if isinstance(value, type) and issubclass(value, CaseLedgerError)}
    assert all(line.strip() for line in (errors.__doc__ or "").splitlines() if any(n in line for n in named))


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_the_cli_and_the_service_read_one_exit_code_and_status_from_the_class(cls: type[CaseLedgerError]) -> None:
    error = example(cls)
    body = problem_for(error)
    assert body["status"] == error.http_status and body["exit_code"] == error.exit_code == exit_code_for(error)
    assert body["type"] == TYPE_PREFIX + error.slug and body["detail"] == str(error)
    assert 400 <= body["status"] < 600 and error.exit_code in {1, 2, 3, 4, 6}
    assert (body["status"] >= 500) == (error.exit_code in {1, 4})  # retry later ⇔ the service's fault
    # Through --api the CLI raises the error the problem stands for: the same exit code either way.
    assert exit_code_for(error_from_problem(body)) == error.exit_code
