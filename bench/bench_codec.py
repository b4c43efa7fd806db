"""Rough codec throughput: PUBLISH decode/encode rates in this interpreter (no thresholds).

Run: python bench/bench_codec.py [seconds-per-case]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.compiled import describe as describe_build
from gateway.mqtt.codec import StreamDecoder, decode_packet, encode, encode_publish
from gateway.mqtt.packets import (
    PROTOCOL_V5,
    PROTOCOL_V311,
    Properties,
    PubAck,
    Publish,
)


def _rate(label: str, fn: Callable[[], int], seconds: float) -> None:
    ops = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        ops += fn()
    elapsed = time.perf_counter() - start
    print(f"{label:<48} {ops / elapsed:>12,.0f} /s")


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    print(f"# gateway build: {describe_build()}")
    batch = 1000
    for version, name in ((PROTOCOL_V311, "3.1.1"), (PROTOCOL_V5, "5.0")):
        for qos in (0, 1):
            pub = Publish(
                "home/livingroom/temperature",
                b"x" * 64,
                qos=qos,
                packet_id=42 if qos else None,
            )
            wire = encode(pub, version)
            stream = wire * batch
            decoder = StreamDecoder(protocol_version=version)

            def feed(stream: bytes = stream, decoder: StreamDecoder = decoder) -> int:
                return len(decoder.feed(stream))

            def one(wire: bytes = wire, version: int = version) -> int:
                for _ in range(batch):
                    decode_packet(wire, version)
                return batch

            def enc(pub: Publish = pub, version: int = version) -> int:
                for _ in range(batch):
                    encode_publish(pub, version)
                return batch

            _rate(f"{name} QoS {qos} 64 B: StreamDecoder.feed x{batch}", feed, seconds)
            _rate(f"{name} QoS {qos} 64 B: decode_packet", one, seconds)
            _rate(f"{name} QoS {qos} 64 B: encode_publish", enc, seconds)

    pub5 = Publish(
        "a/b", b"x" * 64, qos=1, packet_id=1, properties=Properties(message_expiry_interval=60)
    )
    stream5 = encode(pub5, PROTOCOL_V5) * batch
    dec5 = StreamDecoder(protocol_version=PROTOCOL_V5)
    _rate("5.0 QoS 1 + expiry property: feed", lambda: len(dec5.feed(stream5)), seconds)

    def enc5() -> int:
        for _ in range(batch):
            encode_publish(pub5, PROTOCOL_V5)
        return batch

    _rate("5.0 QoS 1 + expiry property: encode_publish", enc5, seconds)
    acks = encode(PubAck(7), PROTOCOL_V5) * batch
    dec_ack = StreamDecoder(protocol_version=PROTOCOL_V5)
    _rate("5.0 PUBACK: feed", lambda: len(dec_ack.feed(acks)), seconds)


if __name__ == "__main__":
    main()
