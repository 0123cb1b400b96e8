"""The ledger's core: what every service of the ledger works on — the store, codec and keys, clock, units of work.

:class:`LedgerCore` is the eventsourcing application: it owns the event store and its lifetime,
encodes and chains each new event (the audit hash chain), seals personal fields with their
customer's key, gives each command its context on the ledger's clock, and batches commands in
units of work. It decides nothing about cases: the services of
:class:`~caseledger.ledger.application.CaseLedger` do, each given this core.
"""

from __future__ import annotations

import dataclasses
import random
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.persistence import Mapper, Tracking

from caseledger.ledger.avro.codec import AvroEventCodec, AvroMapper, event_hash
from caseledger.ledger.db_errors import lost_schema_race, translate_errors
from caseledger.ledger.domain.case import Case
from caseledger.ledger.domain.catalog import topic_of
from caseledger.ledger.domain.claimed_times import check_claim
from caseledger.ledger.domain.directory import Customer
from caseledger.ledger.domain.events import Context
from caseledger.ledger.domain.permissions import Authentication
from caseledger.ledger.domain.personal import unless_erased
from caseledger.ledger.domain.policy import ResponsePolicy
from caseledger.ledger.domain.texts import Audience, Writer
from caseledger.ledger.domain.values import Actor, Channel, require_utc
from caseledger.ledger.errors import BackendError, ConfigurationError, ConflictError
from caseledger.ledger.privacy.data_keys import DataKeys
from caseledger.ledger.privacy.erasure_watch import ErasureWatch
from caseledger.ledger.privacy.kek import KeyEncryptionKey
from caseledger.ledger.privacy.sealing import Sealer, subject_of
from caseledger.ledger.settings import LedgerSettings
from caseledger.ledger.store_ports import LedgerRecorder, PrincipalStore, StorageProvider
from caseledger.ledger.transparency.contact_receipts import receipt_delay
from caseledger.ledger.unit_of_work import AggregateCache, UnitOfWork

if TYPE_CHECKING:
    from caseledger.ledger.texts import TemplateTexts
    from caseledger.ledger.transparency.contact_receipts import ReceiptIssuer

__all__ = ["LedgerCore"]

STARTUP_ATTEMPTS = 5
_SEALED_KEY_IDS = re.compile(rb"enc:1:([0-9a-f]{16}):")


SEALED_TEXTS = "_sealed_texts"  # set on an aggregate replayed with its personal fields left sealed


def has_sealed_texts(aggregate: Any) -> bool:
    """Whether ``aggregate`` was replayed with its personal fields left as sealed tokens (:meth:`LedgerCore.prefetch`)."""
    return SEALED_TEXTS in vars(aggregate)


