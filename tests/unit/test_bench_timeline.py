"""The bench's timeline (bench/timeline.py): where a run's wall time goes."""

from __future__ import annotations

from bench.timeline import Timeline


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_step_lasts_until_the_next_is_announced_and_the_last_until_now():
    clock, lines = Clock(), []
    timeline = Timeline(clock, lines.append)
    clock.now += 2
    timeline.step("raw", "raw ceilings")
    clock.now += 10
    timeline.step("pipeline", "pipeline: 100 agents")
    clock.now += 35.5
    timeline.step("idle", "idle")
    clock.now += 4
    assert timeline.seconds() == {"raw": 10.0, "pipeline": 35.5, "idle": 4.0}
    assert lines == [
        "[bench    2s] raw ceilings",
        "[bench   12s] pipeline: 100 agents",
        "[bench   48s] idle",
    ]


def test_a_step_announced_again_adds_up():
    clock = Clock()
    timeline = Timeline(clock, lambda line: None)
    timeline.step("e2e", "first stream")
    clock.now += 3
    timeline.step("reads", "reads")
    clock.now += 1
    timeline.step("e2e", "second stream")
    clock.now += 2
    assert timeline.seconds() == {"e2e": 5.0, "reads": 1.0}
