"""How a connection ends (DISCONNECT, protocol violation, lost link, takeover) and what
becomes of its session and its will."""

from __future__ import annotations

from gateway.broker.parts import Parts, close, event, send
from gateway.broker.session import Connection, Session
from gateway.broker.wills import publish_will, release_will
from gateway.mqtt.packets import Disconnect, Will
from gateway.mqtt.reason_codes import ReasonCode

_PROTOCOL_ERROR = ReasonCode.PROTOCOL_ERROR.value


def on_disconnect(p: Parts, conn: Connection, s: Session, packet: Disconnect, now: float) -> None:
    will: Will | None = None
    if conn.v5:
        new_expiry = packet.properties.session_expiry_interval
        if new_expiry is not None:
            if conn.requested_expiry == 0 and new_expiry > 0:
                # §3.14.2.2.2: not a valid DISCONNECT, so the will still applies.
                violation(p, conn, _PROTOCOL_ERROR, now)
                return
            s.expiry = min(new_expiry, p.settings.max_session_expiry)
        if packet.reason_code == ReasonCode.DISCONNECT_WITH_WILL:
            will = conn.will
    conn.will = None
    event(p, "disconnect", s.client_id, "DISCONNECT from the client")
    detach(p, conn, None)
    after_disconnect(p, s, will, now)


def violation(p: Parts, conn: Connection, reason_code: int, now: float) -> None:
    p.stats.protocol_violations += 1
    held = conn.session
    client_id = held.client_id if held is not None else None
    if reason_code == ReasonCode.KEEP_ALIVE_TIMEOUT:
        event(p, "disconnect", client_id, "keep-alive timeout")
    else:
        event(p, "protocol_error", client_id, f"reason code 0x{reason_code:02X}")
    s = detach(p, conn, reason_code)
    if s is not None:
        after_disconnect(p, s, conn.will, now)


def detach(p: Parts, conn: Connection, reason_code: int | None) -> Session | None:
    """End a connection from the broker's side: a v5 client that got as far as a
    session is told ``reason_code`` (never before a successful CONNACK, §3.14.0-1).
    Returns the session the connection held, if any; what becomes of it and of the
    will is the caller's business."""
    p.sessions.close(conn.conn_id)
    if reason_code is not None and conn.session is not None and conn.v5:
        send(p, conn.conn_id, Disconnect(reason_code))
    close(p, conn.conn_id)
    return p.sessions.unlink(conn)


def after_disconnect(
    p: Parts, s: Session, will: Will | None, now: float, takeover: bool = False
) -> None:
    """The session lost its connection at ``now``; ``will`` is what must be published
    for it (None after a normal DISCONNECT)."""
    s.disconnected_at = now
    if will is not None:
        release_will(p, s, will, now, takeover)
    if s.limits.coalesce and s.inflight:
        p.outbox.requeue_unconfirmed(s)
    if takeover:
        return  # the new connection decides what becomes of the session
    if s.expiry == 0:
        end_session(p, s, now)
        return
    p.ledger.put_session(s)
    expires = s.expires_at()
    if expires is not None:
        p.timers.expiry_due(expires, s.client_id)


def end_session(p: Parts, s: Session, now: float, expired: bool = False) -> None:
    client_id = s.client_id
    p.journal.sessions_version += 1
    if s.queue or s.inflight:
        p.journal.queues_version += 1
    p.sessions.remove(s)
    for f in s.subscriptions:
        p.router.tree.remove(client_id, f)
    p.ledger.unstore_session(s)
    if expired and (s.queue or s.inflight):
        p.stats.dropped(
            "session_expired",
            len(s.queue) + len(s.inflight),
            f"session {client_id!r} expired with messages still queued",
            client_id,
        )
    if s.will is not None:
        will = s.will
        s.will = None
        s.will_due_at = None
        publish_will(p, client_id, will, now)
