"""How long a customer's personal data is kept: the ``[retention]`` table of the policy file.

.. code-block:: toml

    [retention]
    # Erase a customer's personal data this long after their last case ended (counted from the
    # last event of that case, never before it was closed or cancelled). A customer with a case
    # still open is never due; one under a legal hold is reported, not erased.
    after_last_case = "5y"          # years "5y" or days "400d"
    intake_rejections = "90d"       # rejected intake records (no customer known), by month
    [retention.segment]             # per segment, instead of after_last_case
    vip = "10y"

Without a ``[retention]`` table nothing is erased by ``tick``: erasure is then on request only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from caseledger.ledger.errors import ConfigurationError

_PERIOD = re.compile(r"([1-9][0-9]{0,3})\s*([yd])")


@dataclass(frozen=True)
class Period:
    """A whole number of calendar years or days."""

    count: int
    unit: str  # "y" or "d"

    @classmethod
    def parse(cls, value: object, *, where: str) -> Period:
        match = _PERIOD.fullmatch(value.strip().lower()) if isinstance(value, str) else None
        if match is None:
            raise ConfigurationError(
                f"{where}: {value!r} is not a retention period; write years or days, e.g. \"5y\" or \"400d\""
            )
        return cls(int(match[1]), match[2])

    def after(self, instant: datetime) -> datetime:
        if self.unit == "d":
            return instant + timedelta(days=self.count)
        try:
            return instant.replace(year=instant.year + self.count)
        except ValueError:  # 29 February, in a year that has none
            return instant.replace(year=instant.year + self.count, day=28)

    def __str__(self) -> str:
        return f"{self.count} {'year' if self.unit == 'y' else 'day'}{'s' * (self.count != 1)}"


@dataclass(frozen=True, kw_only=True)
class RetentionPolicy:
    """When ``tick`` erases a customer, and a month of rejected intake records."""

    after_last_case: Period | None = None
    by_segment: Mapping[str, Period] = field(default_factory=dict)
    intake_rejections: Period | None = None

    def period_for(self, segment: str | None) -> Period | None:
        if segment is not None and segment.strip().lower() in self.by_segment:
            return self.by_segment[segment.strip().lower()]
        return self.after_last_case

    @classmethod
    def from_table(cls, data: object, *, source: str) -> RetentionPolicy | None:
        if data is None:
            return None
        where = f"response policy {source}: retention"
        if not isinstance(data, dict):
            raise ConfigurationError(f"{where}: must be a table, e.g. [retention] with after_last_case = \"5y\"")
        known = ("after_last_case", "intake_rejections", "segment")
        for key in data:
            if key not in known:
                raise ConfigurationError(f"{where}.{key}: unknown key; [retention] accepts: {', '.join(known)}")
        segments: dict[str, Period] = {}
        table: Any = data.get("segment", {})
        if not isinstance(table, dict):
            raise ConfigurationError(f"{where}.segment: must be a table, e.g. [retention.segment] with vip = \"10y\"")
        for name, value in table.items():
            segments[name.strip().lower()] = Period.parse(value, where=f"{where}.segment.{name}")

        def period(key: str) -> Period | None:
            return Period.parse(data[key], where=f"{where}.{key}") if key in data else None

        return cls(after_last_case=period("after_last_case"), by_segment=MappingProxyType(segments),
                   intake_rejections=period("intake_rejections"))
