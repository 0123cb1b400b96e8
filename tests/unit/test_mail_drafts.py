"""Issue 25, mail: a customer's mail as a contact draft, and which case it threads to (no server).

Findings: "no threading by In-Reply-To/References", "items are required with no guidance for a free-text e-mail"
and "an adapter that is real, not a sketch ... threading by In-Reply-To/References and by the reference in the
subject, free-text mails as one item, attachments stored by digest". Before this change there was no
``caseledger.ledger.mail`` (every test here fails on its import).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caseledger.ledger.domain.case_references import new_reference
from caseledger.ledger.domain.values import MAX_BODY_CHARS, ContactDraft
from caseledger.ledger.mail.attachment_store import DigestDirectory
from caseledger.ledger.mail.mail_drafts import MailRefused, draft_from_mail
from caseledger.ledger.mail.mail_threads import case_reference_of, outbound_message_id
from tests.support.examples import examples

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def mail(**headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = headers.pop("From", "Jane Doe <Jane.Doe@Example.com>")
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    return message


@pytest.fixture
def store(tmp_path: Path) -> DigestDirectory:
    return DigestDirectory(tmp_path / "files")


def test_a_mail_is_one_free_text_item_from_its_sender_with_its_date_as_a_claim(store: DigestDirectory) -> None:
    m = mail(Subject="Card  blocked", Message_ID="<m-1@customer.example>",
             Date=format_datetime(NOW - timedelta(hours=1)))
    m.set_content("Why is my card blocked?\nAnd when can I use it again?\n")
    draft = draft_from_mail(m.as_bytes(), attachments=store, now=NOW)
    assert (draft.channel.value, str(draft.identity), draft.channel_message_id) == (
        "email", "email:jane.doe@example.com", "<m-1@customer.example>")
    assert draft.items == ("Why is my card blocked?\nAnd when can I use it again?",) and draft.subject == "Card blocked"
    assert draft.occurred_at == NOW - timedelta(hours=1) and draft.case_reference is None and not draft.follow_up


def test_a_date_the_ledger_would_refuse_is_not_claimed(store: DigestDirectory) -> None:
    """Three records with a receipt were rejected in the trial, two for an occurred_at in the future."""
    for claimed in (NOW + timedelta(hours=3), NOW - timedelta(days=40)):
        m = mail(Date=format_datetime(claimed))
        m.set_content("hello")
        assert draft_from_mail(m.as_bytes(), attachments=store, now=NOW).occurred_at is None


def test_html_only_mails_are_read_as_text(store: DigestDirectory) -> None:
    m = mail()
    m.set_content("<html><head><style>p{color:red}</style></head><body><p>Bonjour&nbsp;<b>vous</b></p>"
                  "<script>alert(1)</script><div>deux</div></body></html>", subtype="html")
    assert draft_from_mail(m.as_bytes(), attachments=store, now=NOW).items == ("Bonjour vous\n\ndeux",)


def test_attachments_are_stored_sealed_and_named_by_their_digest(store: DigestDirectory) -> None:
    pdf = b"%PDF-1.4 statement" + bytes(range(256))
    m = mail(Subject="statement")
    m.set_content("see attached")
    m.add_attachment(pdf, maintype="application", subtype="pdf", filename="statement.pdf")
    m.add_attachment(pdf, maintype="application", subtype="pdf")  # no name: one is given (the ack lists names)
    draft = draft_from_mail(m.as_bytes(), attachments=store, now=NOW)
    digest = hashlib.sha256(pdf).hexdigest()
    assert [(a.sha256, a.size, a.media_type, a.filename) for a in draft.attachments] == [
        (digest, len(pdf), "application/pdf", "statement.pdf"), (digest, len(pdf), "application/pdf", "attachment-2")]
    assert all(a.ref.startswith(f"sha256:{digest};key=") for a in draft.attachments)
    assert [store.read(a.ref) for a in draft.attachments] == [pdf, pdf]
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert len(files) == 2 and all(oct(f.stat().st_mode & 0o777) == "0o600" for f in files)


def test_the_attachment_directory_holds_no_content_or_digest_and_nothing_opens_without_the_ref(
    store: DigestDirectory,
) -> None:
    """The erased that returns, the brute-forced digest: what the directory keeps once the ledger's sealed ref is
    gone (the customer erased) is noise under names no guess of the content can be tested against."""
    secret = b"IBAN FR76 3000 6000 0112 3456 7890 189 - Jane Doe"
    m = mail(Subject="rib")
    m.set_content("my details attached")
    m.add_attachment(secret, maintype="text", subtype="plain", filename="rib.txt")
    (attachment,) = draft_from_mail(m.as_bytes(), attachments=store, now=NOW).attachments
    digest = hashlib.sha256(secret).hexdigest()
    (file,) = [p for p in store.root.rglob("*") if p.is_file()]
    stored = file.read_bytes()
    assert b"FR76" not in stored and b"Jane" not in stored and digest.encode() not in stored
    assert digest not in str(file) and digest[:16] not in str(file)
    from caseledger.ledger.errors import NotFound, ValidationError

    other_key = DigestDirectory(store.root).put(b"x").split(";key=")[1]
    with pytest.raises(NotFound):  # the digest is known, the key is not: nothing found
        store.read(f"sha256:{digest};key={other_key}")
    with pytest.raises(ValidationError, match="not a ref"):
        store.read(f"sha256:{digest}")
    file.write_bytes(stored[:-1] + bytes([stored[-1] ^ 1]))
    with pytest.raises(ValidationError, match="altered"):
        store.read(attachment.ref)


def test_a_mail_without_text_is_its_subject_or_its_attachments(store: DigestDirectory) -> None:
    m = mail(Subject="Statement")
    m.add_attachment(b"x", maintype="image", subtype="png", filename="scan.png")
    assert draft_from_mail(m.as_bytes(), attachments=store, now=NOW).items == ("Statement",)
    bare = mail()
    bare.add_attachment(b"x", maintype="image", subtype="png", filename="scan.png")
    assert draft_from_mail(bare.as_bytes(), attachments=store, now=NOW).items == ("(no text: see the attachments)",)
    with pytest.raises(MailRefused, match="nothing to record"):
        draft_from_mail(mail().as_bytes(), attachments=store, now=NOW)


def test_a_text_too_long_for_one_contact_is_attached_whole(store: DigestDirectory) -> None:
    text = "word " * (MAX_BODY_CHARS // 4)
    m = mail()
    m.set_content(text)
    draft = draft_from_mail(m.as_bytes(), attachments=store, now=NOW)
    (whole,) = draft.attachments
    assert whole.filename == "message.txt" and store.read(whole.ref).decode() == text.strip()
    assert len(draft.items[0]) < 3_000 and "message.txt" in draft.items[0]


def test_a_mail_without_message_id_gets_a_stable_one_from_its_bytes(store: DigestDirectory) -> None:
    m = mail(Subject="no id")
    m.set_content("hello")
    raw = m.as_bytes()
    first, again = (draft_from_mail(raw, attachments=store, now=NOW) for _ in range(2))
    assert first.channel_message_id == again.channel_message_id
    assert first.channel_message_id.endswith("@no-message-id.invalid>")
    assert first.content_digest() == again.content_digest()  # the same mail read twice is a resubmission
    other = mail(Subject="no id")
    other.set_content("hello again")
    assert draft_from_mail(other.as_bytes(), attachments=store, now=NOW).channel_message_id != first.channel_message_id


def test_refusals_name_what_is_missing_and_quote_nothing(store: DigestDirectory) -> None:
    for sender in ("", "Jane Doe", "jane-at-example", "undisclosed-recipients:;"):
        m = mail(From=sender) if sender else EmailMessage()
        m.set_content("my secret account 12345")
        with pytest.raises(MailRefused) as refused:
            draft_from_mail(m.as_bytes(), attachments=store, now=NOW)
        assert "From" in str(refused.value)
        assert "12345" not in str(refused.value) and (not sender or sender not in str(refused.value))


# -- threading ------------------------------------------------------------------------------------------------


def test_a_reply_to_our_mail_threads_by_its_message_id_without_the_reference_in_the_subject() -> None:
    reference = new_reference()
    ours = outbound_message_id(reference, "ACK1", issued_at="2026-12-07T10:00:00+00:00", host="bank.example")
    assert ours == outbound_message_id(reference, "ACK1", issued_at="2026-12-07T10:00:00+00:00", host="bank.example")
    assert case_reference_of(subject="Re: your message", in_reply_to=ours) == reference
    # Only in References (a client that drops In-Reply-To), among others' ids; the newest of ours wins.
    older = outbound_message_id(new_reference(), "R1", issued_at="x", host="bank.example")
    assert case_reference_of(subject="", in_reply_to="<x@customer.example>",
                             references=f"<a@customer.example> {older} {ours} <b@customer.example>") == reference


def test_a_reference_in_the_subject_threads_and_a_lookalike_does_not() -> None:
    reference = new_reference()
    assert case_reference_of(subject=f"Re: Card blocked [{reference}]") == reference
    assert case_reference_of(subject=f"about {reference.lower()}, again") == reference
    assert case_reference_of(subject="Re: Card blocked") is None
    assert case_reference_of(subject="order CL-ILOU0-00000") is None  # I, L, O, U are no reference symbols
    assert case_reference_of(subject=f"X{reference}Y") is None
    assert case_reference_of(subject="", in_reply_to=f"<{reference}@customer.example>") is None  # not one of ours


def test_a_threaded_mail_is_a_follow_up_on_its_case(store: DigestDirectory) -> None:
    reference = new_reference()
    ours = outbound_message_id(reference, "R2", issued_at="t", host="bank.example")
    m = mail(Subject="Re: hello", In_Reply_To=ours, References=ours)
    m.set_content("thanks, one more question")
    draft = draft_from_mail(m.as_bytes(), attachments=store, now=NOW)
    assert (draft.case_reference, draft.follow_up) == (reference, True)


# -- never a crash: every mail is a draft or a clear refusal --------------------------------------------------

_HEADER_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
_RAW_HEADER = st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    headers=st.lists(st.tuples(st.sampled_from(["From", "Subject", "Date", "Message-ID", "In-Reply-To",
                                                "References", "Content-Type", "Content-Transfer-Encoding",
                                                "Content-Disposition", "MIME-Version"]),
                               st.one_of(_RAW_HEADER, _HEADER_TEXT.map(lambda t: t.encode("utf-8")))), max_size=8),
    body=st.binary(max_size=400),
)
def test_any_bytes_become_a_draft_or_a_refusal(headers: list[tuple[str, bytes]], body: bytes,
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    raw = b"".join(name.encode() + b": " + value + b"\r\n" for name, value in headers) + b"\r\n" + body
    try:
        draft = draft_from_mail(raw, attachments=DigestDirectory(tmp_path_factory.mktemp("f")), now=NOW)
    except MailRefused as refused:
        assert str(refused) and "\ufffd" not in str(refused)
        return
    assert isinstance(draft, ContactDraft) and len(draft.items) == 1 and draft.channel_message_id


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subject=_HEADER_TEXT, text=st.text(max_size=300).filter(str.strip), reply=st.booleans(),
       name=st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30))
def test_well_formed_mails_from_an_address_always_become_drafts(
    subject: str, text: str, reply: bool, name: str, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    m = EmailMessage()
    try:
        m["From"] = f'"{name}" <jane@example.com>' if name.isprintable() and '"' not in name and "\\" not in name \
            else "jane@example.com"
        m["Subject"] = subject
    except (ValueError, IndexError, TypeError):  # the email package refuses to write some headers
        m = EmailMessage()
        m["From"] = "jane@example.com"
    reference = new_reference()
    if reply:
        m["In-Reply-To"] = outbound_message_id(reference, "ACK1", issued_at="t", host="bank.example")
    m.set_content(text)
    draft = draft_from_mail(m.as_bytes(), attachments=DigestDirectory(tmp_path_factory.mktemp("f")), now=NOW)
    assert str(draft.identity) == "email:jane@example.com"
    assert draft.case_reference == (reference if reply else draft.case_reference)


def test_automatic_mails_are_refused_so_no_mail_loop_starts(store: DigestDirectory) -> None:
    """An out-of-office answering our acknowledgement would be a follow-up, acknowledged, answered again …"""
    ours = outbound_message_id(new_reference(), "ACK1", issued_at="t", host="bank.example")
    for headers in ({"Auto_Submitted": "auto-replied"}, {"Precedence": "auto_reply"}, {"Auto_Submitted": "auto-generated"}):
        m = mail(Subject="Out of office", In_Reply_To=ours, **headers)
        m.set_content("I am away until Monday.")
        with pytest.raises(MailRefused, match="automatic"):
            draft_from_mail(m.as_bytes(), attachments=store, now=NOW)
    dsn = mail(Subject="Undelivered Mail Returned to Sender")
    dsn.set_content("failed")
    dsn.replace_header("Content-Type", 'multipart/report; report-type=delivery-status; boundary="b"')
    with pytest.raises(MailRefused, match="report"):
        draft_from_mail(dsn.as_bytes(), attachments=store, now=NOW)
    person = mail(Subject="Re: x", Auto_Submitted="no", In_Reply_To=ours)
    person.set_content("I am a person")
    assert draft_from_mail(person.as_bytes(), attachments=store, now=NOW).follow_up


def test_a_forwarded_mail_is_attached_whole(store: DigestDirectory) -> None:
    forwarded = mail(Subject="the bank's letter")
    forwarded.set_content("Your card is blocked.")
    m = mail(Subject="Fwd: the bank's letter")
    m.set_content("see below")
    m.add_attachment(forwarded)  # message/rfc822
    (attachment,) = draft_from_mail(m.as_bytes(), attachments=store, now=NOW).attachments
    assert attachment.media_type == "message/rfc822" and b"Your card is blocked." in store.read(attachment.ref)
