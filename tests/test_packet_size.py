"""What the server sends fits the client's Maximum Packet Size [MQTT-3.1.2-24, -25]."""

from __future__ import annotations

import pytest

from gateway.mqtt.codec import decode_packet, encode
from gateway.mqtt.packet_size import encode_within
from gateway.mqtt.packets import (
    ConnAck,
    Disconnect,
    Packet,
    PingResp,
    Properties,
    PubAck,
    Publish,
    PubRec,
    SubAck,
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
    assert encode_within(packet, V5, 0) == full  # no limit
    assert encode_within(packet, V5, len(full)) == full  # fits as it is
    data = encode_within(packet, V5, 40)
    assert data is not None and len(data) <= 40
    decoded = decode(data)
    if isinstance(packet, SubAck | UnsubAck):
        assert decoded.reason_codes == packet.reason_codes  # type: ignore[union-attr]
    else:
        assert decoded.reason_code == packet.reason_code  # type: ignore[union-attr]
    assert decoded.properties.reason_string is None  # type: ignore[union-attr]
    assert decoded.properties.user_properties == ()  # type: ignore[union-attr]


def test_what_cannot_fit_is_not_sent() -> None:
    assert encode_within(PubAck(7, 0x97, NOISY), V5, 3) is None
    assert encode_within(PingResp(), V5, 1) is None
    # A PUBLISH has no reason string to drop (the broker discards one that is too large).
    assert encode_within(Publish("t", b"x" * 100), V5, 50) is None


def test_needed_properties_stay() -> None:
    props = Properties(receive_maximum=5, reason_string="r" * 100)
    data = encode_within(ConnAck(False, 0, props), V5, 30)
    assert data is not None
    decoded = decode(data)
    assert decoded.properties.receive_maximum == 5  # type: ignore[union-attr]
