"""The Kafka edge: settings and topics, the adapter SDK (intake client), the intake worker, the publisher."""