def replay(aggregate: Any, events: Iterable[Any]) -> Any:
    """An aggregate's events applied in turn: eventsourcing's projector without its per-event ``isinstance``
    against a runtime Protocol (a tenth of a 100-event case's replay)."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class LedgerCore(Application[UUID]):
    """What every service of the ledger works on: one event store, its codec and keys, the clock, units of work."""

    name = "caseledger"

    def __init__(
        self,
        settings: LedgerSettings | None = None,
        *,
        policy: ResponsePolicy | None = None,
        clock: Callable[[], datetime] | None = None,
        simulated_clock: bool = False,
        load_policy: bool = True,
    ) -> None:
        """``clock`` is the ledger's: recorded times, deadlines and retention read it. ``simulated_clock``:
        an operator chose it (``--now``, the demo), so every event's actor is marked ``simulated-clock``.
        ``load_policy=False``: the policy and the customer texts are loaded when first used, not here (a
        command that only reads, such as ``caseledger case show``, never uses them)."""
        self.settings = settings or LedgerSettings.resolve()
        # Personal fields are sealed with their customer's key as they are encoded (docs/privacy.md).
        self.codec = AvroEventCodec(seal=self._seal_fields)
        if policy is not None:
            self.policy = policy
        if load_policy:
            # Compiled and tried on every sample once, here: a broken template stops the start, not a contact.
            self.texts  # noqa: B018 - loaded for its checks
        self.clock = clock or (lambda: datetime.now(UTC))
        # A receipt delay out of range stops the start, not a customer's contact (the key is read at the first).
        receipt_delay(self.settings.transparency.receipt_delay)
        self.simulated_clock = simulated_clock
        self._uow: UnitOfWork | None = None
        self._cache: AggregateCache | None = None
        self._erasures: ErasureWatch | None = None  # watched while aggregates are kept (see keep_aggregates)
        self._on_erasure: list[Callable[[], None]] = []
        self._sealed_ok: frozenset[UUID] = frozenset()  # aggregates :meth:`load` may give with texts sealed
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

    @cached_property
    def policy(self) -> ResponsePolicy:
        """The response policy: delays, calendar, customer texts (``--policy``, else the built-in)."""
        return ResponsePolicy.load(self.settings.policy_path or self.settings.policy_name)

    @cached_property
    def texts(self) -> TemplateTexts:
        """The customer texts of the policy, each template compiled and tried on every sample."""
        from caseledger.ledger.texts import TemplateTexts  # Jinja2 and Babel: for a ledger that writes texts

        return TemplateTexts.for_settings(company=self.policy.texts.company, folder=self.policy.texts.templates)

    def construct_mapper(self) -> Mapper[UUID]:
        return AvroMapper(self.codec, open_fields=self._open_fields)

    @cached_property
    def _sealed_mapper(self) -> AvroMapper:
        """Decodes stored events with their personal fields left as the sealed tokens stored (:meth:`prefetch`)."""
        return AvroMapper(self.codec)

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

    # -- customers' data keys (docs/privacy.md) ----------------------------------------------------------

    @cached_property
    def data_keys(self) -> DataKeys:
        """The customers' data keys, in the key store beside the events."""
        database_file = self.storage.database_file  # None on a server: the key-encryption key must be given
        if database_file is not None and self.settings.store.database in (":memory:", ""):
            kek = KeyEncryptionKey(KeyEncryptionKey.generate(), origin="memory")
        else:
            kek = KeyEncryptionKey.resolve(self.settings.privacy, database_file=database_file)
        return DataKeys(self.storage.data_keys(), kek, clock=self.clock)

    @cached_property
    def sealer(self) -> Sealer:
        return Sealer(self.data_keys)

    def _seal_fields(self, event_type: str, customer_id: str, recorded_at: datetime, record: dict[str, Any]) -> None:
        self.sealer.seal_record(event_type, subject_of(event_type, customer_id, recorded_at), record)

    def _open_fields(self, event_type: str, state: dict[str, Any]) -> None:
        self.sealer.open_state(event_type, state)

    def reveal(self, value: Any) -> Any:
        """A view row (or any value read from views) with its sealed texts opened, or ``[erased]``."""
        try:
            return self.sealer.reveal(value)
        finally:
            self.data_keys.forget()

    def reveal_texts(self, texts: list[Any]) -> list[Any]:
        """A column of view texts with their sealed texts opened (see :meth:`Sealer.reveal_texts`)."""
        try:
            return self.sealer.reveal_texts(texts)
        finally:
            self.data_keys.forget()

    def preload_keys(self, states: Iterable[bytes]) -> set[str]:
        """Load, in one query, every data key these stored events were sealed with; their ids."""
        wanted = {m.group(1).decode() for data in states for m in _SEALED_KEY_IDS.finditer(data)}
        if wanted:
            self.data_keys.load(wanted)
        return wanted

    def rotate_kek(self, new: KeyEncryptionKey) -> int:
        """Rewrap every live data key with a new key-encryption key; how many were rewrapped."""
        with translate_errors(self.settings.store.describe()):
            return self.data_keys.rotate(new)

    # -- saving -------------------------------------------------------------------------------------

    def chain(self, *aggregates: Any) -> None:
        """Fill in ``previous_hash`` of each new event and encode it once (the audit hash chain)."""
        for aggregate in aggregates:
            if aggregate is None:
                continue
            head = aggregate.chain_head
            for event in aggregate._pending_events:
                if "_encoded" in vars(event):  # encoded already, for a receipt (:meth:`encode_pending`)
                    continue
                object.__setattr__(event, "previous_hash", head)
                data = self.codec.encode(event)  # type: ignore[arg-type]
                vars(event)["_encoded"] = data
                head = event_hash(data)
            aggregate.chain_head = head

    def encode_pending(self, aggregate: Any) -> bytes:
        """Chain and encode ``aggregate``'s new events now, and return the last one's stored bytes: a contact's
        receipt names its event's hash before the command goes on (:meth:`record` keeps these bytes)."""
        self.chain(aggregate)
        return cast(bytes, vars(aggregate._pending_events[-1])["_encoded"])

    @cached_property
    def receipts(self) -> ReceiptIssuer | None:
        """Who signs contacts' receipts: the checkpoint signing key, if this ledger has one (else no receipts)."""
        from caseledger.ledger.transparency.checkpoint_key import load_signer
        from caseledger.ledger.transparency.contact_receipts import ReceiptIssuer

        transparency = self.settings.transparency
        signer = load_signer(transparency)
        if signer is None:
            return None
        return ReceiptIssuer(signer, self.settings.origin, self.encode_pending, receipt_delay(transparency.receipt_delay))

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
        except BaseException:
            # Not saved: a lookup secret made meanwhile by another writer (a conflict on its row) is the one
            # to read on the retry, not this one again.
            keys.drop_unsaved_lookups()
            raise
        finally:
            keys.forget()
        return recordings

    def context(
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
        locale = unless_erased(locale or (customer.locale if customer is not None else None))
        time_zone = unless_erased(time_zone or (customer.time_zone if customer is not None else None))
        if locale is not None and self.texts.template_locale(locale) is None:
            locale = None
        return self.policy.texts.audience(channel, self.policy.calendar.timezone, locale=locale, time_zone=time_zone)

    def writer_for(self, customer: Customer | None, channel: str | None) -> Writer:
        return Writer(texts=self.texts, audience=self.audience_of(customer, channel))

    def writer_of(self, case: Case, ctx: Context) -> Writer:
        """Who reads what a command on ``case`` sends: its customer, on the command's or their written channel."""
        channel = (ctx.channel or case.written_channel()).value
        return self.writer_for(self.get_optional(Customer.id_for(case.customer_id)), channel)

    # -- loading ------------------------------------------------------------------------------------

    def get_optional(self, aggregate_id: UUID) -> Any | None:
        """The aggregate (as :meth:`load` has it), or None if it was never recorded."""
        try:
            with translate_errors(self.settings.store.describe()):
                return self.load(aggregate_id)
        except AggregateNotFoundError:
            return None

    def load(self, aggregate_id: UUID) -> Any:
        """An aggregate as of the store plus what the current unit of work recorded on it."""
        uow = self._uow
        if uow is None:
            try:
                return self.repository.get(aggregate_id, projector_func=replay)
            finally:
                self.data_keys.forget()  # outside a batch keys serve one read: another's erasure holds at the next
        cached = uow.aggregates.get(aggregate_id)
        if cached is not None and not (has_sealed_texts(cached) and aggregate_id not in self._sealed_ok):
            return cached
        if cached is not None:  # its texts were left sealed: read again, opened, with what this unit did to it
            del uow.aggregates[aggregate_id]
        if aggregate_id not in uow.absent:
            self.prefetch([aggregate_id], sealed=self._sealed_ok & {aggregate_id})
            cached = uow.aggregates.get(aggregate_id)
            if cached is not None:
                return cached
        aggregate = uow.replay(aggregate_id, None)
        if aggregate is None:
            raise AggregateNotFoundError(aggregate_id)
        uow.aggregates[aggregate_id] = aggregate
        return aggregate

    # -- units of work -----------------------------------------------------------------------------

    @property
    def in_unit_of_work(self) -> bool:
        return self._uow is not None

    @contextmanager
    def unit_of_work(
        self, tracking: Tracking | Sequence[Tracking] | None = None, *, expect: Mapping[str, int] | None = None,
    ) -> Iterator[UnitOfWork]:
        """Collect the events of many commands and save them in one transaction at the end.

        ``tracking`` is stored in the same transaction (e.g. the intake offset the batch reached,
        one per partition it read), so the batch and its positions are recorded together or not
        at all. ``expect`` names the position each tracking record must still hold (0: none yet):
        if another writer moved one meanwhile, nothing is saved and ConflictError is raised. A
        command that fails inside the unit leaves nothing behind in it; the others still commit.
        """
        trackings = [tracking] if isinstance(tracking, Tracking) else list(tracking or ())
        if self._uow is not None:
            raise RuntimeError("units of work do not nest")
        if self._cache is not None:
            self._forget_erased()
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
            if expect:
                processing.saved_kwargs["expect_tracking"] = sorted(expect.items())
            processing.events.extend(uow.events)
            with translate_errors(self.settings.store.describe()):
                self._record(processing)  # drops the keys the unit opened
            uow.saved = True
        else:
            self.data_keys.forget()  # a unit that only read: its keys go with it all the same
        if self._cache is not None:
            self._cache.keep(uow.aggregates.values(), not_of=self._erasures.pending if self._erasures else ())

    def keep_aggregates(self, maxsize: int, *, cases: bool = True) -> None:
        """Keep up to ``maxsize`` aggregates between units of work (0: none; ``cases``: cases too), see :class:`AggregateCache`.

        What is kept holds customers' data opened: before each unit of work, the customers erased since
        (by any process) are dropped from it, and theirs are not kept again until their keys are destroyed.
        """
        self._cache = AggregateCache(maxsize, skip=() if cases else (Case,)) if maxsize else None
        self._erasures = None
        if self._cache is not None:
            self._erasures = ErasureWatch(self.recorder, self.storage.data_keys, self.mapper.to_domain_event)
            with translate_errors(self.settings.store.describe()):
                self._erasures.look()  # from here on: nothing was kept before

    def _forget_erased(self) -> None:
        """Drop what this process keeps of the customers erased since its last look, whoever erased them."""
        assert self._erasures is not None
        with translate_errors(self.settings.store.describe()):
            erased = self._erasures.look()
        if erased:
            self._drop(erased)

    def forget_customers(self, customers: Collection[UUID]) -> None:
        """Drop every copy this ledger keeps in memory of these customers' data (their Customer aggregates' ids),
        and, if it keeps aggregates, of every customer erased meanwhile by another process."""
        self._drop(customers)
        if self._erasures is not None:
            self._forget_erased()

    def _drop(self, customers: Collection[UUID]) -> None:
        if self._cache is not None:
            self._cache.forget_customers(customers)
        self.data_keys.forget()
        for forget in self._on_erasure:
            forget()

    def on_erasure(self, forget: Callable[[], None]) -> None:
        """Call ``forget`` whenever this ledger learns of an erasure: a service's own memory of customers."""
        self._on_erasure.append(forget)

    def prefetch(self, aggregate_ids: Iterable[UUID], *, sealed: Collection[UUID] = ()) -> None:
        """Inside a unit of work: load these aggregates in one query, and learn which do not exist.

        A batch of contacts looks up several directory entries each; without this every lookup
        is a round trip. Aggregates found are cached in the unit like any other it loaded; if
        another writer changes one meanwhile, the unit's save fails with a conflict and the
        caller retries without the cache.

        The aggregates named in ``sealed`` are replayed with their personal fields left as the stored tokens
        (no data key read, nothing decrypted): for a command that reads none of them, within
        :meth:`texts_left_sealed` (a delivery report loads its case for the message's channel and state only).
        Anywhere else :meth:`load` reads such an aggregate again, opened, so no command ever copies a token
        into a new event nor shows one.
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
                # one kept with its texts sealed serves only who asks for it so; the others replay it opened
                if aggregate is not None and (aggregate_id in sealed or not has_sealed_texts(aggregate)):
                    taken[aggregate_id] = aggregate
        # left sealed: those asked so, unless kept opened (what comes after their version is opened too)
        closed = {i for i in sealed if i in wanted and (i not in taken or has_sealed_texts(taken[i]))}
        with translate_errors(self.settings.store.describe()):
            stored = self.recorder.select_events_after(wanted, after={i: a.version for i, a in taken.items()})
            self.preload_keys(bytes(e.state) for i, events in stored.items() if i not in closed for e in events)
        for aggregate_id in wanted:
            aggregate = taken.get(aggregate_id)
            mapper = self._sealed_mapper if aggregate_id in closed else self.mapper
            for stored_event in stored.get(aggregate_id, ()):
                event: Any = mapper.to_domain_event(stored_event)
                aggregate = event.mutate(aggregate)
            if aggregate is None:
                uow.absent.add(aggregate_id)
            else:
                if aggregate_id in closed:
                    vars(aggregate)[SEALED_TEXTS] = True
                uow.aggregates[aggregate_id] = uow.replay(aggregate_id, aggregate)

    @contextmanager
    def texts_left_sealed(self, *aggregate_ids: UUID) -> Iterator[None]:
        """Within: :meth:`load` may give these aggregates with their personal fields sealed (see :meth:`prefetch`).
        For a command that reads none of their texts and writes none into its events (a delivery or read report)."""
        before = self._sealed_ok
        self._sealed_ok = before | frozenset(aggregate_ids)
        try:
            yield
        finally:
            self._sealed_ok = before

    @contextmanager
    def command_scope(self) -> Iterator[None]:
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

    # -- the notification log -----------------------------------------------------------------------

    def notifications_of(self, event_type: str, *, page: int = 1000) -> Iterator[Any]:
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

    def case_ids(self) -> Iterator[UUID]:
        """Every case id in the order cases were opened (reads the notification log)."""
        for notification in self.notifications_of("CaseOpened"):
            yield notification.originator_id


