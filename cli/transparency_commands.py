"""``caseledger keys init`` and the transparency log's audit commands: key, checkpoint, prove, consistency.

Exit codes: 0 the proof holds, 5 it does not (the reason is named: ``checkpoint-key``,
``checkpoint-signature``, ``rolled-back``, ``split-view`` …), 2 bad input, 4 no signing key configured.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from caseledger.cli.common import Session, environment, local_only, plain_console, session

NOT_THROUGH_API = "it writes a private signing key to a file here; the service never hands out its own"

if TYPE_CHECKING:
    from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner
    from caseledger.verify.cosignatures import WitnessPolicy
    from caseledger.verify.note import VerifierKey

EXIT_DISCREPANCIES = 5

keys_app = typer.Typer(no_args_is_help=True, help="The ledger's checkpoint signing key (Ed25519).")

KeyOpt = Annotated[
    str | None,
    typer.Option("--key", metavar="PUBKEY|FILE",
                 help="The verifier key you trust (NAME+KEYID+BASE64, or a file holding it); default: the "
                      "public half of the configured signing key (through --api: the key the service serves)."),
]


def _signer(required: bool = True) -> CheckpointSigner | None:
    from caseledger.ledger.errors import ConfigurationError
    from caseledger.ledger.transparency.checkpoint_key import KEY_ENV, KEY_FILE_ENV, load_signer

    signer = load_signer(environment().transparency)
    if signer is None and required:
        raise ConfigurationError(f"no checkpoint signing key: set {KEY_FILE_ENV} to a key file made by "
                                 f"`caseledger keys init` (or {KEY_ENV} to the key itself)")
    return signer


def _verifier_key(given: str | None, s: Session | None = None) -> VerifierKey:
    """``--key`` (a key or a file holding it); by default the configured signing key's, through --api the service's."""
    from caseledger.ledger.errors import ValidationError
    from caseledger.verify.failures import MalformedInput
    from caseledger.verify.note import VerifierKey

    if given is None and s is not None and s.api:
        return VerifierKey.parse(s.service.audit_key_record()["verifier_key"])
    if given is None:
        signer = _signer()
        assert signer is not None
        return signer.verifier_key
    text = given
    if "+" not in given and Path(given).is_file():
        text = (Path(given).read_text(encoding="utf-8").strip().splitlines() or [""])[0]
    try:
        return VerifierKey.parse(text)
    except MalformedInput as error:
        raise ValidationError(f"--key: {error}") from None


WitnessOpt = Annotated[
    list[str] | None,
    typer.Option("--witness", metavar="VKEY", help="A witness you trust: its cosignature/v1 verifier key "
                 "NAME+KEYID+BASE64 (repeat for each); with --witnesses-needed, the checkpoint must be cosigned by "
                 "that many of them. Default: the ledger's CASELEDGER_WITNESS_POLICY."),
]
NeededOpt = Annotated[
    int | None,
    typer.Option("--witnesses-needed", metavar="K", help="How many of the --witness keys must have cosigned "
                 "(default: all of them)."),
]
PolicyFileOpt = Annotated[
    Path | None,
    typer.Option("--witness-policy", metavar="FILE", help="A C2SP tlog-policy file (witness, group and quorum "
                 "lines) instead of --witness/--witnesses-needed."),
]


def _witness_policy(witnesses: list[str] | None, needed: int | None, policy_file: Path | None) -> WitnessPolicy | None:
    """The policy a checkpoint must meet: the options', else the ledger's configured one, else none."""
    from caseledger.ledger.errors import ValidationError
    from caseledger.ledger.transparency.witnesses import configured_policy
    from caseledger.verify.cosignatures import WitnessKey, WitnessPolicy
    from caseledger.verify.failures import MalformedInput

    try:
        if policy_file is not None:
            if witnesses or needed is not None:
                raise ValidationError("give --witness-policy FILE or --witness/--witnesses-needed, not both")
            return WitnessPolicy.parse(_read_note(policy_file))
        if witnesses:
            keys = [WitnessKey.parse(w) for w in witnesses]
            return WitnessPolicy.k_of(len(keys) if needed is None else needed, keys)
    except MalformedInput as error:
        raise ValidationError(f"witness policy: {error}") from None
    if needed is not None:
        raise ValidationError("--witnesses-needed counts the --witness keys given: give them too")
    return configured_policy(environment().transparency)


def _read_note(path: Path) -> str:
    from caseledger.ledger.errors import ValidationError

    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValidationError(f"cannot read checkpoint file {path}: {error}") from None


@keys_app.command("init")
@local_only(NOT_THROUGH_API)
def keys_init(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Where to write the key (default: "
                                              "CASELEDGER_SIGNING_KEY_FILE, else caseledger-signing.key).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="The key's name (default: the ledger's origin, "
                                             "CASELEDGER_ORIGIN).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing key file.")] = False,
) -> None:
    """Make a new Ed25519 checkpoint signing key (file mode 0600) and print its public key.

    The private key is written to the file only, never printed. Give the public key to auditors.

    ```
    $ caseledger keys init --file /etc/caseledger/signing.key
    $ export CASELEDGER_SIGNING_KEY_FILE=/etc/caseledger/signing.key
    ```
    """
    from caseledger.ledger.settings import LedgerSettings
    from caseledger.ledger.transparency.checkpoint_key import KEY_FILE_ENV, generate_key_file

    s = session(ctx)
    target = file or Path(s.settings.transparency.signing_key_file or "caseledger-signing.key")
    signer = generate_key_file(target, name or LedgerSettings.resolve(database=s.database, settings=s.settings).origin,
                               overwrite=force)
    s.out.print(Text(f"signing key written to {target} (mode 0600); use it with {KEY_FILE_ENV}={target}"))
    s.out.print(Text(f"public key: {signer.verifier_key}"), soft_wrap=True)


def audit_key(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON.")] = False,
) -> None:
    """The public key checkpoints are signed with: what an auditor keeps (the log's origin on stderr).

    Standard output is the verifier key alone, one line, so that the file it is redirected to is read as
    it is by ``--key``, by ``python -m caseledger.verify`` and by Go's ``note.NewVerifier``.

    Through --api: the key the service signs with (GET /v1/audit/key).

    ```
    $ caseledger audit key > ledger.pub
    ```
    """
    s = session(ctx)
    if s.api:
        record = s.service.audit_key_record()
        key, key_id, origin = record["verifier_key"], record["key_id"], record["origin"]
    else:
        signer = _signer()
        assert signer is not None
        key, key_id, origin = str(signer.verifier_key), signer.verifier_key.key_id.hex(), s.local_ledger.settings.origin
    if as_json:
        s.echo_json({"origin": origin, "verifier_key": key, "key_id": key_id})
        return
    typer.echo(key)
    plain_console(stderr=True).print(Text(f"origin: {origin}", style="dim"))


def audit_checkpoint(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the signed checkpoint to this file.")] = None,
    follow: Annotated[bool, typer.Option(
        "--follow", help="Keep going: append each committed batch and sign at most every "
                         "CASELEDGER_CHECKPOINT_INTERVAL seconds until SIGTERM/Ctrl-C (what `caseledger run` does); "
                         "not through --api.")
    ] = False,
) -> None:
    """Bring the Merkle tree up to date and sign a checkpoint now; print it (keep it: it is your proof).

    With witnesses configured (CASELEDGER_WITNESSES) it is submitted to them first and printed with their
    cosignatures. Through --api: the service's latest signed checkpoint with its cosignatures, signed now
    when the service holds the key (GET /v1/audit/checkpoints/latest).

    ```
    $ caseledger audit checkpoint --out 2026-12-01.checkpoint
    $ caseledger audit checkpoint --follow      # the checkpointer as a service of its own
    ```
    """
    s = session(ctx)
    if s.api:
        if follow:
            from caseledger.ledger.errors import ValidationError

            raise ValidationError("--follow is the checkpointer as a service of its own: run it where the database "
                                  "and the signing key are, without --api")
        note = s.service.latest_checkpoint_note()
    else:
        from caseledger.ledger.transparency.checkpoints import sign_checkpoint

        signer = _signer()
        assert signer is not None
        if follow:
            from caseledger.cli.backbone_commands import setup_logging
            from caseledger.cli.common import stop_on_signals
            from caseledger.ledger.runtime.supervisor import serve
            from caseledger.ledger.transparency.checkpoints import Checkpointer

            setup_logging()
            with stop_on_signals() as stop:
                serve(s.new_ledger, "checkpoints", lambda ledger: Checkpointer(ledger(), signer), stop)
        from caseledger.ledger.transparency.witnesses import cosigned_note, witness_now

        checkpoint = sign_checkpoint(s.local_ledger, signer)
        witness_now(s.local_ledger, checkpoint)
        note = cosigned_note(s.local_ledger, checkpoint)
    if out is not None:
        out.write_text(note, encoding="utf-8")
    typer.echo(note, nl=False)


def audit_prove(
    ctx: typer.Context,
    customer: Annotated[str, typer.Argument(help="Customer id or identity.")],
    key: KeyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="The proofs as JSON.")] = False,
    witness: WitnessOpt = None,
    witnesses_needed: NeededOpt = None,
    witness_policy: PolicyFileOpt = None,
) -> None:
    """Each of a customer's events with its inclusion proof against the ledger's latest signed checkpoint.

    Every proof is verified here with the key (``--key``); events recorded after that checkpoint
    are listed as not yet committed. Through --api the service hands out the proofs
    (GET /v1/audit/proofs/inclusion) and they are verified here just the same.

    ```
    $ caseledger audit prove email:jane@example.com --key ledger.pub --json > jane.proofs.json
    ```
    """
    from caseledger.ledger.transparency.proofs import b64
    from caseledger.verify.failures import VerificationError
    from caseledger.verify.note import Checkpoint, open_checkpoint, split_note
    from caseledger.verify.rfc9162 import leaf_hash, verify_inclusion

    s = session(ctx)
    trusted = _verifier_key(key, s)
    policy = _witness_policy(witness, witnesses_needed, witness_policy)
    record = s.service.inclusion_record(customer) if s.api else _inclusion_record(s.local_ledger, customer)
    note: str = record["checkpoint"]  # with the cosignatures kept for it
    problems: list[str] = []
    try:
        checkpoint: Checkpoint | None = open_checkpoint(note, trusted)
    except VerificationError as error:
        problems.append(f"checkpoint-key: the ledger's latest checkpoint: {error}")
        checkpoint = None
    if checkpoint is not None and policy is not None:
        from caseledger.verify.cosignatures import PolicyError, check_cosignatures

        try:
            check_cosignatures(note, trusted, policy)
        except PolicyError as error:
            problems.append(f"{error.code}: the ledger's latest checkpoint: {error}")
    rows = []
    for event in record["events"]:
        status = "not yet committed"
        if event["inclusion_proof"] is not None and event["leaf_index"] is not None and checkpoint is not None:
            try:
                proof = [base64.b64decode(h, validate=True) for h in event["inclusion_proof"]]
                verify_inclusion(event["leaf_index"], checkpoint.size, leaf_hash(bytes.fromhex(event["event_hash"])),
                                 proof, checkpoint.root)
                status = "included"
            except (VerificationError, ValueError) as error:
                status = "NOT included"
                problems.append(f"inclusion: position {event['position']}: {error}")
        rows.append({"position": event["position"], "leaf_index": event["leaf_index"],
                     "inclusion_proof": event["inclusion_proof"], "event_hash": event["event_hash"], "status": status})
    if as_json:
        s.echo_json({"customer_id": record["customer_id"], "checkpoint": note, "verifier_key": str(trusted),
                     "events": rows, "problems": problems})
    else:
        try:  # what the note says, even when it is not the trusted key's (the problem is listed below)
            shown = Checkpoint.parse_text(split_note(note)[0])
            s.out.print(Text(f"checkpoint: {shown.size} events, root {b64(shown.root)}"))
        except VerificationError:
            s.out.print(Text("checkpoint: not a signed checkpoint"))
        for row in rows:
            style = {"included": "green", "not yet committed": "yellow"}.get(row["status"], "bold red")
            s.out.print(Text(f"position {row['position']}: {row['status']}"
                             + (f" (leaf {row['leaf_index']}, {len(row['inclusion_proof'])} hashes)"
                                if row["inclusion_proof"] is not None else ""), style=style))
        for problem in problems:
            s.out.print(Text(f"error: {problem}", style="bold red"))
    if problems:
        raise typer.Exit(EXIT_DISCREPANCIES)


def _inclusion_record(ledger: Any, customer: str) -> dict[str, Any]:
    """What GET /v1/audit/proofs/inclusion answers, from the ledger's own store."""
    from caseledger.ledger.transparency.checkpoints import current_checkpoint
    from caseledger.ledger.transparency.proofs import customer_inclusion
    from caseledger.ledger.transparency.tree import MerkleLog

    customer_id = ledger.data_subject(customer)
    tree = MerkleLog.of(ledger)
    latest = current_checkpoint(ledger, tree=tree)
    if latest is None:
        raise typer.BadParameter("the ledger has no checkpoint yet: run `caseledger audit checkpoint`")
    return customer_inclusion(ledger, customer_id, latest, tree=tree)


class _ServiceLog:
    """The signed log as the ledger service shows it (``SignedLog`` over ``--api``)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def latest_note(self) -> str | None:
        from caseledger.ledger.errors import NotFound

        try:
            return str(self.service.latest_checkpoint_note())
        except NotFound:
            return None

    def notes_of_size(self, size: int) -> list[tuple[str, str]]:
        from caseledger.ledger.errors import NotFound
        from caseledger.verify.failures import VerificationError
        from caseledger.verify.note import Checkpoint, split_note

        try:
            note = str(self.service.checkpoint_note(size))
        except NotFound:
            return []
        try:
            stamp = Checkpoint.parse_text(split_note(note)[0]).timestamp
        except VerificationError:
            stamp = None
        return [(note, stamp.isoformat() if stamp else "at a time it does not say")]

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        from caseledger.ledger.errors import CaseLedgerError

        try:
            record = self.service.consistency_record(old, new)
        except CaseLedgerError as error:
            raise LookupError(str(error)) from None
        return [base64.b64decode(h) for h in record["proof"]]


def audit_consistency(
    ctx: typer.Context,
    held: Annotated[Path, typer.Argument(metavar="OLD.checkpoint", help="A signed checkpoint you kept.")],
    key: KeyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome and the proof as JSON.")] = False,
    witness: WitnessOpt = None,
    witnesses_needed: NeededOpt = None,
    witness_policy: PolicyFileOpt = None,
) -> None:
    """Prove the ledger's current log extends the checkpoint you kept (RFC 9162 consistency proof).

    Names what is wrong otherwise: ``checkpoint-key`` (signed by another key), ``checkpoint-signature``
    (altered), ``rolled-back`` (the log no longer extends it), ``split-view`` (the ledger signed another
    root for the same size), ``witness-policy`` (the ledger's latest checkpoint lacks the cosignatures of the
    witnesses you trust: they refused it, or were not reached). Exit 5 then. Through --api the service hands
    out its checkpoints and the proof (GET /v1/audit/checkpoints/…, /v1/audit/proofs/consistency); they are
    verified here.

    ```
    $ caseledger audit consistency 2026-11-01.checkpoint --key ledger.pub
    $ caseledger audit consistency 2026-11-01.checkpoint --key ledger.pub --witness W1 --witness W2 --witnesses-needed 1
    ```
    """
    from caseledger.ledger.transparency.proofs import StoredLog, check_consistency_of

    s = session(ctx)
    trusted = _verifier_key(key, s)
    policy = _witness_policy(witness, witnesses_needed, witness_policy)
    note = _read_note(held)
    if s.api:
        log: Any = _ServiceLog(s.service)
        log.latest_note()  # the service signs a fresh checkpoint when it holds the key, as below
    else:
        signer = _signer(required=False)
        if signer is not None and signer.verifier_key == trusted:
            from caseledger.ledger.transparency.checkpoints import sign_checkpoint
            from caseledger.ledger.transparency.witnesses import witness_now

            witness_now(s.local_ledger, sign_checkpoint(s.local_ledger, signer))
        log = StoredLog(s.local_ledger)
    result = check_consistency_of(log, note, trusted, policy)
    if as_json:
        s.echo_json(result.as_dict())
    else:
        s.out.print(Text(("consistent: " if result.ok else f"NOT consistent [{result.code}]: ") + result.message,
                         style="green" if result.ok else "bold red"))
    if not result.ok:
        raise typer.Exit(EXIT_DISCREPANCIES)
