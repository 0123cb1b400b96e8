"""The floors of the suite, and the fixtures every floor may use (from ``tests/support``).

``tests/unit`` runs no server (the fast loop); ``tests/contracts`` runs each port's contract on every
backend; ``tests/integration`` runs features against a real PostgreSQL, Kafka and the HTTP service on
loopback; ``tests/system`` runs the product whole: containers, Java, a browser, crashes, benchmarks,
the installed wheel. Each test is marked by its folder (``unit``, ``contract``, ``integration``,
``system``) and, by the fixtures it uses, ``postgres`` and ``kafka``: ``-m "not kafka"`` and the like.

Nothing here skips: when a server cannot start, the tests that need it error, and CI fails.
``CASELEDGER_TEST_POSTGRES`` (an admin URL) and ``CASELEDGER_TEST_KAFKA`` (bootstrap servers)
point the same tests at external servers, e.g. the compose stack.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

# One key-encryption key for the session's ledgers (PostgreSQL ones need one; CLI subprocesses inherit
# it). The privacy tests unset it to check the embedded default, a key file beside the database.
os.environ.setdefault("CASELEDGER_KEK", base64.b64encode(os.urandom(32)).decode())

pytest_plugins = [
    "tests.support.clock",
    "tests.support.postgres",
    "tests.support.ledgers",
    "tests.support.signed_ledgers",
    "tests.support.kafka_broker",
    "tests.support.kafka_topics",
    "tests.support.avro_java",
    "tests.support.go_programs",
    "tests.support.browser",
    "tests.support.mail_servers",
    "tests.support.litewitness",
    "tests.support.tampering",
    "tests.support.stories",
    "tests.support.projection_plugins",
]

TESTS = Path(__file__).resolve().parent
#: Folder → the marker its tests carry.
FLOORS = {"unit": "unit", "contracts": "contract", "integration": "integration", "system": "system"}
#: Marker → the session fixtures (or a backend parameter's value) that mean a test needs that server.
#: The pytest-xdist groups of the tests that start servers (``--dist loadgroup``, pyproject's addopts).
KAFKA_GROUP, SERVERS_GROUP = "kafka", "servers"
SERVERS = {"postgres": {"postgres"}, "kafka": {"kafka_broker", "kafka_bootstrap"}}


def needs(item: pytest.Item, server: str) -> bool:
    """Whether ``item`` uses ``server``: through a fixture, or a parameter (e.g. ``database``) set to it."""
    fixtures = set(getattr(item, "fixturenames", ()))
    params = getattr(getattr(item, "callspec", None), "params", {})
    return bool(fixtures & SERVERS[server]) or server in params.values()


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        floor = FLOORS.get(item.path.relative_to(TESTS).parts[0])
        if floor is None:
            raise pytest.UsageError(f"{item.nodeid}: a test module belongs in a floor: tests/{{{','.join(FLOORS)}}}/")
        item.add_marker(floor)
        if floor != "unit":
            # Two groups, one per worker (pytest-xdist, --dist loadgroup): the tests on Kafka run one after the
            # other against one broker, the other server tests (PostgreSQL, the service, Java, a browser, the
            # wheel) on the other worker; unit tests fill in beside both.
            item.add_marker(pytest.mark.xdist_group(KAFKA_GROUP if needs(item, "kafka") else SERVERS_GROUP))
        for server in SERVERS:
            if needs(item, server):
                item.add_marker(server)
