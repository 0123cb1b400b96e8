"""A receipt the customer keeps (issue 25): signed by the ledger, carried in the acknowledgement, checked offline.

Findings covered: every recorded contact yields a signed receipt (reference, the ledger's time of receipt, a
salted content digest, the event hash, a promised delay) carried in the fr/en acknowledgement; it fits a QR
code; ``python -m caseledger.verify receipt`` refuses a forged or altered one, proves the contact in a later
export, and names a contact missing from a later export as proof against the operator; an erasure leaves
nothing that links the receipt's digest (the salt is sealed, then gone).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.directory import case_id_for
from caseledger.ledger.domain.values import Actor, ContactDraft, Identity
from caseledger.ledger.errors import ConfigurationError, NotFound
from caseledger.ledger.reports.export import export_history
from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner, generate_key_file
from caseledger.ledger.transparency.checkpoints import sign_checkpoint
from caseledger.verify.__main__ import main as verify_main
from caseledger.verify.failures import MalformedInput
from caseledger.verify.history import read_export
from caseledger.verify.note import Checkpoint, open_checkpoint
from caseledger.verify.receipts import Receipt, check_receipt, content_digest, signed_message
from tests.support.clock import FakeClock
from tests.support.contacts import register_adapter
from tests.support.environment import ledger_settings
from tests.support.examples import examples

JANE = Identity.parse("email:jane@example.com")
AGENT = "agent:alice"


def jane(msg: str = "form-1", **kw: object) -> ContactDraft:
    fields: dict[str, object] = {"subject": "Card fees", "items": ("Why two card fees in February?",),
                                 "body": "I was charged twice.\r\nPlease check.  "}
    fields.update(kw)
    return ContactDraft(channel="web_form", channel_message_id=msg, identity=JANE, **fields)  # type: ignore[arg-type]


CONTENT = {"identity": "email:jane@example.com", "subject": "Card fees", "items": ["Why two card fees in February?"],
           "body": "I was charged twice.\nPlease check."}


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.sqlite")


@pytest.fixture
def ledger(signed_ledger: CaseLedger) -> CaseLedger:
    return signed_ledger


def _stored_contact(ledger: CaseLedger, reference: str, contact_id: str = "C1") -> bytes:
    case_id = case_id_for(reference)
    for stored in ledger.recorder.select_events_after([case_id])[case_id]:
        if stored.topic.endswith("ContactReceived"):
            event = ledger.mapper.to_domain_event(stored)
            if event.contact_id == contact_id:  # type: ignore[attr-defined]
                return bytes(stored.state)
    raise AssertionError(f"no {contact_id}")


# -- the receipt, as issued ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("locale", "words"), [("fr_FR", "Votre reçu, signé par nous"),
                                                ("en", "Your receipt, signed by us")])
def test_every_recorded_contact_yields_a_signed_receipt_carried_in_its_acknowledgement(
        ledger: CaseLedger, signer: CheckpointSigner, clock: FakeClock, locale: str, words: str) -> None:
    claimed = clock.now - timedelta(minutes=5)  # the channel's claim: never the receipt's time
    outcome = ledger.record_contact(jane(locale=locale, occurred_at=claimed))

    assert outcome.receipt is not None
    assert f"{words}" in outcome.acknowledgement and outcome.receipt in outcome.acknowledgement
    receipt = Receipt.parse(outcome.receipt)
    receipt.check(signer.verifier_key)
    assert (receipt.origin, receipt.reference, receipt.contact_id) == ("bank.example/complaints", outcome.reference,
                                                                       outcome.contact_id)
    assert receipt.received_at == clock.now  # the ledger's clock
    assert receipt.event_hash == hashlib.sha256(_stored_contact(ledger, outcome.reference)).digest()  # the leaf
    assert receipt.delay_s == 86_400 and receipt.include_by == clock.now + timedelta(days=1)
    assert receipt.proves_content(**CONTENT)  # line ends and trailing blanks folded, as the ledger's digest does
    assert not receipt.proves_content(**{**CONTENT, "items": ["Why one card fee?"]})
    # Signed again from the store, byte for byte; a resubmission answers the same receipt.
    assert ledger.contact_receipt(outcome.reference, "C1") == outcome.receipt
    assert ledger.record_contact(jane(locale=locale)).receipt == outcome.receipt


def test_a_follow_up_on_the_case_gets_its_own_receipt(ledger: CaseLedger, signer: CheckpointSigner) -> None:
    first = ledger.record_contact(jane())
    second = ledger.record_contact(jane("form-2", case_reference=first.reference, items=("And the statement?",)))
    receipt = Receipt.parse(second.receipt or "")
    assert (receipt.contact_id, receipt.reference) == ("C2", first.reference)
    assert receipt.event_hash == hashlib.sha256(_stored_contact(ledger, first.reference, "C2")).digest()
    assert second.receipt != first.receipt and ledger.contact_receipt(first.reference, "C2") == second.receipt


def test_without_a_signing_key_no_receipt_is_promised(db: str, clock: FakeClock) -> None:
    app = CaseLedger(ledger_settings(database=db), clock=clock)
    try:
        outcome = app.record_contact(jane())
        assert outcome.receipt is None and "CLR1." not in outcome.acknowledgement
        assert "Votre reçu" not in outcome.acknowledgement
        with pytest.raises(NotFound, match="keys init"):
            app.contact_receipt(outcome.reference)
    finally:
        app.close()


def test_a_receipt_fits_a_qr_code(ledger: CaseLedger) -> None:
    outcome = ledger.record_contact(jane(subject="x" * 300, items=tuple(f"question {n} " * 40 for n in range(20))))
    assert outcome.receipt is not None and len(outcome.receipt.encode()) <= 600
    # however long the origin and key name may be (each at most 255 bytes), it fits a QR code's 2,953 bytes
    worst = dataclasses.replace(Receipt.parse(outcome.receipt), origin="o" * 255, key_name="k" * 255,
                                reference="R" * 255, contact_id="C" * 255)
    assert len(worst.text()) <= 2_953


receipts = st.builds(
    Receipt,
    origin=st.text(st.characters(codec="utf-8"), min_size=1, max_size=40).filter(lambda s: len(s.encode()) <= 255),
    key_name=st.from_regex(r"[a-z0-9./-]{1,64}", fullmatch=True),
    key_id=st.binary(min_size=4, max_size=4),
    reference=st.from_regex(r"CL-[0-9A-Z]{5}-[0-9A-Z]{5}", fullmatch=True),
    contact_id=st.from_regex(r"C[1-9][0-9]{0,4}", fullmatch=True),
    received_at=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
    delay_s=st.integers(0, 2**32 - 1),
    salt=st.binary(min_size=16, max_size=16),
    content_digest=st.binary(min_size=32, max_size=32),
    event_hash=st.binary(min_size=32, max_size=32),
    signature=st.binary(min_size=64, max_size=64),
)


@settings(max_examples=examples(300), deadline=None)
@given(receipt=receipts)
def test_a_receipt_reads_back_as_written_and_has_one_form(receipt: Receipt) -> None:
    text = receipt.text()
    assert Receipt.parse(text) == receipt
    assert Receipt.parse(f"  {text}\n") == receipt
    if len(receipt.origin.encode()) <= 40:
        assert len(text) <= 600
    with pytest.raises(MalformedInput):
        Receipt.parse(text + "=")  # padding: not the canonical form
    with pytest.raises(MalformedInput):
        Receipt.parse(text + "AA")  # trailing bytes


# -- checked offline ----------------------------------------------------------------------------------------


def test_a_forged_receipt_is_refused(ledger: CaseLedger, signer: CheckpointSigner, tmp_path: Path) -> None:
    genuine = Receipt.parse(ledger.record_contact(jane()).receipt or "")
    key = signer.verifier_key
    assert check_receipt(genuine.text(), key).verdict == "signed"
    # another key under the ledger's name: its key id differs
    mallory = generate_key_file(tmp_path / "mallory.key", key.name)
    unsigned = dataclasses.replace(genuine, key_id=mallory.verifier_key.key_id, signature=b"")
    forged = dataclasses.replace(unsigned, signature=mallory.sign_bytes(signed_message(unsigned.body())))
    assert check_receipt(forged.text(), key).verdict == "wrong-key"
    # mallory's signature, under the ledger's key id
    claimed = dataclasses.replace(forged, key_id=key.key_id)
    assert check_receipt(claimed.text(), key).verdict == "forged"


@pytest.mark.parametrize("field", ["origin", "reference", "contact_id", "received_at", "delay_s", "salt",
                                   "content_digest", "event_hash"])
def test_a_receipt_with_an_altered_field_is_refused(ledger: CaseLedger, signer: CheckpointSigner, field: str) -> None:
    genuine = Receipt.parse(ledger.record_contact(jane()).receipt or "")
    value = getattr(genuine, field)
    altered_value = {str: lambda v: v + "X", int: lambda v: v + 3600, bytes: lambda v: bytes([v[0] ^ 1]) + v[1:],
                     datetime: lambda v: v - timedelta(days=3)}[type(value)](value)
    altered = dataclasses.replace(genuine, **{field: altered_value})
    result = check_receipt(altered.text(), signer.verifier_key)
    assert result.verdict == "forged" and not result.ok
    assert "altered after it was signed, or forged" in result.lines[-1]


def _export(ledger: CaseLedger, path: Path) -> dict[str, object]:
    export_history(ledger, str(JANE), "json", path)
    return read_export(path)


def test_a_later_export_proves_the_contact_is_in_the_log(ledger: CaseLedger, signer: CheckpointSigner,
                                                          clock: FakeClock, tmp_path: Path) -> None:
    outcome = ledger.record_contact(jane())
    clock.advance(hours=2)
    result = check_receipt(outcome.acknowledgement, signer.verifier_key, export=_export(ledger, tmp_path / "e.json"),
                           content=CONTENT)
    assert result.verdict == "included" and result.ok, result.lines
    assert "proved included" in result.lines[-1]


def test_a_receipt_whose_contact_is_missing_from_a_later_export_is_proof_against_the_operator(
        ledger: CaseLedger, signer: CheckpointSigner, clock: FakeClock, db: str, tmp_path: Path) -> None:
    """The operator restores yesterday's backup: the log it signs from then on lacks a contact it gave a receipt for."""
    first = ledger.record_contact(jane())
    sign_checkpoint(ledger, signer)
    ledger.close()
    backup = tmp_path / "backup"
    backup.mkdir()
    for file in Path(db).parent.glob(Path(db).name + "*"):
        shutil.copy2(file, backup / file.name)
    app = CaseLedger(ledger_settings(database=db, origin="bank.example/complaints"), clock=clock)
    clock.advance(minutes=10)
    lost = app.record_contact(jane("form-2", case_reference=first.reference, items=("And my statement?",)))
    assert lost.receipt is not None
    app.close()
    for file in backup.iterdir():  # the backup is restored over the database
        shutil.copy2(file, Path(db).parent / file.name)
    app = CaseLedger(ledger_settings(database=db, origin="bank.example/complaints"), clock=clock)
    try:
        clock.advance(hours=2)
        early = check_receipt(lost.receipt, signer.verifier_key, export=_export(app, tmp_path / "early.json"))
        assert early.verdict == "pending", early.lines  # before the promised time, nothing is proved yet
        clock.advance(days=1)
        app.record_contact(jane("form-3", items=("Another question",)))  # the log grows: a new checkpoint
        path = tmp_path / "late.json"
        late = check_receipt(lost.receipt, signer.verifier_key, export=_export(app, path))
        assert late.verdict == "missing" and not late.ok, late.lines
        assert "proof against the operator" in late.lines[-1]
        # the contact the ledger kept is proved; the first receipt still verifies against the same export
        assert check_receipt(first.receipt or "", signer.verifier_key, export=read_export(path)).verdict == "included"
    finally:
        app.close()
    receipt_file = tmp_path / "receipt.txt"
    receipt_file.write_text(lost.acknowledgement)
    key = str(signer.verifier_key)
    assert verify_main(["receipt", str(receipt_file), "--key", key]) == 0
    assert verify_main(["receipt", str(receipt_file), "--key", key, "--export", str(path)]) == 1
    assert verify_main(["receipt", str(receipt_file), "--key", key, "--export", str(tmp_path / "early.json")]) == 3


