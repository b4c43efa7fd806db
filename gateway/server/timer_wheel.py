"""One timer wheel for the deadlines of every connection (connect timeout, keep-alive).

A ``call_later`` handle per connection costs a TimerHandle, a heap entry and a context each,
and a sweep over every connection each second costs time proportional to all of them, idle or
not. Here each connection sits in at most one slot (whole multiples of ``granularity``
seconds), and a tick takes out only the slots that have come due. Nothing moves while
packets arrive: the owner reads the true deadline when a slot comes due and puts the item
back if it is not due yet (a keep-alive that was refreshed), so a busy client costs one
check per keep-alive period, an idle one a single check.

Precision: an item is handed back at the first ``expire(now)`` with ``now`` at or past its
deadline, provided ticks come at least every ``granularity`` seconds; with a tick every
second that is at most one second late (the sweep it replaced had the same bound).
"""

from __future__ import annotations

import math
from typing import Generic, Protocol, TypeVar


class Timed(Protocol):
    # The slot the item is in (None: in none); kept on the item, not in a dict of the wheel,
    # because a slot attribute is 8 bytes and a dict entry per connection several times that.
    timer_slot: int | None


T = TypeVar("T", bound=Timed)


class TimerWheel(Generic[T]):
    __slots__ = ("_granularity", "_next", "_slots")

    def __init__(self, granularity: float = 1.0) -> None:
        if granularity <= 0:
            raise ValueError("granularity must be positive")
        self._granularity = granularity
        self._slots: dict[int, set[T]] = {}
        self._next = -math.inf  # the first slot a later expire() has not taken out yet

    def __len__(self) -> int:
        return sum(len(items) for items in self._slots.values())

    def schedule(self, item: T, due: float) -> None:
        """Hand ``item`` back by ``due`` (monotonic seconds). An item already due earlier
        stays where it is: it will be checked then, and put back if it is not due."""
        slot = math.floor(due / self._granularity)
        if slot < self._next:
            slot = int(self._next)  # that slot was taken out already: the next tick
        current = item.timer_slot
        if current is not None:
            if current <= slot:
                return
            self._remove(item, current)
        self._slots.setdefault(slot, set()).add(item)
        item.timer_slot = slot

    def cancel(self, item: T) -> None:
        if item.timer_slot is not None:
            self._remove(item, item.timer_slot)
            item.timer_slot = None

    def expire(self, now: float) -> list[T]:
        """Take out every item whose slot has begun by ``now``. Some may be due up to one
        granularity later: the caller checks, and schedules them again."""
        last = math.floor(now / self._granularity)
        due: list[T] = []
        if last < self._next:
            return due
        slots = self._slots
        if last - self._next < len(slots):  # one tick since the last: a slot or two to look at
            taken = [s for s in range(int(self._next), last + 1) if s in slots]
        else:  # the first tick, or after a long stop (a suspended machine): scan the slots
            taken = sorted(s for s in slots if s <= last)
        for slot in taken:
            for item in slots.pop(slot):
                item.timer_slot = None
                due.append(item)
        self._next = last + 1
        return due

    def _remove(self, item: T, slot: int) -> None:
        items = self._slots.get(slot)
        if items is None:
            return
        items.discard(item)
        if not items:
            del self._slots[slot]
