"""A principal's name, team and OIDC label: what each accepts, and the refusal that says what is wrong and how."""

from __future__ import annotations

import pytest

from caseledger.ledger.access.principals import check_label, check_name, check_team
from caseledger.ledger.errors import ConfigurationError, ValidationError


@pytest.mark.parametrize(("check", "good", "bad", "refusal", "says"), [
    (check_name, ["alice", "crm-sync", "a@b.c", "a" * 100], ["", " alice", "a b", "-x", "a" * 101, "é"],
     ValidationError, "principal name {!r} must be 1-100 letters, digits, dots, dashes, underscores or @, "
                      "starting with a letter or digit, e.g. alice or crm-sync"),
    (check_team, ["billing", "Support FR", "a" * 100], ["", " billing", "a" * 101, "b/c"],
     ValidationError, "team {!r} must be 1-100 letters, digits, spaces, dots, dashes, underscores or @, starting "
                      "with a letter or digit, e.g. billing or Support FR"),
    (check_label, ["idp.example.com", "a" * 64], ["", "a" * 65, "a b", ".x"],
     ConfigurationError, "OIDC label {!r} must be 1-64 letters, digits, dots, dashes or underscores, e.g. "
                         "idp.example.com: set CASELEDGER_OIDC_LABEL"),
])
def test_a_name_is_kept_as_given_or_refused_with_the_rule_it_breaks(
    check: object, good: list[str], bad: list[str], refusal: type[Exception], says: str,
) -> None:
    assert callable(check)
    assert [check(value) for value in good] == good
    for value in bad:
        with pytest.raises(refusal) as refused:
            check(value)
        assert str(refused.value) == says.format(value)
