"""Names without personal data: a customer's pseudonymous id and an identity's keyed claim id.

A customer first known by an identity gets a pseudonymous id (``cus-`` and 16 hex digits, a keyed
hash of the identity), and an identity's claim is found under a keyed id too, so that the store,
the topics and the Kafka keys never carry an e-mail address or a phone number in clear. Ledgers
written before keep their customer ids and claims (the lookups try the old name-based id as
well); docs/privacy.md says what that leaves in clear.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import cached_property
from uuid import UUID

from caseledger.ledger.core import LedgerCore
from caseledger.ledger.db_errors import translate_errors
from caseledger.ledger.domain.directory import IdentityClaim, name_id
from caseledger.ledger.domain.values import Identity

__all__ = ["NAME_BASED_CLAIMS", "PSEUDONYM_SUBJECT", "Pseudonyms"]

PSEUDONYM_SUBJECT = "ledger:pseudonyms"
"""The key store's subject of the ledger's own key for pseudonyms (never erased)."""
NAME_BASED_CLAIMS = "ledger:name-based-claims"
"""A marker row: the ledger held events before its pseudonym key, so identity claims may have name-based ids."""


class Pseudonyms:
    """The keyed names of customers and identity claims, with the ledger's own secret."""

    def __init__(self, core: LedgerCore) -> None:
        self.core = core
        self._names: dict[str, tuple[str, UUID]] = {}  # identities in clear: forgotten on any erasure
        core.on_erasure(self._names.clear)

    @cached_property
    def _pseudonym_key(self) -> bytes:
        with translate_errors(self.core.settings.store.describe()):
            table = self.core.data_keys.table
            if not table.by_subjects([PSEUDONYM_SUBJECT]) and self.core.recorder.max_notification_id():
                # Written by an earlier release: its claims are under name-based ids; remember to look there.
                table.mark(NAME_BASED_CLAIMS, at=self.core.clock())
            return self.core.data_keys.ledger_secret(PSEUDONYM_SUBJECT)

    @cached_property
    def _name_based_claims(self) -> bool:
        self._pseudonym_key  # noqa: B018  (decides it, once)
        with translate_errors(self.core.settings.store.describe()):
            return bool(self.core.data_keys.table.by_subjects([NAME_BASED_CLAIMS]))

    def customer_id_for(self, identity: Identity) -> str:
        """The pseudonymous id of a new customer first known by ``identity``."""
        return self._names_of(identity)[0]

    def claim_id_for(self, identity: Identity) -> UUID:
        """The id of the identity's claim: a keyed hash, so the id alone tells nothing of the identity."""
        return self._names_of(identity)[1]

    def _names_of(self, identity: Identity) -> tuple[str, UUID]:
        key = str(identity)
        names = self._names.get(key)
        if names is None:  # one contact asks several times: two HMACs once
            secret = self._pseudonym_key
            customer = hmac.new(secret, f"customer\n{key}".encode(), hashlib.sha256).hexdigest()
            claim = hmac.new(secret, f"identity\n{key}".encode(), hashlib.sha256).hexdigest()
            if len(self._names) >= 10_000:
                self._names.clear()
            names = self._names[key] = (f"cus-{customer[:16]}", name_id(f"identity-claim:{claim}"))
        return names

    def claim_ids_for(self, identity: Identity) -> list[UUID]:
        """Where the identity's claim may be: the keyed id, then (ledgers of earlier releases) the name-based id."""
        keyed = self.claim_id_for(identity)
        return [keyed, IdentityClaim.id_for(identity)] if self._name_based_claims else [keyed]

    def find_claim(self, identity: Identity) -> IdentityClaim | None:
        """The identity's claim, wherever it is, or None."""
        ids = self.claim_ids_for(identity)
        if len(ids) > 1 and self.core.in_unit_of_work:
            self.core.prefetch(ids)  # both in one query
        for claim_id in ids:
            claim = self.core.get_optional(claim_id)
            if claim is not None:
                return claim  # type: ignore[no-any-return]
        return None
