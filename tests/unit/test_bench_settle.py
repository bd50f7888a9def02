"""The bench's settle rule: two zero reads in a row with the same end offsets."""

from kafka import TopicPartition

from bench.settle import Backlog

EVENTS = TopicPartition("learning.events", 0)
POINTS = TopicPartition("gamification.points", 0)
QUIET = {"points": 0, "leaderboards": 0}
EMPTY = {"points": 0, "badges": 0}


def read(
    ends: dict[TopicPartition, int], lag: dict[str, int] = QUIET, outbox: dict[str, int] = EMPTY
) -> Backlog:
    return Backlog(lag, outbox, ends)


def test_two_zero_reads_over_the_same_end_offsets_settle() -> None:
    first = read({EVENTS: 40, POINTS: 12})
    assert read({EVENTS: 40, POINTS: 12}).settled_since(first)


def test_an_event_relayed_between_two_zero_reads_keeps_it_unsettled() -> None:
    # Both reads saw no lag and empty outboxes, but a record landed between them: whatever
    # it leads to may still be in flight.
    first = read({EVENTS: 40, POINTS: 12})
    assert not read({EVENTS: 40, POINTS: 13}).settled_since(first)


def test_lag_or_an_unsent_outbox_event_on_either_read_keeps_it_unsettled() -> None:
    ends = {EVENTS: 40}
    lagging = read(ends, lag={"points": 0, "leaderboards": 3})
    unsent = read(ends, outbox={"points": 1, "badges": 0})
    quiet = read(ends)
    assert not quiet.settled_since(lagging)
    assert not lagging.settled_since(quiet)
    assert not unsent.settled_since(quiet)
    assert not quiet.settled_since(None)
