"""The case state projection as an analyst would write it with quixstreams: ``bench rebuild``'s peer.

What someone who does not use caseledger's projection runner would write to get the same table:
a quixstreams ``Application`` reading the events topic, each record decoded with the product's
public decoder (``caseledger.ledger.decode_event``, docs/analysts.md), the case's row kept in
quixstreams' state (RocksDB, one store per partition: the topic is keyed by customer, so a case's
events are in one partition, in order), and a ``BatchingSink`` writing the rows into PostgreSQL
with psycopg at each checkpoint. The rows are those of ``projections/case_state.py`` column for
column; ``bench rebuild`` checks it, row by row (:func:`measure_peer`, at the end: the peer beside
caseledger's runner, on the same topic, into the same PostgreSQL).

It is written to be fast, not to lose: records of events the table ignores are dropped on their
``ce_type`` header before any decoding; the columns computed from a row's lists are computed once
per row and checkpoint, in the sink, not once per event; the sink keeps the last row of each case
of a checkpoint and loads them with binary COPY into a staging table, then one upsert; no changelog
topic (quixstreams' default writes every state change to Kafka a second time; caseledger's runner
writes nothing to Kafka either).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from caseledger.ledger.errors import ConfigurationError

Row = dict[str, Any]
Record = dict[str, Any]

TIME_COLUMNS = ("opened_at", "last_contact_at", "respond_by", "next_promise_due", "updated_at")
JSON_COLUMNS = ("channels", "open_items", "open_promises", "brief", "contacts", "items", "promises", "messages",
                "proposals", "missed", "escalations")
INT_COLUMNS = ("follow_ups", "handoffs", "events")
COLUMNS = ("case_id", "reference", "customer_id", "subject", "category", "segment", "status", "opened_at",
           "assignee", "team", "follow_ups", "handoffs", "last_contact_at", "last_contact_channel", "respond_by",
           "next_promise_due", "channels", "open_items", "open_promises", "brief", "contacts", "items", "promises",
           "messages", "proposals", "missed", "escalations", "events", "updated_at")


def _text(value: datetime | None) -> str | None:
    """Times as the state and the JSON columns keep them: ISO-8601 UTC to the microsecond."""
    return value.astimezone(UTC).isoformat(timespec="microseconds") if value is not None else None


def _find(entries: list[Row], key: str, value: str) -> Row:
    return next(entry for entry in entries if entry[key] == value)


def _message(row: Row, message_id: str, channel: str | None, **fields: Any) -> None:
    row["messages"].append({"message_id": message_id, "channel": channel, "due_at": None, "text": None,
                            "delivered_at": None, "read_by": [], **fields})


# -- one function per event type: the row after the event --------------------------------------------------


def case_opened(row: Row | None, e: Record, env: Record) -> Row:
    return {
        "case_id": str(env["aggregate_id"]), "reference": e["reference"], "customer_id": env["customer_id"],
        "subject": e["subject"], "category": e["category"], "segment": e["segment"], "status": "open",
        "opened_at": _text(env["occurred_at"]), "assignee": None, "team": None, "follow_ups": 0, "handoffs": 0,
        "last_contact_at": None, "last_contact_channel": None, "contacts": [], "items": [], "promises": [],
        "messages": [], "proposals": [], "missed": [], "escalations": [], "events": 0,
    }


def contact_received(row: Row, e: Record, env: Record) -> Row:
    for item in e["items"]:
        row["items"].append({"item_id": item["item_id"], "text": item["text"], "contact_id": e["contact_id"],
                             "status": "open", "answered_by": None, "waived_reason": None})
    row["contacts"].append({
        "contact_id": e["contact_id"], "channel": str(env["channel"]), "channel_message_id": e["channel_message_id"],
        "received_at": _text(env["occurred_at"]), "subject": e["subject"],
        "item_ids": [i["item_id"] for i in e["items"]], "follow_up": e["follow_up"], "respond_by": None,
        "acknowledgement_id": None,
    })
    _message(row, e["contact_id"], env["channel"])
    row["follow_ups"] += bool(e["follow_up"])
    row["last_contact_at"], row["last_contact_channel"] = _text(env["occurred_at"]), str(env["channel"])
    return row


def acknowledgement_issued(row: Row, e: Record, env: Record) -> Row:
    contact = _find(row["contacts"], "contact_id", e["contact_id"])
    contact["respond_by"], contact["acknowledgement_id"] = _text(e["respond_by"]), e["acknowledgement_id"]
    _message(row, e["acknowledgement_id"], env["channel"], due_at=_text(e["acknowledge_by"]), text=e["text"])
    return row


def response_sent(row: Row, e: Record, env: Record) -> Row:
    for item_id in e["answers"]:
        item = _find(row["items"], "item_id", item_id)
        item["status"], item["answered_by"] = "answered", e["response_id"]
    _message(row, e["response_id"], env["channel"])
    return row


def item_waived(row: Row, e: Record, env: Record) -> Row:
    item = _find(row["items"], "item_id", e["item_id"])
    item["status"], item["waived_reason"] = "waived", e["reason"]
    return row


def promise_made(row: Row, e: Record, env: Record) -> Row:
    row["promises"].append({
        "promise_id": e["promise_id"], "kind": e["kind"], "terms": e["terms"], "due_at": _text(e["due_at"]),
        "made_by": f"{env['actor']['kind']}:{env['actor']['id']}", "channel": str(env["channel"]), "status": "open",
        "confirmation_id": None, "closing_note": None,
    })
    return row


def written_confirmation_issued(row: Row, e: Record, env: Record) -> Row:
    _find(row["promises"], "promise_id", e["promise_id"])["confirmation_id"] = e["confirmation_id"]
    _message(row, e["confirmation_id"], env["channel"], due_at=_text(e["deliver_by"]), text=e["text"])
    return row


def settled(status: str, note: str, *, notice: bool = False) -> Callable[[Row, Record, Record], Row]:
    def settle(row: Row, e: Record, env: Record) -> Row:
        if notice:
            _message(row, e["notice_id"], env["channel"], text=e["text"] or e["notice"])
        promise = _find(row["promises"], "promise_id", e["promise_id"])
        promise["status"], promise["closing_note"] = status, e[note]
        return row
    return settle


def noticed(status: str | None) -> Callable[[Row, Record, Record], Row]:
    def notice(row: Row, e: Record, env: Record) -> Row:
        _message(row, e["notice_id"], env["channel"], text=e["text"] or e["notice"])
        row["status"] = status or e["to_status"]
        return row
    return notice


def case_assigned(row: Row, e: Record, env: Record) -> Row:
    row["assignee"], row["team"] = e["assignee"], e["team"]
    return row


def handed_off(row: Row, e: Record, env: Record) -> Row:
    row["handoffs"] += 1
    row["assignee"], row["team"] = e["to_assignee"], e["to_team"]
    return row


def escalated_to_human(row: Row, e: Record, env: Record) -> Row:
    row["escalations"].append({"bot_id": e["bot_id"], "waiting_since": _text(e["waiting_since"]),
                               "wait_seconds": e["wait_seconds"]})
    if e["to_team"]:
        row["team"] = e["to_team"]
    return row


def action_proposed(row: Row, e: Record, env: Record) -> Row:
    row["proposals"].append({"proposal_id": e["proposal_id"], "rule_id": e["rule_id"], "action": e["action"],
                             "params": dict(e["params"]), "rationale": e["rationale"], "status": "proposed",
                             "decided_by": None})
    return row


def decided(status: str, *, by: bool) -> Callable[[Row, Record, Record], Row]:
    def decide(row: Row, e: Record, env: Record) -> Row:
        proposal = _find(row["proposals"], "proposal_id", e["proposal_id"])
        proposal["status"] = status
        if by:
            proposal["decided_by"] = f"{env['actor']['kind']}:{env['actor']['id']}"
        return row
    return decide


def deadline_missed(row: Row, e: Record, env: Record) -> Row:
    missed = [e["deadline_kind"], e["target_id"]]
    if missed not in row["missed"]:
        row["missed"] = sorted([*row["missed"], missed])
    return row


def message_delivered(row: Row, e: Record, env: Record) -> Row:
    message = _find(row["messages"], "message_id", e["message_id"])
    message["delivered_at"], message["failure"] = _text(e["delivered_at"]), None
    return row


def message_delivery_failed(row: Row, e: Record, env: Record) -> Row:
    _find(row["messages"], "message_id", e["message_id"])["failure"] = e["reason"]
    return row


def message_read(row: Row, e: Record, env: Record) -> Row:
    _find(row["messages"], "message_id", e["message_id"])["read_by"].append(f"{e['reader_kind']}:{e['reader_id']}")
    return row


UPDATES: dict[str, Callable[[Any, Record, Record], Row]] = {
    "CaseOpened": case_opened, "ContactReceived": contact_received, "AcknowledgementIssued": acknowledgement_issued,
    "ResponseSent": response_sent, "ItemWaived": item_waived, "PromiseMade": promise_made,
    "WrittenConfirmationIssued": written_confirmation_issued, "PromiseKept": settled("kept", "evidence"),
    "PromiseWithdrawn": settled("withdrawn", "reason", notice=True), "PromiseBroken": settled("broken", "reason"),
    "PromiseWaived": settled("waived", "reason"), "StatusChanged": noticed(None), "CaseClosed": noticed("closed"),
    "CaseCancelled": noticed("cancelled"), "CaseReopened": noticed("open"), "CaseAssigned": case_assigned,
    "HandedOff": handed_off, "EscalatedToHuman": escalated_to_human, "ActionProposed": action_proposed,
    "ActionApproved": decided("approved", by=True), "ActionRejected": decided("rejected", by=True),
    "ActionExecuted": decided("executed", by=False), "DeadlineMissed": deadline_missed,
    "MessageDelivered": message_delivered, "MessageDeliveryFailed": message_delivery_failed,
    "MessageRead": message_read,
}
HANDLED_TYPES = {f"caseledger.events.{name}".encode() for name in UPDATES}


def apply_event(value: bytes, state: Any) -> Row:
    """The case's row after one event; the rows live in the state under their case id."""
    from caseledger.ledger import decode_event

    event_type, record = decode_event(value)
    env = record["envelope"]
    case_id = str(env["aggregate_id"])
    row = UPDATES[event_type](state.get(case_id), record, env)
    row["events"] += 1
    row["updated_at"] = _text(env["recorded_at"])
    state.set(case_id, row)
    return row


