"""The store: every SQL statement the ledger runs on its database, behind the ports of ``ledger/store_ports.py``.

One provider per backend builds every port (``SQLiteStorage``, ``PostgresStorage``); nothing outside this
package imports it: eventsourcing builds the provider the store settings name, and a ledger reaches it as
``ledger.storage``.
"""
