"""The ledger application: which object answers every command, query and lookup of the ledger.

:class:`CaseLedger` is a façade: each of its commands is a method of one service — intake
(:mod:`~caseledger.ledger.intake.contacts`), casework (:mod:`~caseledger.ledger.casework`), lookups
(:mod:`~caseledger.ledger.lookups`), privacy (:mod:`~caseledger.ledger.privacy`) — and every service
is given the :class:`~caseledger.ledger.core.LedgerCore` it works on (store, codec, clock, policy,
units of work), which the façade is. A command loads the aggregates it needs, lets them decide,
and saves every new event in one transaction — case events, directory entries and the audit chain
hashes together — so it either happened completely or not at all. What a caller may ask of it is
typed once, :class:`caseledger.ledger.commands.LedgerCommands`, the same over HTTP
(:class:`caseledger.ledger.service.client.LedgerClient`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from caseledger.ledger.access.principals import IssuedToken, PrincipalRegistry
from caseledger.ledger.casework import Casework, TickReport
from caseledger.ledger.core import LedgerCore
from caseledger.ledger.domain.policy import ResponsePolicy
from caseledger.ledger.domain.values import (
    SYSTEM,
    Actor,
)
from caseledger.ledger.intake.contacts import (
    ContactIntake,
    ContactOutcome,
    new_reference,
    normalise_reference,
)
from caseledger.ledger.lookups import Lookups
from caseledger.ledger.privacy.erasure import Erasure
from caseledger.ledger.privacy.holds import LegalHolds
from caseledger.ledger.privacy.pseudonyms import Pseudonyms
from caseledger.ledger.privacy.retention_sweep import RetentionReport, RetentionSweep
from caseledger.ledger.settings import LedgerSettings
from caseledger.ledger.store_ports import IDEMPOTENCY_WINDOW, PrincipalRow
from caseledger.ledger.unit_of_work import UnitOfWork

__all__ = [
    "CaseLedger", "ContactOutcome", "LedgerCore", "TickReport", "UnitOfWork", "new_reference", "normalise_reference",
]


S = TypeVar("S")
P = ParamSpec("P")
R = TypeVar("R")


class _Via(Generic[S, P, R]):
    """A command of the façade that is one service's method, signature and all: ``respond = _Via("cases", Casework.respond)``."""

    def __init__(self, service: str, method: Callable[Concatenate[S, P], R]) -> None:
        self.service = service
        self.method = method
        self.__doc__ = method.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        if name != self.method.__name__:
            raise TypeError(f"{owner.__name__}.{name} must have its service method's name ({self.method.__name__})")

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Callable[Concatenate[S, P], R]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> Callable[P, R]: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> Any:
        if obj is None:
            return self.method
        bound = getattr(getattr(obj, self.service), self.method.__name__)
        vars(obj)[self.method.__name__] = bound  # found directly from now on (this descriptor has no __set__)
        return bound


