"""The server's timer wheel (gateway/server/timer_wheel.py): pure, driven by a fake clock."""

from __future__ import annotations

import random

import pytest

from gateway.server.timer_wheel import TimerWheel


class Item:
    def __init__(self, name: str, due: float = 0.0) -> None:
        self.name = name
        self.due = due
        self.timer_slot: int | None = None

    def __repr__(self) -> str:
        return self.name


def test_items_come_out_when_their_slot_begins_and_not_before() -> None:
    wheel: TimerWheel[Item] = TimerWheel(granularity=1.0)
    a, b, c = Item("a"), Item("b"), Item("c")
    wheel.schedule(a, 10.2)
    wheel.schedule(b, 11.9)
    wheel.schedule(c, 30.0)
    assert wheel.expire(9.99) == []
    assert wheel.expire(10.0) == [a]
    assert wheel.expire(10.5) == []
    assert wheel.expire(12.0) == [b]
    assert (a.timer_slot, b.timer_slot) == (None, None)
    assert len(wheel) == 1
    assert wheel.expire(100.0) == [c]
    assert len(wheel) == 0


def test_an_item_is_in_one_slot_at_most_and_the_earlier_deadline_wins() -> None:
    wheel: TimerWheel[Item] = TimerWheel(granularity=1.0)
    a = Item("a")
    wheel.schedule(a, 50.0)
    wheel.schedule(a, 20.0)  # earlier: moves
    wheel.schedule(a, 90.0)  # later: stays at 20, the owner checks again then
    assert len(wheel) == 1
    assert wheel.expire(19.9) == []
    assert wheel.expire(20.0) == [a]
    assert wheel.expire(90.0) == []


def test_a_cancelled_item_never_comes_out() -> None:
    wheel: TimerWheel[Item] = TimerWheel(granularity=1.0)
    a, b = Item("a"), Item("b")
    wheel.schedule(a, 5.0)
    wheel.schedule(b, 5.0)
    wheel.cancel(a)
    wheel.cancel(a)  # twice is harmless
    assert wheel.expire(6.0) == [b]
    assert a.timer_slot is None


def test_a_deadline_already_past_comes_out_at_the_next_tick() -> None:
    wheel: TimerWheel[Item] = TimerWheel(granularity=1.0)
    wheel.expire(100.0)
    a = Item("a")
    wheel.schedule(a, 42.0)  # in a slot that was taken out already
    assert wheel.expire(100.5) == []  # same tick's slot: already done
    assert wheel.expire(101.0) == [a]


def test_a_long_stop_between_ticks_takes_out_everything_due() -> None:
    """After a suspended machine (or the first tick) many slots have passed at once."""
    wheel: TimerWheel[Item] = TimerWheel(granularity=0.5)
    items = [Item(f"i{i}") for i in range(50)]
    for i, item in enumerate(items):
        wheel.schedule(item, 1000.0 + i)
    assert wheel.expire(1010.0) == items[:11]  # slots in order: earliest deadlines first
    assert wheel.expire(5000.0) == items[11:]


@pytest.mark.parametrize("granularity", [1.0, 0.25])
def test_with_a_tick_per_granularity_each_deadline_is_met_within_one_tick(
    granularity: float,
) -> None:
    """The way the server uses it: take out what came due, act on what is really due, put
    the rest back for its true deadline. Nothing is acted on early, nothing more than one
    tick late (the bound documented for keep-alive: 1.5 x keep-alive + at most one tick)."""
    rng = random.Random(13)
    wheel: TimerWheel[Item] = TimerWheel(granularity=granularity)
    items = [Item(f"i{i}", rng.uniform(0.0, 60.0)) for i in range(500)]
    for item in items:
        wheel.schedule(item, item.due)
    acted: dict[str, float] = {}
    now = rng.uniform(0.0, granularity)  # ticks need not line up with slot boundaries
    while now < 70.0:
        for item in wheel.expire(now):
            if now >= item.due:
                acted[item.name] = now
            else:
                wheel.schedule(item, item.due)
        now += granularity
    assert len(acted) == len(items)
    for item in items:
        assert item.due <= acted[item.name] < item.due + granularity + 1e-9


def test_refreshed_deadlines_are_checked_again_not_acted_on() -> None:
    """A client that pings: its deadline moves on, and the wheel only ever hands it back to
    be put in again, one check per keep-alive period rather than one per tick."""
    wheel: TimerWheel[Item] = TimerWheel(granularity=1.0)
    pinger = Item("pinger", due=15.0)
    wheel.schedule(pinger, pinger.due)
    checks = 0
    for tick in range(1, 120):
        now = float(tick)
        if tick % 5 == 0:
            pinger.due = now + 15.0  # 1.5 x a keep-alive of 10 s from its last packet
        for item in wheel.expire(now):
            checks += 1
            assert now < item.due, "a pinging client would have been dropped"
            wheel.schedule(item, item.due)
    assert 0 < checks <= 120 // 10 + 1
