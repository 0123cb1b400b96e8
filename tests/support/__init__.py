"""What the test floors share: servers as session fixtures, factories, helpers (no test lives here).

- ``clock``: the clock tests move by hand.
- ``postgres``: a real PostgreSQL (pgserver), one fresh database per test.
- ``ledgers``: ledger factories on SQLite and on PostgreSQL (``database``, ``make_ledger``, ``ledger``).
- ``kafka_broker``, ``maven``: a real Apache Kafka broker, its jars from Maven Central.
- ``kafka_topics``: fresh topics per test, and publishing, draining and reading them.
- ``avro_java``: Apache Avro for Java (``java/AvroInterop.java``).
- ``browser``: Debian's headless Chromium through Playwright.
- ``service_server``: ``caseledger serve`` on loopback, principals, an OIDC provider.
- ``tampering``: a ledger built once per backend and the raw SQL that tampers with it.
- ``stories``: a customer's story with every kind of event on SQLite, and the command line run on it.
- ``floors``: the markers each test gets from its folder and its fixtures, and the unit floor's guard.

``tests/conftest.py`` registers the fixture modules as plugins, so no test module imports a fixture.
"""
