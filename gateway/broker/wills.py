"""Will messages: which a CONNECT may carry, when one is due, how it is published."""

from __future__ import annotations

from dataclasses import replace

from gateway.broker.parts import Parts
from gateway.broker.router import Publication
from gateway.broker.routing import accept, inbound_properties
from gateway.broker.session import Session
from gateway.broker.topic_tree import is_sys_topic
from gateway.mqtt.codec import is_valid_topic_name
from gateway.mqtt.packets import NO_PROPERTIES, PROTOCOL_V5, Will
from gateway.mqtt.reason_codes import ReasonCode

_NOT_AUTHORIZED = ReasonCode.NOT_AUTHORIZED.value


def will_refusal(
    p: Parts, will: Will, username: str | None, client_id: str, v5: bool, exempt: bool = False
) -> int:
    """The reason code that refuses a CONNECT for its will, or 0."""
    topic = will.topic
    if not is_valid_topic_name(topic):
        return ReasonCode.TOPIC_NAME_INVALID
    if is_sys_topic(topic) or (
        p.router.checked(topic)
        and not exempt
        and not p.router.authorizer.can_publish(username, client_id, topic)
    ):
        return _NOT_AUTHORIZED
    answers_on = will.properties.response_topic
    if (
        answers_on is not None
        and not exempt
        and not p.router.may_publish(username, client_id, answers_on)
    ):
        return _NOT_AUTHORIZED
    if v5:
        if will.qos > p.settings.max_qos:
            return ReasonCode.QOS_NOT_SUPPORTED
        if will.retain and not p.settings.retain_available:
            return ReasonCode.RETAIN_NOT_SUPPORTED
    return 0


def may_ask_for_answers_on(p: Parts, s: Session, response_topic: str) -> bool:
    """May ``s`` name ``response_topic`` in a request? A responder (a device session,
    the admin service) publishes its answer there with its own, wider rights, so only a
    topic the requester could publish on itself may be named: otherwise a request would
    make the gateway write wherever the requester may not (DESIGN §8)."""
    return s.acl_exempt or p.router.may_publish(s.username, s.client_id, response_topic)


def release_will(p: Parts, s: Session, will: Will, now: float, takeover: bool) -> None:
    """The connection that carried ``will`` ended without a normal DISCONNECT."""
    delay = will_delay(will, s.version)
    if delay > 0 and (takeover or s.expiry > 0):
        # §3.1.3.2.2: published when the delay or the session ends, whichever first;
        # cancelled if the session gets a new connection before that.
        s.will = will
        s.will_due_at = now + (delay if takeover else min(delay, s.expiry))
        p.timers.will_due(s.will_due_at, s.client_id)
    else:
        publish_will(p, s.client_id, will, now)


def publish_will(p: Parts, client_id: str, will: Will, now: float) -> None:
    p.stats.wills_published += 1
    props = will.properties
    if props is not NO_PROPERTIES:
        if props.will_delay_interval is not None:
            props = replace(props, will_delay_interval=None)
        props = inbound_properties(props)
    mei = props.message_expiry_interval
    expires_at = None if mei is None else now + mei
    qos = min(will.qos, p.settings.max_qos)
    retain = will.retain and p.settings.retain_available
    accept(p, Publication(will.topic, will.payload, qos, retain, props, expires_at, client_id, now))


def will_delay(will: Will, version: int) -> int:
    if version != PROTOCOL_V5:
        return 0
    return will.properties.will_delay_interval or 0
