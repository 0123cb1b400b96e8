"""The ledger service (``caseledger serve``): the HTTP API over every command and read, behind principals.

``api`` builds the FastAPI application, ``commands`` its write routes, ``problems`` turns the
ledger's errors into RFC 9457 problem details, ``idempotency`` answers retried writes, ``live``
serves the live case page, ``server`` runs it all on uvicorn.
"""
