"""The audit's reads of the store (``store_snapshot``) and the envelope decoder, on SQLite and on a real PostgreSQL.

A contract: both backends' snapshots return the same rows, as plain tuples, for the same ledger.
"""

from __future__ import annotations

import hashlib
import re
from uuid import UUID

from eventsourcing.persistence import Tracking

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.audit import store_snapshot
from caseledger.ledger.avro.envelope import AvroEnvelopeDecoder, parse_envelope
from caseledger.ledger.domain.values import ContactDraft, Identity

JANE = Identity.parse("email:jane@example.com")


def contact(msg: str) -> ContactDraft:
    return ContactDraft(channel="web_form", channel_message_id=msg, identity=JANE, items=("Where is my refund?",),
                        subject="Refund", body="The parcel went back two weeks ago.")


def test_an_empty_store_has_no_rows_and_no_tracking(ledger: CaseLedger) -> None:
    with store_snapshot(ledger) as store:
        assert store.head() == 0
        assert list(store.pages(0, 10, 5)) == []
        assert store.row_at_or_after(1) is None
        assert not [name for name in store.tracking() if not name.startswith("__")]  # eventsourcing's own only


def test_rows_come_in_position_order_in_pages_up_to_the_bound(ledger: CaseLedger) -> None:
    with ledger.unit_of_work(Tracking(application_name="intake/t/0", notification_id=7)):
        ledger.record_contact(contact("a"))
    ledger.record_contact(contact("b"))
    head = ledger.recorder.max_notification_id() or 0
    assert head >= 6
    with store_snapshot(ledger) as store:
        assert store.head() == head
        assert store.backend in ledger.settings.store.describe()
        pages = list(store.pages(0, head, 4))
        assert all(0 < len(page) <= 4 for page in pages)
        rows = [row for page in pages for row in page]
        assert [row[0] for row in rows] == sorted(row[0] for row in rows)
        assert rows[-1][0] == head
        bounded = [row[0] for page in store.pages(1, 4, 2) for row in page]
        assert bounded == [p for p in (row[0] for row in rows) if 1 < p <= 4]
        for position, oid, version, topic, state in rows:
            assert re.fullmatch(rb"[0-9a-f]{32}", bytes(oid)) and version >= 1 and topic
            same = store.event(bytes(oid), version)
            assert same is not None and same[0] == position and bytes(same[4]) == bytes(state)
            at = store.row_at_or_after(position)
            assert at is not None and at[0] == position
        assert store.event(b"0" * 32, 1) is None
        assert store.row_at_or_after(head + 1) is None
        assert store.tracking()["intake/t/0"] == 7
        if not store.positions_may_skip:
            assert [row[0] for row in rows] == list(range(1, head + 1))


def test_envelopes_decode_straight_from_the_stored_bytes(ledger: CaseLedger) -> None:
    ledger.record_contact(contact("a"))
    decoder = AvroEnvelopeDecoder(ledger.codec)
    chains: dict[bytes, bytes] = {}
    with store_snapshot(ledger) as store:
        for page in store.pages(0, store.head(), 100):
            for _position, oid, version, _topic, state in page:
                state = bytes(state)
                envelope = parse_envelope(state)
                assert envelope == decoder.envelope(state)
                event_id, aggregate, env_version, _case, customer, _recorded, _causation, previous, end = envelope
                assert UUID(event_id.decode()) and aggregate.replace(b"-", b"") == bytes(oid)
                assert env_version == version and customer and 0 < end <= len(state)
                assert previous == chains.get(bytes(oid))  # None for version 1, else the previous event's hash
                chains[bytes(oid)] = hashlib.sha256(state).digest()
