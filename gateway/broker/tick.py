"""What happens with the passing of time: delayed wills, session expiry, expiry of queued
and retained messages."""

from __future__ import annotations

from gateway.broker.disconnect import Disconnects
from gateway.broker.session import QUEUED, Session
from gateway.broker.timers import WILL_TIMER


class Ticks(Disconnects):
    def _run_timers(self, now: float) -> None:
        """Act on whatever came due by ``now``."""
        sessions = self.sessions.by_id
        for kind, client_id in self.timers.due_sessions(now):
            s = sessions.get(client_id)
            if s is None or s.conn is not None:
                continue
            if kind == WILL_TIMER:
                self._will_due(s, now)
            else:
                self._session_due(s, now)
        for s, e in self.timers.due_entries(now):
            if e.dead or e.state is not QUEUED or sessions.get(s.client_id) is not s:
                continue  # sent, dropped or its session ended since
            s.queue.discard(e)
            self.outbox.finish(s, e)
            self.stats.dropped(
                "expired", 1, f"queued for {s.client_id!r} on {e.message.topic}", s.client_id
            )
            self.outbox.notify(s, "expired", e.message, now)
        self.router.expire_retained(now)

    def _will_due(self, s: Session, now: float) -> None:
        due = s.will_due_at
        will = s.will
        if will is None or due is None:
            return
        if due > now:
            self.timers.will_due(due, s.client_id)
            return
        s.will = None
        s.will_due_at = None
        self.ledger.put_session(s)
        self._publish_will(s.client_id, will, now)

    def _session_due(self, s: Session, now: float) -> None:
        expires = s.expires_at()
        if expires is None:
            return
        if expires > now:
            self.timers.expiry_due(expires, s.client_id)
            return
        self.stats.sessions_expired += 1
        self._event("session_expired", s.client_id, f"offline for {s.expiry} s")
        self._end_session(s, now, expired=True)
