"""Routing a publication: keep its retained copy, find the matching subscriptions (and
pick one member of each shared group), hand it to each subscriber's session."""

from __future__ import annotations

from dataclasses import replace

from gateway.broker import command_check
from gateway.broker.delivery import Delivery, delivery_properties
from gateway.broker.effects import Send
from gateway.broker.records import Message, SubscriptionRecord
from gateway.broker.session import Session
from gateway.broker.topic_tree import NO_MATCH, SharedGroup, is_sys_topic
from gateway.mqtt.packets import Properties, Publish, new_publish

# Route results (bit flags).
MATCHED = 1
REJECTED = 2  # a session's queue refused it (reject-new)
PAYLOAD_INVALID = 4  # a session's command schema refused it: not a JSON object
COMMAND_INVALID = 8  # ... a JSON object the schema does not allow


class Routing(Delivery):
    # Why the last command was refused (command_check.py), for the publisher's reason string.
    _refusal: str | None = None

    def _accept(
        self,
        msg: Message | None,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        props: Properties,
        expires_at: float | None,
        origin: str,
        now: float,
        packet: Publish | None,
    ) -> int:
        """Keep a retained copy as asked, then route. Returns MATCHED/REJECTED flags."""
        if retain:
            retained = self._retained
            durable = not is_sys_topic(topic)
            if not payload:
                if retained.remove(topic) is not None and durable:
                    self.ledger.delete_retained(topic)
            elif self.ledger.full and durable and self._retained_refused(topic, payload):
                pass  # the store is full (store_limit.py): counted there
            elif retained.can_store(topic):
                msg = Message(
                    self.ledger.new_msg_id(),
                    topic,
                    payload,
                    qos,
                    True,
                    props,
                    expires_at,
                    origin,
                    now,
                )
                retained.put(msg)
                if durable:
                    self.ledger.put_retained(msg)
            else:
                self.stats.dropped("retained_full", 1, f"retained store full; {topic} not retained")
        return self._route(msg, topic, payload, qos, retain, props, expires_at, origin, now, packet)

    def _route(
        self,
        msg: Message | None,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        props: Properties,
        expires_at: float | None,
        origin: str,
        now: float,
        packet: Publish | None,
    ) -> int:
        match = self._tree.match(topic)
        if match is NO_MATCH:
            return 0
        result = MATCHED
        sessions = self._sessions
        scope = self._acl_scope
        acl = scope is not None and topic.startswith(scope)
        actions = self._actions
        for t in match.targets:
            client_id = t.client_id
            if client_id == origin:
                dq = t.local_qos
                if dq < 0:
                    continue  # No Local
                rap = t.local_rap
                ids = t.local_sub_ids
            else:
                dq = t.qos
                rap = t.rap
                ids = t.sub_ids
            s = sessions.get(client_id)
            if s is None:
                continue
            if (
                acl
                and not s.acl_exempt
                and not self.authorizer.can_receive(s.username, client_id, topic)
            ):
                continue
            policy = s.policy
            if policy is not None and policy.command_schema is not None:
                refused = self._check_command(s, policy.command_schema, topic, payload, now)
                if refused:
                    result |= refused
                    continue
            if qos < dq:
                dq = qos
            out_retain = retain and rap
            conn = s.conn
            if dq == 0 and conn is not None and conn.window:
                # QoS 0 to a live connection goes straight out (not to a held one:
                # queue_policy.HOLD); the publisher's packet is
                # reused whenever it is exactly what this subscriber must receive.
                if conn.v5 and ids:
                    out: Publish = new_publish(
                        topic,
                        payload,
                        0,
                        out_retain,
                        False,
                        None,
                        delivery_properties(props, ids, None, now),
                    )
                elif (
                    packet is not None
                    and packet.qos == 0
                    and packet.retain == out_retain
                    and packet.properties is props
                    and not packet.dup
                ):
                    out = packet
                else:
                    out = new_publish(topic, payload, 0, out_retain, False, None, props)
                if conn.max_packet_size and conn.too_large(out):  # the check first: hot path
                    self.stats.dropped("too_large", 1, f"for {client_id!r} on {topic}", client_id)
                    continue
                actions.append(Send(conn.conn_id, out))
                self.stats.publish_sent += 1
                continue
            if msg is None:
                msg = Message(
                    self.ledger.new_msg_id(),
                    topic,
                    payload,
                    qos,
                    retain,
                    props,
                    expires_at,
                    origin,
                    now,
                )
            if not self._deliver(s, msg, dq, out_retain, ids, now):
                result |= REJECTED
        for group in match.groups:
            picked = self._pick(group, topic)
            if picked is None:
                continue
            s, rec = picked
            policy = s.policy
            if policy is not None and policy.command_schema is not None:
                refused = self._check_command(s, policy.command_schema, topic, payload, now)
                if refused:
                    result |= refused
                    continue
            if msg is None:
                msg = Message(
                    self.ledger.new_msg_id(),
                    topic,
                    payload,
                    qos,
                    retain,
                    props,
                    expires_at,
                    origin,
                    now,
                )
            ids = () if rec.subscription_id is None else (rec.subscription_id,)
            if not self._deliver(
                s, msg, min(qos, rec.qos), retain and rec.retain_as_published, ids, now
            ):
                result |= REJECTED
        return result

    def _check_command(
        self, s: Session, schema: str, topic: str, payload: bytes, now: float
    ) -> int:
        """0 if ``payload`` may be queued for ``s``; else PAYLOAD_INVALID or COMMAND_INVALID,
        with the refusal counted, logged (rate-limited), an event, and the session's notice."""
        rejection = command_check.check(schema, payload)
        if rejection is None:
            return 0
        self.stats.rejected(f"for {s.client_id!r} on {topic}: {rejection.detail}")
        self._event("rejected", s.client_id, f"on {topic}: {rejection.detail}")
        if s.notify_topic is not None:
            notice = command_check.rejection_notice(topic, payload, rejection, now)
            self._notices.append((s.notify_topic, notice))
        self._refusal = command_check.reason_string(rejection)
        if rejection.reason == command_check.PAYLOAD_FORMAT:
            return PAYLOAD_INVALID
        return COMMAND_INVALID

    def _pick(self, group: SharedGroup, topic: str) -> tuple[Session, SubscriptionRecord] | None:
        """Round robin over the connected members; if none is connected, over all of them
        (the message waits in that member's session queue)."""
        order = group.order
        n = len(order)
        if not n:
            return None
        sessions = self._sessions
        start = group.next_index % n
        fallback: tuple[int, Session] | None = None
        acl = self._checked(topic)
        for k in range(n):
            i = (start + k) % n
            s = sessions.get(order[i])
            if s is None:
                continue
            if (
                acl
                and not s.acl_exempt
                and not self.authorizer.can_receive(s.username, s.client_id, topic)
            ):
                continue
            if s.conn is not None:
                group.next_index = i + 1
                return s, group.members[order[i]]
            if fallback is None:
                fallback = (i, s)
        if fallback is None:
            return None
        i, s = fallback
        group.next_index = i + 1
        return s, group.members[order[i]]


def inbound_properties(props: Properties) -> Properties:
    """The publication properties to keep: a topic alias or subscription identifiers that
    came in are per-hop, not part of the message."""
    if props.topic_alias is not None or props.subscription_identifiers:
        return replace(props, topic_alias=None, subscription_identifiers=())
    return props
