"""A tlog-witness in a few lines, for the unit floor: cosignatures made in Python, and a witness as an httpx transport.

It follows https://c2sp.org/tlog-witness as torchwood's litewitness v0.6.1 does (an unknown log is 403,
a wrong old size 409 with the known size, a proof that does not verify or another root for the same
size 422), so the submitter's unit tests see the answers the real witness gives; the system test
(tests/system/test_litewitness.py) runs against the real one.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from caseledger.verify.cosignatures import WitnessKey, cosigned_message
from caseledger.verify.failures import ProofError, VerificationError
from caseledger.verify.note import Checkpoint, VerifierKey, open_checkpoint, split_note
from caseledger.verify.rfc9162 import EMPTY_ROOT, verify_consistency


@dataclass
class WitnessSigner:
    """A witness's Ed25519 cosigning key."""

    name: str
    private: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def key(self) -> WitnessKey:
        return WitnessKey(self.name, self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def line(self, text: str, timestamp: int) -> str:
        """Its cosignature line of the note text ``text`` at ``timestamp``."""
        signature = self.private.sign(cosigned_message(text, timestamp))
        raw = self.key.key_id + timestamp.to_bytes(8, "big") + signature
        return f"\u2014 {self.name} {base64.b64encode(raw).decode()}"

    def cosign(self, note: str, timestamp: int = 1_765_000_000) -> str:
        """``note`` with this witness's cosignature line added."""
        return note + self.line(split_note(note)[0], timestamp) + "\n"


@dataclass
class FakeWitness:
    """One witness's state for one log, answering POST /add-checkpoint (see the module docstring)."""

    signer: WitnessSigner
    log_key: VerifierKey
    size: int = 0
    root: bytes = EMPTY_ROOT
    requests: list[str] = field(default_factory=list)
    down: bool = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        body = request.content.decode()
        self.requests.append(body)
        head, _, note = body.partition("\n\n")
        lines = head.split("\n")
        if request.url.path.rsplit("/", 1)[-1] != "add-checkpoint" or not lines[0].startswith("old "):
            return httpx.Response(400)
        old = int(lines[0][4:])
        proof = [base64.b64decode(h) for h in lines[1:]]
        try:
            checkpoint: Checkpoint = open_checkpoint(note, self.log_key)
        except VerificationError:
            return httpx.Response(403)
        if old > checkpoint.size:
            return httpx.Response(400)
        if old != self.size:
            return httpx.Response(409, text=f"{self.size}\n", headers={"Content-Type": "text/x.tlog.size"})
        if old == checkpoint.size and checkpoint.root != self.root:
            return httpx.Response(422)
        if 0 < old < checkpoint.size:
            try:
                verify_consistency(old, checkpoint.size, self.root, checkpoint.root, proof)
            except ProofError:
                return httpx.Response(422)
        self.size, self.root = checkpoint.size, checkpoint.root
        return httpx.Response(200, text=self.signer.line(split_note(note)[0], 1_765_000_000) + "\n")

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))


def transport_of(witnesses: dict[str, FakeWitness]) -> httpx.Client:
    """One client for several fake witnesses, each reached at ``http://<its key>/…``."""
    return httpx.Client(transport=httpx.MockTransport(lambda request: witnesses[request.url.host].handle(request)))
