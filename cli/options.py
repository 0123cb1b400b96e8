"""Options and arguments several commands share, and their parsers (a bad value is a usage error, exit 2)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from typing import Annotated
from zoneinfo import ZoneInfoNotFoundError

import typer

from caseledger.ledger.domain.case_parts import Status
from caseledger.ledger.domain.values import Actor, Attachment, Channel
from caseledger.ledger.errors import ValidationError

CHANNELS = ", ".join(c.value for c in Channel)
STATUSES = ", ".join(Status.ACTIVE)
ISO_ADVICE = "use ISO-8601 with a zone, e.g. 2026-11-24T10:00+01:00 (or 2026-11-24T09:00Z for UTC)"


# -- parsers (each names the option it parses) ------------------------------------------------------------


def parse_instant(text: str) -> datetime:
    """An ISO-8601 date-time with a zone (a trailing Z means UTC), as UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date-time; {ISO_ADVICE}") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise typer.BadParameter(f"{text!r} has no time zone, so its instant is a guess; {ISO_ADVICE}")
    return value.astimezone(UTC)


def parse_actor(text: str) -> Actor:
    """``KIND:ID``, e.g. agent:alice."""
    try:
        return Actor.parse(text)
    except ValidationError as error:
        raise typer.BadParameter(str(error)) from None


def parse_zone(text: str) -> tzinfo:
    """An IANA time zone name."""
    from caseledger.cli.render import local_zone

    try:
        return local_zone(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise typer.BadParameter(f"unknown time zone {text!r}; use an IANA name such as Europe/Paris or UTC") from None


def parse_attachment(text: str) -> Attachment:
    """``REF:SHA256:SIZE:MEDIA[:FILENAME]``; REF may itself contain colons (s3://…)."""
    # Find the sha256 field from the right, so that a ref like s3://bucket/key keeps its colons.
    parts = text.split(":")
    for i in range(len(parts) - 3, 0, -1):
        sha, size, media = parts[i], parts[i + 1], parts[i + 2]
        if len(sha) == 64 and size.isdigit() and "/" in media:
            filename = ":".join(parts[i + 3 :]) or None
            try:
                return Attachment(
                    ref=":".join(parts[:i]), sha256=sha, size=int(size), media_type=media, filename=filename
                )
            except ValidationError as error:
                raise typer.BadParameter(str(error), param_hint="'--attach'") from None
    raise typer.BadParameter(
        f"{text!r} is not REF:SHA256:SIZE:MEDIA[:FILENAME], e.g. "
        "s3://inbox/42.pdf:<64 hex digits>:20480:application/pdf:invoice.pdf",
        param_hint="'--attach'",
    )


def parse_pairs(values: Sequence[str] | None, *, option: str, upper_keys: bool = False) -> dict[str, str]:
    """``KEY=VALUE`` options into a dict; a key given twice is refused."""
    pairs: dict[str, str] = {}
    for value in values or ():
        key, sep, rest = value.partition("=")
        key = key.strip().upper() if upper_keys else key.strip()
        if not sep or not key:
            raise typer.BadParameter(f"{value!r} is not KEY=VALUE", param_hint=f"'{option}'")
        if key in pairs:
            raise typer.BadParameter(f"{key} is given twice", param_hint=f"'{option}'")
        pairs[key] = rest
    return pairs


def parse_ids(text: str) -> list[str]:
    """``Q1,q2, Q3`` → ``["Q1", "Q2", "Q3"]``."""
    return [part.strip().upper() for part in text.split(",") if part.strip()]


def parse_partitions(text: str | None) -> list[int] | None:
    """``"0,2,4"`` → [0, 2, 4]; a clear error for anything else."""
    if text is None:
        return None
    try:
        partitions = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        partitions = []
    if not partitions or any(p < 0 for p in partitions):
        raise ValidationError(f"--partitions {text!r}: give partition numbers separated by commas, e.g. 0,2,4")
    return partitions


# -- a case and what is done to it -----------------------------------------------------------------------

Ref = Annotated[str, typer.Argument(metavar="REF", help="Case reference, e.g. CL-7K2QD-M3XPA (the CL- is optional).")]
Reason = Annotated[str, typer.Option("--reason", "-r", metavar="TEXT", help="Why, for the auditor and the customer.")]
Notice = Annotated[
    str, typer.Option("--notice", "-n", metavar="TEXT", help="The customer-facing text telling them what changed.")
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
Zone = Annotated[
    tzinfo | None,
    typer.Option("--tz", parser=parse_zone, metavar="ZONE", help="Show times in this IANA zone, e.g. Europe/Paris."),
]
ChannelOpt = Annotated[str, typer.Option("--channel", "-c", metavar="CHANNEL", help=f"One of: {CHANNELS}.")]
Customer = Annotated[
    str,
    typer.Argument(metavar="CUSTOMER", help="A customer id or an identity such as email:jane@example.com."),
]
ToAgent = Annotated[str | None, typer.Option("--to", metavar="AGENT", help="The agent who takes the case.")]
ToTeam = Annotated[str | None, typer.Option("--team", metavar="TEAM", help="The team that takes the case.")]


# -- Kafka and the long-running services ------------------------------------------------------------------

KafkaOpt = Annotated[
    str | None,
    typer.Option(
        "--kafka", "-k", envvar="CASELEDGER_KAFKA_BOOTSTRAP", metavar="HOST:PORT",
        help="Kafka bootstrap servers (env CASELEDGER_KAFKA_BOOTSTRAP); SASL/TLS from CASELEDGER_KAFKA_* env.",
    ),
]
RecordBatchOpt = Annotated[int, typer.Option("--batch-size", min=1, max=100_000, help="Records per transaction.")]
ConsumerOpt = Annotated[
    str,
    typer.Option("--consumer", metavar="kafka-python|confluent", envvar="CASELEDGER_KAFKA_CONSUMER",
                 help="Kafka client reading the topic: confluent (default: confluent-kafka, librdkafka) or "
                 "kafka-python (pure Python, several times the CPU per record). Same positions either way."),
]
ProducerOpt = Annotated[
    str,
    typer.Option("--producer", metavar="kafka-python|confluent", envvar="CASELEDGER_KAFKA_PRODUCER",
                 help="Kafka client producing records (the publisher's on the events topic; an adapter's on "
                 "the intake topic): confluent (default: librdkafka, several times less CPU per record) or "
                 "kafka-python. Same partitions either way."),
]
AggregateCacheOpt = Annotated[
    int,
    typer.Option("--aggregate-cache", min=0, max=10_000_000, help="Aggregates (customers, identity claims, "
                 "cases) the intake worker keeps in memory between batches, read again only from their last "
                 "known version; 0 turns the cache off."),
]
# -- projections ----------------------------------------------------------------------------------------

ViewsOpt = Annotated[
    str | None,
    typer.Option(
        "--views", envvar="CASELEDGER_VIEWS", metavar="PATH|URL",
        help="Database holding the read models: SQLite file or postgresql:// URL (default: the ledger's database).",
    ),
]
EventBatchOpt = Annotated[int, typer.Option("--batch-size", min=1, max=100_000, help="Events per transaction.")]
