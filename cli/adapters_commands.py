"""``caseledger adapters …``: the channel adapters whose signed intake records the ledger accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from caseledger.cli import render
from caseledger.cli.common import local_only, session
from caseledger.cli.options import CHANNELS, Json, KafkaOpt

NOT_THROUGH_API = "adapter keys are registered on the ledger's own database by its operator; no route carries them"

adapters_app = typer.Typer(
    no_args_is_help=True, help="Channel adapters' Ed25519 keys and the channels each may publish for."
)

Name = Annotated[str, typer.Argument(metavar="NAME", help="The adapter's name, as it signs (its --adapter).")]


@adapters_app.command("add")
@local_only(NOT_THROUGH_API)
def adapters_add(
    ctx: typer.Context,
    name: Name,
    channels: Annotated[str, typer.Option("--channels", metavar="LIST", help=f"Comma-separated, from: {CHANNELS}.")],
    private_key_out: Annotated[Path | None, typer.Option(
        "--private-key-out", metavar="FILE", help="Generate a key pair: write the private key here (mode 0600, "
        "never printed) and register its public half.")] = None,
    public_key: Annotated[Path | None, typer.Option(
        "--public-key", metavar="FILE", exists=True, dir_okay=False,
        help="Register an existing Ed25519 public key (PEM) instead.")] = None,
) -> None:
    """Register a channel adapter's key and the channels it may publish for.

    From then on the intake worker rejects unsigned records (unless run with --allow-unsigned).

    Examples:

    ```
    $ caseledger adapters add mail-gateway-1 --channels email --private-key-out /etc/caseledger/mail-gateway-1.pem
    $ caseledger adapters add chat-bridge --channels chat,chatbot --public-key chat-bridge.pub.pem
    ```
    """
    from caseledger.ledger.intake.signatures import AdapterKeys, key_fingerprint

    s = session(ctx)
    row = AdapterKeys(s.local_ledger.storage.adapter_keys()).add(
        name, channels.split(","), public_key=public_key.read_bytes() if public_key else None,
        private_key_out=private_key_out,
    )
    where = f"; its private key is in {private_key_out}" if private_key_out else ""
    s.say(f"Adapter {row.name} ({key_fingerprint(row.public_key)}) may publish for {', '.join(row.channels)}{where}.",
          "green")


@adapters_app.command("revoke")
@local_only(NOT_THROUGH_API)
def adapters_revoke(ctx: typer.Context, name: Name) -> None:
    """Revoke an adapter's key: its records are rejected from now on (within seconds for a running worker)."""
    from caseledger.ledger.intake.signatures import AdapterKeys

    s = session(ctx)
    AdapterKeys(s.local_ledger.storage.adapter_keys()).revoke(name)
    s.say(f"Adapter {name} revoked.", "green")


@adapters_app.command("list")
@local_only(NOT_THROUGH_API)
def adapters_list(ctx: typer.Context, as_json: Json = False) -> None:
    """List adapters: name, channels, key fingerprint, created, revoked (never a private key)."""
    from caseledger.ledger.intake.signatures import AdapterKeys, key_fingerprint

    s = session(ctx)
    rows = AdapterKeys(s.local_ledger.storage.adapter_keys()).list()
    if as_json:
        s.echo_json([{"name": r.name, "channels": list(r.channels), "key": key_fingerprint(r.public_key),
                      "created_at": r.created_at, "revoked_at": r.revoked_at} for r in rows])
        return
    table = Table("name", "channels", "key", "created", "revoked")
    for r in rows:
        table.add_row(r.name, ", ".join(r.channels), key_fingerprint(r.public_key), render.fmt_time(r.created_at, s.tz),
                      render.fmt_time(r.revoked_at, s.tz) if r.revoked_at else "")
    s.out.print(table)


def _secret(name: str, file: Path | None) -> str | None:
    """A password from the environment variable ``name``, else from ``file`` (never an option: it would show in
    the process list)."""
    import os

    if os.environ.get(name):
        return os.environ[name]
    if file is None:
        return None
    try:
        return file.read_text(encoding="utf-8").strip()
    except OSError as error:
        from caseledger.ledger.errors import ConfigurationError

        raise ConfigurationError(f"cannot read the password file {file}: {error.strerror}") from None


