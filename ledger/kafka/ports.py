"""What the ledger asks of a Kafka client: one small port per role.

Each Kafka client the ledger can use implements every port in its own module
(:mod:`~caseledger.ledger.kafka.kafka_python`, :mod:`~caseledger.ledger.kafka.confluent`);
:mod:`~caseledger.ledger.kafka.clients` picks one by name. A port's methods raise
:class:`~caseledger.ledger.errors.BackendError` for any error of the client underneath (each
client module maps its own exception tree in one place, its ``kafka_errors``). Every port is a
context manager that closes it; the Kafka client inside is created on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Literal, NamedTuple, NoReturn, Protocol, Self, TypeVar

from caseledger.ledger.errors import BackendError

if TYPE_CHECKING:
    from caseledger.ledger.settings import KafkaSettings

Headers = Sequence[tuple[str, bytes]]
OnLostPosition = Literal["earliest", "error"]
T = TypeVar("T")


class ReadRecord(NamedTuple):
    """A record as read, field by field: pass the class as ``build`` to get records of this shape."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers | None
    timestamp: int  # ms since the epoch


# How a reader hands over each record: ``build(partition, offset, key, value, headers, timestamp_ms)``.
# The caller's own record type is built straight from the client's record (no record in between:
# on the projection rebuild's path that in-between object cost librdkafka a third of its CPU).
Build = Callable[[int, int, bytes | None, bytes | None, "Headers | None", int], T]


class Port(Protocol):
    """Every port: closed by ``close`` or by leaving a ``with`` block (a closed port reopens on use)."""

    def close(self) -> None:
        """Flush what is pending and release the client (idempotent)."""
        ...

    def __enter__(self) -> Self: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class Closing:
    """What the adapters inherit: ``with`` closes them."""

    def close(self) -> None:
        """Release the client (idempotent)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# A group member's callbacks: ``on_assign(partitions)`` returns where to read each newly assigned partition from
# (the caller's own positions, never the group's committed offsets); ``on_revoke(partitions)`` hears of
# partitions no longer this member's (revoked by a rebalance, or lost when the group took it for dead).
OnAssign = Callable[[list[int]], Mapping[int, int]]
OnRevoke = Callable[[list[int]], None]


class PartitionReader(Port, Protocol):
    """Reads partitions of one topic, read committed: assigned by the caller, or handed out by a consumer group.

    Positions are the caller's (kept beside what the records produced): offset 0 means the
    partition's beginning. A reader opened with ``on_lost_position="error"`` raises when a
    position is no longer on the topic instead of skipping to the beginning. A group member
    (``subscribe``) never commits offsets to the group: each partition it is given starts
    where the caller's ``on_assign`` says.
    """

    topic: str

    def partitions(self) -> list[int]:
        """The topic's partitions, sorted; empty when the topic does not exist."""
        ...

    def assign(self, positions: Mapping[int, int]) -> None:
        """Read these partitions from these offsets on (replaces any earlier assignment)."""
        ...

    def subscribe(self, on_assign: OnAssign, on_revoke: OnRevoke, *, session_timeout_ms: int) -> None:
        """Join the reader's consumer group for the topic: from now on the group hands out the partitions.

        The callbacks run inside ``fetch`` (never while the caller applies a batch). confluent-kafka rebalances
        cooperatively (``cooperative-sticky``: only the partitions that move are revoked); the kafka-python
        reader eagerly (every partition revoked, then the new share assigned). A member that stops
        heartbeating for ``session_timeout_ms`` (killed) loses its partitions to the others.
        """
        ...

    def assigned(self) -> set[int]:
        """The partitions this reader reads now (assigned by the caller or by the group)."""
        ...

    def fetch(self, max_records: int, timeout_s: float, build: Build[T]) -> list[T]:
        """The next records of the assigned partitions, each made by ``build``; waits up to ``timeout_s`` for the first."""
        ...

    def end_offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        """Each partition's end: the offset after its last committed record (the last stable offset)."""
        ...

    def beginning_offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        """Each partition's first offset still on the topic."""
        ...

    def offsets_for_time(self, partitions: Iterable[int], timestamp_ms: int) -> dict[int, int | None]:
        """Each partition's first offset with a timestamp at or after ``timestamp_ms``; None if none."""
        ...

    def positions(self) -> dict[int, int]:
        """Each assigned partition's next offset to read (past transaction markers)."""
        ...


