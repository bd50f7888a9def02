"""Which offset is safe to commit."""

from kafka import TopicPartition

from services.runtime.kafka import OffsetTracker, batch_lane, partition_groups


def test_commits_the_contiguous_run_of_finished_offsets():
    tracker = OffsetTracker()
    tracker.start("p0", 34)
    for offset in (34, 35, 36, 40):
        tracker.finish("p0", offset)
    assert tracker.committable() == {"p0": 37}
    assert tracker.committable() == {}  # nothing new
    for offset in (37, 38, 39):
        tracker.finish("p0", offset)
    assert tracker.committable() == {"p0": 41}


def test_nothing_is_committed_while_the_first_offset_is_in_flight():
    tracker = OffsetTracker()
    tracker.start("p0", 10)
    tracker.finish("p0", 11)
    assert tracker.committable() == {}


def test_partitions_are_independent_and_forgotten_on_revocation():
    tracker = OffsetTracker()
    tracker.start("p0", 0)
    tracker.start("p1", 5)
    tracker.finish("p1", 5)
    assert tracker.committable() == {"p1": 6}
    tracker.forget(["p1"])
    assert tracker.position("p1") is None
    assert tracker.partitions() == ["p0"]


def test_a_batch_after_a_gap_or_a_rewind_starts_from_its_first_offset():
    tracker = OffsetTracker()
    tracker.start("p0", 0)
    tracker.finish("p0", 0)
    tracker.committable()
    tracker.start("p0", 7)  # 1-6 were control records we never see
    tracker.finish("p0", 7)
    assert tracker.committable() == {"p0": 8}
    tracker.start("p0", 3)  # rebalanced back to an older commit
    tracker.finish("p0", 3)
    assert tracker.committable() == {"p0": 4}


def test_a_poll_is_one_batch_unless_split_into_groups_of_partitions():
    partitions = [TopicPartition("t", n) for n in range(5)]
    assert partition_groups(partitions, 1) == [partitions]
    assert partition_groups(partitions, 2) == [partitions[0::2], partitions[1::2]]
    # more groups than partitions: one partition each, no empty group
    assert partition_groups(partitions[:2], 6) == [[partitions[0]], [partitions[1]]]


def test_a_batch_lane_is_the_lowest_partition_of_its_group_among_its_topics():
    owned = [TopicPartition("roster", 0), TopicPartition("points", 2), TopicPartition("points", 4)]
    assert batch_lane(owned, {"points"}, fallback=9) == 2
    assert batch_lane(owned, {"roster"}, fallback=9) == 0
    assert batch_lane(owned, {"points", "roster"}, fallback=9) == 0
    assert batch_lane(owned, {"other"}, fallback=9) == 9
