"""Exact protocol sequences over real sockets: flow control, keep-alive negotiation, QoS 2
exactly-once across reconnects and restarts, protocol-version refusal."""

from __future__ import annotations

from collections.abc import Callable

from conftest import ThreadGateway
from paho_helpers import V5, V311, Client
from raw_client import RawClient

from gateway.mqtt.packets import (
    PROTOCOL_V5,
    PROTOCOL_V311,
    ConnAck,
    Connect,
    Disconnect,
    Properties,
    PubComp,
    Publish,
    PubRec,
    PubRel,
)

GatewayFactory = Callable[..., tuple[ThreadGateway, int]]


def test_receive_maximum_exceeded_gets_reason_0x93(gateway_factory: GatewayFactory) -> None:
    _, port = gateway_factory({"limits": {"receive_maximum": 5}})
    c = RawClient(port, PROTOCOL_V5)
    ack = c.connect(Connect(client_id="flood", protocol_version=PROTOCOL_V5))
    assert isinstance(ack, ConnAck) and ack.properties.receive_maximum == 5
    # Six QoS 2 publishes without waiting for PUBREC: one more than we may have in flight.
    c.send(*(Publish("t", b"x", qos=2, packet_id=i) for i in range(1, 7)))
    packets = []
    while True:
        p = c.recv()
        packets.append(p)
        if isinstance(p, Disconnect):
            break
    assert packets[-1] == Disconnect(reason_code=0x93)
    assert [p.packet_id for p in packets if isinstance(p, PubRec)] == [1, 2, 3, 4, 5]
    # The client may still be sending (PUBRELs): the broker must not answer that with RST.
    c.send(PubRel(1), PubRel(2))
    assert c.closed_by_peer()


def test_server_keep_alive_caps_client_value(gateway_factory: GatewayFactory) -> None:
    _, port = gateway_factory({"limits": {"max_keepalive": 60}})
    c = RawClient(port, PROTOCOL_V5)
    ack = c.connect(Connect(client_id="ka", protocol_version=PROTOCOL_V5, keep_alive=120))
    assert isinstance(ack, ConnAck) and ack.properties.server_keep_alive == 60
    c2 = RawClient(port, PROTOCOL_V5)
    ack2 = c2.connect(Connect(client_id="ka2", protocol_version=PROTOCOL_V5, keep_alive=30))
    assert isinstance(ack2, ConnAck) and ack2.properties.server_keep_alive is None


def _qos2_resend_after_reconnect(gw: ThreadGateway, port: int, restart: bool, version: int) -> None:
    watcher = Client(port, "watcher", version=V5 if version == PROTOCOL_V5 else V311)
    watcher.subscribe("once", qos=2)
    props = Properties(session_expiry_interval=600) if version == PROTOCOL_V5 else Properties()
    hello = Connect(
        client_id="q2pub", protocol_version=version, clean_start=False, properties=props
    )
    pub = RawClient(port, version)
    assert isinstance(pub.connect(hello), ConnAck)
    pub.send(Publish("once", b"exactly", qos=2, packet_id=7))
    assert pub.recv() == PubRec(7)
    pub.close()  # PUBREC received, PUBREL never sent: the broker must remember packet id 7
    if restart:
        watcher.disconnect()
        gw.stop()
        gw.start()
        watcher = Client(port, "watcher", version=V5 if version == PROTOCOL_V5 else V311)
        watcher.subscribe("once", qos=2)
    else:
        assert watcher.get().payload == b"exactly"
    pub = RawClient(port, version)
    ack = pub.connect(hello)
    assert isinstance(ack, ConnAck) and ack.session_present
    # A client that did not see the PUBREC would resend the PUBLISH with DUP...
    pub.send(Publish("once", b"exactly", qos=2, packet_id=7, dup=True))
    assert pub.recv() == PubRec(7)
    pub.send(PubRel(7))
    assert pub.recv() == PubComp(7)
    # ...and after PUBCOMP the same id is a new message.
    pub.send(Publish("once", b"next", qos=2, packet_id=7))
    assert pub.recv() == PubRec(7)
    pub.send(PubRel(7))
    assert pub.recv() == PubComp(7)
    assert [m.payload for m in watcher.drain(0.5)] == [b"next"]
    watcher.disconnect()


def test_qos2_exactly_once_across_reconnect_v311(gateway: tuple[ThreadGateway, int]) -> None:
    _qos2_resend_after_reconnect(*gateway, restart=False, version=PROTOCOL_V311)


def test_qos2_exactly_once_across_reconnect_v5(gateway: tuple[ThreadGateway, int]) -> None:
    _qos2_resend_after_reconnect(*gateway, restart=False, version=PROTOCOL_V5)


def test_qos2_exactly_once_across_restart(gateway: tuple[ThreadGateway, int]) -> None:
    _qos2_resend_after_reconnect(*gateway, restart=True, version=PROTOCOL_V311)


def test_unsupported_protocol_level_refused_with_connack(
    gateway: tuple[ThreadGateway, int],
) -> None:
    _, port = gateway
    c = RawClient(port, PROTOCOL_V311)
    # CONNECT "MQTT" level 6, clean session, keepalive 60, client id "x" (3.1.1 §3.1.2.2).
    c.send_bytes(bytes([0x10, 13, 0, 4]) + b"MQTT" + bytes([6, 2, 0, 60, 0, 1]) + b"x")
    assert c.recv() == ConnAck(reason_code=1)
    assert c.closed_by_peer()


def test_enhanced_authentication_is_refused_with_0x8c(gateway: tuple[ThreadGateway, int]) -> None:
    _, port = gateway
    c = RawClient(port, PROTOCOL_V5)
    hello = Connect(
        client_id="sasl",
        protocol_version=PROTOCOL_V5,
        properties=Properties(authentication_method="SCRAM-SHA-1", authentication_data=b"n,,"),
    )
    ack = c.connect(hello)
    assert isinstance(ack, ConnAck) and ack.reason_code == 0x8C
    assert c.closed_by_peer()
