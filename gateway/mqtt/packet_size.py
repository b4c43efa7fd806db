"""What a control packet may carry towards a peer (MQTT 5.0 §3.1.2.11.4, §3.1.2.11.7).

The Maximum Packet Size a client announces in its CONNECT binds every packet the server
sends it [MQTT-3.1.2-24]. A reason string and user properties are the only parts of a
control packet a sender may leave out to fit (§3.2.2.3.9, §3.4.2.2.2 ...); what still does
not fit is not sent at all [MQTT-3.1.2-25]. A client that set Request Problem Information to
0 gets neither on anything but PUBLISH, CONNACK and DISCONNECT [MQTT-3.1.2-29]. PUBLISH
packets are the broker's business: one that does not fit counts as delivered, so the broker,
which owns the delivery state, drops it.
"""

from __future__ import annotations

import dataclasses

from gateway.mqtt.codec import encode
from gateway.mqtt.packets import Packet, PacketType, Properties

# Packets that may carry problem information whatever the client asked (§3.1.2.11.7).
_ALWAYS_INFORMED = frozenset({PacketType.PUBLISH, PacketType.CONNACK, PacketType.DISCONNECT})


def encode_for_peer(
    packet: Packet, version: int, limit: int, problem_info: bool = True
) -> bytes | None:
    """``packet`` encoded in at most ``limit`` bytes (0 = no limit), without its reason string
    and user properties if the peer asked for no problem information or that is what it takes
    to fit; None if it cannot fit."""
    if not problem_info and packet.type not in _ALWAYS_INFORMED and _has_problem_info(packet):
        packet = _without_problem_info(packet)
    data = encode(packet, version)
    if not limit or len(data) <= limit:
        return data
    if not _has_problem_info(packet):
        return None
    data = encode(_without_problem_info(packet), version)
    return data if len(data) <= limit else None


def _has_problem_info(packet: Packet) -> bool:
    props = getattr(packet, "properties", None)
    return isinstance(props, Properties) and (
        props.reason_string is not None or bool(props.user_properties)
    )


def _without_problem_info(packet: Packet) -> Packet:
    props: Properties = packet.properties  # type: ignore[union-attr]
    bare = dataclasses.replace(props, reason_string=None, user_properties=())
    slim: Packet = dataclasses.replace(packet, properties=bare)  # type: ignore[arg-type]
    return slim
