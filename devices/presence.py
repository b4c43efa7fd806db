"""When to look next whether devices that should wake up regularly still do (DESIGN §2).

A device with a wake interval that has not been heard for a few of them goes ``offline``; the
supervisor looks at least four times per shortest wake interval, so that "offline" comes on
time, and at once when the set of devices or their intervals changed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

LOOKS_PER_WAKE_INTERVAL = 4
SHORTEST_PAUSE = 0.05  # seconds: a misconfigured tiny interval must not spin the loop


def presence_pause(wake_intervals: Iterable[float | None], presence_interval: float) -> float:
    """Seconds until the next look, given the devices' wake intervals (None: none)."""
    looks = [i / LOOKS_PER_WAKE_INTERVAL for i in wake_intervals if i is not None]
    return max(SHORTEST_PAUSE, min([presence_interval, *looks]))


class PresenceSchedule:
    def __init__(self, presence_interval: float) -> None:
        self.presence_interval = presence_interval
        self._changed = asyncio.Event()

    def reschedule(self) -> None:
        """A device came or its wake interval changed: the pause is worked out again now."""
        self._changed.set()

    async def wait(self, wake_intervals: Iterable[float | None]) -> None:
        """Until the next look is due, or the schedule changed."""
        pause = presence_pause(wake_intervals, self.presence_interval)
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), pause)
