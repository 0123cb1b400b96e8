"""After an erasure nothing links: no record is found from an identity, a channel message id or a digest.

Issue 24, "Erased, yet linkable" and "The content digest undoes erasure": the attacker holds the whole
database (every table, every remaining key, the KEK) and the customer's e-mail address or phone number.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.audit import verify
from caseledger.ledger.domain.directory import ChannelMessage, IdentityClaim, name_id
from caseledger.ledger.domain.values import Channel, ContactDraft, Identity, content_digest
from caseledger.ledger.errors import MessageIdCollision, NotFound
from caseledger.ledger.privacy.kek import KeyEncryptionKey
from caseledger.ledger.privacy.pseudonyms import PSEUDONYM_SUBJECT
from tests.support.environment import ledger_settings
from tests.support.examples import tries
from tests.support.personal_data import AGENT, jane_contact, work_the_case

PHONE = Identity.parse("phone:+33612345678")
CALL_ME = ContactDraft(channel="sms", channel_message_id="sms-20261207-0001", identity=PHONE, items=("Call me back",))


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.sqlite")


@pytest.fixture
def ledger(db: str) -> Iterator[CaseLedger]:
    app = CaseLedger(ledger_settings(database=db))
    yield app
    app.close()


def _everything(db: str) -> bytes:
    """Every byte of the database (files and every row of every table, blobs too), as an attacker reads it."""
    blob = b"".join(p.read_bytes() for p in Path(db).parent.glob(Path(db).name + "*") if not p.name.endswith(".kek"))
    with sqlite3.connect(db) as conn:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                blob += b"\n".join(v if isinstance(v, bytes) else str(v).encode() for v in row)
    return blob


def _ledger_keys(ledger: CaseLedger) -> list[bytes]:
    """Every key still in the key store (the ledger's own ones and every live data key and secret), unwrapped."""
    kek: KeyEncryptionKey = ledger.data_keys.kek
    return [kek.unwrap(r.wrapped, key_id=r.key_id, subject=r.subject) for r in ledger.data_keys.table.live()
            if r.wrapped is not None]


def _what_an_attacker_computes(keys: list[bytes], identity: Identity, channel: str, message_id: str) -> list[bytes]:
    """The ids earlier releases named a customer's records by, under every key, in every form they are stored."""
    names = [str(identity), f"{channel}:{message_id}", message_id]
    ids = [IdentityClaim.id_for(identity), ChannelMessage.id_for(Channel.parse(channel), message_id)]
    texts = [message_id]
    for key in keys:
        for label in ("customer", "identity", "message", "lookup"):
            for name in names:
                mac = hmac.new(key, f"{label}\n{name}".encode(), hashlib.sha256).hexdigest()
                texts += [mac, mac[:16], mac[:32]]
                ids += [name_id(f"identity-claim:{mac}"), name_id(f"message:{mac}")]
    return [t.encode() for t in texts] + [i.bytes for i in ids] + [i.hex.encode() for i in ids] + [
        str(i).encode() for i in ids]


def test_after_erasure_nothing_computed_from_the_identity_or_the_message_id_finds_her_records(
        ledger: CaseLedger, db: str) -> None:
    """(a) With every remaining key and table, nothing derived from her e-mail or message id is anywhere."""
    first = ledger.record_contact(jane_contact("<m-1@mail.jane-host.example>"))
    work_the_case(ledger, first.reference)
    ledger.record_contact(jane_contact("<m-2@mail.jane-host.example>", case_reference=first.reference))
    jane = jane_contact("x").identity
    before = _everything(db)
    keys = _ledger_keys(ledger)
    found_before = [t for t in _what_an_attacker_computes(keys, jane, "email", "<m-1@mail.jane-host.example>")
                    if t in before]
    assert found_before, "the attack must find her records while she is a customer (the test's own check)"

    ledger.erase_customer(str(jane), reason="art. 17 request, ticket 4711")

    after = _everything(db)
    keys = _ledger_keys(ledger)
    for message_id in ("<m-1@mail.jane-host.example>", "<m-2@mail.jane-host.example>"):
        found = [t for t in _what_an_attacker_computes(keys, jane, "email", message_id) if t in after]
        assert found == [], f"computable from her identity or {message_id} after the erasure: {found[:3]}"
    assert b"jane-host" not in after  # the Message-ID's host, sealed
    for who in (str(jane), first.customer_id):
        if who == first.customer_id:
            assert ledger.history(who)  # by the pseudonym an operator wrote down, the erased events remain
            continue
        with pytest.raises(NotFound):
            ledger.history(who)
    with pytest.raises(NotFound):
        ledger.find_by_message("email", "<m-1@mail.jane-host.example>")
    assert verify(ledger).ok


def test_a_short_request_s_digest_does_not_give_back_the_phone_number(ledger: CaseLedger, db: str) -> None:
    """(b) A million neighbouring numbers (a fiftieth in the fast loop), hashed as the digest was, under every key
    left: none matches."""
    ledger.record_contact(CALL_ME)
    ledger.erase_customer(str(PHONE), reason="art. 17 request")
    stored = _everything(db)
    digests = {d.encode() for d in _digests_in(ledger)}
    assert digests and all(d.startswith(b"v2:") for d in digests)
    keys = _ledger_keys(ledger)
    prefix = hashlib.sha256(b"caseledger contact content v1\n")
    macs = [hmac.new(k, b"caseledger contact content v1\n", hashlib.sha256) for k in keys]
    tail = b"".join(len(p).to_bytes(4, "big") + p for p in (b"", b"1", b"Call me back", b""))
    number = int(PHONE.value[1:])
    around = tries(500_000)
    assert around >= 1_000  # the number itself and its neighbours, in the fast loop too
    readable = _hex_digests_in(stored)
    found = []
    for candidate in range(number - around, number + around):
        who = f"phone:+{candidate}".encode()
        part = len(who).to_bytes(4, "big") + who + tail
        for h in (prefix, *macs):
            guess = h.copy()
            guess.update(part)
            if guess.hexdigest().encode() in readable:
                found.append(candidate)
    assert found == []
    # The attack itself works on an unkeyed digest: it finds the number the old digest was made from.
    old = content_digest(identity=str(PHONE), subject="", items=["Call me back"], body="", attachment_sha256s=[])
    h = prefix.copy()
    h.update(len(str(PHONE)).to_bytes(4, "big") + str(PHONE).encode() + tail)
    assert old == f"v1:{h.hexdigest()}"
    assert h.hexdigest().encode() in _hex_digests_in(b"x'" + old.encode() + b"'\x00")  # and would see it stored


def _hex_digests_in(stored: bytes) -> set[bytes]:
    """Every 64 hex digits anywhere in ``stored``: a SHA-256 hex digest is in ``stored`` iff it is in this set."""
    return {run[i:i + 64] for run in re.findall(rb"[0-9a-f]{64,}", stored) for i in range(len(run) - 63)}


def _digests_in(ledger: CaseLedger) -> list[str]:
    return [e.content_digest for n in ledger.notifications_of("MessageRegistered")
            for e in [ledger.mapper.to_domain_event(n)]]


def test_a_resubmission_is_recognised_before_erasure_and_a_new_contact_after(ledger: CaseLedger) -> None:
    """(c) The same message again: the same case; another request with its id: a collision; erased: new."""
    first = ledger.record_contact(CALL_ME)
    again = ledger.record_contact(CALL_ME)
    assert again.duplicate and again.reference == first.reference
    with pytest.raises(MessageIdCollision):
        ledger.record_contact(ContactDraft(channel="sms", channel_message_id=CALL_ME.channel_message_id,
                                           identity=PHONE, items=("Close my account",)))
    ledger.erase_customer(first.customer_id, reason="art. 17 request")

    after = ledger.record_contact(CALL_ME)
    assert not after.duplicate and after.reference != first.reference
    assert ledger.find_by_message("sms", CALL_ME.channel_message_id).reference == after.reference
    assert ledger.record_contact(CALL_ME).duplicate


def test_an_erased_customer_who_returns_is_a_new_customer(ledger: CaseLedger) -> None:
    """(d) A new id, a new claim; her new history does not join the erased one, and she can contact us."""
    first = ledger.record_contact(jane_contact("m-1"))
    ledger.erase_customer(first.customer_id, reason="art. 17 request")
    back = ledger.record_contact(jane_contact("m-2"))
    assert back.customer_id != first.customer_id
    assert ledger.resolve_customer(str(jane_contact("x").identity)) == back.customer_id
    new_history = ledger.history(back.customer_id)
    assert {e.customer_id for e in new_history} == {back.customer_id}  # type: ignore[attr-defined]
    assert first.reference not in {getattr(e, "reference", None) for e in new_history}
    assert [c.reference for c in ledger.cases_of(str(jane_contact("x").identity))] == [back.reference]
    ledger.respond(back.reference, actor=AGENT, body="Done.", answers=ledger.get_case(back.reference).open_item_ids())


# -- (e) ledgers of earlier releases ------------------------------------------------------------------------------

WRITTEN_WITH_PSEUDONYMS = Path(__file__).parents[1] / "data" / "ledger-written-by-0.2-with-keyed-pseudonyms.sqlite"
DEMO_JANE = Identity.parse("email:jane.martin@example.com")
SMS_TWO = ContactDraft(channel="sms", channel_message_id="sms-2", identity=Identity.parse("phone:+33655555555"),
                       items=("Call me back",))


@pytest.fixture
def keyed_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CaseLedger]:
    copy = tmp_path / "old.sqlite"
    shutil.copy(WRITTEN_WITH_PSEUDONYMS, copy)
    monkeypatch.delenv("CASELEDGER_KEK", raising=False)
    kek = tmp_path / "old.kek"
    shutil.copy(WRITTEN_WITH_PSEUDONYMS.with_name(WRITTEN_WITH_PSEUDONYMS.name + ".kek"), kek)
    kek.chmod(0o600)
    monkeypatch.setenv("CASELEDGER_KEK_FILE", str(kek))
    ledger = CaseLedger(ledger_settings(database=str(copy)))
    yield ledger
    ledger.close()


