"""What ``caseledger run`` runs: its services, built the same way as threads of one process or one child process each.

A :class:`ServicePlan` holds the run's options as plain values, so it crosses to a child process as one
line of JSON on the child's stdin (:func:`child_main` reads it there); the environment (database URL,
keys, CASELEDGER_* settings) the child inherits. Each child builds the one service it is told to run,
exactly as the one-process form builds it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from caseledger.cli.common import Session
    from caseledger.ledger.runtime.child_processes import ChildCommand
    from caseledger.ledger.runtime.supervisor import ServiceBuilder
    from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner

CORE_SERVICES = ("intake", "publisher")
CHILD_MAIN = "from caseledger.cli.service_plan import child_main; child_main()"
"""What a child of ``caseledger run --processes`` runs (``python -c``): how a process is recognised as one."""


@dataclass(frozen=True)
class ServicePlan:
    """The options of ``caseledger run``, and the projection groups it runs (each a service: group name → projection names)."""

    database: str | None
    policy: str | None
    kafka: str | None
    consumer: str
    producer: str
    aggregate_cache: int
    signatures: bool | None
    transaction_interval_ms: int
    projection_groups: dict[str, list[str]] = field(default_factory=dict)
    memory_trace: str | None = None
    memory_trace_every: float = 60.0
    memory_trace_sites: bool = False

    @property
    def names(self) -> list[str]:
        """The services, in the order they start."""
        return [*CORE_SERVICES, *self.projection_groups]

    def builders(self, s: Session, signer: CheckpointSigner | None,
                 only: str | None = None) -> dict[str, ServiceBuilder]:
        """How to build each service (or only the one named ``only``), each given its own ledger connection."""
        from caseledger.ledger.intake.worker import KafkaIntakeWorker
        from caseledger.ledger.kafka.publisher import KafkaEventPublisher
        from caseledger.ledger.settings import KafkaSettings

        def settings() -> KafkaSettings:  # when a Kafka service is built: the projections alone may do without
            return KafkaSettings.resolve(bootstrap_servers=self.kafka, settings=s.settings.kafka)

        builders: dict[str, ServiceBuilder] = {
            "intake": lambda ledger: KafkaIntakeWorker(
                ledger(), settings(), consumer=self.consumer, aggregate_cache=self.aggregate_cache,
                require_signatures=self.signatures),
            "publisher": lambda ledger: KafkaEventPublisher(
                ledger(), settings(), producer=self.producer,
                transaction_interval_s=self.transaction_interval_ms / 1000, signer=signer),
        }
        for name, projections in self.projection_groups.items():
            builders[name] = self._projections(s, projections)
        return {name: build for name, build in builders.items() if only in (None, name)}

    def _projections(self, s: Session, names: list[str]) -> ServiceBuilder:
        from caseledger.projections.catchup import ProjectionService
        from caseledger.projections.registry import load_projections

        # Only a projection that follows the store opens a ledger connection, in its own thread.
        return lambda ledger: ProjectionService(
            s.views_url(), ledger=ledger, kafka=s.kafka_if_configured(self.kafka), consumer=self.consumer,
            projections=load_projections(names))

    def child(self, name: str) -> ChildCommand:
        """The command line of the child process that runs service ``name``, and its orders."""
        from caseledger.ledger.runtime.child_processes import ChildCommand

        orders = {"service": name, "parent": os.getpid(), "plan": asdict(self)}
        # the service's name ends the command line, for ps and top (the child reads its orders, not its arguments)
        return ChildCommand(argv=[sys.executable, "-c", CHILD_MAIN, name], orders=json.dumps(orders).encode())

    def memory_traced(self, service: str | None = None) -> AbstractContextManager[object]:
        """With ``--memory-trace FILE``, a trace of this process to FILE (to FILE.<service> in a service's child)."""
        if self.memory_trace is None:
            return nullcontext()
        from caseledger.ledger.runtime.memory_trace import MemoryTrace

        path = Path(self.memory_trace if service is None else f"{self.memory_trace}.{service}")
        return MemoryTrace(path, every_s=self.memory_trace_every, sites=self.memory_trace_sites)


def child_main() -> None:
    """A child of ``caseledger run --processes``: run the service the parent's orders name until stopped.

    SIGTERM (from the parent, or from Linux when the parent dies) stops it after its batch; Ctrl-C in a
    terminal reaches every process of the group, so the child leaves it to the parent. Exit status 0
    once stopped, 1 when the service failed (its error logged).
    """
    from caseledger.cli.common import Session, setup_logging, stop_on_signals
    from caseledger.ledger.runtime.child_processes import read_orders, stay_with_parent
    from caseledger.ledger.runtime.supervisor import serve

    orders = json.loads(read_orders())
    plan = ServicePlan(**orders["plan"])
    name = orders["service"]
    setup_logging()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log = logging.getLogger(f"caseledger.{name}")
    s = Session(database=plan.database, policy=plan.policy, actor_given=None, now=None, zone=None)
    try:
        with stop_on_signals() as stop:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            stay_with_parent(orders["parent"], stop)
            signer = None
            if name == "publisher":
                from caseledger.ledger.transparency.checkpoint_key import load_signer

                signer = load_signer(s.settings.transparency)
            with plan.memory_traced(name):
                serve(s.new_ledger, name, plan.builders(s, signer, only=name)[name], stop)
    except Exception:
        log.exception("%s failed", name)
        sys.exit(1)
    finally:
        s.close()
