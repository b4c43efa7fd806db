"""CONNECT: authentication outcome, client identifier, will checks, session takeover and
resumption, CONNACK."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, replace

from gateway.broker.disconnect import after_disconnect, detach, end_session
from gateway.broker.effects import Identity, SetKeepAlive
from gateway.broker.parts import Parts, close, event, send
from gateway.broker.queue_policy import HOLD, parse_queue_policy
from gateway.broker.records import OWNER_GATEWAY
from gateway.broker.session import Connection, Session
from gateway.broker.settings import BrokerSettings
from gateway.broker.wills import will_refusal
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


@dataclass(slots=True)
class _Grant:
    """What a CONNECT is granted, worked out before the session is touched."""

    client_id: str
    assigned: str | None  # a client id the broker chose (told to a v5 client)
    version: int
    owner: str | None
    will: Will | None
    requested_expiry: int
    expiry: int
    keep_alive: int = 0
    server_keep_alive: int | None = None  # when the broker overrides the client's


def connect(p: Parts, conn: Connection, packet: Connect, identity: Identity, now: float) -> None:
    g = _admit(p, conn, packet, identity, now)
    if g is None:
        return
    existing = _previous_session(p, g.client_id, packet.clean_start, now)
    session_present = existing is not None
    s = _session_for(p, existing, g, identity, packet.properties)
    online = p.sessions.attach(s, conn)
    conn.will = g.will
    conn.requested_expiry = g.requested_expiry
    _negotiate(p, conn, packet, identity, g)
    # Durability: mirror the session in the store iff it is persistent now.
    p.ledger.mirror(s)
    p.stats.connections_total += 1
    if online > p.stats.clients_maximum:
        p.stats.clients_maximum = online
    info = conn.info
    event(
        p,
        "connect",
        g.client_id,
        f"{info.listener} {info.peer}, MQTT {'5' if conn.v5 else '3.1.1'}"
        + (f", user {identity.username!r}" if identity.username is not None else "")
        + (", session resumed" if session_present else ""),
    )
    _connack(p, conn, g, session_present)
    if session_present and conn.window:
        p.outbox.resume(conn, s, now)


def _admit(
    p: Parts, conn: Connection, packet: Connect, identity: Identity, now: float
) -> _Grant | None:
    """Who may connect with which client id and will; None if refused (and told so)."""
    settings = p.settings
    version = PROTOCOL_V5 if packet.protocol_version == PROTOCOL_V5 else 4
    v5 = version == PROTOCOL_V5
    conn.v5 = v5
    if not identity.ok:
        code = identity.reason_code if identity.reason_code >= 0x80 else _NOT_AUTHORIZED
        refuse(p, conn, code)
        return None
    client_id = packet.client_id
    assigned: str | None = None
    if not client_id:
        if not v5 and not packet.clean_start:
            refuse(p, conn, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)  # 3.1.1: 0x02
            return None
        client_id = _new_client_id(p)
        assigned = client_id if v5 else None
    owner = OWNER_GATEWAY if conn.info.trusted else identity.username
    if not _may_use(p, conn, client_id, owner, now):
        return None
    cap = settings.max_sessions
    # The gateway's own clients (device sessions) may always connect.
    new = client_id not in p.sessions and not conn.info.trusted
    if cap and new and len(p.sessions) >= cap:
        _refuse_new_session(p, conn, client_id, cap)
        return None
    will = packet.will
    if will is not None:
        code = will_refusal(p, will, identity.username, client_id, v5, identity.is_admin)
        if code:
            refuse(p, conn, code)
            return None
        will = _will_as_offered(settings, will)
    requested_expiry = 0
    if v5:
        requested_expiry = packet.properties.session_expiry_interval or 0
    elif not packet.clean_start:
        requested_expiry = settings.v311_session_expiry
    expiry = min(requested_expiry, settings.max_session_expiry)
    return _Grant(client_id, assigned, version, owner, will, requested_expiry, expiry)


def _will_as_offered(settings: BrokerSettings, will: Will) -> Will:
    """A 3.1.1 will asking for more than is offered (v5 is refused for it instead) is
    published as well as the broker can."""
    if will.qos > settings.max_qos or (will.retain and not settings.retain_available):
        return Will(
            will.topic,
            will.payload,
            min(will.qos, settings.max_qos),
            will.retain and settings.retain_available,
            will.properties,
        )
    return will


def _previous_session(p: Parts, client_id: str, clean_start: bool, now: float) -> Session | None:
    """The session a CONNECT resumes, if any. A live connection of the same client is taken
    over (§3.1.4-3); a session that must not be resumed is ended."""
    existing = p.sessions.get(client_id)
    if existing is None:
        return None
    taken_over = False
    if existing.conn is not None:
        p.stats.takeovers += 1
        old = existing.conn
        event(p, "disconnect", client_id, "taken over by a new connection")
        detach(p, old, ReasonCode.SESSION_TAKEN_OVER)
        after_disconnect(p, existing, old.will, now, takeover=True)
        taken_over = True
    expires = existing.expires_at()
    if clean_start or (taken_over and existing.expiry == 0):
        # A session with no expiry ends with its connection, a takeover's included
        # (§3.1.2.11.2): its subscriptions are not handed to the new one.
        end_session(p, existing, now)
        return None
    if expires is not None and expires <= now:
        event(p, "session_expired", client_id, f"offline for {existing.expiry} s")
        end_session(p, existing, now, expired=True)
        return None
    return existing


def _session_for(
    p: Parts, existing: Session | None, g: _Grant, identity: Identity, props: Properties
) -> Session:
    """The resumed or a new session, set up as this CONNECT asks."""
    base_limits = p.settings.queue_limits_for(g.client_id)
    if existing is not None:
        s = existing
        # Reconnected in time: a delayed will of the previous connection is cancelled.
        s.will = None
        s.will_due_at = None
    else:
        s = Session(g.client_id, g.expiry, g.version, identity.username, base_limits, g.owner)
        p.sessions.add(s)
    s.expiry = g.expiry
    s.version = g.version
    s.username = identity.username
    s.acl_exempt = identity.is_admin
    # Every CONNECT sets the queue policy anew, durably with the session record: only a
    # trusted client can have one, and asking for none clears the old one.
    policy = None
    if identity.is_admin and g.version == PROTOCOL_V5 and props.user_properties:
        policy = parse_queue_policy(props.user_properties, g.client_id)
    s.use_policy(policy, base_limits)
    p.outbox.pending_changed(s)
    s.disconnected_at = None
    return s


def _negotiate(p: Parts, conn: Connection, packet: Connect, identity: Identity, g: _Grant) -> None:
    """The connection's in-flight window, maximum packet size and keep-alive."""
    settings = p.settings
    props = packet.properties
    v5 = conn.v5
    if v5:
        receive_max = props.receive_maximum or 65535
        conn.max_packet_size = props.maximum_packet_size or 0
    else:
        receive_max = 65535
    conn.window = max(1, min(receive_max, settings.max_inflight_out))
    if identity.is_admin and v5 and HOLD in props.user_properties:
        conn.window = 0  # queue_policy.HOLD: this connection takes nothing into flight
    keep_alive = packet.keep_alive
    limit = settings.max_keepalive
    if v5 and limit and (keep_alive == 0 or keep_alive > limit):
        keep_alive = g.server_keep_alive = limit
    conn.keep_alive = g.keep_alive = keep_alive


