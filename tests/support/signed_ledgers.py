"""A SQLite ledger that signs its checkpoints (the fixtures of the receipts', proofs' and completeness tests).

``key_file`` is the transparency log's signing key, named by the environment as ``caseledger`` reads it;
``signer`` signs with it; ``signed_ledger`` is a ledger of ``ORIGIN`` in ``tmp_path / "ledger.sqlite"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from caseledger.ledger.application import CaseLedger
from caseledger.ledger.transparency.checkpoint_key import CheckpointSigner, generate_key_file
from tests.support.clock import FakeClock
from tests.support.environment import ledger_settings

ORIGIN = "bank.example/complaints"


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "signing.key"
    generate_key_file(path, ORIGIN)
    monkeypatch.setenv("CASELEDGER_SIGNING_KEY_FILE", str(path))
    return path


@pytest.fixture
def signer(key_file: Path) -> CheckpointSigner:
    return CheckpointSigner.parse(key_file.read_text(), source="test")


@pytest.fixture
def signed_ledger(key_file: Path, tmp_path: Path, clock: FakeClock) -> Iterator[CaseLedger]:
    app = CaseLedger(ledger_settings(database=str(tmp_path / "ledger.sqlite"), origin=ORIGIN), clock=clock)
    yield app
    app.close()
