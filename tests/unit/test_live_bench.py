"""``bench live``'s queue measure: a contact is in a queue from the first frame at or past its position."""

from __future__ import annotations

from caseledger.cli.bench.live_bench import LiveResult, queue_latencies


def test_a_contact_is_in_a_queue_from_its_first_frame_at_or_past_its_position() -> None:
    sent = {"a": 10.0, "b": 10.5, "c": 11.0}
    positions = {"a": 5, "b": 9}  # c never reached the store
    frames = [[(10.2, 4), (10.4, 5), (10.9, 9)],  # one queue: a at 10.4, b at 10.9
              [(10.3, 7), (10.35, 6), (11.5, 12)]]  # another: an older render after a newer one changes nothing
    found = queue_latencies(sent, positions, frames)
    assert {m: [round(x, 2) for x in v] for m, v in found.items()} == {"a": [0.4, 0.3], "b": [0.4, 1.0], "c": []}


def test_a_queue_that_never_reached_a_contact_leaves_it_out() -> None:
    found = queue_latencies({"a": 0.0}, {"a": 50}, [[(1.0, 10)], [(2.0, 50)]])
    assert found == {"a": [2.0]}


def test_the_target_needs_every_contact_on_its_page_and_in_every_queue() -> None:
    met = LiveResult(rate=100, seconds=30, cases=50, queues=10, published=3000, both_seen=3000, both_p99_ms=800)
    assert met.target_met and ("target", "p99 < 1000 ms at 100 contacts/s, 50 case pages: met") in met.rows()
    assert not LiveResult(rate=100, seconds=30, cases=50, published=3000, both_seen=2999, both_p99_ms=800).target_met
    assert not LiveResult(rate=100, seconds=30, cases=50, published=3000, both_seen=3000, both_p99_ms=1200).target_met
    failed = LiveResult(rate=1, seconds=1, cases=1, published=1, both_seen=1, failures=["/queue/events: 429"])
    assert not failed.target_met and failed.as_dict()["target_met"] is False
