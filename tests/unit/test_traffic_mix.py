"""bench intake's traffic mix (issue 29, "real traffic"): the records it publishes are the mix asked for, and
each is one a real adapter could send — a follow-up names its customer's case, a resubmission repeats an earlier
draft, each acknowledgement is reported delivered and read at most once (a second report would be refused)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caseledger.cli.bench.traffic_mix import (
    CONTACT_CENTRE,
    WORST_CASE,
    Seed,
    TrafficMix,
    mix_records,
    seed_drafts,
)
from caseledger.ledger.domain.values import ContactDraft
from caseledger.ledger.errors import ValidationError
from caseledger.ledger.intake.records import DeliveryReport, ReadReceipt
from tests.support.examples import examples

KINDS = ("new", "returning", "follow_up", "resubmission", "delivery", "read")


def test_the_default_is_a_contact_centre_and_the_worst_case_all_new_customers() -> None:
    assert TrafficMix.parse("default") == CONTACT_CENTRE and TrafficMix.parse("worst") == WORST_CASE
    assert sum(getattr(CONTACT_CENTRE, kind) for kind in KINDS) == pytest.approx(1)
    spelled = TrafficMix.parse("new=30,returning=15,follow-up=15,resubmission=2,delivery=23,read=15")
    assert all(getattr(spelled, kind) == pytest.approx(getattr(CONTACT_CENTRE, kind)) for kind in KINDS)
    assert CONTACT_CENTRE.describe().startswith("new 30%")


@pytest.mark.parametrize("text", ["new=-1", "new=1,lunch=2", "new", "new=x", "new=0,read=0", ""])
def test_a_mix_it_cannot_read_says_how_to_write_one(text: str) -> None:
    with pytest.raises(ValidationError) as raised:
        TrafficMix.parse(text)
    assert "--mix" in str(raised.value) and ("KIND=WEIGHT" in str(raised.value) or "weight" in str(raised.value))


@settings(max_examples=examples(60), deadline=None)
@given(weights=st.lists(st.integers(0, 20), min_size=6, max_size=6).filter(any), records=st.integers(1, 400))
def test_the_records_are_the_mix_asked_for_and_each_one_an_adapter_could_send(weights: list[int], records: int) -> None:
    mix = TrafficMix.parse(",".join(f"{kind}={w}" for kind, w in zip(KINDS, weights, strict=True)))
    counts = mix.counts(records)
    assert sum(counts.values()) == records
    assert all(abs(counts[kind] - getattr(mix, kind) * records) < 1 for kind in KINDS)
    known = seed_drafts("r", mix.seeds_needed(records))
    seeds = [Seed(draft.identity, f"CL-SEED{k:05d}-AAAAA") for k, draft in enumerate(known)]
    published = mix_records(mix, records, "r", seeds)
    assert len(published) == records
    by_reference = {seed.reference: seed for seed in seeds}
    drafts = [r for r in published if isinstance(r, ContactDraft)]
    fresh = {id(d) for d in drafts}
    kinds: Counter[str] = Counter()
    seen_ids: set[str] = set()
    for record in published:
        if isinstance(record, DeliveryReport | ReadReceipt):
            assert record.message_id == "ACK1" and record.case_reference in by_reference
            kinds["delivery" if isinstance(record, DeliveryReport) else "read", record.case_reference] += 1
            if isinstance(record, ReadReceipt):  # the case's own customer reads it
                assert record.reader.id == str(by_reference[record.case_reference].identity)
        elif record.channel_message_id in seen_ids:
            kinds["resubmission"] += 1  # the very draft published earlier: same id, same content
            assert sum(1 for d in drafts if d is record) >= 2
        else:
            seen_ids.add(record.channel_message_id)
            if record.case_reference is not None:
                assert record.follow_up and record.identity == by_reference[record.case_reference].identity
    assert all(n == 1 for key, n in kinds.items() if isinstance(key, tuple))  # one report of each kind per case
    assert len(fresh) == len(seen_ids)
    assert kinds["resubmission"] <= counts["resubmission"]


def test_no_case_gets_both_a_contact_and_a_report_which_two_workers_would_apply_at_once() -> None:
    mix = CONTACT_CENTRE
    seeds = [Seed(d.identity, f"CL-SEED{k:05d}-AAAAA") for k, d in enumerate(seed_drafts("r", mix.seeds_needed(500)))]
    published = mix_records(mix, 500, "r", seeds)
    contacted = {r.case_reference or str(r.identity) for r in published if isinstance(r, ContactDraft)}
    reported = {r.case_reference for r in published if isinstance(r, DeliveryReport | ReadReceipt)}
    by_identity = {str(s.identity): s.reference for s in seeds}
    assert not {by_identity.get(c, c) for c in contacted} & reported