def handled(value: bytes, key: Any, timestamp: int, headers: Any) -> bool:
    """Whether the record is an event the table takes (its ``ce_type`` header), before decoding it."""
    return any(name == "ce_type" and header in HANDLED_TYPES for name, header in headers or ())


# -- the sink ------------------------------------------------------------------------------------------------


def table_row(row: Row) -> tuple[Any, ...]:
    """The row as the table's columns, with those computed from its lists."""
    open_items = [i for i in row["items"] if i["status"] == "open"]
    open_ids = {i["item_id"] for i in open_items}
    open_promises = [{"promise_id": p["promise_id"], "terms": p["terms"], "due_at": p["due_at"]}
                     for p in row["promises"] if p["status"] == "open"]
    last = {c["channel"]: c for c in row["contacts"]}
    pending = [c["respond_by"] for c in row["contacts"]
               if c["respond_by"] and any(i in open_ids for i in c["item_ids"])]
    dues = [p["due_at"] for p in open_promises]
    full = {
        **row, "respond_by": min(pending) if pending else None, "next_promise_due": min(dues) if dues else None,
        "channels": sorted(last), "open_items": [i["item_id"] for i in open_items], "open_promises": open_promises,
        "brief": {
            "open_items": [{"item_id": i["item_id"], "text": i["text"], "contact_id": i["contact_id"]}
                           for i in open_items],
            "open_promises": open_promises,
            "last_contacts": [{"channel": ch, "contact_id": c["contact_id"], "received_at": c["received_at"],
                               "subject": c["subject"]} for ch, c in sorted(last.items())],
        },
    }
    for column in TIME_COLUMNS:
        if full[column] is not None:
            full[column] = datetime.fromisoformat(full[column])
    for column in JSON_COLUMNS:
        full[column] = json.dumps(full[column], sort_keys=True, separators=(",", ":"))
    return tuple(full[c] for c in COLUMNS)


