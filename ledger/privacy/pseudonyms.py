"""Names without personal data, that an erasure unlinks: customer ids, identity claims, channel messages, digests.

Intake must find an identity's claim and a channel message's registration *before* it knows the
customer, so their ids cannot be keyed by the customer's data key. Each identity and each channel
message id has instead its own random **lookup secret**, stored (wrapped by the KEK) in the key
store under ``lookup:`` + an HMAC of the value with the ledger's own key. What is recorded is
derived from that secret: the claim's and the registration's aggregate ids, a new customer's
``cus-`` id, the keyed content digest (``v2:``). Erasing a customer deletes the secrets of their
identities and channel messages: the ledger key still gives the lookup id, but no row is there,
so nothing recorded can be recomputed from an e-mail address, a phone number or a message id, and
an identity that writes again gets a new secret, a new claim and a new customer.

Ledgers written before keep their names: claims under ids keyed by the ledger's pseudonym key
(and name-based ids before that), registrations under name-based ids; the lookups try those too
when the ledger held events before its first lookup secret. docs/privacy.md says what that
leaves linkable.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from functools import cached_property
from typing import Any
from uuid import UUID

from caseledger.ledger.core import LedgerCore
from caseledger.ledger.db_errors import translate_errors
from caseledger.ledger.domain.directory import ChannelMessage, Customer, IdentityClaim, name_id
from caseledger.ledger.domain.values import Channel, ContactDraft, Identity

__all__ = ["LOOKUP_SECRETS", "NAME_BASED_CLAIMS", "PSEUDONYM_CLAIMS", "PSEUDONYM_SUBJECT", "Pseudonyms"]

PSEUDONYM_SUBJECT = "ledger:pseudonyms"
"""The key store's subject of the ledger's own key for lookup ids (never erased; it alone finds nothing)."""
NAME_BASED_CLAIMS = "ledger:name-based-claims"
"""A marker row: the ledger held events before its pseudonym key, so identity claims may have name-based ids."""
LOOKUP_SECRETS = "ledger:lookup-secrets"
"""A marker row: from here on, claims and channel messages are named through lookup secrets."""
PSEUDONYM_CLAIMS = "ledger:pseudonym-claims"
"""A marker row: the ledger held events before lookup secrets (claims under pseudonym-key ids, messages name-based)."""

Message = tuple[Channel, str]


class Pseudonyms:
    """The keyed names of customers, identity claims and channel messages, through per-value lookup secrets."""

    def __init__(self, core: LedgerCore) -> None:
        self.core = core
        self._lookup_ids: dict[str, str] = {}  # identities in clear → what the ledger's key gives: forgotten on any erasure
        core.on_erasure(self._lookup_ids.clear)

    # -- the ledger's key and what this ledger held before ----------------------------------------------

    @cached_property
    def _pseudonym_key(self) -> bytes:
        with translate_errors(self.core.settings.store.describe()):
            table = self.core.data_keys.table
            if not table.by_subjects([PSEUDONYM_SUBJECT]) and self.core.recorder.max_notification_id():
                # Written by an earlier release: its claims are under name-based ids; remember to look there.
                table.mark(NAME_BASED_CLAIMS, at=self.core.clock())
            return self.core.data_keys.ledger_secret(PSEUDONYM_SUBJECT)

    def settle_generation(self) -> None:
        """Decide, before this release records its first event, whether the store was written by an earlier one.

        The decision reads "no marker yet, but events" as "an earlier release's ledger"; a fresh ledger whose first
        events need no lookup (a rejected intake record) must decide it before them, or it reads as an old one."""
        self._earlier_names  # noqa: B018

    @cached_property
    def _earlier_names(self) -> tuple[bool, bool]:
        """(claims may be under pseudonym-key ids and messages name-based, claims may be name-based)."""
        self._pseudonym_key  # noqa: B018  (decides the second, once)
        with translate_errors(self.core.settings.store.describe()):
            table = self.core.data_keys.table
            if not table.by_subjects([LOOKUP_SECRETS]):
                if self.core.recorder.max_notification_id():
                    table.mark(PSEUDONYM_CLAIMS, at=self.core.clock())
                table.mark(LOOKUP_SECRETS, at=self.core.clock())
            markers = {r.subject for r in table.by_subjects([PSEUDONYM_CLAIMS, NAME_BASED_CLAIMS])}
        return PSEUDONYM_CLAIMS in markers, NAME_BASED_CLAIMS in markers

    def _lookup_id(self, kind: str, value: str) -> str:
        """Where the secret of ``value`` is kept: what the ledger's key alone computes, and all it computes."""
        name = f"{kind}\n{value}"
        lookup_id = self._lookup_ids.get(name)
        if lookup_id is None:  # one contact asks several times
            if len(self._lookup_ids) >= 10_000:
                self._lookup_ids.clear()
            lookup_id = "lookup:" + hmac.new(self._pseudonym_key, name.encode(), hashlib.sha256).hexdigest()[:32]
            self._lookup_ids[name] = lookup_id
        return lookup_id

    @staticmethod
    def _identity_value(identity: Identity) -> tuple[str, str]:
        return "identity", str(identity)

    @staticmethod
    def _message_value(channel: Channel, channel_message_id: str) -> tuple[str, str]:
        return "message", f"{Channel.parse(channel).value}:{channel_message_id}"

    def _secrets(self, values: Iterable[tuple[str, str]], *, make: bool) -> dict[tuple[str, str], bytes]:
        ids = {value: self._lookup_id(*value) for value in values}
        with translate_errors(self.core.settings.store.describe()):
            found = self.core.data_keys.lookup_secrets(ids.values(), make=make)
        return {value: found[i] for value, i in ids.items() if i in found}

    def _secret(self, value: tuple[str, str], *, make: bool) -> bytes | None:
        known = self.core.data_keys.lookup_secret_in_memory(self._lookup_id(*value))
        return known if known is not None else self._secrets([value], make=make).get(value)

    def prefetch(self, identities: Iterable[Identity] = (), messages: Iterable[Message] = (), *,
                 make: bool = False) -> None:
        """Read the secrets of these identities and channel messages in one query (a batch of contacts);
        ``make``: make those that have none (stored with the batch's events)."""
        self._secrets([*map(self._identity_value, identities), *(self._message_value(*m) for m in messages)],
                      make=make)

    # -- customers and identity claims ----------------------------------------------------------------

    def customer_id_for(self, identity: Identity) -> str:
        """The id of a new customer first known by ``identity``: random for whoever has not the identity's secret."""
        secret = self._secret(self._identity_value(identity), make=True)
        assert secret is not None
        return _customer_id(secret, identity)

    def claim_id_for(self, identity: Identity) -> UUID:
        """The id of a new claim of the identity: keyed by its secret, so the id alone tells nothing of it."""
        secret = self._secret(self._identity_value(identity), make=True)
        assert secret is not None
        return _claim_id(secret, identity)

    def claim_ids_for(self, identity: Identity) -> list[UUID]:
        """Where the identity's claim may be: its keyed id, then (ledgers of earlier releases) their ids."""
        secret = self._secret(self._identity_value(identity), make=False)
        ids = [_claim_id(secret, identity)] if secret is not None else []
        pseudonym_claims, name_based = self._earlier_names
        if pseudonym_claims:
            key = self._pseudonym_key
            ids.append(name_id("identity-claim:" + _hmac(key, "identity\n" + str(identity))))
        if name_based:
            ids.append(IdentityClaim.id_for(identity))
        return ids

    def find_claim(self, identity: Identity) -> IdentityClaim | None:
        """The identity's live claim, wherever it is, or None (a claim of an erased identity is no one's now)."""
        ids = self.claim_ids_for(identity)
        keyed = self._secret(self._identity_value(identity), make=False) is not None
        if len(ids) > 1 and self.core.in_unit_of_work:
            self.core.prefetch(ids)  # all in one query
        for n, claim_id in enumerate(ids):
            claim: Any = self.core.get_optional(claim_id)
            if claim is None:
                continue
            if (n or not keyed) and self._erased(claim.customer_id, claim_id=claim.id):
                # A claim of an earlier release outlives the erasure of its identity (its id is not keyed by
                # a secret the erasure deletes): the customer's record of the erasure says it is no one's.
                continue
            return claim  # type: ignore[no-any-return]
        return None

    def _erased(self, customer_id: str, *, claim_id: UUID | None = None) -> bool:
        customer: Any = self.core.get_optional(Customer.id_for(customer_id))
        if customer is None:
            return False
        if claim_id is not None:
            return str(claim_id) in customer.erased_claims
        return bool(customer.erased)

    # -- channel messages and what makes a request the same ---------------------------------------------

    def message_id_for(self, channel: Channel, channel_message_id: str) -> UUID:
        """The id of a new registration of this channel message, keyed by its secret."""
        value = self._message_value(channel, channel_message_id)
        secret = self._secret(value, make=True)
        assert secret is not None
        return name_id(f"message:{_hmac(secret, value[1])}")

    def message_ids_for(self, channel: Channel, channel_message_id: str) -> list[UUID]:
        """Where the channel message's registration may be: its keyed id, then (earlier releases) its name-based id."""
        value = self._message_value(channel, channel_message_id)
        secret = self._secret(value, make=False)
        ids = [name_id(f"message:{_hmac(secret, value[1])}")] if secret is not None else []
        if self._earlier_names[0]:
            ids.append(ChannelMessage.id_for(Channel.parse(channel), channel_message_id))
        return ids

    def find_message(self, channel: Channel, channel_message_id: str) -> ChannelMessage | None:
        """The registration of this channel message, or None (after its customer's erasure: None)."""
        ids = self.message_ids_for(channel, channel_message_id)
        if len(ids) > 1 and self.core.in_unit_of_work:
            self.core.prefetch(ids)
        keyed = len(ids) > 1 or not self._earlier_names[0]
        for n, message_id in enumerate(ids):
            message: Any = self.core.get_optional(message_id)
            if message is None:
                continue
            if (n or not keyed) and self._erased(message.customer_id):
                continue  # a registration of an earlier release whose customer was erased: no one's now
            return message  # type: ignore[no-any-return]
        return None

    def content_digest_for(self, draft: ContactDraft) -> str:
        """The request's content digest, keyed by its sender identity's secret (``v2:``; an erasure deletes it)."""
        secret = self._secret(self._identity_value(draft.identity), make=True)
        return draft.content_digest(secret)

    # -- erasure --------------------------------------------------------------------------------------

    def unlink(self, identities: Iterable[Identity] = (), messages: Iterable[Message] = ()) -> int:
        """Delete the secrets of these identities and channel messages for good, so nothing recorded under them
        is found from them again; how many were given. An erasure calls it once the customer's is recorded."""
        ids = [self._lookup_id(*self._identity_value(i)) for i in identities]
        ids += [self._lookup_id(*self._message_value(*m)) for m in messages]
        with translate_errors(self.core.settings.store.describe()):
            self.core.data_keys.delete_lookups(ids)
        return len(ids)


def _hmac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def _customer_id(secret: bytes, identity: Identity) -> str:
    return "cus-" + _hmac(secret, "customer\n" + str(identity))[:16]


def _claim_id(secret: bytes, identity: Identity) -> UUID:
    return name_id("identity-claim:" + _hmac(secret, "identity\n" + str(identity)))
