"""PUBLISH from a client: checks, authorisation, routing, and the PUBACK / PUBREC /
PUBCOMP of the inbound QoS 1 and 2 exchanges."""

from __future__ import annotations

from gateway.broker.disconnect import Disconnects
from gateway.broker.effects import Send
from gateway.broker.routing import (
    COMMAND_INVALID,
    PAYLOAD_INVALID,
    REJECTED,
    inbound_properties,
)
from gateway.broker.session import Connection, Session
from gateway.broker.topic_tree import is_sys_topic
from gateway.mqtt.packets import NO_PROPERTIES, Properties, PubAck, PubComp, Publish, PubRec
from gateway.mqtt.reason_codes import ReasonCode

_NO_MATCHING = ReasonCode.NO_MATCHING_SUBSCRIBERS.value
_QUOTA = ReasonCode.QUOTA_EXCEEDED.value
_NOT_AUTHORIZED = ReasonCode.NOT_AUTHORIZED.value
_PID_NOT_FOUND = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND.value
_PAYLOAD_FORMAT = ReasonCode.PAYLOAD_FORMAT_INVALID.value
_IMPLEMENTATION_SPECIFIC = ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR.value


class InboundPublish(Disconnects):
    def _on_publish(self, conn: Connection, s: Session, p: Publish, now: float) -> None:
        stats = self.stats
        stats.publish_received += 1
        topic = p.topic
        qos = p.qos
        settings = self.settings
        if not topic or "+" in topic or "#" in topic:
            self._violation(conn, ReasonCode.TOPIC_NAME_INVALID, now)
            return
        if qos > settings.max_qos:
            self._violation(conn, ReasonCode.QOS_NOT_SUPPORTED, now)
            return
        retain = p.retain
        if retain and not settings.retain_available:
            self._violation(conn, ReasonCode.RETAIN_NOT_SUPPORTED, now)
            return
        pid = p.packet_id or 0  # present iff qos > 0 (the codec checks)
        if qos == 2:
            inbound = s.inbound_qos2
            if pid in inbound:
                # Method A (§4.3.3): delivered when first received; a resend only gets its
                # PUBREC again.
                self._actions.append(Send(conn.conn_id, PubRec(pid)))
                return
            if conn.v5 and len(inbound) >= settings.receive_maximum:
                self._violation(conn, ReasonCode.RECEIVE_MAXIMUM_EXCEEDED, now)
                return
        v5 = conn.v5
        props = p.properties
        refusal = 0
        if topic[0] == "$" and is_sys_topic(topic):
            refusal = _NOT_AUTHORIZED  # only the broker publishes $SYS (like Mosquitto)
        elif (
            (scope := self._acl_scope) is not None
            and topic.startswith(scope)
            and not s.acl_exempt
            and not self.authorizer.can_publish(s.username, s.client_id, topic)
        ):
            refusal = _NOT_AUTHORIZED
        elif settings.max_topic_levels and topic.count("/") >= settings.max_topic_levels:
            refusal = ReasonCode.TOPIC_NAME_INVALID
        elif (
            v5
            and props.response_topic is not None
            and not self._may_ask_for_answers_on(s, props.response_topic)
        ):
            refusal = _NOT_AUTHORIZED
        elif v5 and props.payload_format_indicator == 1 and not _is_utf8(p.payload):
            refusal = ReasonCode.PAYLOAD_FORMAT_INVALID
        if refusal:
            stats.publish_denied += 1
            if qos == 1:
                self._actions.append(Send(conn.conn_id, PubAck(pid, refusal if v5 else 0)))
            elif qos == 2:
                # v5: a PUBREC >= 0x80 ends the exchange. 3.1.1 has no way to say no, so the
                # exchange completes normally (PUBREL of an unknown id gets its PUBCOMP).
                self._actions.append(Send(conn.conn_id, PubRec(pid, refusal if v5 else 0)))
            return
        if (
            self.ledger.full
            and qos
            and v5
            and self._would_store(topic, qos, retain, p.payload, s.client_id)
        ):
            self._refuse_for_store(conn, pid, qos, topic)  # store_limit.py
            return
        expires_at = None
        if props is not NO_PROPERTIES:
            props = inbound_properties(props)
            mei = props.message_expiry_interval
            if mei is not None:
                expires_at = now + mei
        flags = self._accept(
            None, topic, p.payload, qos, retain, props, expires_at, s.client_id, now, p
        )
        if qos == 0:
            return
        rc = 0
        ack_props = NO_PROPERTIES
        if v5:
            if flags & (PAYLOAD_INVALID | COMMAND_INVALID):
                # A device refused the command (command_check.py): what the publisher must
                # fix comes first, even if other subscribers got the message.
                rc = _PAYLOAD_FORMAT if flags & PAYLOAD_INVALID else _IMPLEMENTATION_SPECIFIC
                ack_props = self._refusal_properties()
            elif flags & REJECTED:
                rc = _QUOTA
            elif not flags:
                rc = _NO_MATCHING
        self._refusal = None
        if qos == 1:
            self._actions.append(Send(conn.conn_id, PubAck(pid, rc, ack_props)))
        else:
            if rc < 0x80:
                s.inbound_qos2.add(pid)
                self.ledger.put_inbound_qos2(s, pid)
            self._actions.append(Send(conn.conn_id, PubRec(pid, rc, ack_props)))

    def _refusal_properties(self) -> Properties:
        """The reason string of a refused command. (The shell leaves it out for a client
        that asked for no problem information or whose Maximum Packet Size it would break:
        mqtt/packet_size.py.)"""
        reason = self._refusal
        return NO_PROPERTIES if reason is None else Properties(reason_string=reason)

    def _on_pubrel(self, conn: Connection, s: Session, pid: int) -> None:
        inbound = s.inbound_qos2
        if pid in inbound:
            inbound.discard(pid)
            self.ledger.delete_inbound_qos2(s, pid)
            self._send(conn.conn_id, PubComp(pid))
        else:
            self._send(conn.conn_id, PubComp(pid, _PID_NOT_FOUND if conn.v5 else 0))


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
