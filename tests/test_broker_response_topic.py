"""A request names where its answer goes (Response Topic); the responder -- a device session,
the admin service -- answers with its own, wider rights. So a client may only name a topic it
could publish on itself: otherwise one command would make the gateway write where the
requester may not, such as the admin API's request topics (DESIGN §8)."""

from __future__ import annotations

from test_broker_support import V5, Harness, only, props

from gateway.auth.acl import BridgeGuard
from gateway.broker.effects import Identity
from gateway.mqtt.packets import ConnAck, PubAck, Publish, Will
from gateway.mqtt.reason_codes import ReasonCode

ADMIN = Identity(ok=True, is_admin=True)


def guarded() -> Harness:
    return Harness(authorizer=BridgeGuard("gw"))


def test_request_naming_a_topic_the_client_may_not_publish_on_is_refused() -> None:
    h = guarded()
    device = h.connect("dev-plug", V5, identity=ADMIN)
    device.subscribe("gw/plug/set", qos=1)
    app = h.connect("app", V5)
    for answers_on in ("gw/bridge/request/delete_session", "$SYS/broker/uptime"):
        (ack,) = only(
            app.publish("gw/plug/set", b"{}", qos=1, properties=props(response_topic=answers_on)),
            PubAck,
        )
        assert ack.reason_code == ReasonCode.NOT_AUTHORIZED
    assert device.publishes() == []  # never reached the responder
    assert h.broker.stats.publish_denied == 2


def test_request_naming_an_allowed_topic_goes_through() -> None:
    h = guarded()
    device = h.connect("dev-plug", V5, identity=ADMIN)
    device.subscribe("gw/plug/set", qos=1)
    app = h.connect("app", V5)
    (ack,) = only(
        app.publish("gw/plug/set", b"{}", qos=1, properties=props(response_topic="app/replies")),
        PubAck,
    )
    assert ack.reason_code == 0
    (got,) = device.publishes()
    assert isinstance(got, Publish) and got.properties.response_topic == "app/replies"


def test_admins_may_name_any_response_topic() -> None:
    h = guarded()
    admin = h.connect("tui", V5, identity=ADMIN)
    (ack,) = only(
        admin.publish(
            "gw/bridge/request/sessions",
            b"{}",
            qos=1,
            properties=props(response_topic="gw/bridge/response/mine"),
        ),
        PubAck,
    )
    assert ack.reason_code < 0x80


def test_will_naming_a_forbidden_response_topic_is_refused_at_connect() -> None:
    h = guarded()
    will = Will("app/gone", b"x", 1, False, props(response_topic="gw/bridge/request/kick"))
    c = h.connect("app", V5, will=will)
    (ack,) = only(c.all(), ConnAck)
    assert ack.reason_code == ReasonCode.NOT_AUTHORIZED
