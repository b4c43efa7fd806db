"""Keeping what we send within the peer's Maximum Packet Size (MQTT 5.0 §3.1.2.11.4).

The limit a client announces in its CONNECT binds every packet the server sends it
[MQTT-3.1.2-24]. A reason string and user properties are the only parts of a control packet
a sender may leave out to fit (§3.2.2.3.9, §3.4.2.2.2 ...); what still does not fit is not
sent at all [MQTT-3.1.2-25]. PUBLISH packets are the broker's business (a PUBLISH that does
not fit counts as delivered, so the broker, which owns the delivery state, drops it).
"""

from __future__ import annotations

import dataclasses

from gateway.mqtt.codec import encode
from gateway.mqtt.packets import Packet, Properties


def encode_within(packet: Packet, version: int, limit: int) -> bytes | None:
    """``packet`` encoded in at most ``limit`` bytes (0 = no limit), leaving out its reason
    string and user properties if that is what it takes; None if it cannot fit."""
    data = encode(packet, version)
    if not limit or len(data) <= limit:
        return data
    props = getattr(packet, "properties", None)
    if not isinstance(props, Properties) or (
        props.reason_string is None and not props.user_properties
    ):
        return None
    bare = dataclasses.replace(props, reason_string=None, user_properties=())
    slim: Packet = dataclasses.replace(packet, properties=bare)  # type: ignore[arg-type]
    data = encode(slim, version)
    return data if len(data) <= limit else None
