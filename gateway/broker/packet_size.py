"""The encoded size of an outgoing PUBLISH, computed without encoding it (the client's
Maximum Packet Size is checked for every delivery)."""

from __future__ import annotations

from gateway.mqtt.packets import NO_PROPERTIES, Properties, Publish


def _vbi_len(n: int) -> int:
    if n < 128:
        return 1
    if n < 16384:
        return 2
    if n < 2097152:
        return 3
    return 4


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _properties_size(props: Properties) -> int:
    if props is NO_PROPERTIES:
        return 1
    n = 0
    if props.payload_format_indicator is not None:
        n += 2
    if props.message_expiry_interval is not None:
        n += 5
    if props.content_type is not None:
        n += 3 + _utf8_len(props.content_type)
    if props.response_topic is not None:
        n += 3 + _utf8_len(props.response_topic)
    if props.correlation_data is not None:
        n += 3 + len(props.correlation_data)
    for sid in props.subscription_identifiers:
        n += 1 + _vbi_len(sid)
    if props.topic_alias is not None:
        n += 3
    for key, value in props.user_properties:
        n += 5 + _utf8_len(key) + _utf8_len(value)
    return _vbi_len(n) + n


def publish_size(packet: Publish, v5: bool) -> int:
    """Encoded size of a PUBLISH (before any outbound topic alias is applied)."""
    remaining = 2 + _utf8_len(packet.topic) + len(packet.payload)
    if packet.qos:
        remaining += 2
    if v5:
        remaining += _properties_size(packet.properties)
    return 1 + _vbi_len(remaining) + remaining