class CaseLedger(LedgerCore):
    """Every command of the case ledger, over one event store: a façade of the services below."""

    def __init__(
        self,
        settings: LedgerSettings | None = None,
        *,
        policy: ResponsePolicy | None = None,
        clock: Callable[[], datetime] | None = None,
        simulated_clock: bool = False,
        load_policy: bool = True,
    ) -> None:
        super().__init__(settings, policy=policy, clock=clock, simulated_clock=simulated_clock,
                         load_policy=load_policy)
        self.pseudonyms = Pseudonyms(self)
        self.lookups = Lookups(self, self.pseudonyms)
        self.intake = ContactIntake(self, self.pseudonyms, self.lookups)
        self.cases = Casework(self, self.lookups)
        self.erasure = Erasure(self, self.lookups, self.pseudonyms)
        self.holds = LegalHolds(self, self.lookups)
        self.retention = RetentionSweep(self, self.lookups, self.erasure)

    # -- intake: contacts, resubmissions, collisions, rejections (ledger/intake/contacts.py) -----------------
    record_contact = _Via("intake", ContactIntake.record_contact)
    contact_lookups = _Via("intake", ContactIntake.contact_lookups)
    reject_intake = _Via("intake", ContactIntake.reject_intake)
    contact_receipt = _Via("intake", ContactIntake.contact_receipt)
    contact_receipt_proof = _Via("intake", ContactIntake.contact_receipt_proof)

    # -- lookups (ledger/lookups.py) ---------------------------------------------------------------------
    get_case = _Via("lookups", Lookups.get_case)
    find_by_message = _Via("lookups", Lookups.find_by_message)
    resolve_customer = _Via("lookups", Lookups.resolve_customer)
    cases_of = _Via("lookups", Lookups.cases_of)
    history = _Via("lookups", Lookups.history)
    collisions = _Via("lookups", Lookups.collisions)
    rejections = _Via("lookups", Lookups.rejections)
    active_cases = _Via("lookups", Lookups.active_cases)
    case_record = _Via("lookups", Lookups.case_record)
    find_record = _Via("lookups", Lookups.find_record)
    case_records_of = _Via("lookups", Lookups.case_records_of)
    collision_records = _Via("lookups", Lookups.collision_records)
    rejection_records = _Via("lookups", Lookups.rejection_records)

    # -- working a case (ledger/casework.py) ----------------------------------------------------------------
    respond = _Via("cases", Casework.respond)
    waive_item = _Via("cases", Casework.waive_item)
    make_promise = _Via("cases", Casework.make_promise)
    keep_promise = _Via("cases", Casework.keep_promise)
    withdraw_promise = _Via("cases", Casework.withdraw_promise)
    break_promise = _Via("cases", Casework.break_promise)
    change_status = _Via("cases", Casework.change_status)
    close_case = _Via("cases", Casework.close_case)
    cancel_case = _Via("cases", Casework.cancel_case)
    reopen_case = _Via("cases", Casework.reopen_case)
    assign = _Via("cases", Casework.assign)
    hand_off = _Via("cases", Casework.hand_off)
    escalate_to_human = _Via("cases", Casework.escalate_to_human)
    propose_action = _Via("cases", Casework.propose_action)
    approve_action = _Via("cases", Casework.approve_action)
    reject_action = _Via("cases", Casework.reject_action)
    record_action_executed = _Via("cases", Casework.record_action_executed)
    record_delivery = _Via("cases", Casework.record_delivery)
    record_delivery_failure = _Via("cases", Casework.record_delivery_failure)
    record_read = _Via("cases", Casework.record_read)
    set_customer_locale = _Via("cases", Casework.set_customer_locale)

    # -- a customer's personal data (ledger/privacy/) ---------------------------------------------------------
    customer_id_for = _Via("pseudonyms", Pseudonyms.customer_id_for)
    claim_id_for = _Via("pseudonyms", Pseudonyms.claim_id_for)
    claim_ids_for = _Via("pseudonyms", Pseudonyms.claim_ids_for)
    erase_customer = _Via("erasure", Erasure.erase_customer)
    customer_privacy = _Via("erasure", Erasure.customer_privacy)
    erased_customers = _Via("erasure", Erasure.erased_customers)
    data_subject = _Via("erasure", Erasure.data_subject)
    place_legal_hold = _Via("holds", LegalHolds.place_legal_hold)
    release_legal_hold = _Via("holds", LegalHolds.release_legal_hold)
    apply_retention = _Via("retention", RetentionSweep.apply_retention)

    # -- principals (ledger/access/principals.py) ----------------------------------------------------------

    def add_principal(self, name: str, role: str, *, team: str | None = None, zone: str | None = None,
                      locale: str | None = None) -> IssuedToken:
        """Add a principal (optionally its team, IANA zone and BCP 47 locale); its token is in the answer, once
        (the ledger keeps only its hash)."""
        return PrincipalRegistry(self.principal_store).add(name, role, team=team, zone=zone, locale=locale)

    def update_principal(self, name: str, *, team: str | None = None, zone: str | None = None,
                         locale: str | None = None) -> PrincipalRow:
        """Change a principal's team, zone or locale (None: unchanged; "": cleared)."""
        given = {k: v for k, v in (("team", team), ("zone", zone), ("locale", locale)) if v is not None}
        return PrincipalRegistry(self.principal_store).update(name, **given)

    def revoke_principal(self, name: str) -> None:
        """Revoke a principal's token at once; its name is never reused."""
        PrincipalRegistry(self.principal_store).revoke(name)

    def principals(self) -> list[PrincipalRow]:
        """Principals: name, role, created, revoked (never a token)."""
        return PrincipalRegistry(self.principal_store).list()

    # -- deadlines and retention, on the ledger's clock ----------------------------------------------------

    def tick(
        self, *, actor: Actor = SYSTEM, references: Iterable[str] | None = None, batch_size: int = 200,
        skip_retention: str | None = None,
    ) -> TickReport:
        """Record a DeadlineMissed for every deadline past due, once, then apply retention, on the ledger's clock.

        What it records names ``actor``; ``skip_retention`` says why it must erase nobody (its caller
        may not erase customers). Without ``references`` every case is checked (see
        :meth:`Casework.record_missed_deadlines`). Last, it removes the copies of destroyed keys' bytes
        the database still keeps, this tick's and those an earlier erasure left pending.
        """
        report = self.cases.record_missed_deadlines(actor=actor, references=references, batch_size=batch_size)
        retention = self.retention.apply_retention(actor=actor) if skip_retention is None else RetentionReport()
        # The service's idempotency answers past their window go too (quoting requests, they are personal data).
        self.storage.idempotency().purge_idempotency(report.now - IDEMPOTENCY_WINDOW)
        return dataclasses.replace(report, retention=retention, retention_skipped=skip_retention,
                                   erasure_pending=self.erasure.forget_destroyed())

