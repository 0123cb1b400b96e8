"""The unit floor's guard: a unit test that needs a server fails loudly, at collection or when it asks.

The fast loop (``python -m pytest tests/unit``) must start no PostgreSQL, Kafka broker, Java, browser or
HTTP service: a test that needs one belongs in tests/contracts, tests/integration or tests/system.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import pytest

UNIT = Path(__file__).resolve().parent
#: The session fixtures that start a server, a JVM or a browser.
SERVER_FIXTURES = ("postgres", "kafka_broker", "kafka_bootstrap", "avro_java", "go_interop", "chromium", "imap_server",
                   "smtp_server", "litewitness")
#: The support modules that start servers; a unit module uses nothing of theirs.
SERVER_MODULES = ("tests.support.kafka_broker", "tests.support.kafka_topics", "tests.support.avro_java",
                  "tests.support.browser", "tests.support.service_server", "tests.support.tampering",
                  "tests.support.go_programs", "tests.support.mail_servers", "tests.support.litewitness")


def _why(what: str) -> str:
    return (f"a unit test needs {what}, a server; tests/unit runs none. "
            "Move the test to tests/contracts, tests/integration or tests/system.")


def _refuse(what: str, where: str) -> NoReturn:
    raise pytest.UsageError(f"{where}: {_why(what)}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if UNIT not in item.path.parents:
            continue
        servers = [f for f in SERVER_FIXTURES if f in getattr(item, "fixturenames", ())]
        params = getattr(getattr(item, "callspec", None), "params", {})
        servers += [f"a {v} backend" for v in ("postgres", "kafka") if v in params.values()]
        if servers:
            _refuse(" and ".join(servers), item.nodeid)
        module = getattr(item, "module", None)
        used = sorted({getattr(value, "__module__", "") for value in vars(module).values()} & set(SERVER_MODULES)
                      ) if module else []
        if used:
            _refuse(f"what {', '.join(used)} starts", item.nodeid)


def _server_fixture(name: str) -> object:
    @pytest.fixture(scope="session", name=name)
    def refused() -> NoReturn:
        pytest.fail(_why(f"the {name} fixture"), pytrace=False)

    return refused


# Shadows the real fixtures under tests/unit, so a server asked for at run time (getfixturevalue) fails too.
postgres = _server_fixture("postgres")
kafka_broker = _server_fixture("kafka_broker")
kafka_bootstrap = _server_fixture("kafka_bootstrap")
avro_java = _server_fixture("avro_java")
chromium = _server_fixture("chromium")
litewitness = _server_fixture("litewitness")
