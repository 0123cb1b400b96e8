"""The domain: the Case aggregate, the directory aggregates, value objects, the response policy, the event catalog.

Nothing here imports Kafka, a database driver or Avro: the rules of a case are plain Python.
"""
