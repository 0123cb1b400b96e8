"""``python -m caseledger.verify EXPORT --key PUBKEY [--kept CHECKPOINT]``: check a history export (JSON or Avro)
offline, and with ``--kept`` its checkpoint against one the auditor kept;
``python -m caseledger.verify receipt FILE --key PUBKEY [--export EXPORT | --proof PROOF [--checkpoint CP]]
[--content JSON]``: check a contact's receipt, and with an export or the contact's inclusion proof against a
signed checkpoint whether the log holds the contact;
``python -m caseledger.verify checkpoint NOTE [OTHER] --key PUBKEY``: check a (cosigned) checkpoint, and
that two checkpoints are not a split view.

The witness policy (an export, a checkpoint): ``--witness VKEY`` (repeatable) ``--witnesses-needed K``,
or ``--witness-policy FILE`` (C2SP tlog-policy); a checkpoint without the cosignatures it needs is
refused (``witness-policy``; ``witness-signature`` for a line of a policy witness that does not verify).

Exit codes (docs/audit.md):

==  ==========================================================================================
0   everything holds
1   a discrepancy: something does not hold (each finding is printed; an export missing any event of
    its customer up to its checkpoint: ``incomplete``, a bad customer map proof: ``map-proof``, an
    event on the wrong side of its occurred range: ``range``; for a receipt: forged,
    altered, another request, or missing from a log that promised it; for checkpoints:
    ``witness-policy``, ``witness-signature``, ``split-view``)
2   unreadable or malformed input, or usage: a missing file, a bad key or policy, not an export, a kept
    checkpoint not signed by the key, no receipt
3   not provable from what was given: a receipt whose export or checkpoint predates the promised time; a kept
    checkpoint newer than the export's, or one the export carries no consistency proof from
==  ==========================================================================================
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from caseledger.verify.cosignatures import (
    PolicyError,
    WitnessKey,
    WitnessPolicy,
    check_cosignatures,
    split_view,
)
from caseledger.verify.failures import MalformedInput, VerificationError
from caseledger.verify.history import HistoryCheck, check_history, read_export
from caseledger.verify.kept import KeptCheck, check_kept
from caseledger.verify.note import Checkpoint, VerifierKey, open_checkpoint
from caseledger.verify.receipts import check_receipt, read_proof

EXIT_CODES = ("exit codes: 0 everything holds; 1 a discrepancy (each finding printed); 2 unreadable or malformed input, "
              "or usage; 3 not provable from what was given (docs/audit.md)")


def _key(value: str) -> VerifierKey:
    text = value
    if "+" not in text and Path(text).is_file():
        try:
            text = (Path(text).read_text(encoding="utf-8").strip().splitlines() or [""])[0]
        except (OSError, UnicodeDecodeError) as error:
            raise MalformedInput(f"the key file {value} cannot be read ({error})") from None
    return VerifierKey.parse(text)


def _policy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--witness", action="append", metavar="VKEY", help="a witness you trust: its "
                        "cosignature/v1 verifier key NAME+KEYID+BASE64 (repeat for each)")
    parser.add_argument("--witnesses-needed", type=int, metavar="K", help="how many of the --witness keys must "
                        "have cosigned the checkpoint (default: all)")
    parser.add_argument("--witness-policy", metavar="FILE", help="a C2SP tlog-policy file instead")


def _policy(args: argparse.Namespace) -> WitnessPolicy | None:
    """The policy the options give (MalformedInput when they are wrong); None when none is given."""
    if args.witness_policy:
        if args.witness or args.witnesses_needed is not None:
            raise MalformedInput("give --witness-policy FILE or --witness/--witnesses-needed, not both")
        try:
            return WitnessPolicy.parse(Path(args.witness_policy).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            raise MalformedInput(f"witness policy {args.witness_policy}: {error}") from None
    if args.witness:
        keys = [WitnessKey.parse(k) for k in args.witness]
        return WitnessPolicy.k_of(len(keys) if args.witnesses_needed is None else args.witnesses_needed, keys)
    if args.witnesses_needed is not None:
        raise MalformedInput("--witnesses-needed counts the --witness keys given: give them too")
    return None


def checkpoint_main(argv: list[str]) -> int:
    """``checkpoint NOTE [OTHER] --key K [policy]``."""
    parser = argparse.ArgumentParser(
        prog="python -m caseledger.verify checkpoint",
        description="Check a signed checkpoint offline: the ledger's signature and, with a witness policy, the "
                    "witnesses' cosignatures; given a second one (a checkpoint you kept, one a witness served), "
                    "that the two are not a split view (one tree size, two roots).")
    parser.add_argument("note", help="a (cosigned) checkpoint file")
    parser.add_argument("other", nargs="?", help="another checkpoint of the same log")
    parser.add_argument("--key", required=True, help="the ledger's verifier key NAME+KEYID+BASE64, or a file holding it")
    _policy_options(parser)
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    args = parser.parse_args(argv)
    findings: list[dict[str, str]] = []
    opened = []
    lines: list[str] = []
    try:
        key = _key(args.key)
        policy = _policy(args)
        notes = [Path(n).read_text(encoding="utf-8") for n in (args.note, args.other) if n]
    except (OSError, UnicodeDecodeError, MalformedInput) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path, note in zip((args.note, args.other), notes, strict=False):
        try:
            if policy is not None:
                cosigned = check_cosignatures(note, key, policy)
                opened.append(cosigned.checkpoint)
                names = ", ".join(sorted(cosigned.witnesses)) or "no witness"
                lines.append(f"{path}: {cosigned.checkpoint.size} events, cosigned by {names}")
            else:
                opened.append(open_checkpoint(note, key))
                lines.append(f"{path}: {opened[-1].size} events, signed by {key.name}+{key.key_id.hex()}")
        except PolicyError as error:
            findings.append({"code": error.code, "file": path, "message": str(error)})
        except VerificationError as error:
            findings.append({"code": "checkpoint-signature", "file": path, "message": str(error)})
    if len(opened) == 2:
        split = split_view(opened[0], opened[1])
        if split:
            findings.append({"code": "split-view", "file": args.other, "message": split})
    if args.json:
        print(json.dumps({"ok": not findings, "findings": findings}, indent=2))
    else:
        print("\n".join(lines))
        for finding in findings:
            print(f"[{finding['code']}] {finding['file']}: {finding['message']}")
        print("verified: everything holds" if not findings else "NOT verified")
    return 0 if not findings else 1


def _kept(value: str, key: VerifierKey) -> Checkpoint:
    """The checkpoint the auditor kept, verified with the key: MalformedInput (exit 2) for any failure, since the
    file is the auditor's own input."""
    try:
        note = Path(value).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise MalformedInput(f"the kept checkpoint {value} cannot be read ({error})") from None
    try:
        return open_checkpoint(note, key)
    except VerificationError as error:
        raise MalformedInput(f"the kept checkpoint {value}: {error}") from None


