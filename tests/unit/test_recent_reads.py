"""RecentReads: what a read answered is kept for its seconds, then read again."""

from __future__ import annotations

from services.common.recent import RecentReads


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Loads:
    """A read that answers its call count, and remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[object] = []

    def one(self) -> int:
        self.asked.append("one")
        return len(self.asked)

    def many(self, keys: list[str]) -> dict[str, int]:
        self.asked.append(tuple(keys))
        return {key: len(self.asked) for key in keys if key != "absent"}


def test_an_answer_is_kept_for_its_seconds_then_read_again():
    clock, loads = Clock(), Loads()
    recent: RecentReads[int] = RecentReads(1.0, clock=clock)
    assert recent.get("k", loads.one) == 1
    clock.now += 0.9
    assert recent.get("k", loads.one) == 1
    assert recent.get("other", loads.one) == 2  # keys are kept apart
    clock.now += 0.2
    assert recent.get("k", loads.one) == 3


def test_zero_seconds_reads_every_time():
    loads = Loads()
    recent: RecentReads[int] = RecentReads(0)
    assert [recent.get("k", loads.one) for _ in range(3)] == [1, 2, 3]
    assert recent.get_many(["a", "b"], loads.many) == {"a": 4, "b": 4}
    assert recent.get_many([], loads.many) == {}
    assert len(loads.asked) == 4


def test_many_keys_read_only_those_not_kept_in_one_read():
    clock, loads = Clock(), Loads()
    recent: RecentReads[int] = RecentReads(1.0, clock=clock)
    assert recent.get_many(["a", "b", "a"], loads.many) == {"a": 1, "b": 1}
    assert recent.get_many(["b", "c", "absent"], loads.many) == {"b": 1, "c": 2}
    assert loads.asked == [("a", "b"), ("c", "absent")]
    # What the read did not find is not kept: asked again next time.
    recent.get_many(["absent"], loads.many)
    assert loads.asked[-1] == ("absent",)
    clock.now += 1.5
    assert recent.get_many(["a"], loads.many) == {"a": 4}


def test_the_keys_kept_are_bounded_and_clear_forgets_them():
    loads = Loads()
    recent: RecentReads[int] = RecentReads(60.0, max_keys=2)
    for key in ("a", "b", "c"):
        recent.get(key, loads.one)
    recent.get("c", loads.one)
    assert len(loads.asked) == 3
    recent.clear()
    recent.get("c", loads.one)
    assert len(loads.asked) == 4
