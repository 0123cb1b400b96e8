"""Customers' personal data, encrypted with their own keys so that it can be erased (docs/privacy.md).

``kek`` the key-encryption key; ``data_keys`` the customers' data keys; ``sealing`` how personal
fields are sealed into the stored bytes and opened or revealed again; the list of those fields is
domain knowledge, in :mod:`caseledger.ledger.domain.personal`. The services of the ledger that act
on it: ``pseudonyms`` (names without personal data), ``erasure`` (a customer's keys destroyed),
``holds`` (legal holds) and ``retention_sweep`` (the retention policy at each tick).
"""
