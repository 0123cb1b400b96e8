"""bench intake's traffic mix (issue 29) showed a read receipt cost the intake worker about three store round trips of
its own: naming its reader (``customer:email:…``) looked the customer up by id (a miss), then the identity's lookup
secret, then its claim, one receipt at a time (9 % of the worker's samples at a 15 % share of reads). A batch now
reads them with the batch's other aggregates: the store is asked the same few times for 1 receipt or 20."""

from __future__ import annotations

from typing import Any

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.values import Actor, ActorKind, ContactDraft, Identity
from caseledger.ledger.intake.records import IntakeCodec, ReadReceipt
from caseledger.ledger.intake.worker import IntakeRecord, KafkaIntakeWorker
from caseledger.ledger.settings import KafkaSettings

CODEC = IntakeCodec()


def store_reads(ledger: CaseLedger, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each time the worker asks the store for events or for lookup secrets, by name."""
    asked: list[str] = []
    recorder, keys = ledger.recorder, ledger.data_keys.table
    for target, name in ((recorder, "select_events_after"), (keys, "by_ids")):
        real = getattr(target, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            asked.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(target, name, counted)
    return asked


@pytest.mark.parametrize("receipts", [1, 20])
def test_a_batch_of_read_receipts_asks_the_store_a_few_times_not_once_per_receipt(
        sqlite_ledger: CaseLedger, monkeypatch: pytest.MonkeyPatch, receipts: int) -> None:
    identities = [Identity(kind="email", value=f"reader{n}@example.com") for n in range(receipts)]
    references = [sqlite_ledger.record_contact(ContactDraft(channel="email", channel_message_id=f"m{n}",
                                                            identity=identity, items=("Where is it?",))).reference
                  for n, identity in enumerate(identities)]
    batch = [IntakeRecord("caseledger.intake", 0, n, CODEC.encode(ReadReceipt(
        case_reference=reference, message_id="ACK1", read_at=sqlite_ledger.clock(),
        reader=Actor(kind=ActorKind.CUSTOMER, id=str(identity))), adapter="sms-gateway"))
        for n, (reference, identity) in enumerate(zip(references, identities, strict=True))]
    worker = KafkaIntakeWorker(sqlite_ledger, KafkaSettings(bootstrap_servers="unused:9092"), aggregate_cache=0)
    asked = store_reads(sqlite_ledger, monkeypatch)
    worker.apply_batch(0, batch)
    assert (worker.stats.reports, worker.stats.rejected) == (receipts, 0)
    assert len(asked) <= 4, asked  # the cases, customers and claims in one read; the secrets in another


class _CountingCursor:
    """A cursor that counts the statements sent through it."""

    def __init__(self, curs: Any) -> None:
        self.curs, self.statements = curs, 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.statements += 1
        return self.curs.execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        self.statements += 1
        return self.curs.executemany(*args, **kwargs)


def test_a_batch_of_new_customers_stores_its_keys_and_lookup_secrets_in_one_statement(
        sqlite_ledger: CaseLedger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 29: the keys a batch makes (a data key and lookup secrets per new customer) were inserted one statement
    each, while every writer of the store waited on the lock the batch holds; now one statement for the batch."""
    kind = type(sqlite_ledger.data_keys.table)  # the recorder holds its own instance of the table
    real, sent = kind.insert, []

    def insert(self: Any, curs: Any, rows: Any) -> None:
        counting = _CountingCursor(curs)
        real(self, counting, rows)
        sent.append((len(rows), counting.statements))

    monkeypatch.setattr(kind, "insert", insert)
    batch = [IntakeRecord("caseledger.intake", 0, n, CODEC.encode(ContactDraft(
        channel="email", channel_message_id=f"new-{n}", identity=Identity(kind="email", value=f"new{n}@example.com"),
        items=("Where is it?",)), adapter="mail-gateway")) for n in range(20)]
    KafkaIntakeWorker(sqlite_ledger, KafkaSettings(bootstrap_servers="unused:9092"), aggregate_cache=0).apply_batch(0, batch)
    [(rows, statements)] = [s for s in sent if s[0]]
    assert rows >= 40 and statements == 1  # a data key and two lookup secrets (identity, message) per customer
    assert len({r.subject for r in sqlite_ledger.data_keys.table.by_ids(
        [k.key_id for k in sqlite_ledger.data_keys.table.live()])}) >= 20  # stored, and read back
