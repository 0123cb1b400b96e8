"""``python -m caseledger.verify EXPORT --key PUBKEY``: check a history export (JSON or Avro) offline.

Exit 0 when everything holds, 1 when something does not (each finding is printed), 2 when the
input cannot be read (a bad key, not an export).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from caseledger.verify.failures import MalformedInput
from caseledger.verify.history import check_history, read_export
from caseledger.verify.note import VerifierKey


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m caseledger.verify",
        description="Check a caseledger history export offline: the checkpoint's signature, every event's "
                    "inclusion proof, every hash chain.")
    parser.add_argument("export", help="a JSON or Avro history export (caseledger history CUSTOMER --export json|avro FILE)")
    parser.add_argument("--key", required=True,
                        help="the ledger's verifier key NAME+KEYID+BASE64 (as printed by `caseledger audit key`), "
                             "or a file holding it")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    args = parser.parse_args(argv)
    text = args.key
    if "+" not in text and Path(text).is_file():
        text = (Path(text).read_text(encoding="utf-8").strip().splitlines() or [""])[0]
    try:
        key = VerifierKey.parse(text)
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
