"""Running the ledger's long-lived services: supervision and garbage-collection pacing."""
