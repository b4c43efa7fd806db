"""CONNECT: authentication outcome, client identifier, will checks, session takeover and
resumption, CONNACK."""

from __future__ import annotations

import logging
import secrets
from dataclasses import replace

from gateway.broker.disconnect import Disconnects
from gateway.broker.effects import Identity, SetKeepAlive
from gateway.broker.queue_policy import HOLD, parse_queue_policy
from gateway.broker.records import OWNER_GATEWAY
from gateway.broker.session import Connection, Session
from gateway.mqtt.packets import PROTOCOL_V5, ConnAck, Connect, Properties, Will
from gateway.mqtt.reason_codes import ReasonCode, connack_code_for_v311

_NOT_AUTHORIZED = ReasonCode.NOT_AUTHORIZED.value
_MAX_VBI = 268_435_455

log = logging.getLogger("gateway.broker")


def owner_text(s: Session) -> str:
    """Who owns a session, for a log line."""
    if s.owner == OWNER_GATEWAY:
        return "the gateway"
    return "anonymous clients" if s.owner is None else f"user {s.owner!r}"


class Connects(Disconnects):
    def _connect(self, conn: Connection, packet: Connect, identity: Identity, now: float) -> None:
        settings = self.settings
        version = PROTOCOL_V5 if packet.protocol_version == PROTOCOL_V5 else 4
        v5 = version == PROTOCOL_V5
        conn.v5 = v5
        if not identity.ok:
            code = identity.reason_code if identity.reason_code >= 0x80 else _NOT_AUTHORIZED
            self._refuse(conn, code)
            return
        username = identity.username
        client_id = packet.client_id
        assigned: str | None = None
        if not client_id:
            if not v5 and not packet.clean_start:
                self._refuse(conn, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)  # 3.1.1: 0x02
                return
            client_id = self._new_client_id()
            assigned = client_id if v5 else None
        owner = OWNER_GATEWAY if conn.info.trusted else username
        if not self._may_use(conn, client_id, owner, now):
            return
        cap = settings.max_sessions
        # The gateway's own clients (device sessions) may always connect.
        new = client_id not in self.sessions and not conn.info.trusted
        if cap and new and len(self.sessions) >= cap:
            self._refuse_new_session(conn, client_id, cap)
            return
        will = packet.will
        if will is not None:
            code = self._will_refusal(will, username, client_id, v5, identity.is_admin)
            if code:
                self._refuse(conn, code)
                return
            if will.qos > settings.max_qos or (will.retain and not settings.retain_available):
                # Only 3.1.1 gets here (v5 was refused above): publish it as well as we can.
                will = Will(
                    will.topic,
                    will.payload,
                    min(will.qos, settings.max_qos),
                    will.retain and settings.retain_available,
                    will.properties,
                )
        props = packet.properties
        requested_expiry = 0
        if v5:
            requested_expiry = props.session_expiry_interval or 0
        elif not packet.clean_start:
            requested_expiry = settings.v311_session_expiry
        expiry = min(requested_expiry, settings.max_session_expiry)

        # Take over a live connection of the same client (§3.1.4-3).
        existing = self.sessions.get(client_id)
        taken_over = False
        if existing is not None and existing.conn is not None:
            self.stats.takeovers += 1
            old = existing.conn
            self._event("disconnect", client_id, "taken over by a new connection")
            self._detach(old, ReasonCode.SESSION_TAKEN_OVER)
            self._after_disconnect(existing, old.will, now, takeover=True)
            taken_over = True
        if existing is not None:
            expires = existing.expires_at()
            if packet.clean_start or (taken_over and existing.expiry == 0):
                # A session with no expiry ends with its connection, a takeover's included
                # (§3.1.2.11.2): its subscriptions are not handed to the new one.
                self._end_session(existing, now)
                existing = None
            elif expires is not None and expires <= now:
                self._event("session_expired", client_id, f"offline for {existing.expiry} s")
                self._end_session(existing, now, expired=True)
                existing = None
        session_present = existing is not None
        base_limits = settings.queue_limits_for(client_id)
        if existing is not None:
            s = existing
            # Reconnected in time: a delayed will of the previous connection is cancelled.
            s.will = None
            s.will_due_at = None
        else:
            s = Session(client_id, expiry, version, username, base_limits, owner)
            self.sessions.add(s)
        s.expiry = expiry
        s.version = version
        s.username = username
        s.acl_exempt = identity.is_admin
        # Every CONNECT sets the queue policy anew, durably with the session record below:
        # only a trusted client can have one, and asking for none clears the old one.
        policy = None
        if identity.is_admin and v5 and props.user_properties:
            policy = parse_queue_policy(props.user_properties, client_id)
        s.use_policy(policy, base_limits)
        self.outbox.pending_changed(s)
        s.disconnected_at = None
        online = self.sessions.attach(s, conn)
        conn.will = will
        conn.requested_expiry = requested_expiry
        if v5:
            receive_max = props.receive_maximum or 65535
            conn.max_packet_size = props.maximum_packet_size or 0
        else:
            receive_max = 65535
        conn.window = max(1, min(receive_max, settings.max_inflight_out))
        if identity.is_admin and v5 and HOLD in props.user_properties:
            conn.window = 0  # queue_policy.HOLD: this connection takes nothing into flight

        keep_alive = packet.keep_alive
        server_keep_alive = None
        if (
            v5
            and settings.max_keepalive
            and (keep_alive == 0 or keep_alive > settings.max_keepalive)
        ):
            keep_alive = server_keep_alive = settings.max_keepalive
        conn.keep_alive = keep_alive

        # Durability: mirror the session in the store iff it is persistent now.
        self.ledger.mirror(s)

        self.stats.connections_total += 1
        info = conn.info
        self._event(
            "connect",
            client_id,
            f"{info.listener} {info.peer}, MQTT {'5' if v5 else '3.1.1'}"
            + (f", user {username!r}" if username is not None else "")
            + (", session resumed" if session_present else ""),
        )
        if online > self.stats.clients_maximum:
            self.stats.clients_maximum = online

        if v5:
            ack_props = self._connack_properties()
            if assigned is not None or server_keep_alive is not None or expiry != requested_expiry:
                ack_props = replace(
                    ack_props,
                    assigned_client_identifier=assigned,
                    server_keep_alive=server_keep_alive,
                    session_expiry_interval=expiry if expiry != requested_expiry else None,
                )
            ack = ConnAck(session_present, 0, ack_props)
        else:
            ack = ConnAck(session_present, 0)
        self._send(conn.conn_id, ack)
        self._actions.append(SetKeepAlive(conn.conn_id, keep_alive))
        self._non_send += 1
        if session_present and conn.window:
            self.outbox.resume(conn, s, now)

    def _may_use(self, conn: Connection, client_id: str, owner: str | None, now: float) -> bool:
        """May a CONNECT by ``owner`` have ``client_id``? If not, refuse it and say why.

        The device bridge's client ids are the gateway's alone: from a network client they
        are refused even when no such session exists yet, so nobody can create one first.
        A session that exists (live, or persistent and not yet expired) is only ever taken
        over, resumed or discarded (clean start) by its owner: anybody else could otherwise
        take its queued messages, acknowledge them away, or end it. The gateway's own clients
        may reclaim any client id: someone else's session with it is discarded. An
        administrator uses the admin API (kick, delete_session) instead of a client id.
        """
        trusted = conn.info.trusted
        prefixes = self.settings.reserved_client_id_prefixes
        if not trusted and prefixes and client_id.startswith(prefixes):
            self.stats.refused_reserved_client_id += 1
            self._refusal_event(client_id, conn, "client id reserved for the device bridge")
            self._refuse(conn, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)
            return False
        existing = self.sessions.get(client_id)
        if existing is None or existing.owner == owner:
            return True
        expires = existing.expires_at()
        if expires is not None and expires <= now:
            return True  # expired: it is ended below, and the client id is free
        if trusted:
            # Reclaimed, not resumed: whatever someone else put in it (subscriptions, queued
            # messages) must not become the gateway's own.
            log.warning(
                "session %r of %s is discarded: the client id is the gateway's",
                client_id,
                owner_text(existing),
            )
            old = existing.conn
            if old is not None:
                self._detach(old, ReasonCode.SESSION_TAKEN_OVER)
                self._after_disconnect(existing, old.will, now, takeover=True)
            self._end_session(existing, now)
            return True
        self.stats.refused_session_owner += 1
        self._refusal_event(client_id, conn, f"the session belongs to {owner_text(existing)}")
        self._refuse(conn, ReasonCode.NOT_AUTHORIZED)
        return False

    def _refusal_event(self, client_id: str, conn: Connection, why: str) -> None:
        """An admin event, and a log line for the first refusal and every 100th: a flood of
        attempts must not flood the log."""
        info = conn.info
        self._event("refused", client_id, f"{info.listener} {info.peer}: {why}")
        stats = self.stats
        refused = (
            stats.refused_reserved_client_id
            + stats.refused_session_owner
            + stats.refused_max_sessions
        )
        if refused == 1 or refused % 100 == 0:
            log.warning(
                "refused CONNECT with client id %r from %s (%s): %s (%d refused so far)",
                client_id,
                info.peer,
                info.listener,
                why,
                refused,
            )

    def _refuse_new_session(self, conn: Connection, client_id: str, cap: int) -> None:
        """limits.max_sessions reached. 0x97 Quota exceeded (not 0x89 Server busy: it is a
        configured limit that holds until sessions end, not a load that passes in a moment,
        and a client told "busy" retries at once); 3.1.1 has only "server unavailable"."""
        self.stats.refused_max_sessions += 1
        self._refusal_event(client_id, conn, f"limits.max_sessions ({cap}) reached")
        code = ReasonCode.QUOTA_EXCEEDED if conn.v5 else ReasonCode.SERVER_UNAVAILABLE
        self._refuse(conn, code)

    def _connack_properties(self) -> Properties:
        props = self._connack_props_cache
        if props is None:
            st = self.settings
            props = self._connack_props_cache = Properties(
                receive_maximum=st.receive_maximum if st.receive_maximum < 65535 else None,
                maximum_qos=st.max_qos if st.max_qos < 2 else None,
                retain_available=None if st.retain_available else 0,
                maximum_packet_size=(
                    st.max_packet_size if 0 < st.max_packet_size < _MAX_VBI + 5 else None
                ),
                topic_alias_maximum=st.topic_alias_maximum or None,
                wildcard_subscription_available=None if st.wildcard_subscriptions else 0,
                subscription_identifier_available=None if st.subscription_identifiers else 0,
                shared_subscription_available=None if st.shared_subscriptions else 0,
            )
        return props

    def _refuse(self, conn: Connection, code: int) -> None:
        self.stats.connections_refused += 1
        self.sessions.close(conn.conn_id)
        rc = code if conn.v5 else connack_code_for_v311(code)
        self._send(conn.conn_id, ConnAck(False, rc))
        self._close(conn.conn_id)

    def _new_client_id(self) -> str:
        while True:
            client_id = "auto-" + secrets.token_hex(8)
            if client_id not in self.sessions:
                return client_id
