"""PUBLISH from a client: checks, authorisation, routing, and the PUBACK / PUBREC /
PUBCOMP of the inbound QoS 1 and 2 exchanges."""

from __future__ import annotations

from gateway.broker.disconnect import violation
from gateway.broker.effects import Send, new_action
from gateway.broker.parts import Parts, send
from gateway.broker.router import Publication
from gateway.broker.routing import (
    COMMAND_INVALID,
    PAYLOAD_INVALID,
    REJECTED,
    inbound_properties,
    route,
)
from gateway.broker.session import NO_PACKET_IDS, Connection, PacketIds, Session
from gateway.broker.store_limit import refuse_for_store
from gateway.broker.topic_tree import is_sys_topic
from gateway.broker.wills import may_ask_for_answers_on
from gateway.mqtt.packets import (
    NO_PROPERTIES,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    new_puback,
    new_pubrec,
)
from gateway.mqtt.reason_codes import ReasonCode

_NO_MATCHING = ReasonCode.NO_MATCHING_SUBSCRIBERS.value
_QUOTA = ReasonCode.QUOTA_EXCEEDED.value
_NOT_AUTHORIZED = ReasonCode.NOT_AUTHORIZED.value
_PID_NOT_FOUND = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND.value
_PAYLOAD_FORMAT = ReasonCode.PAYLOAD_FORMAT_INVALID.value
_IMPLEMENTATION_SPECIFIC = ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR.value
# Publication built without the NamedTuple's Python-level __new__: one per PUBLISH, and
# that call alone cost ~5% of a QoS 0 delivery (bench/bench_broker_core.py).
_publication = tuple.__new__


def on_publish(p: Parts, conn: Connection, s: Session, packet: Publish, now: float) -> None:
    p.stats.publish_received += 1
    qos = packet.qos
    pid = packet.packet_id or 0  # present iff qos > 0 (the codec checks)
    refusal = _publish_refusal(p, conn, s, packet, now)
    if refusal:
        if refusal < 0:
            return  # a protocol violation, or a QoS 2 PUBLISH sent again
        p.stats.publish_denied += 1
        v5 = conn.v5
        if qos == 1:
            p.actions.append(Send(conn.conn_id, PubAck(pid, refusal if v5 else 0)))
        elif qos == 2:
            # v5: a PUBREC >= 0x80 ends the exchange. 3.1.1 has no way to say no, so the
            # exchange completes normally (PUBREL of an unknown id gets its PUBCOMP).
            p.actions.append(Send(conn.conn_id, PubRec(pid, refusal if v5 else 0)))
        return
    props = packet.properties
    expires_at = None
    if props is not NO_PROPERTIES:
        props = inbound_properties(props)
        mei = props.message_expiry_interval
        if mei is not None:
            expires_at = now + mei
    pub = _publication(
        Publication,
        (
            packet.topic,
            packet.payload,
            qos,
            packet.retain,
            props,
            expires_at,
            s.client_id,
            now,
            packet,
        ),
    )
    if p.ledger.full and qos and conn.v5 and p.router.would_store(pub, p.sessions.by_id):
        refuse_for_store(p, conn, pid, qos, packet.topic)  # store_limit.py
        return
    flags = route(p, pub, p.router.keep_retained(pub) if packet.retain else None)
    if qos:
        _acknowledge(p, conn, s, pid, qos, flags)


