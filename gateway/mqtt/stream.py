"""MQTT framing: the fixed header, the size limit, and the buffering of a byte stream.

A short buffer is never an error: :class:`StreamDecoder` keeps it and waits for more. The
packet bodies are decoded by :mod:`gateway.mqtt.decoding`, through its first-byte tables.
"""

from __future__ import annotations

from typing import Final

from gateway.mqtt.decoding import FIXED_TABLES, LEARNED_TABLES, PRE_CONNECT_TABLE
from gateway.mqtt.errors import MalformedPacket, MQTTError, PacketTooLarge, ProtocolError
from gateway.mqtt.packets import PROTOCOL_V5, PROTOCOL_VERSIONS, Connect, Packet, PacketType

__all__ = ["MAX_PACKET_SIZE", "StreamDecoder", "decode_packet"]

# Largest packet the protocol can express: 1 type byte + 4 length bytes + 268,435,455.
MAX_PACKET_SIZE: Final = 268_435_460


def _bad_first_byte(b0: int, v: int | None) -> MQTTError:
    ptype = b0 >> 4
    if v is None and ptype != PacketType.CONNECT:
        return ProtocolError(f"expected CONNECT, got packet type {ptype}")
    if ptype == 0 or (ptype == PacketType.AUTH and v != PROTOCOL_V5):
        return MalformedPacket(f"reserved packet type {ptype}")
    if ptype == PacketType.PUBLISH:
        return MalformedPacket("PUBLISH with QoS 3 or with DUP on QoS 0")
    return MalformedPacket(f"invalid fixed header flags 0x{b0 & 15:x} for packet type {ptype}")


def _peek_connect_level(buf: bytes, start: int, stop: int) -> int | None:
    """The protocol level byte of a CONNECT body, if the body reaches it."""
    if start + 2 > stop:
        return None
    at = start + 2 + ((buf[start] << 8) | buf[start + 1])
    return buf[at] if at < stop else None


def _remaining_length(buf: bytes, pos: int, n: int) -> tuple[int, int]:
    """Remaining length at ``buf[pos]``; (-1, pos) when the buffer ends inside it."""
    value = 0
    shift = 0
    for i in range(4):
        if pos >= n:
            return -1, pos
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if b == 0 and i:
                raise MalformedPacket("remaining length not minimally encoded")  # MQTT-1.5.5-1
            return value, pos
        shift += 7
    raise MalformedPacket("remaining length longer than 4 bytes")  # 3.1.1 §2.2.3


def decode_packet(data: bytes, protocol_version: int) -> tuple[Packet, int] | None:
    """Decode one packet from the start of ``data``: (packet, bytes used), or None if short.

    A CONNECT is decoded in the layout of the level it carries, whatever ``protocol_version``.
    """
    if protocol_version not in PROTOCOL_VERSIONS:
        raise ValueError(f"unknown protocol version {protocol_version}")
    buf = bytes(data)
    n = len(buf)
    if not n:
        return None
    b0 = buf[0]
    dec = FIXED_TABLES[protocol_version][b0]
    if dec is None:
        raise _bad_first_byte(b0, protocol_version)
    length, start = _remaining_length(buf, 1, n)
    if length < 0 or start + length > n:
        return None
    stop = start + length
    return dec(b0, buf, start, stop, protocol_version), stop


class StreamDecoder:
    """Incremental decoder for one connection's inbound byte stream.

    With ``protocol_version=None`` (a server) the first packet must be a CONNECT; its level
    becomes :attr:`protocol_version` and a second CONNECT is then a protocol error. After an
    error the decoder is dead: every later :meth:`feed` raises the same error again.
    """

    __slots__ = (
        "_chunks",
        "_error",
        "_have",
        "_need",
        "_rest",
        "_table",
        "max_packet_size",
        "protocol_version",
        "requested_protocol_level",
    )

    def __init__(
        self, max_packet_size: int = MAX_PACKET_SIZE, protocol_version: int | None = None
    ) -> None:
        if protocol_version is not None and protocol_version not in PROTOCOL_VERSIONS:
            raise ValueError(f"unknown protocol version {protocol_version}")
        if max_packet_size < 2:
            raise ValueError("max_packet_size below the smallest packet")
        self.max_packet_size = max_packet_size
        self.protocol_version: int | None = protocol_version
        # Level byte of the last CONNECT seen, set even when that CONNECT is then refused
        # (UnsupportedProtocolVersion, MalformedPacket, ...), so that the server can answer
        # in a format the client reads: 3.1.1 CONNACK 0x01 or a 5.0 CONNACK with a reason.
        self.requested_protocol_level: int | None = None
        self._table = (
            PRE_CONNECT_TABLE if protocol_version is None else FIXED_TABLES[protocol_version]
        )
        self._rest = b""  # unparsed bytes when the next packet's size is still unknown
        # Pieces of a packet whose size is known (None between such packets: 56 B kept per
        # connection otherwise, and most connections never split a packet across reads).
        self._chunks: list[bytes] | None = None
        self._have = 0
        self._need = 0  # total size of that packet, 0 when none is pending
        self._error: MQTTError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a returned packet."""
        return len(self._rest) + self._have

    def feed(self, data: bytes) -> list[Packet]:
        """Append ``data``; return every packet now complete (maybe none)."""
        if self._error is not None:
            raise self._error
        if self._need:
            # A big packet arriving in pieces: join once when it is complete, not per piece.
            chunks = self._chunks
            assert chunks is not None  # made with _need
            chunks.append(bytes(data))
            self._have += len(data)
            if self._have < self._need:
                return []
            buf = b"".join(chunks)
            self._chunks = None
            self._have = self._need = 0
        elif self._rest:
            buf = self._rest + data
        else:
            buf = bytes(data)
        try:
            return self._parse(buf)
        except MQTTError as exc:
            self._error = exc
            self._rest = b""
            self._chunks = None
            self._have = self._need = 0
            raise

    def _parse(self, buf: bytes) -> list[Packet]:
        out: list[Packet] = []
        table = self._table
        v = self.protocol_version
        limit = self.max_packet_size
        n = len(buf)
        pos = 0
        while pos < n:
            b0 = buf[pos]
            dec = table[b0]
            if dec is None:
                raise _bad_first_byte(b0, v)
            if pos + 1 >= n:
                break
            b1 = buf[pos + 1]
            if b1 < 0x80:
                start = pos + 2
                stop = start + b1
            else:
                length, start = _remaining_length(buf, pos + 1, n)
                if length < 0:
                    break
                stop = start + length
            if stop - pos > limit:
                raise PacketTooLarge(f"packet of {stop - pos} bytes exceeds {limit}")
            if stop > n:
                self._need = stop - pos
                self._have = n - pos
                self._chunks = [buf[pos:]]
                self._rest = b""
                return out
            if b0 == 0x10:
                # Known before the rest is validated, so that a server can answer a bad
                # CONNECT with a CONNACK in the format the client reads (5.0 §4.13.1).
                self.requested_protocol_level = _peek_connect_level(buf, start, stop)
            if v is None:
                packet = dec(b0, buf, start, stop, 0)
                assert isinstance(packet, Connect)
                v = self.protocol_version = packet.protocol_version
                table = self._table = LEARNED_TABLES[v]
            else:
                packet = dec(b0, buf, start, stop, v)
            out.append(packet)
            pos = stop
        self._rest = buf[pos:] if pos < n else b""
        return out
