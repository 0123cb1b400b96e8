"""What the test floors share: servers as session fixtures, factories and helpers (no test lives here).

- ``clock``: the clock tests move by hand.
- ``postgres``: a real PostgreSQL (pgserver), one fresh database per test.
- ``ledgers``: ledger factories on SQLite and on PostgreSQL (``database``, ``make_ledger``, ``ledger``).
- ``kafka_broker``, ``maven``: a real Apache Kafka broker, its jars from Maven Central.
- ``kafka_topics``: fresh topics per test (``fresh_topics``, the ``kafka`` fixture), and publishing,
  draining and reading them.
- ``avro_java``: Apache Avro for Java (``java/AvroInterop.java``).
- ``browser``: Debian's headless Chromium through Playwright.
- ``service_server``: ``caseledger serve`` on loopback, principals, an OIDC provider.
- ``tampering``: the audit's ledger built once per backend, and the raw SQL that tampers with it.
- ``stories``: a customer's story with every kind of event on SQLite, and the command line run on it.
- ``personal_data``: a customer's personal data through a case, and where to search for it after erasure.
- ``contacts``: contacts several floors write alike, and what their tests read back.

``tests/conftest.py`` registers the fixture modules as plugins and marks each test by its floor and
servers; ``tests/unit/conftest.py`` keeps servers out of the unit floor. Test modules import from here
only, never from one another.
"""
