"""``python -m caseledger.verify EXPORT --key PUBKEY``: check a history export (JSON or Avro) offline;
``python -m caseledger.verify receipt FILE --key PUBKEY [--export EXPORT | --proof PROOF [--checkpoint CP]]
[--content JSON]``: check a contact's receipt, and with an export or the contact's inclusion proof against a
signed checkpoint whether the log holds the contact.

Exit 0 when everything holds, 1 when something does not (each finding is printed; for a receipt:
forged, altered, another request, or missing from a log that promised it), 2 when the input cannot
be read (a bad key, not an export, no receipt), 3 when a receipt cannot be proved in the log yet
(the export or checkpoint given predates the promised time).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from caseledger.verify.failures import MalformedInput
from caseledger.verify.history import check_history, read_export
from caseledger.verify.note import VerifierKey
from caseledger.verify.receipts import check_receipt, read_proof


def _key(value: str) -> VerifierKey:
    text = value
    if "+" not in text and Path(text).is_file():
        text = (Path(text).read_text(encoding="utf-8").strip().splitlines() or [""])[0]
    return VerifierKey.parse(text)


def receipt_main(argv: list[str]) -> int:
    """``receipt FILE --key K [--export EXPORT | --proof P [--checkpoint CP]] [--content JSON]``."""
    parser = argparse.ArgumentParser(
        prog="python -m caseledger.verify receipt",
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["receipt"]:
        return receipt_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m caseledger.verify",
        description="Check a caseledger history export offline: the checkpoint's signature, every event's "
                    "inclusion proof, every hash chain. (A contact's receipt: `python -m caseledger.verify receipt "
                    "--help`.)")
    parser.add_argument("export", help="a JSON or Avro history export (caseledger history CUSTOMER --export json|avro FILE)")
    parser.add_argument("--key", required=True,
                        help="the ledger's verifier key NAME+KEYID+BASE64 (as printed by `caseledger audit key`), "
                             "or a file holding it")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    args = parser.parse_args(argv)
    try:
        key = _key(args.key)
        document = read_export(args.export)
    except MalformedInput as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = check_history(document, key)
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
