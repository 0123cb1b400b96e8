"""What ``bench intake`` publishes: a traffic mix of intake records, as a contact centre receives them.

Six kinds of record, each a share of the records published:

==============  ================================================================================
``new``          a customer the ledger has never seen: a customer, an identity claim, a case
``returning``    a known customer (an earlier identity) with a new request: a new case of theirs
``follow_up``    a known customer writing again on their open case (its reference given)
``resubmission`` the same draft sent again (an adapter retrying after a timeout): traced, never doubled
``delivery``     a channel's delivery report of an acknowledgement we sent (``ACK1``)
``read``         the customer's read receipt of that acknowledgement
==============  ================================================================================

The default (:data:`CONTACT_CENTRE`) per 100 records: 30 new, 15 returning, 15 follow-ups, 2 resubmissions,
23 delivery reports, 15 read receipts. Where the proportions come from (docs/scaling.md, "The traffic mix"):

- follow-ups: first-contact resolution averages about 70 % across contact centres (SQM Group's benchmark of
  North American centres); about a third of requests need a second contact — 15 follow-ups per 45 requests;
- returning customers: 36 % of the callers of Talkdesk's customers called again within six months (Talkdesk's
  data science team) — a third of the 45 requests come from a known customer;
- delivery reports and read receipts: an assumption — roughly half the contacts arrive on channels whose
  platform reports delivery (SMS, chat, apps; e-mail rarely), and messaging channels report most messages
  read (90 % and more) where e-mail reports few (around 20 %);
- resubmissions: an assumption (no public figure): 1 record in 50 is an adapter's retry.

The worst case (:data:`WORST_CASE`) is every record a new customer: the most events and rows per record.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from datetime import UTC, datetime

from caseledger.ledger.domain.values import Actor, ActorKind, Channel, ContactDraft, Identity
from caseledger.ledger.errors import ValidationError
from caseledger.ledger.intake.records import DeliveryReport, IntakeMessage, ReadReceipt

__all__ = ["CONTACT_CENTRE", "WORST_CASE", "Seed", "TrafficMix", "mix_records", "seed_drafts"]

CHANNELS = ("email", "chat", "web_form", "sms", "app")


@dataclass(frozen=True)
class TrafficMix:
    """Shares of each kind of intake record (they sum to 1)."""

    new: float = 0.0
    returning: float = 0.0
    follow_up: float = 0.0
    resubmission: float = 0.0
    delivery: float = 0.0
    read: float = 0.0

    @classmethod
    def parse(cls, text: str) -> TrafficMix:
        """``new=30,returning=15,follow_up=15,resubmission=2,delivery=23,read=15`` (weights; kinds left out are 0),
        or ``default`` / ``worst``."""
        named = {"default": CONTACT_CENTRE, "contact-centre": CONTACT_CENTRE, "worst": WORST_CASE}
        if text.strip().lower() in named:
            return named[text.strip().lower()]
        kinds = [f.name for f in fields(cls)]
        weights: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            kind, sep, value = part.partition("=")
            kind = kind.strip().replace("-", "_")
            try:
                weight = float(value) if sep and kind in kinds else -1.0
            except ValueError:
                weight = -1.0
            if weight < 0:
                raise ValidationError(f"--mix {text!r}: give KIND=WEIGHT pairs separated by commas, KIND one of "
                                      f"{', '.join(kinds)} (or 'default', 'worst'), WEIGHT a number ≥ 0", field="mix")
            weights[kind] = weight
        total = sum(weights.values())
        if total <= 0:
            raise ValidationError(f"--mix {text!r}: the weights sum to 0; give at least one kind a weight",
                                  field="mix")
        return cls(**{kind: weight / total for kind, weight in weights.items()})

    def counts(self, records: int) -> dict[str, int]:
        """How many records of each kind among ``records`` (largest remainders, so they sum to ``records``)."""
        shares = {f.name: getattr(self, f.name) * records for f in fields(self)}
        counts = {kind: int(share) for kind, share in shares.items()}
        for kind in sorted(shares, key=lambda k: counts[k] - shares[k])[: records - sum(counts.values())]:
            counts[kind] += 1
        return counts

    def seeds_needed(self, records: int) -> int:
        """Open cases of known customers the records need: each gets at most one record of each kind, and either
        records keyed by its customer (a new case, a follow-up) or reports keyed by its case (see mix_records)."""
        counts = self.counts(records)
        return max(counts["returning"], counts["follow_up"]) + max(counts["delivery"], counts["read"])

    def describe(self) -> str:
        return " · ".join(f"{f.name.replace('_', '-')} {getattr(self, f.name):.0%}" for f in fields(self)
                          if getattr(self, f.name))


CONTACT_CENTRE = TrafficMix(new=0.30, returning=0.15, follow_up=0.15, resubmission=0.02, delivery=0.23, read=0.15)
WORST_CASE = TrafficMix(new=1.0)


@dataclass(frozen=True)
class Seed:
    """A known customer and their open case, recorded before the clock starts."""

    identity: Identity
    reference: str


def _draft(run: str, n: int, identity: Identity, *, reference: str | None = None) -> ContactDraft:
    return ContactDraft(
        channel=Channel(CHANNELS[n % len(CHANNELS)]), channel_message_id=f"{run}-{n}", identity=identity,
        items=(f"Question {n}: where is my parcel?",), subject="Parcel",
        body="I ordered on Monday and nothing has arrived yet. " * 4, case_reference=reference,
        follow_up=reference is not None, occurred_at=datetime.now(UTC),
    )


def seed_drafts(run: str, seeds: int) -> list[ContactDraft]:
    """The first contact of each known customer, published and recorded before the clock starts."""
    return [_draft(f"{run}-seed", k, Identity(kind="email", value=f"s{k}-{run}@bench.example")) for k in range(seeds)]


def mix_records(mix: TrafficMix, records: int, run: str, seeds: list[Seed]) -> list[IntakeMessage]:
    """``records`` intake records in ``mix``, shuffled (seeded by ``run``); each seed case gets at most one
    record of each kind (a read receipt may come before its delivery report, as channels report them).

    A customer's contacts are keyed by their identity, a case's reports by its reference: two partitions, so two
    workers. All published at once, a follow-up and a report of one case would meet in two workers' concurrent
    batches — a conflict that real traffic, where a report follows its message within seconds and a follow-up
    comes days later, seldom sees. So the seeds that get contacts are not those that get reports."""
    counts = mix.counts(records)
    reported = max(counts["returning"], counts["follow_up"])  # the first seeds get contacts, the others reports
    if mix.seeds_needed(records) > len(seeds):
        raise ValueError(f"the mix needs {mix.seeds_needed(records)} known customers, {len(seeds)} were seeded")
    order = [kind for kind, count in counts.items() for _ in range(count)]
    rng = random.Random(run)
    rng.shuffle(order)
    taken: dict[str, int] = dict.fromkeys(counts, 0)
    sent: list[ContactDraft] = []
    out: list[IntakeMessage] = []
    now = datetime.now(UTC)
    for n, kind in enumerate(order):
        if kind == "resubmission" and not sent:
            kind = "new"  # nothing to resubmit yet
        k = taken[kind]
        taken[kind] += 1
        if kind == "new":
            record: IntakeMessage = _draft(run, n, Identity(kind="email", value=f"c{n}-{run}@bench.example"))
        elif kind == "returning":
            record = _draft(run, n, seeds[k].identity)
        elif kind == "follow_up":
            record = _draft(run, n, seeds[k].identity, reference=seeds[k].reference)
        elif kind == "resubmission":
            record = sent[rng.randrange(len(sent))]
        elif kind == "delivery":
            record = DeliveryReport(case_reference=seeds[reported + k].reference, message_id="ACK1", delivered_at=now)
        else:
            seed = seeds[reported + k]
            record = ReadReceipt(case_reference=seed.reference, message_id="ACK1", read_at=now,
                                 reader=Actor(kind=ActorKind.CUSTOMER, id=str(seed.identity)))
        if isinstance(record, ContactDraft) and kind != "resubmission":
            sent.append(record)
        out.append(record)
    return out

