"""What the broker tells pollers (the admin API, the TUI): recent events, and change
counters that let a poller skip a read when nothing changed."""

from __future__ import annotations

from collections import deque

# Broker events kept for the admin API (events_since); older ones are forgotten.
EVENT_RING_SIZE = 1000


class Journal:
    __slots__ = ("_events", "event_seq", "queues_version", "sessions_version")

    def __init__(self) -> None:
        # Bumped where the change happens (by whichever part makes it); reading costs
        # nothing. sessions: the session list and subscriptions; queues: any session's
        # queue or in-flight window.
        self.sessions_version = 0
        self.queues_version = 0
        self._events: deque[dict[str, object]] = deque(maxlen=EVENT_RING_SIZE)
        self.event_seq = 0

    def event(self, kind: str, client_id: str | None, detail: str, now: float) -> None:
        self.event_seq += 1
        self._events.append(
            {
                "seq": self.event_seq,
                "ts": round(now, 3),
                "type": kind,
                "client_id": client_id,
                "detail": detail,
            }
        )

    def since(self, seq: int) -> tuple[int, list[dict[str, object]]]:
        """The last event seq and the (at most EVENT_RING_SIZE most recent) events after
        ``seq``."""
        last = self.event_seq
        if seq >= last:
            return last, []
        events = self._events
        newer = last - seq
        if newer >= len(events):
            return last, [dict(e) for e in events]
        return last, [dict(events[i]) for i in range(len(events) - newer, len(events))]
