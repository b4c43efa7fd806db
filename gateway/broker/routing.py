"""Routing a publication: keep its retained copy, find the matching subscriptions (and
pick one member of each shared group), hand it to each subscriber's session."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from gateway.broker import command_check
from gateway.broker.effects import Send, new_action
from gateway.broker.outbox import delivery_properties
from gateway.broker.parts import Parts, event
from gateway.broker.records import Message
from gateway.broker.router import Publication
from gateway.broker.session import Connection, Session
from gateway.broker.topic_tree import NO_MATCH, SharedGroup
from gateway.mqtt.packets import Properties, Publish, new_publish

# Route results (bit flags).
MATCHED = 1
REJECTED = 2  # a session's queue refused it (reject-new)
PAYLOAD_INVALID = 4  # a session's command schema refused it: not a JSON object
COMMAND_INVALID = 8  # ... a JSON object the schema does not allow


def accept(p: Parts, pub: Publication) -> int:
    """Keep a retained copy as asked, then route. Returns MATCHED/REJECTED flags."""
    msg = p.router.keep_retained(pub) if pub.retain else None
    return route(p, pub, msg)


def route(p: Parts, pub: Publication, msg: Message | None) -> int:
    """Hand ``pub`` to every matching subscription (``msg``: its stored form, if one
    was made already). QoS 0 to a live connection goes straight out; the rest goes
    through the outbox."""
    topic, _, qos, retain, props, _, origin, now, inbound = pub
    match = p.router.tree.match(topic)
    if match is NO_MATCH:
        return 0
    result = MATCHED
    sessions = p.sessions.by_id
    scope = p.router.acl_scope
    acl = scope is not None and topic.startswith(scope)
    actions = p.actions
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
            and not p.router.authorizer.can_receive(s.username, client_id, topic)
        ):
            continue
        policy = s.policy
        if policy is not None and policy.command_schema is not None:
            refused = _check_command(p, s, policy.command_schema, pub)
            if refused:
                result |= refused
                continue
        if qos < dq:
            dq = qos
        out_retain = retain and rap
        conn = s.conn
        if dq == 0 and conn is not None and conn.window:
            # QoS 0 to a live connection goes straight out (not to a held one:
            # queue_policy.HOLD), in the publisher's packet when that is exactly what
            # this subscriber must receive.
            if (
                inbound is None
                or (conn.v5 and ids)
                or inbound.retain != out_retain
                or inbound.qos
                or inbound.dup
                or inbound.properties is not props
            ):
                packet = _direct_packet(p, conn, pub, out_retain, ids)
            else:
                packet = inbound
            if conn.max_packet_size and conn.too_large(packet):  # the check first: hot path
                p.stats.dropped("too_large", 1, f"for {client_id!r} on {topic}", client_id)
                continue
            actions.append(new_action(Send, (conn.conn_id, packet)))
            p.stats.publish_sent += 1
            continue
        if msg is None:
            msg = pub.message(p.ledger.new_msg_id(), retain)
        if not p.outbox.deliver(s, msg, dq, out_retain, ids, now):
            result |= REJECTED
    if match.groups:
        result |= _route_to_groups(p, match.groups, pub, msg)
    return result


def _direct_packet(
    p: Parts, conn: Connection, pub: Publication, retain: bool, ids: tuple[int, ...]
) -> Publish:
    """A QoS 0 PUBLISH for one subscriber, when the publisher's will not do."""
    props = pub.properties
    if conn.v5 and ids:
        props = delivery_properties(props, ids, None, pub.now)
    return new_publish(pub.topic, pub.payload, 0, retain, False, None, props)


def _route_to_groups(
    p: Parts, groups: Iterable[SharedGroup], pub: Publication, msg: Message | None
) -> int:
    result = 0
    for group in groups:
        picked = p.router.pick(group, pub.topic, p.sessions.by_id)
        if picked is None:
            continue
        s, rec = picked
        policy = s.policy
        if policy is not None and policy.command_schema is not None:
            refused = _check_command(p, s, policy.command_schema, pub)
            if refused:
                result |= refused
                continue
        if msg is None:
            msg = pub.message(p.ledger.new_msg_id(), pub.retain)
        ids = () if rec.subscription_id is None else (rec.subscription_id,)
        qos = min(pub.qos, rec.qos)
        if not p.outbox.deliver(s, msg, qos, pub.retain and rec.retain_as_published, ids, pub.now):
            result |= REJECTED
    return result


def _check_command(p: Parts, s: Session, schema: str, pub: Publication) -> int:
    """0 if the payload may be queued for ``s``; else PAYLOAD_INVALID or COMMAND_INVALID,
    with the refusal counted, logged (rate-limited), an event, and the session's notice."""
    topic = pub.topic
    rejection = command_check.check(schema, pub.payload)
    if rejection is None:
        return 0
    p.stats.rejected(f"for {s.client_id!r} on {topic}: {rejection.detail}")
    event(p, "rejected", s.client_id, f"on {topic}: {rejection.detail}")
    if s.notify_topic is not None:
        notice = command_check.rejection_notice(topic, pub.payload, rejection, pub.now)
        p.outbox.notices.append((s.notify_topic, notice))
    p.refusal = command_check.reason_string(rejection)
    if rejection.reason == command_check.PAYLOAD_FORMAT:
        return PAYLOAD_INVALID
    return COMMAND_INVALID


def inbound_properties(props: Properties) -> Properties:
    """The publication properties to keep: a topic alias or subscription identifiers that
    came in are per-hop, not part of the message."""
    if props.topic_alias is not None or props.subscription_identifiers:
        return replace(props, topic_alias=None, subscription_identifiers=())
    return props
