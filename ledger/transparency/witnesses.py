"""Witnesses: each signed checkpoint submitted by the C2SP tlog-witness protocol, their cosignatures kept.

A witness (https://c2sp.org/tlog-witness) keeps, per log origin, the largest checkpoint it cosigned. The
ledger POSTs ``<url>/add-checkpoint`` with ``old <size it cosigned>``, the RFC 6962 consistency proof
from that size, a blank line and the signed checkpoint; the witness checks the ledger's signature and
the proof and answers with its cosignature line (200), or its own size (409: the ledger submits again
from there), or refuses (403/404: it does not know this log or key; 422: the proof does not verify —
the log's first leaves are not those it cosigned: a split view or a rollback). A cosigned checkpoint
can no longer be one of two views of the log: the witness never cosigns a second root for a size.

Configuration (read by the roots into :class:`~caseledger.ledger.settings.TransparencySettings`):
``CASELEDGER_WITNESSES`` lists ``NAME VKEY URL`` entries separated by ``;`` or newlines (VKEY the
witness's cosignature/v1 verifier key, URL its submission prefix); ``CASELEDGER_WITNESS_POLICY``
``K of NAME,NAME…`` (or ``K``, ``all``, ``any``: of every configured witness) is what ``audit`` asks
of a checkpoint when no ``--witness`` is given.

A witness never blocks the ledger: the publisher and the checkpointer hand each checkpoint to a
:class:`WitnessSubmitter` thread that submits the newest one only; a failure is logged (the witness's
name and what to do, never a URL's credentials) and the next checkpoint tries again.
:func:`cosigned_note` is the checkpoint note with its cosignature lines: what is served and exported.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from caseledger.ledger.errors import ConfigurationError
from caseledger.ledger.settings import WITNESS_POLICY_ENV, WITNESSES_ENV, TransparencySettings
from caseledger.ledger.store_ports import StoredCheckpoint, StoredCosignature
from caseledger.ledger.transparency.tree import MerkleLog
from caseledger.verify.cosignatures import WitnessKey, WitnessPolicy
from caseledger.verify.failures import MalformedInput
from caseledger.verify.note import split_note

if TYPE_CHECKING:
    from caseledger.ledger.application import CaseLedger

__all__ = ["Witness", "WitnessSubmitter", "configured_policy", "configured_witnesses", "cosigned_note",
           "latest_cosigned_note", "witness_now"]

log = logging.getLogger("caseledger.witnesses")

TIMEOUT_S = 5.0
MAX_PROOF_LINES = 63  # tlog-witness: a client sends at most 63 consistency proof lines


@dataclass(frozen=True)
class Witness:
    """A configured witness: the name the policy uses, its cosigning key, its submission prefix."""

    name: str
    key: WitnessKey
    url: str

    @property
    def where(self) -> str:
        """The URL as logs and errors show it: without credentials, query or fragment."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"


def configured_witnesses(settings: TransparencySettings) -> list[Witness]:
    """The witnesses of ``CASELEDGER_WITNESSES`` (none when unset); ConfigurationError names a wrong entry."""
    witnesses: list[Witness] = []
    for number, entry in enumerate(re.split(r"[;\n]", settings.witnesses or ""), 1):
        words = entry.split()
        if not words:
            continue
        where = f"{WITNESSES_ENV} entry {number}"
        if len(words) != 3:
            raise ConfigurationError(f"{where}: give NAME VKEY URL (the witness's cosignature/v1 verifier key and "
                                     "its submission prefix), entries separated by ';'")
        name, key, url = words
        try:
            witness_key = WitnessKey.parse(key)
        except MalformedInput as error:
            raise ConfigurationError(f"{where}: {error}") from None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"{where}: the URL of witness {name} is not http(s)://HOST[/PREFIX]")
        if any(w.name == name or w.key == witness_key for w in witnesses):
            raise ConfigurationError(f"{where}: witness {name} is listed twice (by name or key)")
        witnesses.append(Witness(name, witness_key, url.rstrip("/")))
    return witnesses


