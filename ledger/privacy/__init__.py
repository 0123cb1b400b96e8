"""Customers' personal data, encrypted with their own keys so that it can be erased (docs/privacy.md).

``kek`` the key-encryption key; ``keys`` the customers' data keys; ``sealing`` how personal
fields are sealed into the stored bytes and opened or revealed again; the list of those fields is
domain knowledge, in :mod:`caseledger.ledger.domain.personal`.
"""
