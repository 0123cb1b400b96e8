"""What an audit found: ``Discrepancy`` (one named finding), ``AuditReport`` (all of them), ``AuditScope``.

Severities are ``error`` (something was lost, altered or reordered: ``audit verify`` exits 5) and
``warning`` (explained, e.g. a publisher behind; exit 0). The codes and what each means are
listed in docs/audit.md; each is raised by the module of its guarantee (``chains``,
``references``, ``topic``, ``intake``, ``seal``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from caseledger.ledger.audit.seal import Seal

if TYPE_CHECKING:
    from caseledger.ledger.kafka.ports import TopicReaders
    from caseledger.ledger.settings import KafkaSettings

__all__ = ["ERROR", "MAX_NAMED", "WARNING", "AuditReport", "AuditScope", "Discrepancy"]

MAX_NAMED = 200
"""Discrepancies named per code in a report; further ones are counted."""

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True, kw_only=True)
class Discrepancy:
    """One thing that does not hold, with where it is and what differs."""

    code: str
    message: str
    severity: str = ERROR
    position: int | None = None
    event_type: str | None = None
    event_id: str | None = None
    aggregate_id: str | None = None
    version: int | None = None
    customer_id: str | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    def where(self) -> str:
        """``position 42 (CaseOpened v1 of aggregate …)`` or ``caseledger.intake/2@17``."""
        parts: list[str] = []
        what = " ".join(x for x in (self.event_type, f"v{self.version}" if self.version else None) if x)
        if self.aggregate_id:
            what = f"{what} of aggregate {self.aggregate_id}" if what else f"aggregate {self.aggregate_id}"
        if self.position is not None:
            parts.append(f"position {self.position}" + (f" ({what})" if what else ""))
        elif what:
            parts.append(what)
        if self.topic is not None and self.partition is not None:
            parts.append(f"{self.topic}/{self.partition}" + (f"@{self.offset}" if self.offset is not None else ""))
        return ", ".join(parts)

    def line(self) -> str:
        """``[code] where: message``, as the CLI prints it."""
        where = self.where()
        return f"[{self.code}] {where}: {self.message}" if where else f"[{self.code}] {self.message}"

    def as_dict(self) -> dict[str, Any]:
        """The fields that apply (as in the JSON report)."""
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass
class AuditReport:
    """What verify checked and every discrepancy it found."""

    backend: str
    scope: dict[str, Any]
    head_position: int = 0
    first_position: int | None = None
    last_position: int | None = None
    events: int = 0
    aggregates: int = 0
    cases: int = 0
    topic_records: int = 0
    intake_offsets: int = 0
    intake_outcomes: int = 0
    seal: Seal | None = None
    seconds: float = 0.0
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    discrepancies: list[Discrepancy] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    severities: dict[str, str] = field(default_factory=dict)

    def add(self, discrepancy: Discrepancy) -> None:
        """Count a discrepancy under its code; name it while the code has fewer than ``MAX_NAMED``."""
        code = discrepancy.code
        self.counts[code] += 1
        self.severities.setdefault(code, discrepancy.severity)
        if discrepancy.severity == ERROR:
            self.severities[code] = ERROR
        if self.counts[code] <= MAX_NAMED:
            self.discrepancies.append(discrepancy)

    def flag(self, code: str, message: str, *, severity: str = ERROR, **where: Any) -> None:
        """Add a discrepancy: its code, what differs, and where (``position=…``, ``partition=…``, …)."""
        self.add(Discrepancy(code=code, message=message, severity=severity, **where))

    @property
    def errors(self) -> list[Discrepancy]:
        return [d for d in self.discrepancies if d.severity == ERROR]

    @property
    def warnings(self) -> list[Discrepancy]:
        return [d for d in self.discrepancies if d.severity == WARNING]

    @property
    def ok(self) -> bool:
        """True when nothing but warnings was found."""
        return not any(d.severity == ERROR for d in self.discrepancies)

    def omitted(self) -> dict[str, int]:
        """Codes with more discrepancies than the report names, and how many were not named."""
        return {code: n - MAX_NAMED for code, n in sorted(self.counts.items()) if n > MAX_NAMED}

    def as_dict(self) -> dict[str, Any]:
        """The JSON report."""
        return {
            "ok": self.ok,
            "backend": self.backend,
            "scope": self.scope,
            "head_position": self.head_position,
            "first_position": self.first_position,
            "last_position": self.last_position,
            "events": self.events,
            "aggregates": self.aggregates,
            "cases": self.cases,
            "topic_records": self.topic_records,
            "intake_offsets": self.intake_offsets,
            "intake_outcomes": self.intake_outcomes,
            "seal": str(self.seal) if self.seal else None,
            "seconds": round(self.seconds, 3),
            "checks": self.checks,
            "notes": self.notes,
            "counts": dict(sorted(self.counts.items())),
            "omitted": self.omitted(),
            "discrepancies": [d.as_dict() for d in self.discrepancies],
        }



@dataclass(frozen=True, kw_only=True)
class AuditScope:
    """What one verify covers: one customer or all, a time range or the whole log, the Kafka topics."""

    customer_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    kafka: KafkaSettings | None = None
    readers: TopicReaders | None = None  # how the topics are read when ``kafka`` is given (the root's client)
    tolerance: int = 0
    """The clock tolerance, in microseconds."""

    @property
    def ranged(self) -> bool:
        """Limited to a time range (``--since``, ``--until``)."""
        return self.since is not None or self.until is not None

    @property
    def whole(self) -> bool:
        """The whole ledger: no customer, no time range."""
        return self.customer_id is None and not self.ranged

    def as_dict(self) -> dict[str, Any]:
        """The scope as the report shows it."""
        scope: dict[str, Any] = {"customer": self.customer_id, "since": self.since, "until": self.until,
                                 "kafka": bool(self.kafka)}
        if self.kafka is not None:
            scope.update(events_topic=self.kafka.events_topic, intake_topic=self.kafka.intake_topic)
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in scope.items()}