def configured_policy(settings: TransparencySettings) -> WitnessPolicy | None:
    """``CASELEDGER_WITNESS_POLICY`` over the configured witnesses; None when unset."""
    given = (settings.witness_policy or "").strip()
    if not given:
        return None
    witnesses = {w.name: w for w in configured_witnesses(settings)}
    found = re.fullmatch(r"(all|any|[0-9]{1,3})(?:\s+of\s+(.+))?", given)
    if found is None or not witnesses:
        raise ConfigurationError(f"{WITNESS_POLICY_ENV}={given!r}: give 'K of NAME,NAME…' (or K, all, any: of "
                                 f"every witness of {WITNESSES_ENV}), with the witnesses listed in {WITNESSES_ENV}")
    names = re.split(r"[,\s]+", found.group(2).strip()) if found.group(2) else list(witnesses)
    unknown = [n for n in names if n not in witnesses]
    if unknown:
        raise ConfigurationError(f"{WITNESS_POLICY_ENV}: {', '.join(unknown)} not in {WITNESSES_ENV}")
    needed = {"all": len(names), "any": 1}.get(found.group(1)) or int(found.group(1))
    try:
        return WitnessPolicy.k_of(needed, [witnesses[n].key for n in names], names)
    except MalformedInput as error:
        raise ConfigurationError(f"{WITNESS_POLICY_ENV}: {error}") from None


def text_sha256(note: str) -> bytes:
    """SHA-256 of a signed note's text (its signature lines excluded): what a cosignature covers."""
    return hashlib.sha256(split_note(note)[0].encode()).digest()


def cosigned_note(ledger: CaseLedger, checkpoint: StoredCheckpoint) -> str:
    """The checkpoint's signed note followed by every cosignature kept for it (the note alone if none)."""
    rows = ledger.storage.cosignatures().select_cosignatures(text_sha256(checkpoint.note))
    return checkpoint.note + "".join(r.line + "\n" for r in rows)


def latest_cosigned_note(ledger: CaseLedger) -> str | None:
    """The ledger's latest checkpoint with its cosignatures (what ``/checkpoint`` serves); None before the first."""
    latest = ledger.storage.merkle().latest_checkpoint()
    return cosigned_note(ledger, latest) if latest is not None else None


def witness_now(ledger: CaseLedger, checkpoint: StoredCheckpoint) -> dict[str, str]:
    """Submit ``checkpoint`` to the configured witnesses now, unless each already cosigned it; what each answered."""
    submitter = WitnessSubmitter.configured(ledger)
    if submitter is None:
        return {}
    with submitter:
        have = {r.witness for r in ledger.storage.cosignatures().select_cosignatures(text_sha256(checkpoint.note))}
        submitter.witnesses = [w for w in submitter.witnesses if w.key.name not in have]
        return submitter.submit(checkpoint)


