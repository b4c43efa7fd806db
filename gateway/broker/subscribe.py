"""SUBSCRIBE and UNSUBSCRIBE: filter checks, the subscription tree, retained messages for
new subscriptions."""

from __future__ import annotations

from gateway.broker.disconnect import violation
from gateway.broker.parts import Parts, send
from gateway.broker.records import SubscriptionRecord
from gateway.broker.session import Connection, Session
from gateway.broker.shared_empty import NO_ITEMS
from gateway.broker.topic_tree import has_wildcard, split_shared
from gateway.mqtt.codec import is_valid_topic_filter
from gateway.mqtt.packets import SubAck, Subscribe, Subscription, UnsubAck, Unsubscribe
from gateway.mqtt.reason_codes import ReasonCode

_PROTOCOL_ERROR = ReasonCode.PROTOCOL_ERROR.value


def on_subscribe(p: Parts, conn: Connection, s: Session, packet: Subscribe, now: float) -> None:
    settings = p.settings
    v5 = conn.v5
    sub_id: int | None = None
    if v5 and packet.properties.subscription_identifiers:
        if not settings.subscription_identifiers:
            violation(p, conn, ReasonCode.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED, now)
            return
        sub_id = packet.properties.subscription_identifiers[0]
    client_id = s.client_id
    codes: list[int] = []
    retained_for: list[tuple[SubscriptionRecord, str]] = []
    for sub in packet.subscriptions:
        code = _filter_refusal(p, s, sub)
        if code < 0:
            violation(p, conn, _PROTOCOL_ERROR, now)
            return
        if code:
            codes.append(code if v5 else 0x80)
            continue
        f = sub.topic_filter
        granted = min(sub.qos, settings.max_qos)
        rec = SubscriptionRecord(
            client_id,
            f,
            granted,
            sub.no_local,
            sub.retain_as_published,
            sub.retain_handling,
            sub_id,
        )
        new = p.router.tree.add(rec)
        if s.subscriptions is NO_ITEMS:
            s.subscriptions = {}
        s.subscriptions[f] = rec
        p.ledger.put_subscription(s, rec)
        codes.append(granted)
        group, inner = split_shared(f) or (None, f)
        # Retained messages are not sent for shared subscriptions (§4.8.2).
        if group is None and (sub.retain_handling == 0 or (sub.retain_handling == 1 and new)):
            retained_for.append((rec, inner))
    p.journal.sessions_version += 1
    send(p, conn.conn_id, SubAck(packet.packet_id, tuple(codes)))
    for rec, inner in retained_for:
        ids = () if rec.subscription_id is None else (rec.subscription_id,)
        for msg in p.router.retained.matching(inner, now):
            if p.router.may_receive(s, msg.topic):
                p.outbox.deliver(s, msg, min(msg.qos, rec.qos), True, ids, now)


def _filter_refusal(p: Parts, s: Session, sub: Subscription) -> int:
    """The reason code that refuses one filter of a SUBSCRIBE, or 0; -1 for a protocol
    error (No Local on a shared subscription, §3.8.3.1)."""
    settings = p.settings
    f = sub.topic_filter
    parts = split_shared(f)
    if parts is None or not is_valid_topic_filter(parts[1]):
        return ReasonCode.TOPIC_FILTER_INVALID
    group, inner = parts
    if group is not None:
        if sub.no_local:
            return -1
        if not settings.shared_subscriptions:
            return ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
    if not settings.wildcard_subscriptions and has_wildcard(inner):
        return ReasonCode.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
    if settings.max_topic_levels and inner.count("/") >= settings.max_topic_levels:
        return ReasonCode.TOPIC_FILTER_INVALID
    if not s.acl_exempt:
        return p.router.authorizer.subscribe_refusal(s.username, s.client_id, f)
    return 0


def on_unsubscribe(p: Parts, conn: Connection, s: Session, packet: Unsubscribe) -> None:
    codes: list[int] = []
    client_id = s.client_id
    for f in packet.topic_filters:
        if s.subscriptions.pop(f, None) is None:
            valid = (parts := split_shared(f)) is not None and is_valid_topic_filter(parts[1])
            codes.append(
                ReasonCode.NO_SUBSCRIPTION_EXISTED if valid else ReasonCode.TOPIC_FILTER_INVALID
            )
            continue
        p.router.tree.remove(client_id, f)
        p.ledger.delete_subscription(s, f)
        codes.append(0)
    p.journal.sessions_version += 1
    send(p, conn.conn_id, UnsubAck(packet.packet_id, tuple(codes) if conn.v5 else ()))