def table_ddl(table: str) -> str:
    """The table, typed as caseledger's views type the case state's columns."""
    types = {c: "TIMESTAMPTZ" if c in TIME_COLUMNS else "BIGINT" if c in INT_COLUMNS else "TEXT" for c in COLUMNS}
    columns = ", ".join(f"{c} {types[c]}" for c in COLUMNS)
    return (f"CREATE TABLE IF NOT EXISTS {table} ({columns}, PRIMARY KEY (case_id));"
            f"CREATE INDEX IF NOT EXISTS {table.replace('.', '_')}_reference ON {table} (reference);"
            f"CREATE INDEX IF NOT EXISTS {table.replace('.', '_')}_customer ON {table} (customer_id);"
            f"CREATE INDEX IF NOT EXISTS {table.replace('.', '_')}_due ON {table} (status, respond_by)")


def _sink_class() -> type:
    from quixstreams.sinks import BatchingSink

    class PostgresCaseStateSink(BatchingSink):  # type: ignore[misc]
        """Upserts the last row of each case of a checkpoint: binary COPY into a staging table, one upsert."""

        def __init__(self, conninfo: str, table: str) -> None:
            super().__init__()
            self.conninfo, self.table = conninfo, table
            self.conn: Any = None

        def setup(self) -> None:
            import psycopg

            self.conn = psycopg.connect(self.conninfo, autocommit=True)
            self.conn.execute("SET TIME ZONE 'UTC'")
            schema = self.table.partition(".")[0] if "." in self.table else None
            if schema:
                self.conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            self.conn.execute(table_ddl(self.table))
            self.conn.execute(f"CREATE TEMP TABLE case_state_stage (LIKE {self.table}) ON COMMIT DELETE ROWS")

        def write(self, batch: Any) -> None:
            last: dict[str, Row] = {}
            for item in batch:
                last[item.value["case_id"]] = item.value
            columns = ", ".join(COLUMNS)
            updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c != "case_id")
            with self.conn.transaction(), self.conn.cursor() as cursor:
                with cursor.copy(f"COPY case_state_stage ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["timestamptz" if c in TIME_COLUMNS else "int8" if c in INT_COLUMNS else "text"
                                    for c in COLUMNS])
                    for row in last.values():
                        copy.write_row(table_row(row))
                cursor.execute(f"INSERT INTO {self.table} ({columns}) SELECT {columns} FROM case_state_stage "
                               f"ON CONFLICT (case_id) DO UPDATE SET {updates}")

        def close(self) -> None:
            if self.conn is not None:
                self.conn.close()

    return PostgresCaseStateSink


