"""The store: how events become bytes (the Avro codec and its compiled fast path) and rows (the SQLite and
PostgreSQL recorders). Every SQL statement the ledger runs on its event store lives in this package.
"""
