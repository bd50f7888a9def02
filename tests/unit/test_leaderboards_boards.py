"""Leaderboard rules: boards of a change, order-independent folding, ties, ranks, periods
in Asia/Shanghai, scopes, when a period is due to close, and the score histograms (merged
lane maps, the score band of a range of positions, count changes of entry moves)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from contracts.api.leaderboards import LeaderboardQuery, PositionQuery
from services.leaderboards.boards import (
    Move,
    PointChange,
    Standing,
    ahead_of,
    band,
    board_key,
    boards_of,
    closable_periods,
    count_changes,
    fold,
    is_due_to_close,
    merge_counts,
    parse_scope,
    ranked,
    resolve_period,
    total,
)
from services.leaderboards.count_maps import is_packed, merged_by_board, pack, unpack
from services.leaderboards.settings import LeaderboardSettings

TZ = "Asia/Shanghai"
_ids = itertools.count()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def change(agent: str, delta: int, at: datetime, team: str = "t1", tier: str = "foundation"):
    return PointChange(f"e{next(_ids)}", agent, delta, at, team, tier)


def board(entries: dict, key: str) -> dict[str, Standing]:
    return {agent: s for (b, agent), s in entries.items() if b == key}


def standings(entries: dict, key: str) -> list[tuple[int, str, int]]:
    return [(rank, agent, s.score) for rank, agent, s in ranked(board(entries, key))]


# --- boards of a change -------------------------------------------------------------


def test_a_change_counts_in_nine_boards():
    keys = {b.key for b in boards_of(change("a", 10, utc(2026, 11, 24, 3)), TZ)}
    assert keys == {
        f"{period}|{scope}"
        for period in ("all-time", "2026-W48", "2026-11")
        for scope in ("global", "team:t1", "tier:foundation")
    }


def test_sunday_23_59_local_is_the_old_week_and_monday_00_00_the_new_one():
    sunday_late = utc(2026, 11, 29, 15, 59, 59)  # Sunday 23:59:59 in Shanghai
    monday = utc(2026, 11, 29, 16, 0, 0)  # Monday 00:00 in Shanghai, still Sunday in UTC
    assert closable_periods(change("a", 1, sunday_late), TZ) == [
        ("weekly", "2026-W48"),
        ("monthly", "2026-11"),
    ]
    assert closable_periods(change("a", 1, monday), TZ) == [
        ("weekly", "2026-W49"),
        ("monthly", "2026-11"),
    ]


def test_month_boundary_is_local_midnight():
    last_minute = utc(2026, 11, 30, 15, 59)  # 30 Nov 23:59 local
    first_minute = utc(2026, 11, 30, 16, 0)  # 1 Dec 00:00 local
    assert ("monthly", "2026-11") in closable_periods(change("a", 1, last_minute), TZ)
    assert ("monthly", "2026-12") in closable_periods(change("a", 1, first_minute), TZ)


def test_iso_week_of_a_year_boundary():
    # Thursday 1 Jan 2026 belongs to 2026-W01; Monday 29 Dec 2025 too (local time).
    assert closable_periods(change("a", 1, utc(2025, 12, 28, 16)), TZ)[0] == (
        "weekly",
        "2026-W01",
    )
    assert closable_periods(change("a", 1, utc(2025, 12, 28, 15, 59)), TZ)[0] == (
        "weekly",
        "2025-W52",
    )


# --- folding: order-independent, ties, zero -----------------------------------------


def test_shuffled_and_repeated_changes_fold_to_the_same_boards():
    t = utc(2026, 11, 24)
    changes = [
        change(agent, delta, t + timedelta(hours=h), team=team)
        for agent, delta, h, team in [
            ("a", 10, 1, "t1"),
            ("b", 20, 2, "t2"),
            ("a", 15, 3, "t2"),
            ("c", 25, 4, "t1"),
            ("b", -20, 5, "t2"),
            ("c", 5, 30, "t1"),
            ("a", -5, 200, "t2"),
        ]
    ]
    expected = fold(changes, TZ)
    rng = random.Random(5)
    for _ in range(20):
        shuffled = changes + rng.sample(changes, 3)  # duplicates removed by the log's key
        rng.shuffle(shuffled)
        distinct = list({c.event_id: c for c in shuffled}.values())
        assert fold(distinct, TZ) == expected


def test_ties_go_to_who_reached_the_score_first_then_agent_id():
    t = utc(2026, 11, 24, 2)
    entries = fold(
        [
            change("zed", 30, t),  # 30 first
            change("amy", 20, t + timedelta(hours=1)),
            change("amy", 10, t + timedelta(hours=2)),  # 30 later
            change("bob", 30, t),  # 30 at the same instant as zed: agent id decides
            change("cat", 40, t + timedelta(hours=5)),
        ],
        TZ,
    )
    assert standings(entries, "2026-W48|global") == [
        (1, "cat", 40),
        (2, "bob", 30),
        (3, "zed", 30),
        (4, "amy", 30),
    ]


def test_reached_at_is_the_latest_change_and_not_the_arrival_order():
    t = utc(2026, 11, 24)
    early, late = change("a", 10, t), change("a", 5, t + timedelta(hours=3))
    assert fold([late, early], TZ)[("all-time|global", "a")] == Standing(15, late.occurred_at)


def test_reversal_to_zero_leaves_the_board_and_later_points_come_back():
    t = utc(2026, 11, 24)
    award, reversal = change("a", 20, t), change("a", -20, t)
    entries = fold([award, change("b", 5, t), reversal], TZ)
    assert standings(entries, "2026-W48|global") == [(1, "b", 5)]
    entries = fold([award, change("b", 5, t), reversal, change("a", 7, t)], TZ)
    assert standings(entries, "2026-W48|global") == [(1, "a", 7), (2, "b", 5)]


def test_a_reversal_arriving_before_its_award_nets_out():
    t = utc(2026, 11, 24)
    award, reversal = change("a", 20, t), change("a", -20, t)
    assert fold([reversal], TZ)[("all-time|global", "a")].score == -20  # hidden: below 0
    assert standings(fold([reversal], TZ), "all-time|global") == []
    assert fold([reversal, award], TZ) == fold([award, reversal], TZ)


def test_team_change_mid_week_splits_team_boards_but_not_the_global_one():
    monday, thursday = utc(2026, 11, 23, 2), utc(2026, 11, 26, 2)
    entries = fold(
        [change("a", 10, monday, team="red"), change("a", 25, thursday, team="blue")], TZ
    )
    assert standings(entries, "2026-W48|team:red") == [(1, "a", 10)]
    assert standings(entries, "2026-W48|team:blue") == [(1, "a", 25)]
    assert standings(entries, "2026-W48|global") == [(1, "a", 35)]


def test_ranks_are_1_to_n_without_gaps_even_with_equal_scores():
    t = utc(2026, 11, 24)
    entries = {f"a{i}": Standing(10 if i % 2 else 20, t) for i in range(7)}
    entries["zero"] = Standing(0, t)
    ranks = [rank for rank, _, _ in ranked(entries)]
    assert ranks == list(range(1, 8))


# --- periods, scopes, queries --------------------------------------------------------


def test_current_period_names_resolve_in_the_time_zone():
    sunday_night_local = utc(2026, 11, 29, 17)  # Monday 01:00 in Shanghai
    assert resolve_period("weekly", sunday_night_local, TZ).key == "2026-W49"
    assert resolve_period("monthly", utc(2026, 11, 30, 16), TZ).key == "2026-12"
    assert resolve_period("all-time", sunday_night_local, TZ).starts_at is None
    week = resolve_period("2026-W48", sunday_night_local, TZ)
    assert (week.kind, week.starts_at, week.ends_at) == (
        "weekly",
        utc(2026, 11, 22, 16),
        utc(2026, 11, 29, 16),
    )


@pytest.mark.parametrize("bad", ["daily", "2026-W54", "2026-13", "2026-w48", "", "current"])
def test_unknown_periods_say_what_to_send(bad):
    with pytest.raises(ValueError, match="all-time, weekly, monthly"):
        resolve_period(bad, utc(2026, 11, 24), TZ)


@pytest.mark.parametrize("good", ["global", "team:t-1", "tier:leadership"])
def test_scopes(good):
    assert parse_scope(good) == good
    assert LeaderboardQuery(scope=good).scope == good


@pytest.mark.parametrize("bad", ["team:", "tier:expert", "galaxy", "team"])
def test_bad_scopes_are_refused(bad):
    with pytest.raises(ValueError, match="global, team:<team_id> or tier"):
        parse_scope(bad)
    with pytest.raises(ValidationError):
        LeaderboardQuery(scope=bad)


def test_query_limits():
    assert LeaderboardQuery().limit == 10
    with pytest.raises(ValidationError):
        LeaderboardQuery(limit=101)
    with pytest.raises(ValidationError):
        LeaderboardQuery(limit=0)
    with pytest.raises(ValidationError):
        LeaderboardQuery(offset=-1)
    with pytest.raises(ValidationError):
        PositionQuery(neighbors=11)
    with pytest.raises(ValidationError):
        LeaderboardQuery.model_validate({"limt": "5"})


def test_board_keys_cannot_collide():
    assert board_key("2026-W48", "team:a") != board_key("2026-W48|team", "a")


def test_settings_refuse_an_unknown_time_zone():
    with pytest.raises(ValidationError, match="time zone"):
        LeaderboardSettings(time_zone="Mars/Olympus")


# --- close ---------------------------------------------------------------------------


def test_a_period_closes_after_its_end_and_a_quiet_grace():
    end, grace = utc(2026, 11, 29, 16), timedelta(minutes=5)
    assert not is_due_to_close(end, end - timedelta(hours=1), end, grace)
    assert is_due_to_close(end, end - timedelta(hours=1), end + grace, grace)


def test_a_backfilled_past_period_waits_until_the_backfill_goes_quiet():
    end, grace = utc(2026, 10, 4, 16), timedelta(minutes=5)
    now = utc(2026, 11, 24)
    assert not is_due_to_close(end, now - timedelta(minutes=1), now, grace)
    assert is_due_to_close(end, now - timedelta(minutes=6), now, grace)


# --- score histograms ---------------------------------------------------------------


def positions(histogram: dict[int, int]) -> list[int]:
    """The score at each board position, best first: what the histogram stands for."""
    return [score for score in sorted(histogram, reverse=True) for _ in range(histogram[score])]


def test_lane_maps_merge_into_one_histogram_of_positive_counts():
    lanes = [{10: 2, 7: 1, 3: 0}, {10: 1, 12: 4}, {}]
    assert merge_counts(lanes) == {12: 4, 10: 3, 7: 1}
    assert total(merge_counts(lanes)) == 8
    assert ahead_of(merge_counts(lanes), 10) == 4
    assert ahead_of(merge_counts(lanes), 12) == 0
    assert ahead_of(merge_counts(lanes), 8) == 7  # a score nobody holds


def test_a_band_holds_exactly_the_scores_of_the_positions_asked():
    histogram = {50: 1, 40: 3, 30: 1, 20: 4, 5: 2}
    board = positions(histogram)  # 50 40 40 40 30 20 20 20 20 5 5
    for first in range(1, len(board) + 3):
        for last in range(first, len(board) + 3):
            found = band(histogram, first, last)
            if first > len(board):
                assert found is None
                continue
            wanted = board[first - 1 : last]
            assert (found.high, found.low) == (wanted[0], wanted[-1]), (first, last)
            assert found.above == sum(n for score, n in histogram.items() if score > found.high)
            assert found.above < first  # the band starts at or before the first position


def test_bands_of_an_empty_board_and_of_bad_ranges():
    assert band({}, 1, 10) is None
    assert band({3: 1}, 0, 5) is None
    assert band({3: 1}, 2, 1) is None


def test_count_changes_net_out_per_lane_and_score():
    moves = [
        Move("B", 0, 0, 1, 10),  # joins lane 1 at 10
        Move("B", 1, 10, 1, 15),  # 10 -> 15 in lane 1
        Move("B", 2, 15, 1, 15),  # same score, moves from lane 2 to lane 1
        Move("B", 1, 7, 1, 7),  # unchanged: writes nothing
        Move("B", 1, 4, 1, -3),  # leaves the board (0 or below is not counted)
        Move("C", 1, -2, 1, 0),  # never on the board
    ]
    assert count_changes(moves) == {("B", 1): {15: 2, 4: -1}, ("B", 2): {15: -1}}


# --- count maps as stored ----------------------------------------------------------------


def test_a_packed_count_map_reads_back_as_written_without_zero_counts():
    counts = {1: 3, 25_000: 1, 2**40: 7, 12: 0, 9: -1}
    stored = pack(counts)
    assert is_packed(stored)
    assert unpack(stored) == {1: 3, 25_000: 1, 2**40: 7}
    assert unpack(pack({})) == {} == unpack(None)


def test_a_count_map_of_the_earlier_layout_reads_the_same():
    legacy = {"10": 2, "7": 1}
    assert not is_packed(legacy)
    assert unpack(legacy) == {10: 2, 7: 1}
    assert merge_counts([unpack(legacy), unpack(pack({10: 1, 12: 4}))]) == {12: 4, 10: 3, 7: 1}


def test_count_maps_compare_as_their_boards_whatever_the_lanes():
    one = [
        {"board": "b", "lane": 0, "counts": pack({10: 2, 7: 1})},
        {"board": "c", "lane": 3, "counts": pack({1: 1})},
    ]
    other = [
        {"board": "b", "lane": 1, "counts": pack({10: 1})},
        {"board": "b", "lane": 4, "counts": pack({10: 1, 7: 1})},
        {"board": "c", "lane": 0, "counts": pack({1: 1})},
    ]
    assert merged_by_board(one) == merged_by_board(other)
    assert merged_by_board(one) == [
        {"board": "b", "counts": {"7": 1, "10": 2}},
        {"board": "c", "counts": {"1": 1}},
    ]