class TopicReaders(Protocol):
    """What the audit asks of a Kafka client: readers of a topic, and the hash Kafka places a record key by.

    :class:`~caseledger.ledger.kafka.clients.KafkaClient` is one; the composition root that runs the audit
    gives it, so the audit reads the topics without importing a client.
    """

    def open_reader(self, settings: KafkaSettings, *, topic: str, group: str, fetch_wait_ms: int = 100
                    ) -> PartitionReader:
        """A reader of ``topic``'s assigned partitions; ``group`` names the reader's role (never joined)."""
        ...

    def key_hash(self, key: bytes) -> int:
        """Kafka's default partitioner hash of a record key (murmur2, positive): partition = hash % count."""
        ...


class TransactionalWriter(Port, Protocol):
    """A transactional producer: each batch appears on the topics whole or not at all.

    Records are partitioned by Kafka's default murmur2 of the key, whichever client writes, and
    the ``transactional.id`` is the caller's: a writer fences every earlier one with the same id.
    """

    def init_transactions(self) -> None:
        """Fence earlier writers with the same transactional id and abort their open transaction."""
        ...

    def begin_transaction(self) -> None:
        """Start a batch."""
        ...

    def send(self, topic: str, *, key: bytes, value: bytes, headers: Headers) -> None:
        """Add one record to the batch (on the partition of its key)."""
        ...

    def commit_transaction(self) -> None:
        """Make the batch visible to read-committed readers; returns once it is."""
        ...

    def abort_transaction(self) -> None:
        """Drop the batch: no read-committed reader ever sees it."""
        ...


class AcknowledgedProducer(Port, Protocol):
    """An idempotent producer with acks=all: a record is stored once it is acknowledged."""

    def send_all(
        self, topic: str, records: Sequence[tuple[bytes, bytes]], headers: Sequence[Headers] | None = None
    ) -> list[tuple[int, int]]:
        """Send every (key, value), with ``headers[i]`` if given; returns (partition, offset) of each once all
        are acknowledged."""
        ...


class TopicAdmin(Port, Protocol):
    """Lists and creates topics."""

    def topics(self) -> set[str]:
        """The names of the topics on the cluster."""
        ...

    def partition_count(self, topic: str) -> int:
        """How many partitions ``topic`` has."""
        ...

    def create_topic(self, topic: str, *, partitions: int, replication_factor: int, config: Mapping[str, str]) -> bool:
        """Create ``topic``; False when it was created meanwhile by someone else."""
        ...

    def topic_config(self, topic: str) -> dict[str, str]:
        """The configuration in force on ``topic`` (its own, else the broker's defaults), by name."""
        ...


# What a failed Kafka call becomes: ``what`` names the operation (the message is "what: error"),
# or formats the whole message from the client's error.
What = str | Callable[[object], str]


class ErrorMapping:
    """``with mapping:`` turns a Kafka client's errors (those of ``errors``) into BackendError.

    The one place a Kafka error becomes the ledger's: each client module makes its mappings with
    its own exception tree (``kafka_errors``). Reusable, and cheap enough for a call per record.
    """

    __slots__ = ("advice", "errors", "raises", "what")

    def __init__(self, errors: type[BaseException], what: What, advice: str = "", *,
                 raises: type[BackendError] = BackendError) -> None:
        self.errors, self.what, self.advice, self.raises = errors, what, advice, raises

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if isinstance(exc, self.errors):
            raise self.error(exc) from exc

    def error(self, problem: object) -> BackendError:
        """The BackendError for ``problem`` (an exception, or an error a client reports as a value)."""
        message = self.what(problem) if callable(self.what) else f"{self.what}: {problem}"
        return self.raises(f"{message}; {self.advice}" if self.advice else message)

    def fail(self, problem: object) -> NoReturn:
        """Raise the BackendError for ``problem``."""
        raise self.error(problem)


RESUBMIT = "resubmit the same draft (safe: the ledger records a request once and traces a resubmission)"
"""What an adapter does on IntakeUnavailable, said by every message of one."""


def not_acknowledged(error: object) -> str:
    """What an acknowledged producer says when the broker did not acknowledge a record."""
    return f"Kafka did not acknowledge the intake record ({error}); it may or may not be stored: {RESUBMIT}"


def unreachable(bootstrap_servers: str) -> Callable[[object], str]:
    """What an acknowledged producer says when it cannot reach the cluster: nothing was stored."""
    return lambda error: f"cannot reach Kafka at {bootstrap_servers} ({error}); nothing was stored: once it is back, {RESUBMIT}"


def missing_topic(topic: str, reason: object = None, *, raises: type[BackendError] = BackendError) -> BackendError:
    """A producer's error for a topic the cluster does not have."""
    because = f" ({reason})" if reason is not None else ""
    advice = f"; nothing was stored: once it exists, {RESUBMIT}" if raises is not BackendError else ""
    return raises(f"topic {topic} does not exist{because}; create it with `caseledger topics create`{advice}")