def test_the_verifier_command_checks_a_receipt_and_the_request_it_was_for(
        ledger: CaseLedger, signer: CheckpointSigner, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outcome = ledger.record_contact(jane())
    (tmp_path / "r.txt").write_text(outcome.receipt or "")
    (tmp_path / "key.pub").write_text(str(signer.verifier_key) + "\n")
    (tmp_path / "sent.json").write_text(json.dumps(CONTENT))
    (tmp_path / "other.json").write_text(json.dumps({**CONTENT, "body": "Something else"}))
    args = ["receipt", str(tmp_path / "r.txt"), "--key", str(tmp_path / "key.pub")]
    assert verify_main([*args, "--content", str(tmp_path / "sent.json")]) == 0
    assert "the request given is the one received" in capsys.readouterr().out
    assert verify_main([*args, "--content", str(tmp_path / "other.json"), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "content-differs"
    (tmp_path / "bad.txt").write_text("no receipt here")
    assert verify_main(["receipt", str(tmp_path / "bad.txt"), "--key", str(tmp_path / "key.pub")]) == 2
    assert "no receipt" in capsys.readouterr().err


# -- privacy: the salt is sealed, and goes with the customer's data -----------------------------------------


def _everything(db: str) -> bytes:
    blob = b"".join(p.read_bytes() for p in Path(db).parent.glob(Path(db).name + "*") if not p.name.endswith(".kek"))
    with sqlite3.connect(db) as conn:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                blob += b"\n".join(v if isinstance(v, bytes) else str(v).encode() for v in row)
    return blob


def test_an_erased_customers_receipt_no_longer_links_to_anything_the_ledger_keeps(
        ledger: CaseLedger, signer: CheckpointSigner, db: str) -> None:
    outcome = ledger.record_contact(jane())
    receipt = Receipt.parse(outcome.receipt or "")
    salt_forms = (receipt.salt, base64.urlsafe_b64encode(receipt.salt).rstrip(b"="), receipt.salt.hex().encode())
    digest_forms = (receipt.content_digest, receipt.content_digest.hex().encode(),
                    base64.b64encode(receipt.content_digest))
    # Sealed from the start: neither the salt nor the digest is anywhere in clear (a digest kept in clear
    # would let whoever holds the database try guesses of the request once the salt is known).
    blob = _everything(db)
    assert not any(form in blob for form in (*salt_forms, *digest_forms))
    ledger.erase_customer(str(JANE), reason="art. 17 request of 2026-03-02, ticket 4711", actor=Actor.parse(AGENT))
    with pytest.raises(NotFound, match="erased"):
        ledger.contact_receipt(outcome.reference)
    blob = _everything(db)
    assert not any(form in blob for form in (*salt_forms, *digest_forms))
    # the customer's own copy still verifies, and still proves what they sent; the ledger cannot say it again
    assert check_receipt(outcome.receipt or "", signer.verifier_key, content=CONTENT).verdict == "signed"


def test_the_salt_defeats_guessing_the_request_from_the_receipt_digest() -> None:
    """Without the salt, trying every short request gives nothing: the digest is an HMAC keyed by 128 random bits."""
    salt = bytes(range(16))
    sent = {"identity": "phone:+33612345678", "subject": "", "items": ["Call me back"], "body": ""}
    digest = content_digest(salt, **sent)  # type: ignore[arg-type]
    unsalted = hashlib.sha256(json.dumps(sent).encode()).digest()
    assert digest != unsalted and content_digest(bytes(16), **sent) != digest  # type: ignore[arg-type]


def test_checkpoints_say_when_they_were_signed_on_the_ledgers_clock(ledger: CaseLedger, signer: CheckpointSigner,
                                                                     clock: FakeClock) -> None:
    ledger.record_contact(jane())
    stored = sign_checkpoint(ledger, signer)
    checkpoint = open_checkpoint(stored.note, signer.verifier_key)
    assert checkpoint.timestamp == clock.now
    assert Checkpoint.parse_text(Checkpoint("o", 1, bytes(32)).text()).timestamp is None  # before receipts


def test_an_export_of_a_ledger_on_a_simulated_clock_verifies(key_file: Path, db: str, clock: FakeClock,
                                                               signer: CheckpointSigner, tmp_path: Path) -> None:
    """The standalone verifier read the envelope of a ``simulated-clock`` event wrong (the demo's, ``--now``'s), so
    every chain of such an export read as broken and no receipt could be proved against it."""
    app = CaseLedger(ledger_settings(database=db), clock=clock, simulated_clock=True)
    try:
        outcome = app.record_contact(jane())
        result = check_receipt(outcome.receipt or "", signer.verifier_key, export=_export(app, tmp_path / "e.json"))
        assert result.verdict == "included", result.lines
    finally:
        app.close()


# -- where the customer (or the adapter for them) gets it ---------------------------------------------------


def test_the_adapter_gets_the_receipt_over_http_and_the_cli_prints_it(key_file: Path, db: str, signer: CheckpointSigner,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from caseledger.ledger.access.principals import PrincipalRegistry
    from caseledger.ledger.service.api import ServiceState
    from caseledger.ledger.service.asgi import create_app
    from tests.support.contacts import cli

    settings_ = ledger_settings(database=db)
    setup = CaseLedger(settings_)
    adapter = PrincipalRegistry(setup.principal_store).add("mail-gateway-1", "adapter").token
    register_adapter(setup, "mail-gateway-1", ["email"])  # an adapter reads its channels' contacts' receipts only
    setup.close()
    with TestClient(create_app(ServiceState(settings_))) as client:
        headers = {"Authorization": f"Bearer {adapter}"}
        body = {"channel": "email", "channel_message_id": "m-1", "from": "email:jane@example.com", "items": ["?"]}
        recorded = client.post("/v1/contacts", json=body, headers=headers).json()
        assert recorded["receipt"].startswith("CLR1.")
        got = client.get(f"/v1/cases/{recorded['reference']}/contacts/C1/receipt", headers=headers)
        assert got.status_code == 200 and got.json()["receipt"] == recorded["receipt"]
        missing = client.get(f"/v1/cases/{recorded['reference']}/contacts/C9/receipt", headers=headers)
        assert missing.status_code == 404 and "C9" in missing.json()["detail"]
    Receipt.parse(recorded["receipt"]).check(signer.verifier_key)
    monkeypatch.setenv("CASELEDGER_DATABASE", db)
    printed = cli("contact", "receipt", recorded["reference"])
    assert printed.stdout.strip() == recorded["receipt"]
    said = json.loads(cli("contact", "receipt", recorded["reference"], "--contact", "C1", "--json").stdout)
    assert said["receipt"] == recorded["receipt"] and any("reference: " in line for line in said["says"])


def test_the_promised_delay_is_a_setting_checked_when_the_ledger_starts(key_file: Path, db: str, clock: FakeClock,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASELEDGER_RECEIPT_DELAY", "3600")
    app = CaseLedger(ledger_settings(database=db), clock=clock)
    try:
        assert Receipt.parse(app.record_contact(jane()).receipt or "").delay_s == 3600
    finally:
        app.close()
    monkeypatch.setenv("CASELEDGER_RECEIPT_DELAY", "soon")
    with pytest.raises(ConfigurationError, match="CASELEDGER_RECEIPT_DELAY"):
        CaseLedger(ledger_settings(database=db), clock=clock)


def test_receipts_signed_in_a_batch_name_the_bytes_the_batch_stores(ledger: CaseLedger, signer: CheckpointSigner) -> None:
    """The intake worker records a poll's contacts in one unit of work: each receipt is signed before the batch
    is saved, so the leaf it names must be the bytes saved (the chain encodes each event once)."""
    with ledger.unit_of_work():
        first = ledger.record_contact(jane())
        again = ledger.record_contact(jane())  # a resubmission inside the same batch
        other = ledger.record_contact(ContactDraft(channel="email", channel_message_id="m-9",
                                                   identity=Identity.parse("email:sam@example.com"), items=("?",)))
        follow = ledger.record_contact(jane("form-2", case_reference=first.reference, items=("More?",)))
    assert again.duplicate and again.receipt == first.receipt
    for outcome in (first, other, follow):
        receipt = Receipt.parse(outcome.receipt or "")
        receipt.check(signer.verifier_key)
        assert receipt.event_hash == hashlib.sha256(
            _stored_contact(ledger, outcome.reference, outcome.contact_id)).digest()
        assert ledger.contact_receipt(outcome.reference, outcome.contact_id) == outcome.receipt
    assert ledger.find_by_message("web_form", "form-1").reference == first.reference  # lookups saved with the batch


@settings(max_examples=examples(500), deadline=None)
@given(raw=st.binary(max_size=400), genuine_prefix=st.booleans())
def test_any_text_is_a_receipt_or_refused_as_malformed_never_a_crash(raw: bytes, genuine_prefix: bool) -> None:
    if genuine_prefix:
        raw = b"CLR\x01" + raw
    text = "CLR1." + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    try:
        receipt = Receipt.parse(text)
    except MalformedInput:
        return
    assert receipt.text() == text


def test_a_receipt_with_an_impossible_time_is_refused_as_malformed() -> None:
    raw = (b"CLR\x01" + b"\x01o" + b"\x01k" + bytes(4) + b"\x01R" + b"\x02C1" + b"\x7f" * 8 + bytes(4) + bytes(16)
           + bytes(32) + bytes(32) + bytes(64))
    with pytest.raises(MalformedInput, match="not a version 1 receipt"):
        Receipt.parse("CLR1." + base64.urlsafe_b64encode(raw).decode().rstrip("="))


def test_a_receipt_is_found_in_a_raw_quoted_printable_email(ledger: CaseLedger, signer: CheckpointSigner) -> None:
    """A mail gateway cuts the ~300-character line with soft breaks; the saved .eml still verifies."""
    import quopri

    outcome = ledger.record_contact(jane(locale="en"))
    raw = quopri.encodestring(outcome.acknowledgement.encode()).decode()
    assert (outcome.receipt or "") not in raw  # cut
    assert check_receipt(raw, signer.verifier_key).verdict == "signed"
