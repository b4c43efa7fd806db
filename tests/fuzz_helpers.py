"""Bad-input generators and a small blocking raw-socket client for the robustness tests.

Valid packets come from the project's own encoder; everything bad is made by editing their
bytes (the encoder refuses to produce invalid packets, by design). All randomness comes from
a caller-supplied ``random.Random`` so that a failing run can be replayed from its seed.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable

from gateway.mqtt.codec import StreamDecoder, encode
from gateway.mqtt.packets import (
    PROTOCOL_V5,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscribe,
    Subscription,
    Unsubscribe,
    Will,
)

# ------------------------------------------------------------------ framing


def vbi(n: int) -> bytes:
    """Variable byte integer; values past the 4-byte maximum are encoded anyway (on purpose:
    a test may want to claim a length no legal packet can have)."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def frame(b0: int, body: bytes) -> bytes:
    """A packet from its first byte and body, with a correct minimal remaining length."""
    return bytes((b0,)) + vbi(len(body)) + body


def split_header(packet: bytes) -> tuple[int, bytes]:
    """(first byte, body) of a well-formed packet."""
    pos = 1
    while packet[pos] & 0x80:
        pos += 1
    return packet[0], packet[pos + 1 :]


def mqtt_str(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


# ------------------------------------------------------------------ valid packets


def connect_bytes(
    client_id: str,
    version: int = PROTOCOL_V5,
    *,
    keep_alive: int = 60,
    clean: bool = True,
    will: Will | None = None,
    properties: Properties | None = None,
) -> bytes:
    packet = Connect(
        client_id=client_id,
        protocol_version=version,
        clean_start=clean,
        keep_alive=keep_alive,
        will=will,
        properties=properties or Properties(),
    )
    return encode(packet, version)


def random_connect(rng: random.Random, version: int, client_id: str) -> bytes:
    will = None
    if rng.random() < 0.3:
        will = Will("fz/will", rng.randbytes(rng.randrange(16)), rng.randrange(3))
    props = Properties()
    if version == PROTOCOL_V5:
        props = Properties(
            session_expiry_interval=rng.choice([None, 0, 30]),
            receive_maximum=rng.choice([None, 1, 10]),
            topic_alias_maximum=rng.choice([None, 0, 5]),
        )
    return connect_bytes(
        client_id,
        version,
        keep_alive=rng.choice([0, 30, 60]),
        clean=rng.random() < 0.7,
        will=will,
        properties=props,
    )


def random_valid_packet(rng: random.Random, version: int) -> bytes:
    """One client-to-server packet a well-behaved client could send after CONNECT."""
    pid = rng.randrange(1, 0x10000)
    kind = rng.randrange(10)
    packet: Packet
    if kind <= 2:
        qos = rng.randrange(3)
        props = Properties()
        if version == PROTOCOL_V5 and rng.random() < 0.5:
            props = Properties(
                message_expiry_interval=rng.choice([None, 60]),
                content_type=rng.choice([None, "text/plain"]),
                user_properties=(("k", "v"),) if rng.random() < 0.3 else (),
            )
        packet = Publish(
            topic=f"fz/{rng.randrange(8)}/{rng.choice(['a', 'b', 'ü'])}",
            payload=rng.randbytes(rng.randrange(64)),
            qos=qos,
            retain=rng.random() < 0.05,
            packet_id=pid if qos else None,
            properties=props,
        )
    elif kind == 3:
        packet = Subscribe(
            pid, (Subscription(rng.choice(["fz/#", "fz/+/a", "fz/1/b"]), rng.randrange(3)),)
        )
    elif kind == 4:
        packet = Unsubscribe(pid, (rng.choice(["fz/#", "fz/+/a", "nothing"]),))
    elif kind == 5:
        packet = PingReq()
    elif kind == 6:
        packet = PubAck(pid)
    elif kind == 7:
        packet = PubRec(pid)
    elif kind == 8:
        packet = PubRel(pid)
    else:
        packet = PubComp(pid)
    return encode(packet, version)


# ------------------------------------------------------------------ byte-level mutations

Mutation = Callable[[random.Random, bytes], bytes]


def _bit_flips(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def _truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data))]


def _wrong_length(rng: random.Random, data: bytes) -> bytes:
    # Body kept, remaining length claims something else (shorter, longer or absurd).
    b0, body = split_header(data)
    claim = rng.choice(
        [
            max(0, len(body) - rng.randrange(1, 4)),
            len(body) + rng.randrange(1, 8),
            rng.randrange(0x10000, 268_435_455),
        ]
    )
    return bytes((b0,)) + vbi(claim) + body


def _wrong_flags(rng: random.Random, data: bytes) -> bytes:
    return bytes((data[0] ^ rng.randrange(1, 16),)) + data[1:]


def _random_type(rng: random.Random, data: bytes) -> bytes:
    return bytes((rng.randrange(256),)) + data[1:]


def _insert(rng: random.Random, data: bytes) -> bytes:
    i = rng.randrange(len(data) + 1)
    return data[:i] + rng.randbytes(rng.randrange(1, 8)) + data[i:]


def _delete(rng: random.Random, data: bytes) -> bytes:
    i = rng.randrange(len(data))
    return data[:i] + data[i + rng.randrange(1, 8) :]


def _overwrite(rng: random.Random, data: bytes) -> bytes:
    i = rng.randrange(len(data))
    chunk = rng.randbytes(rng.randrange(1, 8))
    return data[:i] + chunk + data[i + len(chunk) :]


