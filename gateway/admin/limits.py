"""Rate limits of the live updates (pure: the caller passes the time)."""

from __future__ import annotations


class EventLimiter:
    """At most `per_second` events in each one-second window; the rest are counted.

    The count is handed out once, at the start of a later window, so that a burst becomes its
    first `per_second` events plus one ``events_dropped`` report.
    """

    def __init__(self, per_second: int = 50, window: float = 1.0) -> None:
        self.per_second = per_second
        self.window = window
        self._start = float("-inf")
        self._used = 0
        self.dropped = 0  # not yet reported
        self.dropped_total = 0

    def _roll(self, now: float) -> None:
        if now - self._start >= self.window:
            self._start = now
            self._used = 0

    def admit(self, now: float) -> bool:
        self._roll(now)
        if self._used < self.per_second:
            self._used += 1
            return True
        self.dropped += 1
        self.dropped_total += 1
        return False

    def count_dropped(self, count: int) -> None:
        """Events lost before they reached the limiter (e.g. a ring that overflowed)."""
        self.dropped += count
        self.dropped_total += count

    def take_report(self, now: float) -> int:
        """The number of dropped events to report now (0: nothing to report yet)."""
        if not self.dropped:
            return 0
        self._roll(now)
        if self._used >= self.per_second:
            return 0  # this window is full: report in the next one
        self._used += 1
        count, self.dropped = self.dropped, 0
        return count


class Throttle:
    """Something that may happen at most once per `interval` seconds."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = float("-inf")

    def due(self, now: float) -> bool:
        return now - self.last >= self.interval

    def mark(self, now: float) -> None:
        self.last = now