# -- running it once over a whole topic (the benchmark's side) ----------------------------------------------------


def require_quixstreams() -> None:
    """Refuse, before anything starts, to run the peer without quixstreams."""
    try:
        import quixstreams  # noqa: F401
    except ImportError:
        raise ConfigurationError("bench rebuild's peer needs quixstreams: pip install 'caseledger[bench]', "
                                 "or pass --no-peer") from None


def rebuild_with_quixstreams(
    *, bootstrap: str, topic: str, conninfo: str, table: str, records: int, state_dir: Path, group: str,
) -> tuple[int, float]:
    """Run the peer over the whole topic (``records`` records) into ``table``; (records read, seconds).

    The seconds run from the first record read to the last checkpoint written: the consumer group's
    join before it is not counted (caseledger's runner assigns its partitions and has none).
    """
    require_quixstreams()
    from quixstreams import Application

    app = Application(broker_address=bootstrap, consumer_group=group, auto_offset_reset="earliest",
                      use_changelog_topics=False, state_dir=str(state_dir), loglevel=logging.WARNING)
    events = app.topic(topic, key_deserializer="bytes", value_deserializer="bytes")
    sink = _sink_class()(conninfo, table)
    seen, started = [0], [0.0]

    def count(value: bytes) -> None:  # the benchmark's bookkeeping: stop once every record is read
        if not seen[0]:
            started[0] = time.perf_counter()
        seen[0] += 1
        if seen[0] >= records:
            app.stop()

    sdf = app.dataframe(events)
    sdf = sdf.update(count)
    sdf = sdf.filter(handled, metadata=True)
    sdf = sdf.apply(apply_event, stateful=True)
    sdf.sink(sink)
    try:
        app.run()
    finally:
        sink.close()
    return seen[0], time.perf_counter() - started[0]