def receipt_main(argv: list[str]) -> int:
    """``receipt FILE --key K [--export EXPORT | --proof P [--checkpoint CP]] [--content JSON]``."""
    parser = argparse.ArgumentParser(
        prog="python -m caseledger.verify receipt", epilog=EXIT_CODES,
        description="Check a contact's receipt offline: the ledger's signature; with --content, that it was issued "
                    "for the request you sent; with --export (any later history export), or with --proof (the contact's "
                    "inclusion proof, `caseledger contact receipt REF --proof`) against a later signed checkpoint, "
                    "that the log holds the contact — or that it is missing although the ledger promised it (proof "
                    "against the operator).")
    parser.add_argument("file", help="a file holding the receipt (CLR1.…): the receipt alone, or the acknowledgement "
                                     "that carries it; - reads standard input")
    parser.add_argument("--key", required=True, help="the ledger's verifier key NAME+KEYID+BASE64, or a file holding it")
    parser.add_argument("--export", help="a history export (JSON or Avro) made after the receipt")
    parser.add_argument("--proof", help="the contact's inclusion proof (JSON, as `caseledger contact receipt REF "
                                        "--proof` writes it): its leaf index and audit path in a signed checkpoint")
    parser.add_argument("--checkpoint", help="a signed checkpoint (the note text) to prove against, e.g. one an "
                                             "auditor or witness kept; default: the one the proof carries")
    parser.add_argument("--content", help="a JSON file: {identity: 'email:…', subject, items: [...], body, "
                                          "attachment_sha256s: [...]}, the request as you sent it")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    args = parser.parse_args(argv)
    try:
        key = _key(args.key)
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        if args.export and args.proof:
            raise MalformedInput("give --export or --proof, not both: each proves the contact on its own")
        if args.checkpoint and not args.proof:
            raise MalformedInput("--checkpoint needs --proof: the contact's leaf index and inclusion proof against "
                                 "it (`caseledger contact receipt REF --proof --tree-size N`)")
        export = read_export(args.export) if args.export else None
        proof = read_proof(Path(args.proof).read_text(encoding="utf-8")) if args.proof else None
        checkpoint = Path(args.checkpoint).read_text(encoding="utf-8") if args.checkpoint else None
        content = json.loads(Path(args.content).read_text(encoding="utf-8")) if args.content else None
        result = check_receipt(text, key, export=export, content=content, proof=proof, checkpoint=checkpoint)
    except (OSError, UnicodeDecodeError, ValueError) as error:  # MalformedInput and JSON errors are ValueErrors
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"ok": result.ok, "verdict": result.verdict, "lines": result.lines}, indent=2))
    else:
        print("\n".join(result.lines))
        print({"signed": "verified: the ledger signed this receipt", "included": "verified: the contact is in the log",
               "pending": "not yet provable: the export or checkpoint predates the promised time",
               "missing": "NOT in the log: proof against the operator"}.get(result.verdict, "NOT verified"))
    return 0 if result.ok else 3 if result.verdict == "pending" else 1


