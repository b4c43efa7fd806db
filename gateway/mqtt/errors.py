"""Typed protocol errors. Each carries the MQTT 5 reason code the peer must be told."""

from __future__ import annotations

from gateway.mqtt.reason_codes import ReasonCode


class MQTTError(Exception):
    """Base of every protocol error; ``reason_code`` is what a DISCONNECT/CONNACK carries."""

    reason_code: ReasonCode = ReasonCode.UNSPECIFIED_ERROR

    def __init__(self, message: str, reason_code: ReasonCode | None = None) -> None:
        super().__init__(message)
        if reason_code is not None:
            self.reason_code = reason_code


class MalformedPacket(MQTTError):
    reason_code = ReasonCode.MALFORMED_PACKET


class ProtocolError(MQTTError):
    reason_code = ReasonCode.PROTOCOL_ERROR


class PacketTooLarge(MQTTError):
    reason_code = ReasonCode.PACKET_TOO_LARGE


class UnsupportedProtocolVersion(MQTTError):
    reason_code = ReasonCode.UNSUPPORTED_PROTOCOL_VERSION
    # The protocol level byte the CONNECT carried, so the server can pick the CONNACK format.
    protocol_level: int | None = None
