"""The ledger application: one service for every command, query and lookup.

Each command loads the aggregates it needs, lets them decide, and saves every new event of
the command in one transaction — case events, directory entries and the audit chain hashes
together — so a command either happened completely or not at all.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.persistence import Mapper, Tracking

from caseledger.ledger.avro.codec import AvroEventCodec, AvroMapper, event_hash
from caseledger.ledger.db_errors import lost_schema_race, translate_errors
from caseledger.ledger.domain.case import Case
from caseledger.ledger.domain.case_parts import LEDGER_ACTIONS, Status
from caseledger.ledger.domain.catalog import topic_of
from caseledger.ledger.domain.claimed_times import check_claim
from caseledger.ledger.domain.directory import (
    ChannelMessage,
    Customer,
    case_id_for,
)
from caseledger.ledger.domain.events import Context, LedgerEvent
from caseledger.ledger.domain.permissions import Authentication
from caseledger.ledger.domain.policy import ResponsePolicy
from caseledger.ledger.domain.texts import Audience, Writer
from caseledger.ledger.domain.values import (
    SYSTEM,
    Actor,
    Channel,
    Identity,
    require_utc,
)
from caseledger.ledger.errors import (
    BackendError,
    ConfigurationError,
    ConflictError,
    NotFound,
    ValidationError,
)
from caseledger.ledger.intake.contacts import (
    ContactIntake,
    ContactOutcome,
    new_reference,
    normalise_reference,
)
from caseledger.ledger.privacy.erasure import CustomerPrivacy, RetentionReport
from caseledger.ledger.settings import LedgerSettings
from caseledger.ledger.store_ports import LedgerRecorder, PrincipalStore, StorageProvider
from caseledger.ledger.texts import TemplateTexts
from caseledger.ledger.unit_of_work import AggregateCache, UnitOfWork

if TYPE_CHECKING:
    from caseledger.ledger.intake.delivery_reports import Reporter

__all__ = ["CaseLedger", "ContactOutcome", "TickReport", "UnitOfWork", "new_reference", "normalise_reference"]

T = TypeVar("T")

STARTUP_ATTEMPTS = 5


@dataclass(frozen=True, kw_only=True)
class TickReport:
    """What ``tick`` recorded: missed deadlines by kind, over how many cases."""

    now: datetime  # the ledger's clock
    cases_checked: int
    missed: dict[str, int]
    retention: RetentionReport = field(default_factory=RetentionReport)  # what the retention policy erased
    retention_skipped: str | None = None  # why retention did not run in this tick

    @property
    def total(self) -> int:
        return sum(self.missed.values())


class CaseLedger(CustomerPrivacy, ContactIntake, Application[UUID]):
    """Every command of the case ledger, over one event store."""

    name = "caseledger"

    def __init__(
        self,
        settings: LedgerSettings | None = None,
        *,
        policy: ResponsePolicy | None = None,
        clock: Callable[[], datetime] | None = None,
        simulated_clock: bool = False,
    ) -> None:
        """``clock`` is the ledger's: recorded times, deadlines and retention read it. ``simulated_clock``:
        an operator chose it (``--now``, the demo), so every event's actor is marked ``simulated-clock``."""
        self.settings = settings or LedgerSettings.resolve()
        # Personal fields are sealed with their customer's key as they are encoded (docs/privacy.md).
        self.codec = AvroEventCodec(seal=self._seal_fields)
        if policy is None:
            policy = ResponsePolicy.load(self.settings.policy_path or self.settings.policy_name)
        self.policy = policy
        # Compiled and tried on every sample once, here: a broken template stops the start, not a contact.
        self.texts = TemplateTexts.for_settings(company=policy.texts.company, folder=policy.texts.templates)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.simulated_clock = simulated_clock
        self._uow: UnitOfWork | None = None
        self._cache: AggregateCache | None = None
        for attempt in range(STARTUP_ATTEMPTS):
            try:
                with translate_errors(self.settings.store.describe()):
                    super().__init__(env=self.settings.store.eventsourcing_env())
                break
            except (ConflictError, BackendError) as error:
                # Services started together on an empty database all create its tables, and
                # eventsourcing records that migration once: the losers fail here (SQLite and
                # PostgreSQL: a duplicate migration record; PostgreSQL also: "tuple concurrently
                # updated", a duplicate type or table). The tables exist now; look again.
                if not lost_schema_race(error):
                    raise
                factory = getattr(self, "factory", None)
                if factory is not None:
                    factory.close()
                if attempt == STARTUP_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0.05, 0.2))

    def construct_mapper(self) -> Mapper[UUID]:
        return AvroMapper(self.codec, open_fields=self._open_fields)

    recorder: LedgerRecorder

    def construct_recorder(self) -> LedgerRecorder:
        # A process recorder also keeps tracking records (intake offsets, publisher positions)
        # in the same transaction as the events they produced.
        recorder = self.factory.process_recorder()
        if not isinstance(self.factory, StorageProvider) or not isinstance(recorder, LedgerRecorder):
            raise ConfigurationError(
                f"the store is {type(self.factory).__qualname__} with {type(recorder).__qualname__}, not one of the "
                "ledger's storage providers; leave PERSISTENCE_MODULE to StoreSettings (SQLiteStorage, PostgresStorage)"
            )
        return recorder

    @property
    def storage(self) -> StorageProvider:
        """Every store of this ledger, on its backend: the provider eventsourcing built from the store settings."""
        return cast(StorageProvider, self.factory)  # checked by construct_recorder

    @property
    def principal_store(self) -> PrincipalStore:
        """The principal and session tables beside the events (created on first use)."""
        return self.storage.principals()

    # -- saving -------------------------------------------------------------------------------------

    def chain(self, *aggregates: Any) -> None:
        """Fill in ``previous_hash`` of each new event and encode it once (the audit hash chain)."""
        for aggregate in aggregates:
            if aggregate is None:
                continue
            head = aggregate.chain_head
            for event in aggregate._pending_events:
                object.__setattr__(event, "previous_hash", head)
                data = self.codec.encode(event)  # type: ignore[arg-type]
                vars(event)["_encoded"] = data
                head = event_hash(data)
            aggregate.chain_head = head

    def record(self, *aggregates: Any) -> None:
        """Save the new events of ``aggregates`` in one transaction, chained and Avro-encoded.

        Inside a unit of work the events are collected and saved when the unit ends.
        """
        self.chain(*aggregates)
        if self._uow is not None:
            self._uow.collect(*aggregates)
            return
        with translate_errors(self.settings.store.describe()):
            self.save(*aggregates)

    def _record(self, processing_event: ProcessingEvent[UUID]) -> Any:
        """Save a transaction's events with the data keys they are the first to use; then forget the keys."""
        keys = self.data_keys
        new = keys.unsaved()
        if new:
            processing_event.saved_kwargs["new_keys"] = new
        try:
            recordings = super()._record(processing_event)
            keys.saved(new)  # before forget: a saved key is dropped from memory with the others
        finally:
            keys.forget()
        return recordings

    def _context(
        self,
        actor: Actor,
        *,
        channel: Channel | str | None = None,
        occurred_at: datetime | None = None,
        correlation_id: UUID | None = None,
        causation_id: UUID | None = None,
    ) -> Context:
        """The context of a command: recorded on the ledger's clock, ``occurred_at`` a bounded claim."""
        now = require_utc(self.clock(), "the ledger's clock")
        at = check_claim("occurred_at", occurred_at, now=now) if occurred_at is not None else now
        if self.simulated_clock:
            actor = dataclasses.replace(actor, authentication=Authentication.SIMULATED_CLOCK.value)
        return Context(
            actor=actor,
            occurred_at=at,
            recorded_at=now,
            channel=Channel.parse(channel) if channel else None,
            correlation_id=correlation_id,
            causation_id=causation_id,
        )

    # -- what the customer reads ------------------------------------------------------------------------

    def audience_of(self, customer: Customer | None, channel: str | None, *, locale: str | None = None,
                    time_zone: str | None = None) -> Audience:
        """The locale and zone of a customer's texts: their own choice, else the channel's default, else the policy's.

        A locale no template is written in falls back to the default (the customer's choice stays on record).
        """
        locale = locale or (customer.locale if customer is not None else None)
        time_zone = time_zone or (customer.time_zone if customer is not None else None)
        if locale is not None and self.texts.template_locale(locale) is None:
            locale = None
        return self.policy.texts.audience(channel, self.policy.calendar.timezone, locale=locale, time_zone=time_zone)

    def writer_for(self, customer: Customer | None, channel: str | None) -> Writer:
        return Writer(texts=self.texts, audience=self.audience_of(customer, channel))

    def _writer_of(self, case: Case, ctx: Context) -> Writer:
        """Who reads what a command on ``case`` sends: its customer, on the command's or their written channel."""
        channel = (ctx.channel or case.written_channel()).value
        return self.writer_for(self._get_optional(Customer.id_for(case.customer_id)), channel)

    def set_customer_locale(
        self, who: str, *, actor: Actor, locale: str | None, time_zone: str | None
    ) -> tuple[str, Audience, bool]:
        """Record the locale and/or time zone of a customer's texts ("" returns one to the default).

        Returns (customer id, the audience their texts now have, whether anything changed).
        """
        from caseledger.ledger.domain.values import check_locale

        if locale is None and time_zone is None:
            raise ValidationError("give a locale (--locale fr_FR) and/or a time zone (--tz Europe/Paris)")
        if locale:
            locale = check_locale(locale)
            if self.texts.template_locale(locale) is None:
                raise ValidationError(
                    f"no customer texts are written in {locale}; use one of {', '.join(self.texts.locales())}, or "
                    "add templates in that language to the policy's templates folder"
                )
        with self._command():
            customer_id = self.resolve_customer(who)
            customer = self._load(Customer.id_for(customer_id))
            changed = customer.set_locale(locale=locale, time_zone=time_zone, source="command",
                                          ctx=self._context(actor))
            self.record(customer)
        return customer_id, self.audience_of(customer, None), changed

    # -- lookups ------------------------------------------------------------------------------------

    def get_case(self, reference: str) -> Case:
        """The case with this reference; NotFound says how to look it up otherwise."""
        ref = normalise_reference(reference)
        try:
            with translate_errors(self.settings.store.describe()):
                return self._load(case_id_for(ref))  # type: ignore[no-any-return]
        except AggregateNotFoundError:
            raise NotFound(
                f"no case with reference {ref}; find a customer's cases with `caseledger cases CUSTOMER`"
            ) from None

    def find_by_message(self, channel: Channel | str, channel_message_id: str) -> Case:
        """The case a channel message was recorded on."""
        ch = Channel.parse(channel)
        message = self._get_optional(ChannelMessage.id_for(ch, channel_message_id))
        if message is None:
            raise NotFound(f"no contact was recorded for {ch.value} message {channel_message_id!r}")
        return self.get_case(message.reference)

    def resolve_customer(self, who: str) -> str:
        """A customer id from a customer id or an identity (email:…, phone:…, handle:…)."""
        if self._get_optional(Customer.id_for(who)) is not None:
            return who
        try:
            identity = Identity.parse(who)
        except ValidationError:
            identity = None
        if identity is not None:
            claim = self._find_claim(identity)
            if claim is not None:
                return claim.customer_id  # type: ignore[no-any-return]
        raise NotFound(
            f"no customer known as {who!r}; give a customer id or an identity such as email:jane@example.com"
        )

    def cases_of(self, who: str) -> list[Case]:
        """Every case of a customer (by customer id or identity), oldest first."""
        with translate_errors(self.settings.store.describe()):
            customer = self._load(Customer.id_for(self.resolve_customer(who)))
        return [self.get_case(ref) for ref in customer.cases]

    def history(self, who: str) -> list[LedgerEvent]:
        """Every event of a customer across cases, channels and directory entries, in recorded order.

        Events of one aggregate are in their exact recorded order; across aggregates they are
        merged by recording time (the customer timeline projection gives the store's total order).
        """
        customer_id = self.resolve_customer(who)
        with translate_errors(self.settings.store.describe()):
            customer = self._load(Customer.id_for(customer_id))
            ids: list[UUID] = [customer.id]
            ids += [c for i in customer.identities for c in self.claim_ids_for(Identity.parse(i))]
            ids += [UUID(c) for c in customer.erased_claims]  # identities that read [erased] now
            for ref in customer.cases:
                case = self.get_case(ref)
                ids.append(case.id)
                ids += [
                    ChannelMessage.id_for(Channel(c.channel), c.channel_message_id) for c in case.contacts.values()
                ]
            events: list[Any] = []
            for aggregate_id in ids:
                events.extend(
                    e for e in self.events.get(aggregate_id) if e.customer_id == customer_id  # type: ignore[attr-defined]
                )
        # Requests of theirs kept as collisions belong to their history too (no aggregate links them).
        events.extend(e for e in self.collisions() if e.customer_id == customer_id)
        # One command's events share their recorded time: ties in version order keep each aggregate's own.
        events.sort(key=lambda e: (e.timestamp, e.originator_version))
        return events

    def _get_optional(self, aggregate_id: UUID) -> Any | None:
        try:
            with translate_errors(self.settings.store.describe()):
                return self._load(aggregate_id)
        except AggregateNotFoundError:
            return None

    def _load(self, aggregate_id: UUID) -> Any:
        """An aggregate as of the store plus what the current unit of work recorded on it."""
        uow = self._uow
        if uow is None:
            return self.repository.get(aggregate_id)
        cached = uow.aggregates.get(aggregate_id)
        if cached is not None:
            return cached
        if aggregate_id not in uow.absent:
            self.prefetch([aggregate_id])
            cached = uow.aggregates.get(aggregate_id)
            if cached is not None:
                return cached
        aggregate = uow.replay(aggregate_id, None)
        if aggregate is None:
            raise AggregateNotFoundError(aggregate_id)
        uow.aggregates[aggregate_id] = aggregate
        return aggregate

    # -- units of work -----------------------------------------------------------------------------

    @contextmanager
    def unit_of_work(self, tracking: Tracking | Sequence[Tracking] | None = None) -> Iterator[UnitOfWork]:
        """Collect the events of many commands and save them in one transaction at the end.

        ``tracking`` is stored in the same transaction (e.g. the intake offset the batch reached,
        one per partition it read), so the batch and its positions are recorded together or not
        at all. A command that fails inside the unit leaves nothing behind in it; the others
        still commit.
        """
        trackings = [tracking] if isinstance(tracking, Tracking) else list(tracking or ())
        if self._uow is not None:
            raise RuntimeError("units of work do not nest")
        uow = UnitOfWork()
        self._uow = uow
        try:
            yield uow
        finally:
            self._uow = None
        trackings += uow.trackings
        if uow.events or trackings or uow.statements:
            processing = ProcessingEvent[UUID](tracking=trackings[0] if trackings else None)
            if len(trackings) > 1:
                processing.saved_kwargs["also_tracking"] = trackings[1:]
            if uow.statements:
                processing.saved_kwargs["also_execute"] = uow.statements
            processing.events.extend(uow.events)
            with translate_errors(self.settings.store.describe()):
                self._record(processing)
            uow.saved = True
        if self._cache is not None:
            self._cache.keep(uow.aggregates.values())

    def keep_aggregates(self, maxsize: int, *, cases: bool = True) -> None:
        """Keep up to ``maxsize`` aggregates between units of work (0: none; ``cases``: cases too), see :class:`AggregateCache`."""
        self._cache = AggregateCache(maxsize, skip=() if cases else (Case,)) if maxsize else None

    def prefetch(self, aggregate_ids: Iterable[UUID]) -> None:
        """Inside a unit of work: load these aggregates in one query, and learn which do not exist.

        A batch of contacts looks up several directory entries each; without this every lookup
        is a round trip. Aggregates found are cached in the unit like any other it loaded; if
        another writer changes one meanwhile, the unit's save fails with a conflict and the
        caller retries without the cache.
        """
        uow = self._uow
        if uow is None:
            raise RuntimeError("prefetch works inside a unit of work")
        wanted = {i for i in aggregate_ids if i not in uow.aggregates and i not in uow.absent}
        if not wanted:
            return
        cache = self._cache
        taken: dict[UUID, Any] = {}
        if cache is not None:
            for aggregate_id in wanted:
                aggregate = cache.take(aggregate_id)
                if aggregate is not None:
                    taken[aggregate_id] = aggregate
        with translate_errors(self.settings.store.describe()):
            stored = self.recorder.select_events_after(wanted, after={i: a.version for i, a in taken.items()})
            self._preload_keys(bytes(e.state) for events in stored.values() for e in events)
        for aggregate_id in wanted:
            aggregate = taken.get(aggregate_id)
            for stored_event in stored.get(aggregate_id, ()):
                event: Any = self.mapper.to_domain_event(stored_event)
                aggregate = event.mutate(aggregate)
            if aggregate is None:
                uow.absent.add(aggregate_id)
            else:
                uow.aggregates[aggregate_id] = uow.replay(aggregate_id, aggregate)

    @contextmanager
    def _command(self) -> Iterator[None]:
        """Inside a unit of work: a failing command must not leave half-applied state in its cache."""
        uow = self._uow
        if uow is None:
            yield
            return
        try:
            yield
        except BaseException:
            uow.discard_uncollected()
            raise

    # -- commands on one case -----------------------------------------------------------------------

    def _on_case(
        self,
        reference: str,
        actor: Actor,
        decide: Callable[[Case, Context], T],
        *,
        channel: Channel | str | None = None,
        occurred_at: datetime | None = None,
        causation_id: UUID | None = None,
    ) -> T:
        with self._command():
            ctx = self._context(actor, channel=channel, occurred_at=occurred_at, causation_id=causation_id)
            case = self.get_case(reference)
            result = decide(case, ctx)
            self.record(case)
            return result

    def respond(
        self, reference: str, *, actor: Actor, body: str, answers: Sequence[str] = (), channel: str | None = None,
        occurred_at: datetime | None = None,
    ) -> str:
        """Send a response answering the given items; returns the response id (R1, R2 …)."""
        return self._on_case(
            reference, actor, lambda c, x: c.respond(ctx=x, body=body, answers=list(answers)),
            channel=channel, occurred_at=occurred_at,
        )

    def waive_item(self, reference: str, *, actor: Actor, item_id: str, reason: str) -> None:
        self._on_case(reference, actor, lambda c, x: c.waive_item(ctx=x, item_id=item_id, reason=reason))

    def make_promise(
        self, reference: str, *, actor: Actor, channel: str, kind: str, terms: str, due_at: datetime,
        confirmation_channel: str | None = None, occurred_at: datetime | None = None,
    ) -> tuple[str, str | None]:
        """Record a promise; returns (promise id, written confirmation id or None)."""
        confirm = Channel.parse(confirmation_channel) if confirmation_channel else None

        def decide(case: Case, ctx: Context) -> tuple[str, str | None]:
            written = confirm or case.written_channel()
            writer = self.writer_for(self._get_optional(Customer.id_for(case.customer_id)), written.value)
            return case.make_promise(ctx=ctx, kind=kind, terms=terms, due_at=due_at, confirmation_channel=confirm,
                                     writer=writer, deliver_by=self.policy.confirm_by(issued_at=ctx.recorded_at))

        return self._on_case(reference, actor, decide, channel=channel, occurred_at=occurred_at)

    def keep_promise(self, reference: str, *, actor: Actor, promise_id: str, evidence: str) -> None:
        self._on_case(reference, actor, lambda c, x: c.keep_promise(ctx=x, promise_id=promise_id, evidence=evidence))

    def withdraw_promise(self, reference: str, *, actor: Actor, promise_id: str, reason: str, notice: str) -> None:
        self._on_case(
            reference, actor,
            lambda c, x: c.withdraw_promise(ctx=x, promise_id=promise_id, reason=reason, notice=notice,
                                            writer=self._writer_of(c, x)),
        )

    def break_promise(self, reference: str, *, actor: Actor, promise_id: str, reason: str) -> None:
        self._on_case(reference, actor, lambda c, x: c.break_promise(ctx=x, promise_id=promise_id, reason=reason))

    def change_status(self, reference: str, *, actor: Actor, to_status: str, reason: str, notice: str) -> None:
        self._on_case(
            reference, actor, lambda c, x: c.change_status(ctx=x, to_status=to_status, reason=reason, notice=notice,
                                                           writer=self._writer_of(c, x))
        )

    def close_case(
        self, reference: str, *, actor: Actor, reason: str, notice: str,
        waive: dict[str, str] | None = None,
    ) -> None:
        """Close a case; ``waive`` maps item or promise ids (Q…, P…) to the reason they are waived."""
        waive = dict(waive or {})
        items = {k: v for k, v in waive.items() if k.upper().startswith("Q")}
        promises = {k: v for k, v in waive.items() if k.upper().startswith("P")}
        unknown = set(waive) - set(items) - set(promises)
        if unknown:
            raise ValidationError(
                f"can only waive items (Q…) and promises (P…), not {', '.join(sorted(unknown))}"
            )
        self._on_case(
            reference, actor,
            lambda c, x: c.close(ctx=x, reason=reason, notice=notice, waive_items=items, waive_promises=promises,
                                 writer=self._writer_of(c, x)),
        )

    def cancel_case(self, reference: str, *, actor: Actor, reason: str, notice: str) -> None:
        self._on_case(reference, actor,
                      lambda c, x: c.cancel(ctx=x, reason=reason, notice=notice, writer=self._writer_of(c, x)))

    def reopen_case(self, reference: str, *, actor: Actor, reason: str, notice: str) -> None:
        self._on_case(reference, actor,
                      lambda c, x: c.reopen(ctx=x, reason=reason, notice=notice, writer=self._writer_of(c, x)))

    def assign(self, reference: str, *, actor: Actor, assignee: str | None, team: str | None = None) -> None:
        self._on_case(reference, actor, lambda c, x: c.assign(ctx=x, assignee=assignee, team=team))

    def hand_off(
        self, reference: str, *, actor: Actor, to_assignee: str | None, to_team: str | None = None, note: str = ""
    ) -> dict[str, Any]:
        """Hand a case over; returns the brief the next agent receives."""
        def decide(case: Case, ctx: Context) -> dict[str, Any]:
            case.hand_off(ctx=ctx, to_assignee=to_assignee, to_team=to_team, note=note)
            return case.brief()

        return self._on_case(reference, actor, decide)

    def escalate_to_human(
        self, reference: str, *, actor: Actor, bot_id: str, waiting_since: datetime,
        to_team: str | None = None, reason: str,
    ) -> int:
        """A chatbot passes the customer to a human; returns how many seconds they waited."""
        return self._on_case(
            reference, actor,
            lambda c, x: c.escalate_to_human(
                ctx=x, bot_id=bot_id, waiting_since=waiting_since, to_team=to_team, reason=reason
            ),
            channel=Channel.CHATBOT,
        )

    def propose_action(
        self, reference: str, *, actor: Actor, rule_id: str, action: str, params: dict[str, str], rationale: str
    ) -> str:
        return self._on_case(
            reference, actor,
            lambda c, x: c.propose_action(ctx=x, rule_id=rule_id, action=action, params=params, rationale=rationale),
        )

    def approve_action(self, reference: str, *, actor: Actor, proposal_id: str, note: str = "") -> str:
        """A human approves a proposal; the ledger executes its own actions in the same transaction.

        Returns ``executed`` when the ledger carried the action out, ``approved`` when an outside
        system must now execute it and report back with ``record_action_executed``.
        """
        def decide(case: Case, ctx: Context) -> str:
            proposal = case.approve_action(ctx=ctx, proposal_id=proposal_id, note=note)
            if proposal.action not in LEDGER_ACTIONS:
                return "approved"
            p = proposal.params
            follow = Context(actor=ctx.actor, occurred_at=ctx.occurred_at, recorded_at=ctx.recorded_at,
                             causation_id=ctx.causation_id)
            writer = self._writer_of(case, follow)
            if proposal.action == "change_status":
                case.change_status(ctx=follow, to_status=p.get("to", ""), reason=p.get("reason", ""),
                                   notice=p.get("notice", ""), writer=writer)
            elif proposal.action == "close":
                case.close(ctx=follow, reason=p.get("reason", ""), notice=p.get("notice", ""), writer=writer)
            elif proposal.action == "cancel":
                case.cancel(ctx=follow, reason=p.get("reason", ""), notice=p.get("notice", ""), writer=writer)
            elif proposal.action == "respond":
                answers = [a for a in p.get("answers", "").split(",") if a]
                case.respond(ctx=follow, body=p.get("body", ""), answers=answers)
            case.record_action_executed(ctx=follow, proposal_id=proposal_id, result=f"{proposal.action} done")
            return "executed"

        return self._on_case(reference, actor, decide)

    def reject_action(self, reference: str, *, actor: Actor, proposal_id: str, reason: str) -> None:
        self._on_case(reference, actor, lambda c, x: c.reject_action(ctx=x, proposal_id=proposal_id, reason=reason))

    def record_action_executed(self, reference: str, *, actor: Actor, proposal_id: str, result: str) -> None:
        self._on_case(
            reference, actor, lambda c, x: c.record_action_executed(ctx=x, proposal_id=proposal_id, result=result)
        )

    def record_delivery(
        self, reference: str, *, message_id: str, delivered_at: datetime, actor: Actor = SYSTEM,
        causation_id: UUID | None = None, reporter: Reporter | None = None,
    ) -> None:
        """A message reached the customer; a ``reporter`` (adapter, principal) is checked (ledger.delivery_reports)."""
        mid = message_id.upper()
        self._on_case(reference, actor, lambda c, x: c.record_delivery(
            ctx=reporter.delivery(c, mid, x) if reporter else x, message_id=mid, delivered_at=delivered_at),
            causation_id=causation_id)

    def record_read(
        self, reference: str, *, actor: Actor, message_id: str, read_at: datetime | None = None,
        causation_id: UUID | None = None, reporter: Reporter | None = None, named: Actor | None = None,
    ) -> None:
        """A message was read; with a ``reporter`` the reader is decided by ledger.delivery_reports, not by ``actor``."""
        mid = message_id.upper()
        self._on_case(reference, actor, lambda c, x: c.record_read(
            ctx=reporter.read(c, mid, x, named=named) if reporter else x, message_id=mid,
            read_at=read_at or x.occurred_at), causation_id=causation_id)

    def _notifications_of(self, event_type: str, *, page: int = 1000) -> Iterator[Any]:
        """The stored events of one type in store order (reads the notification log by topic, in pages)."""
        start = 1
        topics = [topic_of(event_type)]
        while True:
            with translate_errors(self.settings.store.describe()):
                batch = self.recorder.select_notifications(start=start, limit=page, topics=topics)
            if not batch:
                return
            yield from batch
            start = batch[-1].id + 1

    # -- deadlines ----------------------------------------------------------------------------------

    def case_ids(self) -> Iterator[UUID]:
        """Every case id in the order cases were opened (reads the notification log)."""
        for notification in self._notifications_of("CaseOpened"):
            yield notification.originator_id

    def tick(
        self, *, actor: Actor = SYSTEM, references: Iterable[str] | None = None, batch_size: int = 200,
        skip_retention: str | None = None,
    ) -> TickReport:
        """Record a DeadlineMissed for every deadline past due, once, then apply retention, on the ledger's clock.

        What it records names ``actor``; ``skip_retention`` says why it must erase nobody (its caller
        may not erase customers). Without ``references`` every case is checked; a caller that knows
        which cases may be due (the deadlines projection) names them. The Case aggregate decides
        what is missed, so a stale list can delay a record, never double it.
        """
        ctx = self._context(actor)
        at = ctx.recorded_at
        missed: dict[str, int] = {}
        checked = 0
        pending: list[Case] = []
        cases: Iterable[Case] = ((self.get_case(ref) for ref in references) if references is not None
                                 else (self.repository.get(i) for i in self.case_ids()))  # type: ignore[misc]
        for case in cases:
            checked += 1
            due = case.due_deadlines(at)
            if not due:
                continue
            case.record_missed_deadlines(ctx=ctx, now=at)
            for kind, _target, _due in due:
                missed[kind] = missed.get(kind, 0) + 1
            pending.append(case)
            if len(pending) >= batch_size:
                self.record(*pending)
                pending = []
        if pending:
            self.record(*pending)
        retention = self.apply_retention(actor=actor) if skip_retention is None else RetentionReport()
        return TickReport(now=at, cases_checked=checked, missed=missed, retention=retention,
                          retention_skipped=skip_retention)

    def active_cases(self) -> Iterator[Case]:
        for case_id in self.case_ids():
            case: Case = self.repository.get(case_id)  # type: ignore[assignment]
            if case.status in Status.ACTIVE:
                yield case