def test_a_ledger_with_keyed_pseudonyms_reads_verifies_and_finds_its_customers(keyed_ledger: CaseLedger) -> None:
    report = verify(keyed_ledger)
    assert report.ok, "\n".join(d.line() for d in report.discrepancies)
    sms = keyed_ledger.resolve_customer(str(SMS_TWO.identity))
    assert sms.startswith("cus-")
    assert keyed_ledger.find_by_message("sms", "sms-2").customer_id == sms
    assert keyed_ledger.record_contact(SMS_TWO).duplicate  # an unkeyed v1 digest still recognises it
    with pytest.raises(MessageIdCollision):
        keyed_ledger.record_contact(ContactDraft(channel="sms", channel_message_id="sms-2",
                                                 identity=SMS_TWO.identity, items=("Other",)))
    again = keyed_ledger.record_contact(ContactDraft(channel="sms", channel_message_id="sms-3",
                                                     identity=SMS_TWO.identity, items=("And again",)))
    assert again.customer_id == sms  # her earlier claim still names her
    assert len(keyed_ledger.cases_of(str(DEMO_JANE))) >= 3
    assert verify(keyed_ledger).ok


def test_an_erased_customer_of_a_keyed_pseudonym_ledger_who_returns_is_a_new_customer(keyed_ledger: CaseLedger) -> None:
    sms = keyed_ledger.resolve_customer(str(SMS_TWO.identity))
    keyed_ledger.erase_customer(sms, reason="art. 17 request")
    with pytest.raises(NotFound):
        keyed_ledger.resolve_customer(str(SMS_TWO.identity))
    with pytest.raises(NotFound):
        keyed_ledger.find_by_message("sms", "sms-2")
    back = keyed_ledger.record_contact(SMS_TWO)
    assert not back.duplicate and back.customer_id != sms
    assert keyed_ledger.resolve_customer(str(SMS_TWO.identity)) == back.customer_id
    assert PSEUDONYM_SUBJECT  # the ledger's pseudonym key stays: other customers of that release are found by it
    assert verify(keyed_ledger).ok
