"""What the server sends fits the client's Maximum Packet Size [MQTT-3.1.2-24, -25]."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ThreadGateway, free_port
from raw_client import RawClient

from gateway.commands.schema import CommandSchema
from gateway.mqtt.codec import decode_packet, encode
from gateway.mqtt.packet_size import encode_for_peer
from gateway.mqtt.packets import (
    PROTOCOL_V5,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingResp,
    Properties,
    PubAck,
    Publish,
    PubRec,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
)

V5 = 5


def decode(data: bytes) -> Packet:
    result = decode_packet(data, V5)
    assert result is not None and result[1] == len(data)
    return result[0]


NOISY = Properties(reason_string="x" * 200, user_properties=(("why", "y" * 100),))


@pytest.mark.parametrize(
    "packet",
    [
        PubAck(7, 0x97, NOISY),
        PubRec(7, 0x99, NOISY),
        SubAck(3, (0x87, 1), NOISY),
        UnsubAck(3, (0x11,), NOISY),
        Disconnect(0x97, NOISY),
        ConnAck(False, 0x87, NOISY),
    ],
    ids=lambda p: type(p).__name__,
)
def test_reason_string_and_user_properties_are_left_out_to_fit(packet: Packet) -> None:
    full = encode(packet, V5)
    assert encode_for_peer(packet, V5, 0) == full  # no limit
    assert encode_for_peer(packet, V5, len(full)) == full  # fits as it is
    data = encode_for_peer(packet, V5, 40)
    assert data is not None and len(data) <= 40
    decoded = decode(data)
    if isinstance(packet, SubAck | UnsubAck):
        assert decoded.reason_codes == packet.reason_codes  # type: ignore[union-attr]
    else:
        assert decoded.reason_code == packet.reason_code  # type: ignore[union-attr]
    assert decoded.properties.reason_string is None  # type: ignore[union-attr]
    assert decoded.properties.user_properties == ()  # type: ignore[union-attr]


def test_what_cannot_fit_is_not_sent() -> None:
    assert encode_for_peer(PubAck(7, 0x97, NOISY), V5, 3) is None
    assert encode_for_peer(PingResp(), V5, 1) is None
    # A PUBLISH has no reason string to drop (the broker discards one that is too large).
    assert encode_for_peer(Publish("t", b"x" * 100), V5, 50) is None


def test_needed_properties_stay() -> None:
    props = Properties(receive_maximum=5, reason_string="r" * 100)
    data = encode_for_peer(ConnAck(False, 0, props), V5, 30)
    assert data is not None
    decoded = decode(data)
    assert decoded.properties.receive_maximum == 5  # type: ignore[union-attr]


def test_no_problem_information_on_acks_when_the_client_asked_for_none() -> None:
    # [MQTT-3.1.2-29]: only PUBLISH, CONNACK and DISCONNECT may still carry them.
    for packet in (PubAck(7, 0x83, NOISY), SubAck(3, (0x87,), NOISY)):
        data = encode_for_peer(packet, V5, 0, problem_info=False)
        assert data is not None
        assert decode(data).properties.reason_string is None  # type: ignore[union-attr]
    for packet in (Disconnect(0x97, NOISY), ConnAck(False, 0x87, NOISY)):
        assert encode_for_peer(packet, V5, 0, problem_info=False) == encode(packet, V5)


SCHEMA = CommandSchema.from_data(
    {"type": "object", "properties": {"t": {"type": "number", "maximum": 30}}}
)


def test_a_refused_command_is_told_within_what_the_client_asked_for(
    gateway_factory: Callable[..., tuple[ThreadGateway, int]], tmp_path: Path
) -> None:
    # The broker gives a refused command a reason string; the connection leaves it out for
    # a client that asked for no problem information or whose packet limit it would break.
    port = free_port()
    sock = str(tmp_path / "admin.sock")
    gateway_factory(
        {
            "listeners": [
                {"type": "tcp", "host": "127.0.0.1", "port": port},
                {"type": "unix", "path": sock, "admin": True},
            ]
        },
        port=port,
    )
    # A session with a command schema (an admin may ask for a queue policy), then asleep.
    device = RawClient(version=PROTOCOL_V5, unix=sock)
    schema = (("queue-schema", SCHEMA.text),)
    policy = Properties(session_expiry_interval=3600, user_properties=schema)
    ack = device.connect(Connect("trv", PROTOCOL_V5, clean_start=False, properties=policy))
    assert isinstance(ack, ConnAck) and ack.reason_code == 0
    device.send(Subscribe(1, (Subscription("trv/set", 1),)))
    device.recv()
    device.close()

    def refusal(**connect_props: object) -> PubAck:
        app = RawClient(port, PROTOCOL_V5)
        try:
            app.connect(Connect("app", PROTOCOL_V5, properties=Properties(**connect_props)))  # type: ignore[arg-type]
            app.send(Publish("trv/set", b'{"t": 99}', qos=1, packet_id=1))
            ack = app.recv()
        finally:
            app.close()
        assert isinstance(ack, PubAck) and ack.reason_code == 0x83
        return ack

    assert refusal().properties.reason_string is not None
    assert refusal(request_problem_information=0).properties.reason_string is None
    assert refusal(maximum_packet_size=16).properties.reason_string is None
