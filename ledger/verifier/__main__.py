"""``python -m caseledger.verify EXPORT --key PUBKEY``: check a history export (JSON or Avro) offline;
``python -m caseledger.verify receipt FILE --key PUBKEY [--export EXPORT] [--content JSON]``: check a
contact's receipt, and with an export whether the log holds the contact;
``python -m caseledger.verify checkpoint NOTE [OTHER] --key PUBKEY``: check a (cosigned) checkpoint, and
that two checkpoints are not a split view.

The witness policy (an export, a checkpoint): ``--witness VKEY`` (repeatable) ``--witnesses-needed K``,
or ``--witness-policy FILE`` (C2SP tlog-policy); a checkpoint without the cosignatures it needs is
refused (``witness-policy``; ``witness-signature`` for a line of a policy witness that does not verify).

Exit 0 when everything holds, 1 when something does not (each finding is printed; for a receipt:
forged, altered, another request, or missing from a log that promised it; for checkpoints:
``witness-policy``, ``witness-signature``, ``split-view``), 2 when the input cannot be read (a bad key
or policy, not an export, no receipt), 3 when a receipt cannot be proved in the log yet (the export
given predates the promised time).
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
from caseledger.verify.history import check_history, read_export
from caseledger.verify.note import VerifierKey, open_checkpoint
from caseledger.verify.receipts import check_receipt


def _key(value: str) -> VerifierKey:
    text = value
    if "+" not in text and Path(text).is_file():
        text = (Path(text).read_text(encoding="utf-8").strip().splitlines() or [""])[0]
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


def receipt_main(argv: list[str]) -> int:
    """``receipt FILE --key K [--export EXPORT] [--content JSON]``."""
    parser = argparse.ArgumentParser(
        prog="python -m caseledger.verify receipt",
        description="Check a contact's receipt offline: the ledger's signature; with --content, that it was issued "
                    "for the request you sent; with --export (any later history export), that the log holds the "
                    "contact — or that it is missing although the ledger promised it (proof against the operator).")
    parser.add_argument("file", help="a file holding the receipt (CLR1.…): the receipt alone, or the acknowledgement "
                                     "that carries it; - reads standard input")
    parser.add_argument("--key", required=True, help="the ledger's verifier key NAME+KEYID+BASE64, or a file holding it")
    parser.add_argument("--export", help="a history export (JSON or Avro) made after the receipt")
    parser.add_argument("--content", help="a JSON file: {identity: 'email:…', subject, items: [...], body, "
                                          "attachment_sha256s: [...]}, the request as you sent it")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    args = parser.parse_args(argv)
    try:
        key = _key(args.key)
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        export = read_export(args.export) if args.export else None
        content = json.loads(Path(args.content).read_text(encoding="utf-8")) if args.content else None
        result = check_receipt(text, key, export=export, content=content)
    except (OSError, UnicodeDecodeError, ValueError) as error:  # MalformedInput and JSON errors are ValueErrors
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"ok": result.ok, "verdict": result.verdict, "lines": result.lines}, indent=2))
    else:
        print("\n".join(result.lines))
        print({"signed": "verified: the ledger signed this receipt", "included": "verified: the contact is in the log",
               "pending": "not yet provable: the export predates the promised time",
               "missing": "NOT in the log: proof against the operator"}.get(result.verdict, "NOT verified"))
    return 0 if result.ok else 3 if result.verdict == "pending" else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["receipt"]:
        return receipt_main(argv[1:])
    if argv[:1] == ["checkpoint"]:
        return checkpoint_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m caseledger.verify",
        description="Check a caseledger history export offline: the checkpoint's signature, every event's "
                    "inclusion proof, every hash chain. (A contact's receipt: `python -m caseledger.verify receipt "
                    "--help`.)")
    parser.add_argument("export", help="a JSON or Avro history export (caseledger history CUSTOMER --export json|avro FILE)")
    parser.add_argument("--key", required=True,
                        help="the ledger's verifier key NAME+KEYID+BASE64 (as printed by `caseledger audit key`), "
                             "or a file holding it")
    _policy_options(parser)
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    args = parser.parse_args(argv)
    try:
        key = _key(args.key)
        policy = _policy(args)
        document = read_export(args.export)
    except MalformedInput as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = check_history(document, key, policy)
    if args.json:
        print(json.dumps({
            "ok": result.ok, "events": result.events, "included": result.included, "chained": result.chained,
            "checkpoint": {"origin": result.checkpoint.origin, "tree_size": result.checkpoint.size}
            if result.checkpoint else None,
            "findings": [{"code": f.code, "position": f.position, "message": f.message} for f in result.findings],
        }, indent=2))
    else:
        cp = result.checkpoint
        if cp is not None:
            print(f"checkpoint: {cp.origin}, {cp.size} events, signed by {key.name}+{key.key_id.hex()}")
        print(f"{result.events} events: {result.included} proved included, {result.chained} chain links checked")
        for finding in result.findings:
            print(finding.line())
        print("verified: everything holds" if result.ok else "NOT verified")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
