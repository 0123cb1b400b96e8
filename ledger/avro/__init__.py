"""How an event becomes bytes: the Avro codec (single-object encoding, the standard fingerprint), its compiled
fast path, and the envelope read straight from stored bytes. No SQL and no driver: the store keeps these bytes,
the events topic carries them, the audit hashes them.
"""
