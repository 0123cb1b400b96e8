"""The transparency log: a Merkle tree over the store's log, and the checkpoints the ledger signs.

* ``tree.py`` — ``MerkleLog``: leaves appended in position order, root, inclusion and consistency proofs;
* ``signing.py`` — the Ed25519 checkpoint signing key (``CASELEDGER_SIGNING_KEY_FILE``), ``keys init``;
* ``checkpoints.py`` — ``sign_checkpoint`` on demand and the ``Checkpointer`` service of ``caseledger run``;
* ``proofs.py`` — what the auditor's commands ask: a customer's inclusion proofs, consistency with a
  checkpoint the auditor kept;
* ``contact_receipts.py`` — the receipt of each recorded contact, signed with the checkpoint key.

The RFC 9162 functions and the signed-note format are in ``caseledger.verify``, the standalone
verifier, so that the ledger's proofs and the auditor's checks are the same few lines.
"""