def _padded_length(rng: random.Random, data: bytes) -> bytes:
    # A remaining length with a superfluous continuation byte (not minimally encoded), or a
    # fifth length byte.
    b0, body = split_header(data)
    length = bytearray(vbi(len(body)))
    length[-1] |= 0x80
    length.append(0x00 if rng.random() < 0.5 else 0x80)
    if length[-1] == 0x80:
        length += b"\x80\x80\x01"
    return bytes((b0,)) + bytes(length) + body


MUTATIONS: dict[str, Mutation] = {
    "bit-flips": _bit_flips,
    "truncate": _truncate,
    "wrong-length": _wrong_length,
    "wrong-flags": _wrong_flags,
    "random-type": _random_type,
    "insert": _insert,
    "delete": _delete,
    "overwrite": _overwrite,
    "padded-length": _padded_length,
}


def mutate(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    name = rng.choice(sorted(MUTATIONS))
    return name, MUTATIONS[name](rng, data)


# ------------------------------------------------------------------ deliberately bad packets
# Each builder returns bytes a server must refuse after a successful CONNECT at ``version``.


def pub_raw(
    version: int,
    topic: bytes,
    *,
    b0: int = 0x30,
    pid: int | None = None,
    props: bytes = b"",
    payload: bytes = b"x",
) -> bytes:
    body = mqtt_str(topic)
    if pid is not None:
        body += pid.to_bytes(2, "big")
    if version == PROTOCOL_V5:
        body += vbi(len(props)) + props
    return frame(b0, body + payload)


def sub_raw(version: int, topic_filter: str, options: int = 1, pid: int = 1) -> bytes:
    body = pid.to_bytes(2, "big")
    if version == PROTOCOL_V5:
        body += b"\x00"
    return frame(0x82, body + mqtt_str(topic_filter) + bytes((options,)))


def bad_packets(version: int) -> dict[str, bytes]:
    """Named bad inputs covering each family of errors the brief lists."""
    v5 = version == PROTOCOL_V5
    cases = {
        "remaining-length-5-bytes": bytes.fromhex("30ffffffff01"),
        "remaining-length-not-minimal": bytes.fromhex("c08000"),
        "huge-remaining-length": bytes.fromhex("30ffffff7f") + b"\x00\x01t",
        "publish-qos3": pub_raw(version, b"t", b0=0x36, pid=1),
        "publish-dup-qos0": pub_raw(version, b"t", b0=0x38),
        "publish-pid-0": pub_raw(version, b"t", b0=0x32, pid=0),
        "puback-pid-0": frame(0x40, b"\x00\x00"),
        "pubrel-wrong-flags": frame(0x60, b"\x00\x01"),
        "subscribe-wrong-flags": frame(0x80, sub_raw(version, "t")[2:]),
        "topic-invalid-utf8": pub_raw(version, b"\xc3\x28"),
        "topic-surrogate": pub_raw(version, b"\xed\xa0\x80"),
        "topic-wildcard": pub_raw(version, b"a/+"),
        "filter-hash-not-last": sub_raw(version, "a/#/b"),
        "filter-plus-in-level": sub_raw(version, "a+"),
        "second-connect": connect_bytes("again", version),
        "reserved-type-0": b"\x00\x00",
        "server-only-connack": encode(ConnAck(), version),
        "server-only-pingresp": b"\xd0\x00",
        "pingreq-with-body": b"\xc0\x01\x00",
    }
    if v5:
        cases |= {
            "property-unknown-id": pub_raw(version, b"t", props=b"\x7f\x00"),
            "property-not-for-publish": pub_raw(version, b"t", props=b"\x11\x00\x00\x00\x01"),
            "property-duplicate": pub_raw(version, b"t", props=b"\x02\x00\x00\x00\x01" * 2),
            "property-length-past-end": frame(0x30, b"\x00\x01t\x09\x02\x00"),
            "topic-alias-0": pub_raw(version, b"t", props=b"\x23\x00\x00"),
            "topic-alias-unknown": pub_raw(version, b"", props=b"\x23\x00\x01"),
            "auth-packet": b"\xf0\x00",
        }
    else:
        cases |= {"auth-type-in-311": b"\xf0\x00"}
    return cases


# ------------------------------------------------------------------ blocking raw client


class RawConn:
    """A plain TCP connection that speaks MQTT bytes, decoding what the broker sends."""

    def __init__(self, port: int, version: int = PROTOCOL_V5, timeout: float = 5.0) -> None:
        self.version = version
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.decoder = StreamDecoder(protocol_version=version)
        self.inbox: list[Packet] = []
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Read once; False on end of stream (EOF or reset), raises TimeoutError at deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("nothing from the broker")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.inbox.extend(self.decoder.feed(data))
        return True

    def recv(self, timeout: float = 5.0) -> Packet:
        deadline = time.monotonic() + timeout
        while not self.inbox:
            if not self._fill(deadline):
                raise ConnectionError("closed by the broker")
        return self.inbox.pop(0)

    def connect(
        self,
        client_id: str,
        *,
        keep_alive: int = 60,
        clean: bool = True,
        will: Will | None = None,
        properties: Properties | None = None,
    ) -> ConnAck:
        wire = connect_bytes(
            client_id,
            self.version,
            keep_alive=keep_alive,
            clean=clean,
            will=will,
            properties=properties,
        )
        self.send(wire)
        ack = self.recv()
        assert isinstance(ack, ConnAck), ack
        return ack

    def until_closed(self, timeout: float = 5.0) -> list[Packet]:
        """Every packet the broker sends until it closes the connection."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            pass
        out, self.inbox = self.inbox, []
        return out

    def closed_within(self, timeout: float) -> bool:
        try:
            self.until_closed(timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


def disconnect_reason(packets: list[Packet]) -> int | None:
    """The reason code of the final DISCONNECT, or None if the last packet is not one."""
    if packets and isinstance(packets[-1], Disconnect):
        return packets[-1].reason_code
    return None
