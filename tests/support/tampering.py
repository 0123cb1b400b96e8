"""A ledger built once per backend through the real intake topic, worker, agents and publisher, and the
raw SQL a database operator could run to tamper with it (the audit's tests and the checkpoint's)."""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from kafka import KafkaProducer

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.avro.codec import AvroEventCodec
from caseledger.ledger.domain.catalog import name_of_topic
from caseledger.ledger.domain.values import Actor, ContactDraft, Identity
from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
from caseledger.ledger.intake.records import DeliveryReport
from caseledger.ledger.intake.worker import KafkaIntakeWorker
from caseledger.ledger.settings import KafkaSettings
from tests.support.environment import ledger_settings
from tests.support.kafka_topics import drain, fresh_topics, publish_all
from tests.support.postgres import PostgresServer

CODEC = AvroEventCodec()
AGENT = Actor.parse("agent:alice")


# -- the store, raw ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredRow:
    position: int
    aggregate: uuid.UUID
    version: int
    topic: str
    state: bytes

    @property
    def name(self) -> str:
        return name_of_topic(self.topic)

    @property
    def event(self) -> Any:
        return CODEC.decode(self.name, self.state)


class RawStore:
    """Direct SQL on eventsourcing's tables, as a database operator could run it."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.postgres = database.startswith("postgresql://")
        self.table, self.position = ("caseledger_events", "notification_id") if self.postgres else (
            "stored_events", "rowid")

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        if self.postgres:
            import psycopg

            with psycopg.connect(self.database) as conn:
                cursor = conn.execute(sql.replace("?", "%s"), params)
                return cursor.fetchall() if cursor.description else []
        conn = sqlite3.connect(self.database)
        try:
            with conn:
                return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def rows(self) -> list[StoredRow]:
        rows = self._run(f"SELECT {self.position}, originator_id, originator_version, topic, state FROM {self.table} "
                         f"ORDER BY {self.position}")
        return [StoredRow(p, uuid.UUID(str(o)), v, t, bytes(s)) for p, o, v, t, s in rows]

    def update_state(self, position: int, state: bytes) -> None:
        self._run(f"UPDATE {self.table} SET state = ? WHERE {self.position} = ?", (state, position))

    def delete(self, *positions: int) -> None:
        for position in positions:
            self._run(f"DELETE FROM {self.table} WHERE {self.position} = ?", (position,))

    def insert(self, aggregate: uuid.UUID, version: int, topic: str, state: bytes) -> int:
        oid: Any = aggregate if self.postgres else aggregate.hex
        self._run(f"INSERT INTO {self.table} (originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?)",
                  (oid, version, topic, state))
        return int(self._run(f"SELECT MAX({self.position}) FROM {self.table}")[0][0])


def forge(row: StoredRow, **changes: Any) -> bytes:
    """``row``'s event re-encoded with some envelope or payload fields changed."""
    event = row.event
    state = vars(event)
    state.pop("_stored_hash", None)
    state.update(changes)
    return CODEC.encode(event)


# -- one populated ledger per backend -------------------------------------------------------------------


@dataclass
class Built:
    database: str
    kafka: KafkaSettings
    make_copy: Any  # () -> database of a fresh copy

    def copy(self) -> str:
        return self.make_copy()  # type: ignore[no-any-return]


def customer_contacts() -> list[ContactDraft]:
    return [
        ContactDraft(channel=("email", "chat", "phone", "web_form")[n % 4], channel_message_id=f"m{n}",
                     identity=Identity.parse(f"email:c{n % 4}@example.com"), items=(f"question {n}", "and another"),
                     body=f"Dear support, message number {n}.")
        for n in range(12)
    ]


def populate(database: str, kafka: KafkaSettings) -> None:
    """Contacts, a resubmission, a malformed record and reports through intake; agent work; publishing."""
    ledger = CaseLedger(ledger_settings(database=database))
    try:
        with KafkaIntakeClient(kafka, adapter="audit-test") as client:
            client.submit_many([*customer_contacts(), customer_contacts()[1]])  # m1 twice
        raw = KafkaProducer(**kafka.client_options())
        raw.send(kafka.intake_topic, key=b"bad", value=b"not an intake record")
        raw.flush()
        raw.close()
        worker = KafkaIntakeWorker(ledger, kafka, batch_size=5)
        drain(worker, until=14)
        case = ledger.find_by_message("email", "m0")
        with KafkaIntakeClient(kafka, adapter="audit-test") as client:
            client.submit(DeliveryReport(case_reference=case.reference, message_id="ACK1",
                                         delivered_at=datetime.now(UTC)))
        drain(KafkaIntakeWorker(ledger, kafka), until=1)
        for n in range(0, 12, 3):
            ref = ledger.find_by_message(("email", "chat", "phone", "web_form")[n % 4], f"m{n}").reference
            ledger.respond(ref, actor=AGENT, body=f"Answer {n}", answers=["Q1"])
            ledger.make_promise(ref, actor=AGENT, channel="phone", kind="callback", terms="we call you back",
                                due_at=datetime.now(UTC) + timedelta(days=2))
        ledger.close_case(case.reference, actor=AGENT, reason="answered", notice="Closed.",
                          waive={"Q2": "asked twice", "P1": "customer called us first"})
        publish_all(ledger, kafka)
    finally:
        ledger.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def built(request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Built:
    kafka = fresh_topics(kafka_bootstrap)
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("audit")
        database = str(folder / "base.sqlite")
        populate(database, kafka)

        def sqlite_copy() -> str:
            target = folder / f"copy-{uuid.uuid4().hex[:6]}.sqlite"
            shutil.copy(database, target)
            return str(target)

        return Built(database, kafka, sqlite_copy)
    server: PostgresServer = request.getfixturevalue("postgres")
    database = server.new_database()
    populate(database, kafka)

    def postgres_copy() -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{urlsplit(database).path.lstrip("/")}"')
        base, _, query = database.partition("?")
        return base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")

    return Built(database, kafka, postgres_copy)



def middle_of_case(rows: list[StoredRow], name: str = "ContactReceived") -> tuple[StoredRow, StoredRow]:
    """An event of ``name`` that has a later event in its aggregate, and that later event."""
    for row in rows:
        if row.name == name:
            after = [r for r in rows if r.aggregate == row.aggregate and r.version == row.version + 1]
            if after:
                return row, after[0]
    raise AssertionError(f"no {name} in the middle of an aggregate")


def alter_sealed_text(state: bytes) -> bytes:
    """The stored bytes with one character of the last sealed text changed (personal data is sealed)."""
    at = state.rindex(b"enc:1:") + 40  # inside the token's base64, past its key id
    swapped = b"B" if state[at : at + 1] != b"B" else b"C"
    return state[:at] + swapped + state[at + 1 :]