@adapters_app.command("run-mail")
def adapters_run_mail(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", envvar="CASELEDGER_MAIL_ADAPTER", metavar="NAME", help=(
        "The adapter's name: its principal (role adapter, whose token the service checks) and its key "
        "(caseledger adapters add NAME --channels email)."))],
    imap_host: Annotated[str, typer.Option("--imap-host", envvar="CASELEDGER_MAIL_IMAP_HOST",
                                           help="The IMAP server the customers' mail arrives at.")],
    imap_user: Annotated[str, typer.Option("--imap-user", envvar="CASELEDGER_MAIL_IMAP_USER",
                                           help="The mailbox's user; its password from CASELEDGER_MAIL_IMAP_PASSWORD "
                                           "or --imap-password-file.")],
    smtp_host: Annotated[str, typer.Option("--smtp-host", envvar="CASELEDGER_MAIL_SMTP_HOST",
                                           help="The SMTP server our mails leave by.")],
    mail_from: Annotated[str, typer.Option("--mail-from", envvar="CASELEDGER_MAIL_FROM", metavar="ADDRESS",
                                           help="Our address: the From of our mails, where customers reply.")],
    imap_port: Annotated[int | None, typer.Option("--imap-port", envvar="CASELEDGER_MAIL_IMAP_PORT",
                                                  help="Default 993 (tls), 143 otherwise.")] = None,
    imap_security: Annotated[str, typer.Option("--imap-security", envvar="CASELEDGER_MAIL_IMAP_SECURITY",
                                               metavar="tls|starttls|plain",
                                               help="plain only for a server on loopback.")] = "tls",
    imap_mailbox: Annotated[str, typer.Option("--imap-mailbox", envvar="CASELEDGER_MAIL_IMAP_MAILBOX",
                                              help="The folder customers' mail arrives in (opened read-only).")] = "INBOX",
    imap_password_file: Annotated[Path | None, typer.Option(
        "--imap-password-file", envvar="CASELEDGER_MAIL_IMAP_PASSWORD_FILE", metavar="FILE", dir_okay=False,
        help="A file holding the IMAP password (else CASELEDGER_MAIL_IMAP_PASSWORD).")] = None,
    smtp_port: Annotated[int | None, typer.Option("--smtp-port", envvar="CASELEDGER_MAIL_SMTP_PORT",
                                                  help="Default 587 (starttls), 465 (ssl), 25 (plain).")] = None,
    smtp_security: Annotated[str, typer.Option("--smtp-security", envvar="CASELEDGER_MAIL_SMTP_SECURITY",
                                               metavar="starttls|ssl|plain",
                                               help="plain with a login only for a server on loopback.")] = "starttls",
    smtp_user: Annotated[str | None, typer.Option(
        "--smtp-user", envvar="CASELEDGER_MAIL_SMTP_USER",
        help="Log in as this user (password from CASELEDGER_MAIL_SMTP_PASSWORD or --smtp-password-file).")] = None,
    smtp_password_file: Annotated[Path | None, typer.Option(
        "--smtp-password-file", envvar="CASELEDGER_MAIL_SMTP_PASSWORD_FILE", metavar="FILE", dir_okay=False,
        help="A file holding the SMTP password (else CASELEDGER_MAIL_SMTP_PASSWORD).")] = None,
    cafile: Annotated[Path | None, typer.Option(
        "--cafile", envvar="CASELEDGER_MAIL_CAFILE", metavar="FILE", dir_okay=False,
        help="The CA of the mail servers' certificates, if not one the system trusts.")] = None,
    service: Annotated[str | None, typer.Option(
        "--service", envvar="CASELEDGER_API", metavar="URL",
        help="The ledger service (caseledger serve) whose outbound feed the adapter delivers; its token from "
        "CASELEDGER_TOKEN or --token-file (CASELEDGER_TOKEN_FILE).")] = None,
    signing_key: Annotated[Path | None, typer.Option(
        "--signing-key", envvar="CASELEDGER_MAIL_SIGNING_KEY_FILE", metavar="FILE", dir_okay=False, exists=True,
        help="The adapter's Ed25519 private key (caseledger adapters add NAME --private-key-out FILE): every "
        "contact is signed with it.")] = None,
    attachments: Annotated[Path, typer.Option(
        "--attachments", envvar="CASELEDGER_MAIL_ATTACHMENTS", metavar="DIR", file_okay=False,
        help="Where attachments are kept, each encrypted under a key only its ref in the ledger carries "
        "(sha256:<hex>;key=…).")]
        = Path("mail-attachments"),
    state: Annotated[Path, typer.Option(
        "--state", envvar="CASELEDGER_MAIL_STATE", metavar="DIR", file_okay=False,
        help="Where the adapter keeps how far it read the mailbox and the outbound feed.")] = Path("mail-state"),
    poll: Annotated[float, typer.Option("--poll", min=1, max=3600, metavar="SECONDS",
                                        help="How often the mailbox is read.")] = 10.0,
    once: Annotated[bool, typer.Option("--once", help="Read the mailbox and deliver what is pending once, then "
                                       "exit (for a scheduler; a temporary failure waits for the next run).")] = False,
    verdict_wait: Annotated[float, typer.Option(
        "--verdict-wait", envvar="CASELEDGER_MAIL_VERDICT_WAIT", min=0, max=600, metavar="SECONDS",
        help="How long each mail waits for the ledger's verdict (recorded, or rejected with the field and how to "
             "fix it) before it is read again next time; 0: taken once the broker has it, no verdict awaited.")] = 30.0,
    kafka: KafkaOpt = None,
) -> None:
    """Run the reference e-mail adapter: customers' mails from IMAP become contacts, our messages go out by SMTP.

    Each new mail of the mailbox is submitted as a contact (From → the identity, its text → one item, a reply
    to our mail or a subject with [CL-…] → a follow-up on that case, attachments stored sealed); each
    message the ledger issues on the e-mail channel is sent to the customer, threaded with their mail, and
    reported delivered or failed. Passwords and the token only from the environment or files. Stop with
    SIGTERM or Ctrl-C; a restart reads no mail twice. docs/adapters.md, "The reference e-mail adapter".

    ```
    $ export CASELEDGER_MAIL_IMAP_PASSWORD_FILE=/run/secrets/imap CASELEDGER_TOKEN_FILE=/run/secrets/token
    $ caseledger adapters run-mail --name mail-gateway-1 --signing-key /etc/caseledger/mail-gateway-1.pem \\
        --imap-host imap.bank.example --imap-user support --smtp-host smtp.bank.example \\
        --mail-from support@bank.example --service https://ledger.bank.example:8443 --kafka kafka:9092
    ```
    """
    from caseledger.cli.backbone_commands import kafka_settings, setup_logging
    from caseledger.cli.common import stop_on_signals
    from caseledger.ledger.errors import ConfigurationError
    from caseledger.ledger.intake.adapter_sdk import KafkaIntakeClient
    from caseledger.ledger.intake.outbound_client import OutboundClient
    from caseledger.ledger.intake.signatures import AdapterSigner
    from caseledger.ledger.mail.attachment_store import DigestDirectory
    from caseledger.ledger.mail.imap_reader import ImapReader, ImapSettings
    from caseledger.ledger.mail.mail_adapter import MailAdapter
    from caseledger.ledger.mail.smtp_sender import SmtpSender, SmtpSettings
    from caseledger.ledger.service.client import resolve_token

    s = session(ctx)
    url = service or s.api
    if not url:
        raise ConfigurationError("run-mail delivers the ledger's outbound feed: give --service URL (or "
                                 "CASELEDGER_API), the address of caseledger serve")
    imap_password = _secret("CASELEDGER_MAIL_IMAP_PASSWORD", imap_password_file)
    if not imap_password:
        raise ConfigurationError("the IMAP password is missing: set CASELEDGER_MAIL_IMAP_PASSWORD or give "
                                 "--imap-password-file FILE")
    ca = str(cafile) if cafile else None
    imap = ImapSettings(host=imap_host, port=imap_port, username=imap_user, password=imap_password,
                        security=imap_security, mailbox=imap_mailbox, cafile=ca)
    smtp = SmtpSettings(host=smtp_host, port=smtp_port, security=smtp_security, username=smtp_user,
                        password=_secret("CASELEDGER_MAIL_SMTP_PASSWORD", smtp_password_file), sender=mail_from,
                        cafile=ca)
    token = resolve_token(s.settings.client, token=s.token, token_file=s.token_file)
    signer = AdapterSigner.from_file(name, signing_key) if signing_key else None
    setup_logging()
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    with stop_on_signals() as stop, \
            KafkaIntakeClient(kafka_settings(kafka), adapter=name, signer=signer) as intake, \
            OutboundClient(url, token, wait_s=min(poll, 15.0)) as outbound:
        adapter = MailAdapter(reader=ImapReader(imap, state / "imap.json"), intake=intake,
                              attachments=DigestDirectory(attachments), outbound=outbound,
                              sender=SmtpSender(smtp), state_file=state / "outbound.json", own_address=mail_from,
                              verdict_wait_s=verdict_wait or None)
        try:
            if once:
                adapter.read_mailbox()
                adapter.deliver(wait_s=0)
            else:
                adapter.run(until=stop.is_set, poll_s=poll)
        finally:
            adapter.close()