def completeness_line(result: HistoryCheck) -> str:
    """What the export proves of its customer's whole history."""
    if result.complete:
        return (f"complete: the export holds all {result.counted} events of customer {result.customer} up to the "
                "checkpoint (customer map proof verified)")
    if result.complete is None and result.checkpoint is not None:
        return ("completeness: not provable: the checkpoint commits to no customer map (signed before the map "
                "existed); the events present are proved, not that none is missing")
    return "completeness: NOT proved"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["receipt"]:
        return receipt_main(argv[1:])
    if argv[:1] == ["checkpoint"]:
        return checkpoint_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m caseledger.verify", epilog=EXIT_CODES,
        description="Check a caseledger history export offline: the checkpoint's signature, every event's "
                    "inclusion proof, every hash chain. (A contact's receipt: `python -m caseledger.verify receipt "
                    "--help`.)")
    parser.add_argument("export", help="a JSON or Avro history export (caseledger history CUSTOMER --export json|avro FILE)")
    parser.add_argument("--key", required=True,
                        help="the ledger's verifier key NAME+KEYID+BASE64 (as printed by `caseledger audit key`), "
                             "or a file holding it")
    _policy_options(parser)
    parser.add_argument("--kept", metavar="CHECKPOINT",
                        help="a signed checkpoint you kept earlier (a file): prove the export's checkpoint extends it "
                             "(the export carries the consistency proof; ask for one with `history --export … --kept`)")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    args = parser.parse_args(argv)
    try:
        key = _key(args.key)
        policy = _policy(args)
        document = read_export(args.export)
        kept = _kept(args.kept, key) if args.kept else None
        result = check_history(document, key, policy)
    except MalformedInput as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    against: KeptCheck | None = None
    if kept is not None and result.checkpoint is not None:
        against = check_kept(kept, result.checkpoint, document.get("transparency") or {})
        if against.code in ("split-view", "rolled-back"):
            result.flag(against.code, 0, against.message)
    if args.json:
        print(json.dumps({
            "ok": result.ok and (against is None or against.ok), "events": result.events, "included": result.included,
            "chained": result.chained, "views_checked": result.views_checked, "views_unchecked": result.views_unchecked,
            "checkpoint": {"origin": result.checkpoint.origin, "tree_size": result.checkpoint.size}
            if result.checkpoint else None,
            "kept": {"tree_size": kept.size, "code": against.code if against else None,
                     "message": against.message if against else None} if kept is not None else None,
            "customer_id": result.customer, "complete": result.complete, "counted": result.counted,
            "in_range": result.in_range,
            "findings": [{"code": f.code, "position": f.position, "message": f.message} for f in result.findings],
        }, indent=2))
    else:
        cp = result.checkpoint
        if cp is not None:
            print(f"checkpoint: {cp.origin}, {cp.size} events, signed by {key.name}+{key.key_id.hex()}")
        print(f"{result.events} events: {result.included} proved included, {result.chained} chain links checked, "
              f"{result.views_checked} readable views checked against their stored bytes")
        if result.views_unchecked:
            print(f"note: the readable view of {result.views_unchecked} events could not be checked against their "
                  "stored bytes (the export carries no schema for them): read those events from their stored bytes, "
                  "not from the view")
        if against is not None and against.ok:
            print(f"kept checkpoint: {against.message}")
        print(completeness_line(result))
        if result.in_range is not None:
            print(f"occurred range: {result.in_range} events shown in full, {result.events - result.in_range} by "
                  "their hash and stored bytes (each checked to lie outside it)")
        for finding in result.findings:
            print(finding.line())
        if against is not None and against.code == "unprovable":
            print(f"kept checkpoint: NOT provable from this export: {against.message}")
        print("verified: everything holds" if result.ok and (against is None or against.ok) else "NOT verified")
    if not result.ok:
        return 1
    return 3 if against is not None and not against.ok else 0


if __name__ == "__main__":
    sys.exit(main())