def _publish_refusal(p: Parts, conn: Connection, s: Session, packet: Publish, now: float) -> int:
    """The reason code a PUBLISH is refused with (acknowledged, not routed); -1 if it
    goes no further for another reason: a protocol violation (the connection is closed)
    or a QoS 2 PUBLISH sent again (its PUBREC is sent again); else 0. (One function
    rather than two: this is the path of every PUBLISH.)"""
    topic = packet.topic
    qos = packet.qos
    settings = p.settings
    v5 = conn.v5
    if not topic or "+" in topic or "#" in topic:
        violation(p, conn, ReasonCode.TOPIC_NAME_INVALID, now)
        return -1
    if qos > settings.max_qos:
        violation(p, conn, ReasonCode.QOS_NOT_SUPPORTED, now)
        return -1
    if packet.retain and not settings.retain_available:
        violation(p, conn, ReasonCode.RETAIN_NOT_SUPPORTED, now)
        return -1
    if qos == 2:
        pid = packet.packet_id or 0
        if pid in s.inbound_qos2:
            # Method A (§4.3.3): delivered when first received; a resend only gets its
            # PUBREC again.
            p.actions.append(Send(conn.conn_id, PubRec(pid)))
            return -1
        if v5 and len(s.inbound_qos2) >= settings.receive_maximum:
            violation(p, conn, ReasonCode.RECEIVE_MAXIMUM_EXCEEDED, now)
            return -1
    router = p.router
    if topic[0] == "$" and is_sys_topic(topic):
        return _NOT_AUTHORIZED  # only the broker publishes $SYS (like Mosquitto)
    if (
        (scope := router.acl_scope) is not None
        and topic.startswith(scope)
        and not s.acl_exempt
        and not router.authorizer.can_publish(s.username, s.client_id, topic)
    ):
        return _NOT_AUTHORIZED
    if settings.max_topic_levels and topic.count("/") >= settings.max_topic_levels:
        return ReasonCode.TOPIC_NAME_INVALID
    props = packet.properties
    if not v5 or props is NO_PROPERTIES:
        return 0
    if props.response_topic is not None and not may_ask_for_answers_on(p, s, props.response_topic):
        return _NOT_AUTHORIZED
    if props.payload_format_indicator == 1 and not _is_utf8(packet.payload):
        return ReasonCode.PAYLOAD_FORMAT_INVALID
    return 0


def _acknowledge(p: Parts, conn: Connection, s: Session, pid: int, qos: int, flags: int) -> None:
    """PUBACK or PUBREC for a routed QoS 1/2 PUBLISH; ``flags`` are the route result."""
    rc = 0
    ack_props = NO_PROPERTIES
    if conn.v5:
        if flags & (PAYLOAD_INVALID | COMMAND_INVALID):
            # A device refused the command (command_check.py): what the publisher must
            # fix comes first, even if other subscribers got the message.
            rc = _PAYLOAD_FORMAT if flags & PAYLOAD_INVALID else _IMPLEMENTATION_SPECIFIC
            ack_props = _refusal_properties(p)
        elif flags & REJECTED:
            rc = _QUOTA
        elif not flags:
            rc = _NO_MATCHING
    p.refusal = None
    if qos == 1:
        p.actions.append(new_action(Send, (conn.conn_id, new_puback(pid, rc, ack_props))))
    else:
        if rc < 0x80:
            if s.inbound_qos2 is NO_PACKET_IDS:
                s.inbound_qos2 = PacketIds()
            s.inbound_qos2.add(pid)
            p.ledger.put_inbound_qos2(s, pid)
        p.actions.append(new_action(Send, (conn.conn_id, new_pubrec(pid, rc, ack_props))))


def _refusal_properties(p: Parts) -> Properties:
    """The reason string of a refused command. (The shell leaves it out for a client
    that asked for no problem information or whose Maximum Packet Size it would break:
    mqtt/packet_size.py.)"""
    reason = p.refusal
    return NO_PROPERTIES if reason is None else Properties(reason_string=reason)


def on_pubrel(p: Parts, conn: Connection, s: Session, pid: int) -> None:
    inbound = s.inbound_qos2
    if pid in inbound:
        inbound.discard(pid)
        p.ledger.delete_inbound_qos2(s, pid)
        send(p, conn.conn_id, PubComp(pid))
    else:
        send(p, conn.conn_id, PubComp(pid, _PID_NOT_FOUND if conn.v5 else 0))


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
