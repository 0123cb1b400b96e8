"""``python -m caseledger.verify EXPORT --key PUBKEY``: check a history export (JSON or Avro) offline;
``python -m caseledger.verify receipt FILE --key PUBKEY [--export EXPORT] [--content JSON]``: check a
contact's receipt, and with an export whether the log holds the contact.

Exit 0 when everything holds, 1 when something does not (each finding is printed: an export missing
any event of its customer up to its checkpoint is ``incomplete``, a bad customer map proof ``map-proof``,
an event on the wrong side of its occurred range ``range``; for a receipt:
forged, altered, another request, or missing from a log that promised it), 2 when the input cannot
be read (a bad key, not an export, no receipt), 3 when a receipt cannot be proved in the log yet
(the export given predates the promised time).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from caseledger.verify.failures import MalformedInput
from caseledger.verify.history import HistoryCheck, check_history, read_export
from caseledger.verify.note import VerifierKey
from caseledger.verify.receipts import check_receipt


def _key(value: str) -> VerifierKey:
    text = value
    if "+" not in text and Path(text).is_file():
        text = (Path(text).read_text(encoding="utf-8").strip().splitlines() or [""])[0]
    return VerifierKey.parse(text)


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
            "customer_id": result.customer, "complete": result.complete, "counted": result.counted,
            "in_range": result.in_range,
            "findings": [{"code": f.code, "position": f.position, "message": f.message} for f in result.findings],
        }, indent=2))
    else:
        cp = result.checkpoint
        if cp is not None:
            print(f"checkpoint: {cp.origin}, {cp.size} events, signed by {key.name}+{key.key_id.hex()}")
        print(f"{result.events} events: {result.included} proved included, {result.chained} chain links checked")
        print(completeness_line(result))
        if result.in_range is not None:
            print(f"occurred range: {result.in_range} events shown in full, {result.events - result.in_range} by "
                  "their hash and stored bytes (each checked to lie outside it)")
        for finding in result.findings:
            print(finding.line())
        print("verified: everything holds" if result.ok else "NOT verified")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
