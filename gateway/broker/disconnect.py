"""How a connection ends (DISCONNECT, protocol violation, lost link, takeover) and what
becomes of its session and its will."""

from __future__ import annotations

from gateway.broker.session import Connection, Session
from gateway.broker.wills import Wills
from gateway.mqtt.packets import Disconnect, Will
from gateway.mqtt.reason_codes import ReasonCode

_PROTOCOL_ERROR = ReasonCode.PROTOCOL_ERROR.value


class Disconnects(Wills):
    def _on_disconnect(self, conn: Connection, s: Session, p: Disconnect, now: float) -> None:
        will: Will | None = None
        if conn.v5:
            new_expiry = p.properties.session_expiry_interval
            if new_expiry is not None:
                if conn.requested_expiry == 0 and new_expiry > 0:
                    # §3.14.2.2.2: not a valid DISCONNECT, so the will still applies.
                    self._violation(conn, _PROTOCOL_ERROR, now)
                    return
                s.expiry = min(new_expiry, self.settings.max_session_expiry)
            if p.reason_code == ReasonCode.DISCONNECT_WITH_WILL:
                will = conn.will
        conn.will = None
        self._event("disconnect", s.client_id, "DISCONNECT from the client")
        self._detach(conn, None)
        self._after_disconnect(s, will, now)

    def _violation(self, conn: Connection, reason_code: int, now: float) -> None:
        self.stats.protocol_violations += 1
        held = conn.session
        client_id = held.client_id if held is not None else None
        if reason_code == ReasonCode.KEEP_ALIVE_TIMEOUT:
            self._event("disconnect", client_id, "keep-alive timeout")
        else:
            self._event("protocol_error", client_id, f"reason code 0x{reason_code:02X}")
        s = self._detach(conn, reason_code)
        if s is not None:
            self._after_disconnect(s, conn.will, now)

    def _detach(self, conn: Connection, reason_code: int | None) -> Session | None:
        """End a connection from the broker's side: a v5 client that got as far as a
        session is told ``reason_code`` (never before a successful CONNACK, §3.14.0-1).
        Returns the session the connection held, if any; what becomes of it and of the
        will is the caller's business."""
        self.sessions.close(conn.conn_id)
        if reason_code is not None and conn.session is not None and conn.v5:
            self._send(conn.conn_id, Disconnect(reason_code))
        self._close(conn.conn_id)
        return self._unlink(conn)

    def _unlink(self, conn: Connection) -> Session | None:
        return self.sessions.unlink(conn)

    def _after_disconnect(
        self, s: Session, will: Will | None, now: float, takeover: bool = False
    ) -> None:
        """The session lost its connection at ``now``; ``will`` is what must be published
        for it (None after a normal DISCONNECT)."""
        s.disconnected_at = now
        if will is not None:
            self._release_will(s, will, now, takeover)
        if s.limits.coalesce and s.inflight:
            self.outbox.requeue_unconfirmed(s)
        if takeover:
            return  # the new connection decides what becomes of the session
        if s.expiry == 0:
            self._end_session(s, now)
            return
        self.ledger.put_session(s)
        expires = s.expires_at()
        if expires is not None:
            self.timers.expiry_due(expires, s.client_id)

    def _end_session(self, s: Session, now: float, expired: bool = False) -> None:
        client_id = s.client_id
        self.journal.sessions_version += 1
        if s.queue or s.inflight:
            self.journal.queues_version += 1
        self.sessions.remove(s)
        for f in s.subscriptions:
            self.router.tree.remove(client_id, f)
        self.ledger.unstore_session(s)
        if expired and (s.queue or s.inflight):
            self.stats.dropped(
                "session_expired",
                len(s.queue) + len(s.inflight),
                f"session {client_id!r} expired with messages still queued",
                client_id,
            )
        if s.will is not None:
            will = s.will
            s.will = None
            s.will_due_at = None
            self._publish_will(client_id, will, now)
