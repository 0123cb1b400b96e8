"""The auditor's routes: the verifier key, signed checkpoints, inclusion and consistency proofs, the audit's report.

What ``caseledger --api URL audit …`` asks (docs/api.md, docs/audit.md). The key and the checkpoints
are the log's public commitments, served as text (C2SP signed-note: what Go's ``note.NewVerifier``
and tlog tools read as they are) to every role; proofs and the audit's report to the roles that
audit. A proof is verified by the auditor, with the key he keeps, on his side: the service hands
out hashes, it is never trusted to say they hold. No customer's identity goes in a URL (the gate
refuses it): a customer is named by customer id (``POST /v1/customers/resolve``).
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query
from fastapi.responses import PlainTextResponse

from caseledger.ledger.access.principals import Principal
from caseledger.ledger.application import CaseLedger
from caseledger.ledger.domain.permissions import Operation
from caseledger.ledger.errors import ConfigurationError, NotFound, ValidationError
from caseledger.ledger.reports.describe import plain
from caseledger.ledger.service.api import ServiceState, principal_for
from caseledger.ledger.store_ports import StoredCheckpoint

__all__ = ["add_routes", "served_note"]

O = Operation  # noqa: E741 -- short: every route names one
NOTE = "text/plain; charset=utf-8"
MAX_SIZE = 2**63 - 1
NO_CHECKPOINT = ("the ledger has signed no checkpoint yet: its publisher (or `caseledger audit checkpoint`) signs "
                 "them with the signing key (docs/audit.md)")


def served_note(ledger: CaseLedger, checkpoint: StoredCheckpoint) -> str:
    """The note served for a stored checkpoint: the one place the served text is made (the witnesses' cosignature
    lines kept for it join the ledger's signature here)."""
    from caseledger.ledger.transparency.witnesses import cosigned_note

    return cosigned_note(ledger, checkpoint)


def _latest(ledger: CaseLedger) -> StoredCheckpoint:
    from caseledger.ledger.transparency.checkpoints import current_checkpoint

    found = current_checkpoint(ledger)
    if found is None:
        raise NotFound(NO_CHECKPOINT)
    return found


def _signer_key_id(ledger: CaseLedger) -> str | None:
    from caseledger.ledger.transparency.checkpoint_key import load_signer

    signer = load_signer(ledger.settings.transparency)
    return signer.verifier_key.key_id.hex() if signer is not None else None


def _kept_note(encoded: str | None, key: str | None) -> Any:
    """The checkpoint an auditor kept, sent as base64url of its note with the verifier key it must be signed by."""
    if encoded is None:
        if key is not None:
            raise ValidationError("key: give it with checkpoint (the base64url of the note you kept)")
        return None
    from caseledger.ledger.audit.kept_checkpoint import HeldCheckpoint
    from caseledger.verify.failures import MalformedInput
    from caseledger.verify.note import VerifierKey

    if key is None:
        raise ValidationError("checkpoint: give the verifier key it must be signed by (key=NAME+KEYID+BASE64)")
    try:
        note = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
        return HeldCheckpoint(note, VerifierKey.parse(key))
    except (binascii.Error, ValueError) as error:
        detail = str(error) if isinstance(error, MalformedInput) else "not the base64url of a UTF-8 note"
        raise ValidationError(f"checkpoint or key: {detail}") from None


def add_routes(app: FastAPI, state: ServiceState) -> None:
    @app.get("/v1/audit/key", tags=["audit"], response_model=None,
             openapi_extra={"x-operation": O.AUDIT_CHECKPOINT_READ.value})
    def audit_key(format: Annotated[str, Query(pattern="^(text|json)$")] = "text",
                  _p: Principal = principal_for(O.AUDIT_CHECKPOINT_READ)) -> Any:
        """The verifier key checkpoints are signed with, ``NAME+KEYID+BASE64`` (one line); ``?format=json``: with the
        log's origin."""
        from caseledger.ledger.transparency.checkpoint_key import load_signer

        ledger = state.ledger()
        signer = load_signer(ledger.settings.transparency)
        if signer is None:
            raise NotFound("this ledger service has no signing key (CASELEDGER_SIGNING_KEY_FILE): ask its operator "
                           "for the verifier key, or read it where the key is with `caseledger audit key`")
        key = signer.verifier_key
        if format == "json":
            return {"origin": ledger.settings.origin, "verifier_key": str(key), "key_id": key.key_id.hex()}
        return PlainTextResponse(f"{key}\n", media_type=NOTE)

    @app.get("/v1/audit/checkpoints/latest", tags=["audit"], response_class=PlainTextResponse,
             openapi_extra={"x-operation": O.AUDIT_CHECKPOINT_READ.value})
    def checkpoint_latest(_p: Principal = principal_for(O.AUDIT_CHECKPOINT_READ)) -> PlainTextResponse:
        """The latest signed checkpoint (C2SP tlog-checkpoint note); a fresh one when the service holds the signing
        key and the log grew since the last."""
        ledger = state.ledger()
        return PlainTextResponse(served_note(ledger, _latest(ledger)), media_type=NOTE,
                                 headers={"Cache-Control": "no-store"})

    @app.get("/v1/audit/checkpoints/{size}", tags=["audit"], response_class=PlainTextResponse,
             openapi_extra={"x-operation": O.AUDIT_CHECKPOINT_READ.value})
    def checkpoint_of_size(size: Annotated[int, Path(ge=0, le=MAX_SIZE)],
                           _p: Principal = principal_for(O.AUDIT_CHECKPOINT_READ)) -> PlainTextResponse:
        """The signed checkpoint of this tree size (the last one signed, by the service's key when it has one)."""
        ledger = state.ledger()
        signed = ledger.storage.merkle().checkpoints(size=size, limit=1000)
        key_id = _signer_key_id(ledger)
        mine = [c for c in signed if key_id is None or c.key_id == key_id] or signed
        if not mine:
            raise NotFound(f"no checkpoint of tree size {size} was signed; the latest is at "
                           "/v1/audit/checkpoints/latest")
        return PlainTextResponse(served_note(ledger, mine[-1]), media_type=NOTE)

    @app.get("/v1/audit/proofs/inclusion", tags=["audit"], openapi_extra={"x-operation": O.AUDIT_PROOF_READ.value})
    def inclusion(customer: Annotated[str, Query(min_length=1, max_length=200, description="a customer id (cus-…)")],
                  _p: Principal = principal_for(O.AUDIT_PROOF_READ)) -> dict[str, Any]:
        """Each of the customer's events, its hash, its leaf and its inclusion proof against the latest signed
        checkpoint (``leaf_index`` and ``inclusion_proof`` null for events after it)."""
        from caseledger.ledger.transparency.proofs import customer_inclusion

        ledger = state.ledger()
        return customer_inclusion(ledger, ledger.data_subject(customer), _latest(ledger))

    @app.get("/v1/audit/proofs/consistency", tags=["audit"], openapi_extra={"x-operation": O.AUDIT_PROOF_READ.value})
    def consistency(old: Annotated[int, Query(ge=1, le=MAX_SIZE)], new: Annotated[int, Query(ge=1, le=MAX_SIZE)],
                    _p: Principal = principal_for(O.AUDIT_PROOF_READ)) -> dict[str, Any]:
        """The RFC 9162 consistency proof that the tree of ``new`` leaves extends the tree of ``old`` leaves."""
        from caseledger.ledger.transparency.proofs import b64
        from caseledger.ledger.transparency.tree import MerkleLog

        tree = MerkleLog.of(state.ledger())
        if not old <= new <= tree.size:
            raise ValidationError(f"old={old}, new={new}: give 1 <= old <= new <= {tree.size} (the tree's size)")
        return {"old": old, "new": new, "proof": [b64(h) for h in tree.consistency_proof(old, new)]}

    @app.get("/v1/audit/verify", tags=["audit"], openapi_extra={"x-operation": O.AUDIT_VERIFY.value})
    def audit_verify(
        customer: Annotated[str | None, Query(max_length=200, description="a customer id (cus-…)")] = None,
        since: datetime | None = None, until: datetime | None = None,
        seal: Annotated[str | None, Query(max_length=200, description="POSITION:DIGEST of an earlier audit")] = None,
        checkpoint: Annotated[str | None, Query(max_length=20_000, description="base64url of a kept note")] = None,
        key: Annotated[str | None, Query(max_length=2_000, description="the verifier key NAME+KEYID+BASE64")] = None,
        listed: bool = False,
        _p: Principal = principal_for(O.AUDIT_VERIFY),
    ) -> Any:
        """The audit's report: nothing lost, altered or reordered; the events recorded without authentication or on a
        simulated clock (listed one by one with ``listed=true``)."""
        from caseledger.ledger.audit import Seal, verify
        from caseledger.ledger.audit.actors import UnauthenticatedEvents

        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise ValidationError(f"{name}: give a time with its offset, e.g. 2026-11-01T00:00Z")
        if since is not None and until is not None and until <= since:
            raise ValidationError(f"until {until.isoformat()} is not after since {since.isoformat()}")
        held = _kept_note(checkpoint, key)
        try:
            kept_seal = Seal.parse(seal) if seal else None
        except ConfigurationError as error:  # the seal is the caller's input here, not the service's configuration
            raise ValidationError(str(error)) from None
        ledger = state.ledger()
        unauthenticated = UnauthenticatedEvents(ledger.codec)
        report = verify(ledger, customer=customer, since=since, until=until, seal=kept_seal,
                        checkpoint=held, collect=unauthenticated)
        extra: dict[str, Any] = {}
        if listed:
            extra = {"unauthenticated": [e.as_dict() for e in unauthenticated.listed],
                     "simulated_clock": [e.as_dict() for e in unauthenticated.simulated_listed]}
        return plain({**report.as_dict(), "ok": report.ok, "unauthenticated_events": unauthenticated.count,
                      "simulated_clock_events": unauthenticated.simulated, **extra})
