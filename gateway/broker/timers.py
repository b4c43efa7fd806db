"""What is due when: delayed wills, session expiry, expiry of queued messages.

Entries are hints, checked against the session when they come due (the broker's tick),
so that cancelling a will or reconnecting never has to search a heap.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from gateway.broker.session import QEntry, Session

WILL_TIMER = 0
EXPIRY_TIMER = 1


class Timers:
    __slots__ = ("_entries", "_sessions")

    def __init__(self) -> None:
        self._sessions: list[tuple[float, int, str]] = []  # (due, kind, client_id)
        # (expires_at, seq, session, entry) of queued entries whose message can expire.
        self._entries: list[tuple[float, int, Session, QEntry]] = []

    def will_due(self, due: float, client_id: str) -> None:
        heapq.heappush(self._sessions, (due, WILL_TIMER, client_id))

    def expiry_due(self, due: float, client_id: str) -> None:
        heapq.heappush(self._sessions, (due, EXPIRY_TIMER, client_id))

    def entry_expires(self, expires_at: float, s: Session, e: QEntry) -> None:
        heapq.heappush(self._entries, (expires_at, e.seq, s, e))

    def due_sessions(self, now: float) -> Iterator[tuple[int, str]]:
        """(kind, client_id) of every session timer due by ``now``, removed as yielded."""
        heap = self._sessions
        while heap and heap[0][0] <= now:
            _, kind, client_id = heapq.heappop(heap)
            yield kind, client_id

    def due_entries(self, now: float) -> Iterator[tuple[Session, QEntry]]:
        """Queued entries whose message expired by ``now``, removed as yielded."""
        heap = self._entries
        while heap and heap[0][0] <= now:
            _, _, s, e = heapq.heappop(heap)
            yield s, e