class WitnessSubmitter:
    """Submits checkpoints to the configured witnesses and keeps their cosignatures.

    :meth:`submit` does it now (``audit checkpoint``, an export); :meth:`offer` hands a checkpoint to a
    thread of its own (the publisher, the checkpointer), which submits the newest one it was offered.
    """

    def __init__(self, ledger: CaseLedger, witnesses: list[Witness], *, timeout_s: float = TIMEOUT_S,
                 client: Any = None) -> None:
        self.ledger = ledger
        self.witnesses = witnesses
        self.timeout_s = timeout_s
        self._client = client
        self._known: dict[str, int] = {}  # a witness's size, as its 409 said
        self._pending: StoredCheckpoint | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @classmethod
    def configured(cls, ledger: CaseLedger, **options: Any) -> WitnessSubmitter | None:
        """A submitter to the ledger's configured witnesses; None when there are none."""
        witnesses = configured_witnesses(ledger.settings.transparency)
        return cls(ledger, witnesses, **options) if witnesses else None

    # -- in the background ---------------------------------------------------------------------------------

    def offer(self, checkpoint: StoredCheckpoint) -> None:
        """Submit ``checkpoint`` soon, on the submitter's thread (a newer offer replaces one not yet sent)."""
        with self._lock:
            self._pending = checkpoint
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="witness-submitter", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                checkpoint, self._pending = self._pending, None
            if checkpoint is not None:
                try:
                    self.submit(checkpoint)
                except Exception:  # never let a bug stop the thread: the next checkpoint is submitted again
                    log.exception("witness submission failed; the next checkpoint is submitted again")
            if self._stop.is_set():
                with self._lock:  # stopping: done once what was offered last (maybe during that submission) is sent
                    if self._pending is None:
                        return

    def close(self, *, wait_s: float | None = None) -> None:
        """Submit what was offered last, then stop the thread (waiting at most ``wait_s``)."""
        thread = self._thread
        if thread is not None:
            self._stop.set()
            self._wake.set()
            thread.join(wait_s if wait_s is not None else 3 * self.timeout_s * len(self.witnesses) + 1)
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> WitnessSubmitter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- now -----------------------------------------------------------------------------------------------

    def submit(self, checkpoint: StoredCheckpoint) -> dict[str, str]:
        """Submit ``checkpoint`` to every witness now; what each answered (``cosigned``, or why not)."""
        tree = MerkleLog.of(self.ledger)
        outcomes = {}
        for witness in self.witnesses:
            try:
                outcomes[witness.name] = self._submit_to(witness, checkpoint, tree)
            except Exception as error:  # a network error, a witness's bad answer: logged, tried next time
                outcomes[witness.name] = f"unreachable: {type(error).__name__}"
                log.warning("witness %s (%s) unreachable: %s; the next checkpoint is submitted again",
                            witness.name, witness.where, type(error).__name__)
        return outcomes

    def _old_size(self, witness: Witness) -> int:
        if witness.name in self._known:
            return self._known[witness.name]
        row = self.ledger.storage.cosignatures().latest_cosignature(witness.key.name, witness.key.key_id.hex())
        return row.tree_size if row is not None else 0

    def _submit_to(self, witness: Witness, checkpoint: StoredCheckpoint, tree: MerkleLog) -> str:
        old = self._old_size(witness)
        for _attempt in range(3):
            if old > checkpoint.tree_size:
                self._known[witness.name] = old
                log.error("witness %s has cosigned %s leaves of this log, more than this checkpoint's %s: the log "
                          "was rolled back, or another ledger signs with this origin (docs/audit.md, Witnesses)",
                          witness.name, old, checkpoint.tree_size)
                return f"ahead: the witness holds {old} leaves"
            proof = tree.consistency_proof(old, checkpoint.tree_size) if 0 < old < checkpoint.tree_size else []
            if len(proof) > MAX_PROOF_LINES:
                return "proof too long"
            body = f"old {old}\n" + "".join(_b64(h) + "\n" for h in proof) + "\n" + checkpoint.note
            response = self._post(f"{witness.url}/add-checkpoint", body.encode())
            status = response.status_code
            if status == 200:
                self._known.pop(witness.name, None)
                return self._keep(witness, checkpoint, response.text)
            if status == 409:
                known = response.text.strip()
                if not known.isdigit() or int(known) == old:
                    break
                old = int(known)
                self._known[witness.name] = old
                continue
            if status == 422:
                log.error("witness %s refused checkpoint %s: the consistency proof from the %s leaves it cosigned "
                          "does not verify — this log's first %s leaves are not those it saw: a split view or a "
                          "rollback (docs/audit.md, Witnesses)", witness.name, checkpoint.tree_size, old, old)
                return "refused: inconsistent with what it cosigned"
            if status in (403, 404):
                log.error("witness %s (%s) refused checkpoint %s (HTTP %s): it does not know this log's origin or "
                          "key; give its operator the origin and `caseledger audit key`", witness.name,
                          witness.where, checkpoint.tree_size, status)
                return f"refused: HTTP {status}, unknown log or key"
            log.warning("witness %s (%s) answered HTTP %s to checkpoint %s; the next checkpoint is submitted again",
                        witness.name, witness.where, status, checkpoint.tree_size)
            return f"HTTP {status}"
        log.warning("witness %s kept answering 409 to checkpoint %s; the next checkpoint is submitted again",
                    witness.name, checkpoint.tree_size)
        return "conflict"

    def _keep(self, witness: Witness, checkpoint: StoredCheckpoint, answer: str) -> str:
        """Keep the answer's cosignature lines of the witness's key that verify; lines of other keys are ignored."""
        text = split_note(checkpoint.note)[0]
        digest = hashlib.sha256(text.encode()).digest()
        store = self.ledger.storage.cosignatures()
        kept = 0
        for line in answer.splitlines():
            try:
                _, signatures = split_note(text + "\n" + line + "\n")
            except MalformedInput:
                continue
            sig = signatures[0]
            if sig.name != witness.key.name or sig.key_id != witness.key.key_id:
                continue
            if witness.key.verify(text, sig.signature) is None:
                log.error("witness %s returned a cosignature that does not verify with its configured key; "
                          "check the key in %s", witness.name, WITNESSES_ENV)
                continue
            store.insert_cosignature(StoredCosignature(witness.key.name, witness.key.key_id.hex(),
                                                       checkpoint.tree_size, digest, line, datetime.now(UTC)))
            kept += 1
        if not kept:
            log.error("witness %s answered 200 with no cosignature of its configured key %s", witness.name,
                      witness.key)
            return "no valid cosignature"
        log.info("checkpoint %s cosigned by witness %s", checkpoint.tree_size, witness.name)
        return "cosigned"

    def _post(self, url: str, body: bytes) -> Any:
        import httpx

        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_s)
        return self._client.post(url, content=body, headers={"Content-Type": "text/plain; charset=utf-8"})


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()
