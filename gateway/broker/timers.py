"""What happens with the passing of time: delayed wills, session expiry, expiry of queued
and retained messages."""

from __future__ import annotations

import heapq

from gateway.broker.disconnect import Disconnects
from gateway.broker.session import QUEUED
from gateway.broker.state import EXPIRY_TIMER, WILL_TIMER


class Timers(Disconnects):
    def _run_timers(self, now: float) -> None:
        """Act on whatever came due by ``now``. Heap entries are only hints, checked against
        the session when popped, so that cancelling a will or reconnecting never has to
        search a heap."""
        timers = self._timers
        sessions = self.sessions.by_id
        while timers and timers[0][0] <= now:
            _, kind, client_id = heapq.heappop(timers)
            s = sessions.get(client_id)
            if s is None or s.conn is not None:
                continue
            if kind == WILL_TIMER:
                due = s.will_due_at
                if s.will is None or due is None:
                    continue
                if due > now:
                    heapq.heappush(timers, (due, WILL_TIMER, client_id))
                    continue
                will = s.will
                s.will = None
                s.will_due_at = None
                self.ledger.put_session(s)
                self._publish_will(client_id, will, now)
            else:
                expires = s.expires_at()
                if expires is None:
                    continue
                if expires > now:
                    heapq.heappush(timers, (expires, EXPIRY_TIMER, client_id))
                    continue
                self.stats.sessions_expired += 1
                self._event("session_expired", client_id, f"offline for {s.expiry} s")
                self._end_session(s, now, expired=True)
        heap = self._queue_expiry
        while heap and heap[0][0] <= now:
            _, _, s, e = heapq.heappop(heap)
            if e.dead or e.state is not QUEUED or sessions.get(s.client_id) is not s:
                continue  # sent, dropped or its session ended since
            s.queue.discard(e)
            self._finish(s, e)
            self.stats.dropped(
                "expired", 1, f"queued for {s.client_id!r} on {e.message.topic}", s.client_id
            )
            self._notify(s, "expired", e.message)
        self.router.expire_retained(now)