def differing_rows(conninfo: str, table: str, other: str) -> tuple[int, int, int]:
    """(rows of ``table``, rows of ``other``, rows in one and not the other): PostgreSQL compares them row by
    row, the JSON columns as ``jsonb`` (the same values, whichever key order or spacing wrote them)."""
    import psycopg

    values = ", ".join(f"{c}::jsonb" if c in JSON_COLUMNS else c for c in COLUMNS)
    with psycopg.connect(conninfo) as conn:
        size = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
        size_other = conn.execute(f"SELECT count(*) FROM {other}").fetchone()[0]  # type: ignore[index]
        differing = conn.execute(
            f"SELECT count(*) FROM ((SELECT {values} FROM {table} EXCEPT ALL SELECT {values} FROM {other}) "
            f"UNION ALL (SELECT {values} FROM {other} EXCEPT ALL SELECT {values} FROM {table})) AS d"
        ).fetchone()[0]  # type: ignore[index]
    return int(size), int(size_other), int(differing)


# -- side by side with caseledger's runner ----------------------------------------------------------------


@dataclass
class PeerResult:
    """case_state alone, rebuilt by caseledger's runner and by the quixstreams peer from the same topic."""

    runner_events_per_s: float
    peer_events_per_s: float
    ratio: float  # runner ÷ peer
    rows: int
    peer_rows: int
    differing_rows: int  # rows in one table and not in the other, the peer's against the runner's

    def report(self) -> list[tuple[str, str]]:
        return [
            ("case_state alone, caseledger's runner (1 process), events/s", f"{self.runner_events_per_s:,.0f}"),
            ("case_state alone, quixstreams peer (1 process, docs/benchmarks.md), events/s",
             f"{self.peer_events_per_s:,.0f}"),
            ("caseledger ÷ peer (target ≥ 2×)", f"{self.ratio:.2f}×"),
            ("peer's table against the runner's, row by row",
             "identical" if self.identical else
             f"DIFFERENT: {self.differing_rows:,} rows differ ({self.rows:,} against {self.peer_rows:,})"),
        ]

    @property
    def identical(self) -> bool:
        return self.differing_rows == 0 and self.rows == self.peer_rows


def measure_peer(settings: Any, postgres_url: str, *, records: int, consumer: str, batch_size: int,
                 state_dir: Path, say: Callable[[str], None]) -> PeerResult:
    """Rebuild case_state alone from the topic, with caseledger's runner (schema ``runner``) then with the
    quixstreams peer (schema ``peer``); compare their rates and their tables."""
    from caseledger.projections.case_state import CaseState
    from caseledger.projections.runner import rebuild
    from caseledger.projections.sources import kafka_source
    from caseledger.projections.view_stores import open_views

    say("case_state alone with caseledger's runner")
    base, _, query = postgres_url.partition("?")
    with open_views(f"{base}?{query + '&' if query else ''}schema=runner") as views:
        source = kafka_source(settings, consumer=consumer)
        try:
            ours = rebuild([CaseState()], views, source, batch_size=batch_size)
        finally:
            source.close()
    say("case_state alone with the quixstreams peer")
    conninfo = base + (f"?{query}" if query else "")
    read, seconds = rebuild_with_quixstreams(
        bootstrap=settings.bootstrap_servers, topic=settings.events_topic, conninfo=conninfo,
        table="peer.case_state", records=records, state_dir=state_dir, group=f"peer-{uuid.uuid4().hex[:8]}")
    rows, peer_rows, differing = differing_rows(conninfo, "runner.case_state", "peer.case_state")
    runner_rate, peer_rate = ours.records / ours.seconds, read / seconds
    return PeerResult(runner_events_per_s=runner_rate, peer_events_per_s=peer_rate, ratio=runner_rate / peer_rate,
                      rows=rows, peer_rows=peer_rows, differing_rows=differing)