def _connack(p: Parts, conn: Connection, g: _Grant, session_present: bool) -> None:
    if conn.v5:
        ack_props = p.connack_properties
        changed_expiry = g.expiry != g.requested_expiry
        if g.assigned is not None or g.server_keep_alive is not None or changed_expiry:
            ack_props = replace(
                ack_props,
                assigned_client_identifier=g.assigned,
                server_keep_alive=g.server_keep_alive,
                session_expiry_interval=g.expiry if changed_expiry else None,
            )
        ack = ConnAck(session_present, 0, ack_props)
    else:
        ack = ConnAck(session_present, 0)
    send(p, conn.conn_id, ack)
    p.actions.append(SetKeepAlive(conn.conn_id, g.keep_alive))
    p.non_send += 1


def _may_use(p: Parts, conn: Connection, client_id: str, owner: str | None, now: float) -> bool:
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
    prefixes = p.settings.reserved_client_id_prefixes
    if not trusted and prefixes and client_id.startswith(prefixes):
        p.stats.refused_reserved_client_id += 1
        _refusal_event(p, client_id, conn, "client id reserved for the device bridge")
        refuse(p, conn, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)
        return False
    existing = p.sessions.get(client_id)
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
            detach(p, old, ReasonCode.SESSION_TAKEN_OVER)
            after_disconnect(p, existing, old.will, now, takeover=True)
        end_session(p, existing, now)
        return True
    p.stats.refused_session_owner += 1
    _refusal_event(p, client_id, conn, f"the session belongs to {owner_text(existing)}")
    refuse(p, conn, ReasonCode.NOT_AUTHORIZED)
    return False


def _refusal_event(p: Parts, client_id: str, conn: Connection, why: str) -> None:
    """An admin event, and a log line for the first refusal and every 100th: a flood of
    attempts must not flood the log."""
    info = conn.info
    event(p, "refused", client_id, f"{info.listener} {info.peer}: {why}")
    stats = p.stats
    refused = (
        stats.refused_reserved_client_id + stats.refused_session_owner + stats.refused_max_sessions
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


def _refuse_new_session(p: Parts, conn: Connection, client_id: str, cap: int) -> None:
    """limits.max_sessions reached. 0x97 Quota exceeded (not 0x89 Server busy: it is a
    configured limit that holds until sessions end, not a load that passes in a moment,
    and a client told "busy" retries at once); 3.1.1 has only "server unavailable"."""
    p.stats.refused_max_sessions += 1
    _refusal_event(p, client_id, conn, f"limits.max_sessions ({cap}) reached")
    code = ReasonCode.QUOTA_EXCEEDED if conn.v5 else ReasonCode.SERVER_UNAVAILABLE
    refuse(p, conn, code)


def connack_properties(st: BrokerSettings) -> Properties:
    """The CONNACK properties every MQTT 5 client gets: what this broker does not offer."""
    return Properties(
        receive_maximum=st.receive_maximum if st.receive_maximum < 65535 else None,
        maximum_qos=st.max_qos if st.max_qos < 2 else None,
        retain_available=None if st.retain_available else 0,
        maximum_packet_size=(st.max_packet_size if 0 < st.max_packet_size < _MAX_VBI + 5 else None),
        topic_alias_maximum=st.topic_alias_maximum or None,
        wildcard_subscription_available=None if st.wildcard_subscriptions else 0,
        subscription_identifier_available=None if st.subscription_identifiers else 0,
        shared_subscription_available=None if st.shared_subscriptions else 0,
    )


def refuse(p: Parts, conn: Connection, code: int) -> None:
    p.stats.connections_refused += 1
    p.sessions.close(conn.conn_id)
    rc = code if conn.v5 else connack_code_for_v311(code)
    send(p, conn.conn_id, ConnAck(False, rc))
    close(p, conn.conn_id)


def _new_client_id(p: Parts) -> str:
    while True:
        client_id = "auto-" + secrets.token_hex(8)
        if client_id not in p.sessions:
            return client_id
