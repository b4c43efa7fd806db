"""What happens with the passing of time: delayed wills, session expiry, expiry of queued
and retained messages."""

from __future__ import annotations

from gateway.broker.disconnect import end_session
from gateway.broker.parts import Parts, event
from gateway.broker.session import QUEUED, Session
from gateway.broker.timers import WILL_TIMER
from gateway.broker.wills import publish_will


def run_timers(p: Parts, now: float) -> None:
    """Act on whatever came due by ``now``."""
    sessions = p.sessions.by_id
    for kind, client_id in p.timers.due_sessions(now):
        s = sessions.get(client_id)
        if s is None or s.conn is not None:
            continue
        if kind == WILL_TIMER:
            _will_due(p, s, now)
        else:
            _session_due(p, s, now)
    for s, e in p.timers.due_entries(now):
        if e.dead or e.state is not QUEUED or sessions.get(s.client_id) is not s:
            continue  # sent, dropped or its session ended since
        s.queue.discard(e)
        p.outbox.finish(s, e)
        p.stats.dropped(
            "expired", 1, f"queued for {s.client_id!r} on {e.message.topic}", s.client_id
        )
        p.outbox.notify(s, "expired", e.message, now)
    p.router.expire_retained(now)


def _will_due(p: Parts, s: Session, now: float) -> None:
    due = s.will_due_at
    will = s.will
    if will is None or due is None:
        return
    if due > now:
        p.timers.will_due(due, s.client_id)
        return
    s.will = None
    s.will_due_at = None
    p.ledger.put_session(s)
    publish_will(p, s.client_id, will, now)


def _session_due(p: Parts, s: Session, now: float) -> None:
    expires = s.expires_at()
    if expires is None:
        return
    if expires > now:
        p.timers.expiry_due(expires, s.client_id)
        return
    p.stats.sessions_expired += 1
    event(p, "session_expired", s.client_id, f"offline for {s.expiry} s")
    end_session(p, s, now, expired=True)
