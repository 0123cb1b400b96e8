"""Audit: prove that nothing was lost, altered or reordered — from the store, the events topic and intake.

``verify(ledger, …)`` reads the store's notification log once, in pages, in one consistent read
snapshot, and keeps bounded maps: the last version and hash of the aggregates written to most
recently (the others read back from the store when their next event comes), and three counters per
case for a window of cases (the rest summed in a temporary file): its memory does not grow with the
ledger. Every discrepancy it finds is named: which position, event, aggregate and version, which
topic partition and offset, what differs.

The construction
================
* **Event hash** = SHA-256 over the event's stored bytes, exactly as stored and published (Avro
  single-object encoding: ``C3 01``, 8-byte schema fingerprint, body). It is published in the
  ``ce_eventhash`` header of the event's Kafka record (``event_hash`` before CloudEvents headers).
* **Aggregate chain**: every event carries, inside its Avro envelope, ``previous_hash`` = the
  hash of the previous stored event of the same aggregate (a case, a customer, a channel message,
  an identity claim, an intake rejection); ``None`` for version 1. The chain is therefore part of
  the hashed bytes: changing any event changes its hash and breaks the link of the next one.
* **Positions**: the store's notification ids, the total order the publisher follows.
* **Seal**: verify also computes ``seal`` = SHA-256 over ``position (8 bytes, big-endian) ‖ event
  hash`` of every event of the log in position order, i.e. a *global chain computed by the
  auditor*. The report prints it as ``POSITION:DIGEST``; an auditor keeps it outside the ledger
  and passes it back with ``--seal`` to prove that nothing up to that position changed since.

No global or per-customer chain is *stored*: whoever can rewrite the events table can rewrite a
stored chain too, and the global predecessor of an event is only known under the store's insert
lock, after the event was encoded. What a chain can add is only a comparison with a copy the
tamperer cannot change: the events topic (continuously), or the seal (at each audit).

What detects each tampering
===========================
=====================================  ===========================================================
tampering                              detected by
=====================================  ===========================================================
a byte of an event altered             its row's bytes no longer decode, or name another
                                       aggregate/version (``row-mismatch``), or the next event of
                                       the aggregate no longer links to it (``chain-broken``); with
                                       ``--kafka`` the topic's bytes differ (``topic-bytes``); with
                                       ``--seal`` the seal differs. The *last* event of an
                                       aggregate that still decodes is only caught by the topic or
                                       a seal: nothing is stored after it to link to it.
an event deleted                       a version gap in its aggregate (``version-gap``); a
                                       position gap (``position-gap``: an error on SQLite, which
                                       never skips positions; on PostgreSQL see below); the
                                       topic still has it (``topic-extra``); cross references
                                       (below); intake accounting when it was an outcome.
a whole case deleted                   its customer's ``CaseLinked`` names a case without events
                                       (``case-missing``), its contacts' ``MessageRegistered``
                                       entries count more messages than contacts
                                       (``contacts-unmatched``), position gaps, intake
                                       accounting, the topic, the seal. Deleting the links too
                                       breaks the customer's and the messages' chains, unless
                                       they were the last events of those aggregates: then the
                                       topic or a seal is needed.
two events' states swapped             each row's bytes name another aggregate/version
                                       (``row-mismatch``); the chains break; the topic differs.
a forged event inserted                a wrong ``previous_hash`` (``chain-broken``); a version
                                       that does not follow (``version-gap``); a recorded time
                                       before the previous event of its aggregate, beyond the
                                       clock tolerance (``backdated``), or long before an earlier
                                       position (``recorded-out-of-order``, a warning); not on the
                                       topic at a published position
                                       (``topic-missing``); an intake outcome twice
                                       (``intake-doubled``) or for no intake record
                                       (``intake-unknown``). A forgery appended after the last
                                       published position, with a correct chain link and a
                                       current time, is indistinguishable from a genuine event
                                       by any unkeyed hash: that needs a key the database
                                       operator does not hold (a MAC in the write path).
a forged record on the events topic    its position is not in the store, or appears twice, or its
                                       bytes, key or headers differ from the store's event
                                       (``topic-extra``, ``topic-duplicate``, ``topic-bytes``,
                                       ``topic-key``, ``topic-header``).
an intake record's outcome dropped     intake accounting: the offset was consumed (tracking
                                       position beyond it) but has no outcome
                                       (``intake-no-outcome``).
the store's tail truncated             the topic has positions the store lacks; a seal taken
                                       before; cross references.
=====================================  ===========================================================

Where each guarantee is checked
===============================
* ``verify`` (``verification.py``): the one pass over the log that feeds every checker below.
* ``chains.py``: row identity, aggregate chains, versions, positions (and why PostgreSQL
  positions can skip), recorded times.
* ``references.py``: cross references (a case named by its customer's and its messages' events).
* ``topic.py``: the events topic compared with the store (``--kafka``).
* ``intake.py``: intake accounting (every intake offset has exactly one outcome).
* ``seal.py``: the seal; ``report.py``: ``Discrepancy``, ``AuditReport``, severities.
* The store's side is a port: the snapshot the audit reads (``StoreSnapshot`` in
  ``caseledger.ledger.store_ports``, one per backend in ``caseledger.ledger.store.audit_reads``), opened by
  ``store_snapshot(ledger)``; and the envelope decoder (``caseledger.ledger.avro.envelope``).
"""

from __future__ import annotations

from caseledger.ledger.audit.chains import DEFAULT_CLOCK_TOLERANCE
from caseledger.ledger.audit.intake_outcomes import INTAKE_OUTCOMES
from caseledger.ledger.audit.report import AuditReport, Discrepancy
from caseledger.ledger.audit.seal import Seal
from caseledger.ledger.audit.verification import store_snapshot, verify
from caseledger.ledger.avro.envelope import parse_envelope

__all__ = [
    "DEFAULT_CLOCK_TOLERANCE",
    "INTAKE_OUTCOMES",
    "AuditReport",
    "Discrepancy",
    "Seal",
    "parse_envelope",
    "store_snapshot",
    "verify",
]
